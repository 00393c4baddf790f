#!/usr/bin/env python
"""Fault injection against a real stack: worker (2 processes), Redis, PostgreSQL, Orthanc.

    .venv/bin/python scripts/chaos.py [-n 500] [--only send,watcher] [--big 5000]

Scenarios (tests/reliability/scenarios.py): the worker SIGKILLed (all its processes) during
import, de-identification, sending and cleanup, then restarted; the watcher SIGKILLed while
studies arrive; Redis (no persistence) SIGKILLed and restarted mid-run; every step queued
three times at once; bad input. Each runs a fresh node (its own PostgreSQL database and a
private redis-server) against one private Orthanc, and prints:
scenario, images in, images delivered, duplicates, result.

The worker crashes (import, deidentify, send, cleanup, sqlite, hosts: three workers as three
hosts, one SIGKILLed among six studies) run with the production recovery settings of
sendit/config.py, and the table's `recovery` column gives the seconds from the
restart (hosts: from the kill) to every batch DONE. The other scenarios shorten them (lease
20 s, sweep after 5 s, Redis visibility 30 s): they prove the sweeper and redelivery.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sendit.settings")

from tests.node import Node  # noqa: E402
from tests.reliability import scenarios  # noqa: E402
from tests.services import Orthanc  # noqa: E402


def bad_input(tmp, orthanc, n, timeout):
    """A study with broken files among good ones: the good ones arrive, the rest is kept."""
    import shutil

    from pydicom.data import get_testdata_file

    orthanc.clear()
    row = scenarios.Row("bad input among good (broken pydicom files)", n)
    with Node(tmp, "postgres", "redis", workers=2, ORTHANC_URL=orthanc.url, **scenarios.FAST_RECOVERY) as node:
        started = time.monotonic()
        folder = node.data / "BAD.tmp1"
        scenarios.make_ct_series(folder, n, patient_id="CHAOS-BAD")
        broken = ["MR_truncated.dcm", "no_meta.dcm", "meta_missing_tsyntax.dcm", "UN_sequence.dcm"]
        for name in broken:
            shutil.copy(get_testdata_file(name), folder / name)
        (folder / "empty.dcm").write_bytes(b"")
        folder.rename(node.data / "BAD")
        # DONEPROCESSING comes before the send: wait for every good image to be SENT.
        node.wait(
            lambda: node.query("SELECT count(*) FROM main_image WHERE status = %s", "SENT")[0][0] >= n, timeout=timeout
        )
        row.seconds = round(time.monotonic() - started, 1)
        row.delivered = len(orthanc.instances())
        row.duplicates = max(0, row.delivered - n)
        kept = sorted(p.name for p in (node.data / "BAD.err").iterdir()) if (node.data / "BAD.err").exists() else []
        status, err = node.batches().get("BAD", ("", False))
        if row.delivered == n and err and len(kept) == len(broken) + 1:
            row.result = "PASS"
        row.notes.append(f"{len(kept)} broken files kept in BAD.err, batch {status} with errors")
        return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="images per study (default 500)")
    parser.add_argument("--only", default="", help="comma-separated scenario keys to run")
    parser.add_argument(
        "--big", type=int, default=0, help="also kill the worker during the send of one study of this many images"
    )
    parser.add_argument("--timeout", type=int, default=900)
    args = parser.parse_args()
    n, t = args.n, args.timeout
    plan = {
        "import": lambda d, o: scenarios.kill_worker_at(d, o, "import", n, timeout=t),
        "deidentify": lambda d, o: scenarios.kill_worker_at(d, o, "deidentify", n, timeout=t),
        "send": lambda d, o: scenarios.kill_worker_at(d, o, "send", n, timeout=t),
        "cleanup": lambda d, o: scenarios.kill_worker_at(d, o, "cleanup", n, timeout=t),
        "sqlite": lambda d, o: scenarios.kill_worker_at(
            d, o, "send", n, database="sqlite", broker="filesystem", timeout=t
        ),
        "watcher": lambda d, o: scenarios.kill_watcher(d, o, max(1, n // 5), timeout=t),
        "hosts": lambda d, o: scenarios.kill_one_of_three_workers(d, o, studies=6, n=max(1, n // 6), timeout=t),
        "message": lambda d, o: scenarios.kill_host_holding_a_message(d, o, n, timeout=t),
        "redis": lambda d, o: scenarios.restart_redis(d, o, n, timeout=t),
        "duplicates": lambda d, o: scenarios.duplicate_tasks(d, o, n, timeout=t),
        "bad": lambda d, o: bad_input(d, o, n, t),
    }
    if args.big:
        plan["big"] = lambda d, o: scenarios.kill_worker_at(d, o, "send", args.big, timeout=max(t, 3600))
    keys = [k for k in args.only.split(",") if k] or list(plan)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sendit-chaos-") as tmp:
        with Orthanc(Path(tmp) / "orthanc") as orthanc:
            for key in keys:
                started = time.monotonic()
                try:
                    row = plan[key](Path(tmp) / key, orthanc)
                    if key == "sqlite":
                        row.scenario += " (SQLite + filesystem broker)"
                except Exception as exc:  # report and carry on with the next scenario
                    row = scenarios.Row(key, 0, notes=[f"{type(exc).__name__}: {exc}"])
                    row.seconds = round(time.monotonic() - started, 1)
                rows.append(row)
                print(f"... {row.scenario}: {row.result} ({row.seconds}s)", flush=True)
    print()
    scenarios.print_table(rows)
    return 0 if all(r.result == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
