#!/usr/bin/env python
"""How fast sendit's DICOM receiver takes a CT study, against DCMTK's storescp on the same disk.

Method. DCMTK's storescu sends the same N CT images (512x512, 16 bit, ~0.5 MB, made by
tests.services.make_ct_series) over 1 and over 4 simultaneous associations (4 storescu
processes, N/4 files each) to:

  storescp   DCMTK's storescp --fork, writing each image to disk (no fsync)
  storescp+sync  the same, with `--exec-on-reception "sync FILE FOLDER" --exec-sync`: a
             durable reference (storescp 3.6.7 has no fsync option; this runs coreutils'
             sync, an fsync of the file and of its folder, in a process of its own for each
             image before answering, so it also pays a fork and exec). Left out with
             --no-durable-reference
  sendit     python manage.py dicom_receiver (each image fdatasynced, renamed and its
             folder fsynced before Success)

Both are sent to with the same storescu command line: `storescu -aet BENCHi -aec SENDIT
127.0.0.1 PORT FILES...`, storescu's defaults otherwise (so it sends PDUs of up to 128 kB to
either, both advertising no smaller limit), and TCP_NODELAY=1 in its environment (DCMTK
leaves Nagle's algorithm on otherwise) for both. Each receiver is started afresh for each
send and not timed while starting; a send is timed from storescu's start to the exit of
the last storescu, and every image must then be on disk. Before each send, os.sync()
writes back what the previous one left dirty, so that neither pays for the other's. The targets alternate
(storescp, sendit, storescp, sendit...) for --rounds rounds, since this machine is shared
and noisy; the ratio printed is the median over rounds of sendit's rate / storescp's rate
within a round (the best and worst round are printed too). The cost of a write + fdatasync +
rename + folder fsync of one image on this disk is measured at the end of each round.

For each target and send it prints images/s, the median per-image latency (storescu's log,
timestamped to the microsecond: from "Sending Store Request" to "Received Store Response")
and the receiver's CPU per image (user + system time of the receiving process and of its
children, storescp's forked ones included, from /proc, over the send only).

    .venv/bin/python scripts/bench_receiver.py [--images 500] [--rounds 5] [--dir /var/tmp]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.services import free_port, make_ct_series, reachable, stop_process, wait_for  # noqa: E402

NODELAY = {**os.environ, "TCP_NODELAY": "1"}  # DCMTK leaves Nagle's algorithm on otherwise
#: storescu's log, each line timestamped (seconds since the epoch, then ms.us).
LOG_CONFIG = """log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%s.%Q} %m%n
"""
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system time of process ``pid``, of its children it has waited for, and of
    those it has not (yet): storescp --fork reaps its children only now and then."""

    def times(p, own_only=False) -> float:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        values = fields[11:13] if own_only else fields[11:15]  # utime stime [cutime cstime]
        return sum(int(v) for v in values) / TICK

    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    total = 0.0
    for child in children:
        try:
            total += times(child)
        except (OSError, IndexError):
            pass  # reaped meanwhile: counted in the parent's cutime below
    return total + times(pid)


def latencies(log: str) -> list[float]:
    """Seconds from each "Sending Store Request" to the next "Received Store Response"."""
    out, sent = [], None
    for line in log.splitlines():
        stamp, _, message = line.partition(" ")
        if message.startswith("Sending Store Request"):
            sent = stamp
        elif message.startswith("Received Store Response") and sent is not None:
            out.append(_seconds(stamp) - _seconds(sent))
            sent = None
    return out


def _seconds(stamp: str) -> float:
    seconds, ms, us = stamp.split(".")
    return int(seconds) + int(ms) / 1e3 + int(us) / 1e6


def count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".part"))


def send(port: int, files: list, associations: int, log_config: Path) -> tuple[float, list[float]]:
    """Seconds for storescu to send every file over `associations` parallel associations,
    and the latency of each image (seconds)."""
    chunks = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                "storescu",
                "-lc",
                str(log_config),
                "-aet",
                f"BENCH{i}",
                "-aec",
                "SENDIT",
                "127.0.0.1",
                str(port),
                *map(str, chunk),
            ],
            env=NODELAY,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i, chunk in enumerate(chunks)
    ]
    logs = [proc.communicate()[0].decode(errors="replace") for proc in procs]
    seconds = time.perf_counter() - start
    for proc, log in zip(procs, logs):
        if proc.returncode:
            raise SystemExit(f"storescu failed: {log[-500:]}")
    return seconds, [latency for log in logs for latency in latencies(log)]


def start_storescp(out: Path, port: int, durable: bool = False) -> subprocess.Popen:
    out.mkdir(parents=True)
    sync = ["--exec-on-reception", "sync #p/#f #p", "--exec-sync"] if durable else []
    proc = subprocess.Popen(
        ["storescp", "--fork", *sync, "-aet", "SENDIT", "-od", str(out), str(port)],
        env=NODELAY,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: reachable(port), 30)
    return proc


def start_sendit(out: Path, port: int, work: Path) -> subprocess.Popen:
    out.mkdir(parents=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sendit.settings",
        "LOCKDOWN_ENABLED": "false",
        "SECRET_KEY": "bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyz0123",
        "DEID_SECRET": "bench-site-secret-0123456789abcdefgh",
        "DATABASE_URL": f"sqlite:///{work}/db.sqlite3",
        "VAR_DIR": str(work / "var"),
        "DATA_FOLDER": str(out),
        "RECEIVER_PORT": str(port),
        "RECEIVER_STUDY_SETTLE_SECONDS": "2",
        "SENDIT_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "dicom_receiver"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: reachable(port), 60)
    return proc


def durable_write_ms(folder: Path, data: bytes, times: int = 50) -> float:
    """Milliseconds to write, fdatasync, rename and fsync the folder of one image, as sendit
    does (alone: no other image to share the folder fsync with)."""
    from sendit.receiver import write_instance

    folder.mkdir()
    start = time.perf_counter()
    for i in range(times):
        write_instance(folder / f"{i}.dcm", data)
    seconds = time.perf_counter() - start
    shutil.rmtree(folder)
    return seconds / times * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the images are made and received (one disk)")
    parser.add_argument(
        "--no-durable-reference",
        action="store_true",
        help="leave out storescp+sync (storescp with a sync process per image)",
    )
    args = parser.parse_args()
    targets = ("storescp", "sendit") if args.no_durable_reference else ("storescp", "storescp+sync", "sendit")
    work = Path(tempfile.mkdtemp(prefix="bench-receiver-", dir=args.dir))
    try:
        files = make_ct_series(work / "study", args.images, patient_id="BENCH")
        size = sum(Path(f).stat().st_size for f in files) / 1e6
        print(f"{args.images} CT images, {size:.0f} MB, in {work}; {args.rounds} rounds, targets alternating")
        log_config = work / "storescu-log.cfg"
        log_config.write_text(LOG_CONFIG)
        # figures[(target, associations)] = [(images/s, median latency ms, CPU ms per image), ...]
        figures: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        ratios: dict[tuple[str, int], list[float]] = {}
        fsync_ms = []
        for round_ in range(1, args.rounds + 1):
            for associations in (1, 4):
                rate = {}
                for name in targets:
                    out = work / f"{name}-{associations}"
                    port = free_port()
                    if name == "sendit":
                        proc = start_sendit(out, port, work)
                    else:
                        proc = start_storescp(out, port, durable=name == "storescp+sync")
                    try:
                        os.sync()  # neither target pays for the other's dirty pages (ext4 fsyncs would)
                        cpu = cpu_seconds(proc.pid)
                        seconds, waits = send(port, files, associations, log_config)
                        time.sleep(0.2)  # storescp's last children exit
                        cpu = cpu_seconds(proc.pid) - cpu
                    finally:
                        stop_process(proc)
                    got = count(out)
                    assert got == args.images, f"{name} stored {got} of {args.images}"
                    rate[name] = args.images / seconds
                    latency = statistics.median(waits) * 1000 if waits else float("nan")
                    cpu_ms = cpu / args.images * 1000
                    figures.setdefault((name, associations), []).append((rate[name], latency, cpu_ms))
                    print(
                        f"round {round_}  {name:13s} {associations} association(s): {seconds:6.2f} s, "
                        f"{rate[name]:6.1f} images/s, {size / seconds:6.1f} MB/s, "
                        f"latency median {latency:5.2f} ms, CPU {cpu_ms:4.2f} ms/image",
                        flush=True,
                    )
                    shutil.rmtree(out)
                for reference in targets[:-1]:
                    ratios.setdefault((reference, associations), []).append(rate["sendit"] / rate[reference])
            fsync_ms.append(durable_write_ms(work / "fsync", Path(files[0]).read_bytes()))
            print(
                f"round {round_}  one image written + fdatasynced + renamed + folder fsynced: {fsync_ms[-1]:.2f} ms",
                flush=True,
            )
        print(
            f"durable write of one image: median {statistics.median(fsync_ms):.2f} ms "
            f"(min {min(fsync_ms):.2f}, max {max(fsync_ms):.2f})"
        )
        for (name, associations), rows in figures.items():
            rates, waits, cpus = zip(*rows)
            print(
                f"{name:13s} {associations} association(s): median {statistics.median(rates):6.1f} images/s, "
                f"latency {statistics.median(waits):5.2f} ms, CPU {statistics.median(cpus):4.2f} ms/image"
            )
        for (reference, associations), r in ratios.items():
            print(
                f"{associations} association(s): sendit / {reference} = {statistics.median(r):.2f}x "
                f"(median of {len(r)} rounds; min {min(r):.2f}x, max {max(r):.2f}x)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
