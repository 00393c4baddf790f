#!/usr/bin/env python
"""How fast sendit's DICOM receiver takes a CT study, against DCMTK's storescp on the same disk.

DCMTK's storescu sends the same N CT images (512x512, 16 bit, made by
tests.services.make_ct_series) over 1 and over 4 simultaneous associations (4 storescu
processes, N/4 files each) to:

  storescp   DCMTK's storescp --fork, writing each image to disk (no fsync)
  sendit     python manage.py dicom_receiver (each image fsynced before Success)

and prints images per second and sendit's rate as a fraction of storescp's.

    .venv/bin/python scripts/bench_receiver.py [--images 500] [--dir /var/tmp]
"""
import argparse
import os
import shutil
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--dir", default=None, help="where the images are made and received (one disk)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-receiver-", dir=args.dir))
    try:
        files = make_ct_series(work / "study", args.images, patient_id="BENCH")
        size = sum(Path(f).stat().st_size for f in files) / 1e6
        print(f"{args.images} CT images, {size:.0f} MB, in {work}")
        results = {}
        for associations in (1, 4):
            for name, start in (("storescp", start_storescp), ("sendit", start_sendit)):
                out = work / f"{name}-{associations}"
                port = free_port()
                proc = start(out, port) if name == "storescp" else start(out, port, work)
                try:
                    seconds = send(port, files, associations)
                finally:
                    stop_process(proc)
                got = count(out)
                assert got == args.images, f"{name} stored {got} of {args.images}"
                results[name, associations] = args.images / seconds
                print(f"{name:9s} {associations} association(s): {seconds:6.2f} s, "
                      f"{args.images / seconds:6.1f} images/s, {size / seconds:6.1f} MB/s")
                shutil.rmtree(out)
        for associations in (1, 4):
            ratio = results["sendit", associations] / results["storescp", associations]
            print(f"{associations} association(s): sendit / storescp = {ratio:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
