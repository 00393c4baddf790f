#!/usr/bin/env python
"""How fast sendit's DICOM receiver takes a CT study, against DCMTK's storescp on the same disk.

Method. DCMTK's storescu sends the same N CT images (512x512, 16 bit, ~0.5 MB, made by
tests.services.make_ct_series) over 1 and over 4 simultaneous associations (4 storescu
processes, N/4 files each) to:

  storescp   DCMTK's storescp --fork, writing each image to disk (no fsync)
  sendit     python manage.py dicom_receiver (each image fsynced, renamed and its folder
             fsynced before Success)

Both are sent to with the same storescu command line: `storescu -aet BENCHi -aec SENDIT
127.0.0.1 PORT FILES...`, storescu's defaults otherwise (so it sends PDUs of up to 128 kB to
either, both advertising no smaller limit), and TCP_NODELAY=1 in its environment (DCMTK
leaves Nagle's algorithm on otherwise) for both. Each receiver is started afresh for each
send and not timed while starting; a send is timed from storescu's start to the exit of
the last storescu, and every image must then be on disk. Before each send, os.sync()
writes back what the previous one left dirty, so that neither pays for the other's. The targets alternate
(storescp, sendit, storescp, sendit...) for --rounds rounds, since this machine is shared
and noisy; the ratio printed is the median over rounds of sendit's rate / storescp's rate
within a round (the best and worst round are printed too). The cost of a write + fsync +
rename + folder fsync of one image on this disk is measured at the end of each round.

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


def count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".part"))


def send(port: int, files: list, associations: int) -> float:
    """Seconds for storescu to send every file over `associations` parallel associations."""
    chunks = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aet", f"BENCH{i}", "-aec", "SENDIT", "127.0.0.1", str(port),
                               *map(str, chunk)], env=NODELAY, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for i, chunk in enumerate(chunks)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"storescu failed: {err.decode(errors='replace')[-500:]}")
    return time.perf_counter() - start


def start_storescp(out: Path, port: int) -> subprocess.Popen:
    out.mkdir(parents=True)
    proc = subprocess.Popen(["storescp", "--fork", "-aet", "SENDIT", "-od", str(out), str(port)], env=NODELAY,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: reachable(port), 30)
    return proc


def start_sendit(out: Path, port: int, work: Path) -> subprocess.Popen:
    out.mkdir(parents=True)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "sendit.settings", "LOCKDOWN_ENABLED": "false",
           "SECRET_KEY": "bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyz0123",
           "DEID_SECRET": "bench-site-secret-0123456789abcdefgh", "DATABASE_URL": f"sqlite:///{work}/db.sqlite3",
           "VAR_DIR": str(work / "var"), "DATA_FOLDER": str(out), "RECEIVER_PORT": str(port),
           "RECEIVER_STUDY_SETTLE_SECONDS": "2", "SENDIT_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "manage.py", "dicom_receiver"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: reachable(port), 60)
    return proc


def durable_write_ms(folder: Path, data: bytes, times: int = 50) -> float:
    """Milliseconds to write, fsync, rename and fsync the folder of one image, as sendit does."""
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
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-receiver-", dir=args.dir))
    try:
        files = make_ct_series(work / "study", args.images, patient_id="BENCH")
        size = sum(Path(f).stat().st_size for f in files) / 1e6
        print(f"{args.images} CT images, {size:.0f} MB, in {work}; {args.rounds} rounds, targets alternating")
        ratios = {1: [], 4: []}
        fsync_ms = []
        for round_ in range(1, args.rounds + 1):
            for associations in (1, 4):
                rate = {}
                for name in ("storescp", "sendit"):
                    out = work / f"{name}-{associations}"
                    port = free_port()
                    proc = start_storescp(out, port) if name == "storescp" else start_sendit(out, port, work)
                    try:
                        os.sync()  # neither target pays for the other's dirty pages (ext4 fsyncs would)
                        seconds = send(port, files, associations)
                    finally:
                        stop_process(proc)
                    got = count(out)
                    assert got == args.images, f"{name} stored {got} of {args.images}"
                    rate[name] = args.images / seconds
                    print(f"round {round_}  {name:9s} {associations} association(s): {seconds:6.2f} s, "
                          f"{rate[name]:6.1f} images/s, {size / seconds:6.1f} MB/s")
                    shutil.rmtree(out)
                ratios[associations].append(rate["sendit"] / rate["storescp"])
            fsync_ms.append(durable_write_ms(work / "fsync", Path(files[0]).read_bytes()))
            print(f"round {round_}  one image written + fsynced + renamed + folder fsynced: {fsync_ms[-1]:.2f} ms")
        print(f"durable write of one image: median {statistics.median(fsync_ms):.2f} ms "
              f"(min {min(fsync_ms):.2f}, max {max(fsync_ms):.2f})")
        for associations in (1, 4):
            r = ratios[associations]
            print(f"{associations} association(s): sendit / storescp = {statistics.median(r):.2f}x "
                  f"(median of {len(r)} rounds; min {min(r):.2f}x, max {max(r):.2f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
