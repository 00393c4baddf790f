#!/usr/bin/env python
"""Benchmark the whole pipeline (drop -> verified in Orthanc) against Orthanc's own ingest.

    .venv/bin/python scripts/bench_pipeline.py [--studies 4] [--images 100]
        [--backends sqlite,postgres] [--workers 2] [--scale 200,1000,5000] [--dir /dev/shm]

Generates N studies of 512x512 16-bit CT images, starts a private Orthanc, and for each
backend (SQLite + kombu's filesystem broker; PostgreSQL + Redis) runs a real node
(tests/node.py: Celery worker with --workers processes, watcher daemon). The studies are
copied into the data folder as NAME.tmp1 and renamed at t0 (after a few small warm-up
studies have gone through the freshly started node); the clock stops when every
batch is DONE (sent, verified, cleaned up) and Orthanc holds every instance. In the same
run Orthanc's own ingest of the same files is timed (POST /instances over 1, 2, 4 and 8
keep-alive connections, best taken), and timed again (best count only) after each
pipeline run: a run's ratio is against the mean of the reference just before and just
after it, as this shared machine's speed drifts. Prints images/s of each, the ratio, the peak
resident memory (VmHWM) of the worker's processes, and the CPU time each part of the
node spent per image while the clock ran (worker processes, watcher, Orthanc, database,
broker; from /proc), which is what the ratio comes down to on a machine with few CPUs.

--scale 200,1000,5000 also times one study of each size (PostgreSQL + Redis) and prints
milliseconds per image, to show that time per image stays flat with batch size.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from tests.node import Node  # noqa: E402
from tests.services import Orthanc, make_ct_series  # noqa: E402


def orthanc_ingest(orthanc, paths, connections):
    """(images per second, Orthanc's CPU ms per image) of Orthanc's own POST /instances of
    these files (no verification)."""
    orthanc.clear()
    before = cpu_seconds_by_part()["Orthanc"]
    elapsed = orthanc.ingest_seconds(paths, connections)
    cpu = 1000 * (cpu_seconds_by_part()["Orthanc"] - before) / len(paths)
    assert len(orthanc.instances()) == len(paths)
    orthanc.clear()
    return len(paths) / elapsed, cpu


PARTS = {
    "worker": "celery",
    "watcher": "watcher",
    "Orthanc": "Orthanc",
    "database": "postgres",
    "broker": "redis-server",
}
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds_by_part() -> dict:
    """User + system CPU seconds of the running processes, summed by PARTS (by command line)."""
    seconds = dict.fromkeys(PARTS, 0.0)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        part = next((name for name, needle in PARTS.items() if needle in command), None)
        if part:
            seconds[part] += (int(fields[11]) + int(fields[12])) / TICKS
    return seconds


def wait_done(node, names, timeout) -> bool:
    """True once every named batch is DONE; False when the timeout comes first."""
    return node.wait(
        lambda: all(node.batches().get(n, ("",))[0] == "DONE" for n in names), timeout=timeout, interval=0.05
    )


def warm_up(node, tmp, workers, timeout):
    """Run small studies through a node that has just started, so that the clock times a
    running node (as the drop in production meets one), not the worker booting and its
    processes importing their modules on their first tasks."""
    names = []
    for i in range(2 * workers):
        name = f"WARMUP{i}"
        make_ct_series(tmp / "warmup" / name, 2, rows=64, columns=64, patient_id=name, seed=100 + i)
        shutil.copytree(tmp / "warmup" / name, node.data / f"{name}.tmp1")
        (node.data / f"{name}.tmp1").rename(node.data / name)
        names.append(name)
    if not wait_done(node, names, timeout):
        raise SystemExit(f"the warm-up studies did not finish: {node.batches()}")


def run_pipeline(tmp, orthanc, database, broker, studies, workers, timeout):
    """Drop every study at once; seconds until all are DONE and in Orthanc; peak MB;
    CPU milliseconds per image by part."""
    total = sum(len(list(s.iterdir())) for s in studies)
    with Node(tmp, database, broker, workers=workers, ORTHANC_URL=orthanc.url, WATCHER_SETTLE_SECONDS=0.5) as node:
        warm_up(node, tmp, workers, timeout)
        orthanc.clear()
        for study in studies:
            shutil.copytree(study, node.data / f"{study.name}.tmp1")
        cpu_before = cpu_seconds_by_part()
        started = time.perf_counter()
        for study in studies:
            (node.data / f"{study.name}.tmp1").rename(node.data / study.name)
        names = [s.name for s in studies]
        done = wait_done(node, names, timeout)
        elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds_by_part()
        memory = node.worker_memory()
        errors = {k: v for k, v in node.batches().items() if v[1] or v[0] != "DONE"}
    delivered = len(orthanc.instances())
    if not done or errors or delivered != total:
        raise SystemExit(f"pipeline did not finish: {errors} delivered={delivered}/{total}")
    cpu = {part: 1000 * (cpu_after[part] - cpu_before[part]) / total for part in PARTS}
    return total, elapsed, memory, cpu


def cpu_line(cpu: dict) -> str:
    shown = ", ".join(f"{part} {ms:.2f}" for part, ms in cpu.items() if ms >= 0.005)
    return f"    CPU ms per image: {shown}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=4)
    parser.add_argument("--images", type=int, default=100, help="images per study")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--scale", default="", help="e.g. 200,1000,5000: one study of each size")
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument(
        "--dir",
        default=None,
        help="where the node's folders and Orthanc's storage go (default: the "
        "system's temporary folder; /dev/shm puts them in memory)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sendit-benchp-", dir=args.dir) as tmp:
        tmp = Path(tmp)
        studies = []
        for i in range(args.studies):
            folder = tmp / "in" / f"BENCH{i:03d}"
            make_ct_series(folder, args.images, patient_id=f"BENCH{i:03d}", seed=i)
            studies.append(folder)
        paths = sorted(str(p) for s in studies for p in s.iterdir())
        size = sum(os.path.getsize(p) for p in paths) / 1e6
        print(
            f"{args.studies} studies x {args.images} CT images 512x512x16 bit = {len(paths)} images, "
            f"{size:.0f} MB; {os.cpu_count()} CPUs; {args.workers} worker processes; files in {tmp}",
            flush=True,
        )
        with Orthanc(tmp / "orthanc") as orthanc:
            measured = {k: orthanc_ingest(orthanc, paths, k) for k in (1, 2, 4, 8)}
            ref = {k: rate for k, (rate, _cpu) in measured.items()}
            k_best = max(ref, key=ref.get)
            print(
                f"Orthanc's own ingest (POST /instances, best of x1/x2/x4/x8: x{k_best}): "
                f"{ref[k_best]:7.1f} images/s  ({', '.join(f'x{k} {v:.0f}' for k, v in ref.items())})",
                flush=True,
            )
            print(f"    CPU ms per image: Orthanc {measured[k_best][1]:.2f}", flush=True)
            labels = {
                "sqlite": ("sqlite", "filesystem", "SQLite + filesystem broker"),
                "postgres": ("postgres", "redis", "PostgreSQL + Redis"),
            }
            before = ref[k_best]
            for key in [b for b in args.backends.split(",") if b]:
                database, broker, label = labels[key]
                total, elapsed, memory, cpu = run_pipeline(
                    tmp / f"node-{key}", orthanc, database, broker, studies, args.workers, args.timeout
                )
                # The machine's speed drifts: the reference is timed again right after each
                # run, and the run is compared with the mean of the two around it.
                after = orthanc_ingest(orthanc, paths, k_best)[0]
                reference = (before + after) / 2
                rate = total / elapsed
                print(
                    f"pipeline, {label:27s}: {rate:7.1f} images/s  {rate / reference:.2f}x Orthanc  "
                    f"({total} images in {elapsed:.1f}s; Orthanc alone {before:.0f} before, {after:.0f} after; "
                    f"worker peak RSS {', '.join(f'{m:.0f}' for m in memory)} MB)",
                    flush=True,
                )
                print(cpu_line(cpu), flush=True)
                before = after
            for n in [int(x) for x in args.scale.split(",") if x]:
                folder = tmp / "scale" / f"SCALE{n}"
                make_ct_series(folder, n, patient_id=f"SCALE{n}", seed=n)
                total, elapsed, memory, cpu = run_pipeline(
                    tmp / f"node-scale-{n}", orthanc, "postgres", "redis", [folder], args.workers, args.timeout
                )
                print(
                    f"one study of {n:5d} images (PostgreSQL + Redis): {1000 * elapsed / n:6.1f} ms/image, "
                    f"{n / elapsed:6.1f} images/s, worker peak RSS {max(memory):.0f} MB",
                    flush=True,
                )
                shutil.rmtree(folder)


if __name__ == "__main__":
    main()
