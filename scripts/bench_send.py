#!/usr/bin/env python
"""Benchmark sendit's Orthanc and DICOMweb destinations against Orthanc's own ingest rate.

    .venv/bin/python scripts/bench_send.py [-n 200] [--workers 8] [--associations 4]
    .venv/bin/python scripts/bench_send.py --only dicomweb [--per-request 25] [--repeat 7]

Generates n 512x512 16-bit CT images and, for each of two private Orthancs (tests/services.py)
that differ only in the PDU size their DICOM server accepts (DCMTK's default 16 kB, and the
128 kB that sendit's own Orthancs are configured with), times:

  (a) the reference: raw POST /instances of every file over 1, 2, 4 and 8 keep-alive
      connections (--only dicomweb: 4 and 8), files already in memory, no verification;
  (b) the sendit REST transport, send_batch (sent and verified);
  (c) the sendit DICOM transport, send_batch (sent and verified);
  (d) DCMTK's storescu, the C client, over as many parallel associations, when installed:
      what Orthanc's DICOM server takes from the best sender there is;
  (e) the sendit DICOMweb destination, send_batch: pre-check (QIDO-RS), STOW-RS, verification
      of every instance (WADO-RS series metadata for a new series), into the same Orthanc
      with its DICOMweb plugin loaded (orthanc-dicomweb), when installed;
  (f) raw STOW-RS of the same files as (e) batches them (--per-request per request, --workers
      requests at a time), files already in memory, no pre-check and no verification: what
      the DICOMweb plugin's ingest costs by itself, with no sendit in it.

Method: every case runs once per round, in the same order, for --repeat rounds, Orthanc
emptied before each run; all against the same Orthanc process (one build, its DICOMweb plugin
loaded for every case). A case's ratio is the median over the rounds of its rate divided by
the reference's rate in the same round (paired, so a busy moment of a shared machine weighs
on both); the reference is the (a) case with the best median rate. Also printed: the median
and best rates, and the CPU per image (median) of the Orthanc process (from /proc) and of
the client (this process, which runs every case's sender), which a busy machine disturbs
less than wall time; their total against the reference's is what the ratio would be were
both bound by the 2 CPUs.
"""

import argparse
import concurrent.futures
import http.client
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from sendit.storage import SendItem, get_destinations  # noqa: E402
from tests.services import Orthanc, dicomweb_plugin, make_ct_series  # noqa: E402

PDU_SIZES = {"16 kB (Orthanc default)": None, "128 kB (sendit's Orthancs)": 131072}

INCLUDES = {
    "(a)": "POST /instances, files in memory, no verification",
    "(b)": "send_batch: POST /instances from disk + REST verification",
    "(c)": "send_batch: C-STORE + verification",
    "(d)": "storescu, no verification",
    "(e)": "send_batch: QIDO-RS pre-check + STOW-RS from disk + every instance verified",
    "(f)": "STOW-RS, files in memory, no pre-check, no verification",
}


def storescu_seconds(orthanc, paths, associations: int) -> float:
    """DCMTK storescu, `associations` processes each sending an interleaved share."""
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-aec", orthanc.aet, orthanc.host, str(orthanc.dicom_port), *map(str, paths[k::associations])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for k in range(associations)
    ]
    if any(p.wait() for p in procs):
        raise RuntimeError("storescu failed")
    return time.perf_counter() - started


def stow_seconds(orthanc, paths, per_request: int, workers: int) -> float:
    """Raw STOW-RS: the files in multipart/related requests of `per_request` instances,
    `workers` requests at a time over keep-alive connections, bodies built before the clock
    starts; HTTP 200 required, the answer not read further."""
    bodies = []
    n = max(-(-len(paths) // per_request), min(workers, len(paths)))
    for k in range(n):
        boundary = uuid.uuid4().hex
        part = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body = b"".join(
            part + open(p, "rb").read() + b"\r\n" for p in paths[k * len(paths) // n : (k + 1) * len(paths) // n]
        )
        bodies.append((boundary, body + f"--{boundary}--\r\n".encode()))
    local, opened = threading.local(), []

    def post(job):
        boundary, body = job
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(orthanc.host, orthanc.http_port, timeout=120)
            opened.append(local.conn)
        local.conn.request(
            "POST",
            "/dicom-web/studies",
            body=body,
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
            },
        )
        answer = local.conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"STOW-RS answered HTTP {answer.status}")

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(post, bodies))
    elapsed = time.perf_counter() - started
    for conn in opened:
        conn.close()
    return elapsed


def orthanc_cpu(orthanc) -> float | None:
    """Seconds of CPU the Orthanc process has used (user + system), None off Linux."""
    try:
        fields = open(f"/proc/{orthanc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return None


def own_cpu() -> float:
    """Seconds of CPU this process (the sending client, every thread) has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(orthanc, paths, items, args) -> dict:
    """{case: [(images/s, Orthanc CPU s/image or None, client CPU s/image) per round]},
    interleaved rounds."""

    def sendit(config):
        [dest] = get_destinations(config)

        def run():
            started = time.perf_counter()
            results = dest.send_batch(items)
            elapsed = time.perf_counter() - started
            bad = [r.error for r in results if not r.ok]
            assert not bad, bad[:3]
            return elapsed

        return run

    connections = (1, 2, 4, 8) if args.only != "dicomweb" else (4, 8)
    cases = {f"(a) POST /instances x{k}": (lambda k=k: orthanc.ingest_seconds(paths, k)) for k in connections}
    if args.only != "dicomweb":
        for letter, transport in (("b", "rest"), ("c", "dicom")):
            cases[f"({letter}) sendit {transport.upper()} (sent+verified)"] = sendit(
                orthanc.settings(
                    ORTHANC_TRANSPORT=transport, SEND_WORKERS=args.workers, ORTHANC_DICOM_ASSOCIATIONS=args.associations
                )
            )
    if orthanc.dicomweb:
        cases["(e) sendit DICOMweb (sent+verified)"] = sendit(
            {
                "SEND_TO_DICOMWEB": True,
                "DICOMWEB_URL": orthanc.dicomweb_url,
                "SEND_WORKERS": args.workers,
                "DICOMWEB_INSTANCES_PER_REQUEST": args.per_request,
            }
        )
        cases[f"(f) raw STOW-RS {args.per_request}/request"] = lambda: stow_seconds(
            orthanc, paths, args.per_request, args.workers
        )
    if args.only != "dicomweb" and shutil.which("storescu"):
        cases[f"(d) DCMTK storescu x{args.associations}"] = lambda: storescu_seconds(orthanc, paths, args.associations)
    rounds = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, run in cases.items():
            orthanc.clear()
            cpu, mine = orthanc_cpu(orthanc), own_cpu()
            seconds = run()
            after, mine = orthanc_cpu(orthanc), own_cpu() - mine
            assert len(orthanc.instances()) == args.n, f"{name}: not every image was stored"
            rounds[name].append(
                (args.n / seconds, None if cpu is None or after is None else (after - cpu) / args.n, mine / args.n)
            )
    return rounds


def report(rounds: dict, args) -> None:
    median = {name: statistics.median(r[0] for r in runs) for name, runs in rounds.items()}
    reference = max((name for name in rounds if name.startswith("(a)")), key=median.get)

    def cpu(runs):
        """Median CPU per image (Orthanc, client), None without /proc."""
        server = [r[1] for r in runs if r[1] is not None]
        if not server:
            return None
        return statistics.median(server), statistics.median(r[2] for r in runs)

    ref_cpu = cpu(rounds[reference])
    print(
        f"  {'case':<38}{'median':>9}{'best':>8}  {'ratio (median, range)':<24}"
        "CPU/image: Orthanc + client = total (ratio)"
    )
    for name, runs in rounds.items():
        rates = [r[0] for r in runs]
        ratios = sorted(r[0] / ref[0] for r, ref in zip(runs, rounds[reference]))
        ratio = (
            "reference" if name == reference else f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"
        )
        used = cpu(runs)
        cpu_text = (
            "-"
            if used is None
            else (
                f"{used[0] * 1000:.2f} + {used[1] * 1000:.2f} = {sum(used) * 1000:.2f} ms"
                + ("" if name == reference else f" ({sum(ref_cpu) / sum(used):.2f}x)")
            )
        )
        print(f"  {name:<38}{median[name]:7.1f}/s{max(rates):6.1f}/s  {ratio:<24}{cpu_text}")
    print(
        f"  reference: {reference}, {len(rounds[reference])} interleaved rounds; ratio = median "
        "over the rounds of rate / reference rate in the same round; CPU ratio = reference's "
        "total CPU per image / the case's (what the ratio would be with both bound by CPU)"
    )
    print("  what each includes:")
    for letter, text in INCLUDES.items():
        if any(name.startswith(letter) for name in rounds):
            print(f"    {letter} {text}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="number of images (default 200)")
    parser.add_argument("--workers", type=int, default=8, help="SEND_WORKERS for REST and DICOMweb (default 8)")
    parser.add_argument(
        "--associations", type=int, default=4, help="ORTHANC_DICOM_ASSOCIATIONS, and storescu processes (default 4)"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="interleaved rounds (default 3; 7 with --only dicomweb)"
    )
    parser.add_argument("--per-request", type=int, default=25, help="DICOMWEB_INSTANCES_PER_REQUEST (default 25)")
    parser.add_argument(
        "--only",
        choices=["dicomweb"],
        help="dicomweb: only the reference and the DICOMweb cases, one Orthanc (128 kB PDU)",
    )
    args = parser.parse_args()
    if args.repeat is None:
        args.repeat = 7 if args.only == "dicomweb" else 3

    with tempfile.TemporaryDirectory(prefix="sendit-bench-") as tmp:
        paths = make_ct_series(os.path.join(tmp, "in"), args.n, patient_id="BENCH")
        size = sum(os.path.getsize(p) for p in paths) / 1e6
        items = [SendItem.from_file(p) for p in paths]
        print(
            f"{args.n} CT images 512x512x16 bit, {size:.1f} MB, {os.cpu_count()} CPUs "
            f"(load average {os.getloadavg()[0]:.1f} at start), {args.workers} workers, "
            f"{args.associations} DICOM associations, {args.per_request} DICOMweb instances "
            "per request"
        )
        sizes = PDU_SIZES if args.only != "dicomweb" else {k: v for k, v in PDU_SIZES.items() if v == 131072}
        for label, pdu in sizes.items():
            with Orthanc(
                os.path.join(tmp, f"orthanc-{pdu}"), maximum_pdu_length=pdu, dicomweb=bool(dicomweb_plugin())
            ) as orthanc:
                rounds = measure(orthanc, paths, items, args)
            print(f"\nOrthanc MaximumPduLength {label}")
            report(rounds, args)


if __name__ == "__main__":
    main()
