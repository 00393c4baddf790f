#!/usr/bin/env python
"""Benchmark sendit's Orthanc destinations against Orthanc's own ingest rate.

    .venv/bin/python scripts/bench_send.py [-n 200] [--workers 8] [--associations 4]
    .venv/bin/python scripts/bench_send.py --only dicomweb [--per-request 25]

Generates n 512x512 16-bit CT images and, for each of two private Orthancs (tests/services.py)
that differ only in the PDU size their DICOM server accepts (DCMTK's default 16 kB, and the
128 kB that sendit's own Orthancs are configured with), times:

  (a) the reference: raw POST /instances of every file over 1, 2, 4 and 8 keep-alive
      connections, no verification (the best is Orthanc's own ingest rate);
  (b) the sendit REST transport, send_batch (sent and verified);
  (c) the sendit DICOM transport, send_batch (sent and verified);
  (d) DCMTK's storescu, the C client, over as many parallel associations, when installed:
      what Orthanc's DICOM server takes from the best sender there is;
  (e) the sendit DICOMweb destination, send_batch (STOW-RS, verified by QIDO-RS), into the
      same Orthanc with its DICOMweb plugin loaded (orthanc-dicomweb), when installed.

Cases run in interleaved rounds (the best of --repeat kept) and Orthanc is emptied between
runs. Prints images/s and the ratio to (a).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from sendit.storage import SendItem, get_destinations  # noqa: E402
from tests.services import Orthanc, dicomweb_plugin, make_ct_series  # noqa: E402

PDU_SIZES = {"16 kB (Orthanc default)": None, "128 kB (sendit's Orthancs)": 131072}


def storescu_seconds(orthanc, paths, associations: int) -> float:
    """DCMTK storescu, `associations` processes each sending an interleaved share."""
    started = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aec", orthanc.aet, orthanc.host, str(orthanc.dicom_port),
                               *map(str, paths[k::associations])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for k in range(associations)]
    if any(p.wait() for p in procs):
        raise RuntimeError("storescu failed")
    return time.perf_counter() - started


def measure(orthanc, paths, items, args) -> dict:
    """images/s of every case against one Orthanc, best of args.repeat interleaved rounds."""
    def sendit(transport):
        [dest] = get_destinations(orthanc.settings(
            ORTHANC_TRANSPORT=transport, SEND_WORKERS=args.workers,
            ORTHANC_DICOM_ASSOCIATIONS=args.associations))

        def run():
            started = time.perf_counter()
            results = dest.send_batch(items)
            elapsed = time.perf_counter() - started
            bad = [r.error for r in results if not r.ok]
            assert not bad, bad[:3]
            return elapsed
        return run

    def dicomweb():
        [dest] = get_destinations({"SEND_TO_DICOMWEB": True, "DICOMWEB_URL": orthanc.dicomweb_url,
                                   "SEND_WORKERS": args.workers,
                                   "DICOMWEB_INSTANCES_PER_REQUEST": args.per_request})

        def run():
            started = time.perf_counter()
            results = dest.send_batch(items)
            elapsed = time.perf_counter() - started
            bad = [r.error for r in results if not r.ok]
            assert not bad, bad[:3]
            return elapsed
        return run

    cases = {f"(a) POST /instances x{k}": (lambda k=k: orthanc.ingest_seconds(paths, k)) for k in (1, 2, 4, 8)}
    if args.only != "dicomweb":
        cases["(b) sendit REST (sent+verified)"] = sendit("rest")
        cases["(c) sendit DICOM (sent+verified)"] = sendit("dicom")
    if orthanc.dicomweb:
        cases["(e) sendit DICOMweb (STOW+QIDO)"] = dicomweb()
    if args.only != "dicomweb" and shutil.which("storescu"):
        cases[f"(d) DCMTK storescu x{args.associations}"] = lambda: storescu_seconds(
            orthanc, paths, args.associations)
    best = {}
    for _ in range(args.repeat):
        for name, run in cases.items():
            orthanc.clear()
            rate = args.n / run()
            assert len(orthanc.instances()) == args.n, f"{name}: not every image was stored"
            best[name] = max(best.get(name, 0.0), rate)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="number of images (default 200)")
    parser.add_argument("--workers", type=int, default=8, help="SEND_WORKERS for REST (default 8)")
    parser.add_argument("--associations", type=int, default=4,
                        help="ORTHANC_DICOM_ASSOCIATIONS, and storescu processes (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, best kept (default 3)")
    parser.add_argument("--per-request", type=int, default=25,
                        help="DICOMWEB_INSTANCES_PER_REQUEST (default 25)")
    parser.add_argument("--only", choices=["dicomweb"],
                        help="dicomweb: only the reference and the DICOMweb case, one Orthanc (128 kB PDU)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sendit-bench-") as tmp:
        paths = make_ct_series(os.path.join(tmp, "in"), args.n, patient_id="BENCH")
        size = sum(os.path.getsize(p) for p in paths) / 1e6
        items = [SendItem.from_file(p) for p in paths]
        print(f"{args.n} CT images 512x512x16 bit, {size:.1f} MB, {os.cpu_count()} CPUs, "
              f"{args.workers} REST workers, {args.associations} DICOM associations")
        sizes = PDU_SIZES if args.only != "dicomweb" else {
            k: v for k, v in PDU_SIZES.items() if v == 131072}
        for label, pdu in sizes.items():
            with Orthanc(os.path.join(tmp, f"orthanc-{pdu}"), maximum_pdu_length=pdu,
                         dicomweb=bool(dicomweb_plugin())) as orthanc:
                rates = measure(orthanc, paths, items, args)
            reference = max(v for k, v in rates.items() if k.startswith("(a)"))
            print(f"\nOrthanc MaximumPduLength {label}")
            for name, rate in rates.items():
                ratio = "" if name.startswith("(a)") else f"  {rate / reference:.2f}x"
                print(f"  {name:<36}{rate:7.1f} images/s{ratio}")
            print(f"  {'reference: Orthanc own ingest (best a)':<36}{reference:7.1f} images/s")


if __name__ == "__main__":
    main()
