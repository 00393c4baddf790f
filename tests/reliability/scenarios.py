"""Fault-injection scenarios against a real node (worker, watcher, broker, database, Orthanc).

Plain Python, shared by tests/reliability/test_crash.py (scaled down) and scripts/chaos.py
(full size). Each scenario drops studies into a running node's data folder, injects one
fault, waits for every batch to settle and returns a Row: images in, images delivered,
duplicates, result.

Delivered counts Orthanc's instances (it was emptied first). Duplicates are counted on
sendit's side: instances beyond the expected number (Orthanc keeps one per SOP instance UID,
so this is 0 unless a re-send produced a new UID), plus `resent`, the POSTs Orthanc answered
AlreadyStored (from the batches' audit logs): work a crash made sendit repeat.
"""

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.node import Node
from tests.services import free_port, make_ct_series, reachable, stop_process, wait_for

FAST_RECOVERY = {
    "BATCH_LEASE_SECONDS": 20,
    "SWEEP_INTERVAL": 1,
    "SWEEP_AFTER_SECONDS": 5,
    "BROKER_VISIBILITY_TIMEOUT": 30,
    "WATCHER_SETTLE_SECONDS": 0.5,
}
# The production recovery settings (sendit/config.py: lease 60 s, heartbeat 15 s,
# sweep after 900 s, Redis visibility 3600 s): what a killed worker's batches wait for when
# the workers themselves resume them. Only the watcher's settling is shortened.
PRODUCTION_RECOVERY = {"WATCHER_SETTLE_SECONDS": 0.5}


@dataclass
class Row:
    scenario: str
    images_in: int
    delivered: int = 0
    duplicates: int = 0
    resent: int = 0
    result: str = "FAIL"
    seconds: float = 0.0
    # Seconds from the worker's restart (or, several workers, from the kill) to every batch DONE.
    recovery: float = 0.0
    notes: list = field(default_factory=list)
    # On failure: the node's processes, log tails and broker folder (Node.diagnostics),
    # printed by the tests so that a one-off CI failure can be read afterwards.
    diagnostics: str = field(default="", repr=False)


class Redis:
    """A private redis-server (no persistence) that a scenario may kill and restart."""

    def __init__(self, tmp):
        self.dir = Path(tmp)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server is not installed")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_for(lambda: reachable(self.port), 10, interval=0.05):
            raise RuntimeError("redis-server did not start")
        return self

    def kill(self):
        stop_process(self.proc, kill=True)

    def stop(self):
        stop_process(self.proc)


def drop(node, name, n, seed=0, **kw):
    """An atomic drop: written as NAME.tmp1, renamed NAME when complete."""
    make_ct_series(node.data / f"{name}.tmp1", n, patient_id=f"CHAOS-{name}", seed=seed, **kw)
    (node.data / f"{name}.tmp1").rename(node.data / name)


def settle(node, names, timeout):
    def done():
        found = node.batches()
        return all(found.get(n, ("",))[0] == "DONE" for n in names) and found

    return node.wait(done, timeout=timeout, interval=0.5)


def resent(node):
    total = 0
    for (log,) in node.query("SELECT log FROM main_batch"):
        log = json.loads(log) if isinstance(log, str) else log
        for counts in (log or {}).get("deliveries", {}).values():
            total += counts.get("already_stored", 0)
    return total


def finish(row, node, orthanc, names, expected, started, timeout):
    ok = settle(node, names, timeout)
    row.seconds = round(time.monotonic() - started, 1)
    row.delivered = len(orthanc.instances())
    row.duplicates = max(0, row.delivered - expected)
    row.resent = resent(node)
    batches = node.batches()
    errors = {k: v for k, v in batches.items() if v[1]}
    if ok and not errors and row.delivered == expected:
        row.result = "PASS"
    else:
        row.notes.append(f"batches={batches}")
        row.diagnostics = node.diagnostics()
        log = node.tmp / "worker.log"
        if log.exists():  # what the workers said about it: recovery, errors
            lines = [
                line
                for line in log.read_text(errors="replace").splitlines()
                if any(w in line for w in ("RECOVER", "ERROR", "Error", "CRITICAL", "lease", "ready."))
            ]
            row.notes.append("worker.log: " + " | ".join(lines[-12:]))
    return row


def kill_worker_at(
    tmp, orthanc, step, n, database="postgres", broker="redis", timeout=240, recovery=PRODUCTION_RECOVERY
):
    """SIGKILL the whole worker (all its processes) at a chosen point of one step, restart it.

    row.recovery: seconds from the restart to the batch DONE (the restarted worker resumes
    it; nothing waits for the sweeper or Redis's visibility timeout with the production
    settings)."""
    orthanc.clear()
    marker = Path(tmp) / "crash.marker"
    redis = Redis(Path(tmp) / "redis").start() if broker == "redis" else None
    extra = {"CELERY_BROKER_URL": redis.url} if redis else {}
    row = Row(f"worker SIGKILL during {step} ({broker})", n)
    try:
        with Node(
            tmp,
            database,
            "filesystem" if broker == "filesystem" else "redis",
            workers=2,
            ORTHANC_URL=orthanc.url,
            SENDIT_CRASH_AT=step,
            SENDIT_CRASH_MARKER=marker,
            **recovery,
            **extra,
        ) as node:
            started = time.monotonic()
            drop(node, "K", n)
            if not node.wait(marker.exists, timeout=timeout):
                row.notes.append(f"the crash point was never reached; batches={node.batches()}")
                row.delivered = len(orthanc.instances())
                row.diagnostics = node.diagnostics()
                return row
            node.kill_worker()
            time.sleep(1)
            node.start_worker()
            restarted = time.monotonic() - started
            finish(row, node, orthanc, ["K"], n, started, timeout)
            row.recovery = round(row.seconds - restarted, 1)
            return row
    finally:
        if redis:
            redis.stop()


def ready_workers(node):
    """How many workers of the node said they are ready (Celery's "... ready." line)."""
    log = node.tmp / "worker.log"
    return log.read_text(errors="replace").count(" ready.") if log.exists() else 0


def start_hosts(node, count, row):
    """`count` workers as on `count` hosts (each in its own pid namespace), all consuming
    before anything arrives: a worker still starting on a loaded machine would find the
    others had done everything. None, with the row saying why, when they do not start."""
    workers = [node.start_worker(other_host=True) for _ in range(count)]
    if node.wait(lambda: ready_workers(node) >= count, timeout=120, interval=0.2):
        return workers
    row.notes.append(f"only {ready_workers(node)} of {count} workers became ready")
    row.diagnostics = node.diagnostics()
    return None


def kill_one_of_three_workers(tmp, orthanc, studies=6, n=40, timeout=300, recovery=PRODUCTION_RECOVERY):
    """Three workers as on three hosts (each in its own pid namespace, sharing PostgreSQL,
    Redis and the folders), one SIGKILLed while it holds a batch in the middle of six
    studies; the two others finish its batches. row.recovery: seconds from the kill to
    every batch DONE."""
    orthanc.clear()
    redis = Redis(Path(tmp) / "redis").start()
    row = Row(f"1 of 3 workers (hosts) SIGKILL, {studies} studies", studies * n)
    names = [f"H{i}" for i in range(studies)]
    try:
        with Node(
            tmp,
            "postgres",
            "redis",
            workers=1,
            ORTHANC_URL=orthanc.url,
            CELERY_BROKER_URL=redis.url,
            start_worker=False,
            **recovery,
        ) as node:
            workers = start_hosts(node, 3, row)
            if workers is None:
                return row
            victim = workers[1]
            machine = node.worker_machine(victim)  # its celery process exists: it said it is ready
            started = time.monotonic()
            for i, name in enumerate(names):
                drop(node, name, n, seed=i)

            held = []

            def victim_at_work():
                # The victim holds a batch and has done part of it: mid-study. It is killed
                # at once, while it holds it (a second look would leave it time to let go:
                # killed between two steps, its batch is the sweeper's, not recovery's).
                if node.query("SELECT count(*) FROM main_image WHERE status <> %s", "NEW")[0][0] == 0:
                    return False
                # Its own lease or its reservation of a step's message; not a hand-over it
                # queued (that message is in Redis, for any worker to take).
                held[:] = node.query(
                    "SELECT uid, status FROM main_batch WHERE lease_owner LIKE %s AND lease_owner NOT LIKE %s "
                    "AND status <> %s",
                    f"{machine}:%",
                    f"{machine}:%:q%",
                    "DONE",
                )
                if held:
                    node.kill_worker(victim)
                return bool(held)

            if not node.wait(victim_at_work, timeout=timeout, interval=0.05):
                row.notes.append("the victim never held a batch")
                row.diagnostics = node.diagnostics()
                return row
            killed = time.monotonic() - started
            row.notes.append(f"killed holding {held}")
            finish(row, node, orthanc, names, studies * n, started, timeout)
            row.recovery = round(row.seconds - killed, 1)
            return row
    finally:
        redis.stop()


def kill_host_holding_a_message(tmp, orthanc, n, timeout=120, lease_seconds=10):
    """Two workers as on two hosts; the first to take a step's message (queued with the
    batch's lease) dies at once, before the step runs, with the message unacknowledged in
    Redis for an hour. The other finds the lapsed reservation and runs the step.
    row.recovery: seconds from the death to the batch DONE (a short lease: what is measured
    is that the lease, not the sweeper or the broker, brings the batch back)."""
    orthanc.clear()
    marker = Path(tmp) / "crash.marker"
    redis = Redis(Path(tmp) / "redis").start()
    row = Row("worker (host) SIGKILL holding a step's message", n)
    try:
        with Node(
            tmp,
            "postgres",
            "redis",
            workers=1,
            ORTHANC_URL=orthanc.url,
            CELERY_BROKER_URL=redis.url,
            start_worker=False,
            SENDIT_CRASH_AT="reserved",
            SENDIT_CRASH_MARKER=marker,
            BATCH_LEASE_SECONDS=lease_seconds,
            LEASE_HEARTBEAT_SECONDS=lease_seconds / 5,
            **PRODUCTION_RECOVERY,
        ) as node:
            if start_hosts(node, 2, row) is None:
                return row
            started = time.monotonic()
            drop(node, "M", n)
            if not node.wait(marker.exists, timeout=timeout, interval=0.1):
                row.notes.append(f"the crash point was never reached; batches={node.batches()}")
                row.diagnostics = node.diagnostics()
                return row
            killed = time.monotonic() - started
            finish(row, node, orthanc, ["M"], n, started, timeout)
            row.recovery = round(row.seconds - killed, 1)
            return row
    finally:
        redis.stop()


def kill_watcher(tmp, orthanc, n, database="postgres", broker="redis", timeout=240):
    """SIGKILL the watcher; studies arrive while it is down; restart it: none is missed."""
    orthanc.clear()
    redis = Redis(Path(tmp) / "redis").start() if broker == "redis" else None
    extra = {"CELERY_BROKER_URL": redis.url} if redis else {}
    row = Row("watcher SIGKILL, studies dropped while down", 2 * n)
    try:
        with Node(
            tmp,
            database,
            "filesystem" if broker == "filesystem" else "redis",
            workers=2,
            ORTHANC_URL=orthanc.url,
            **FAST_RECOVERY,
            **extra,
        ) as node:
            started = time.monotonic()
            drop(node, "W1", n, seed=1)
            node.wait(lambda: "W1" in node.batches(), timeout=60)
            node.kill_watcher()
            drop(node, "W2", n, seed=2)
            (node.data / "W3.tmp9").mkdir()  # still arriving when the watcher comes back
            make_ct_series(node.data / "W3.tmp9", n, patient_id="CHAOS-W3", seed=3)
            node.start_watcher()
            time.sleep(2)
            (node.data / "W3.tmp9").rename(node.data / "W3")
            row.images_in = 3 * n
            return finish(row, node, orthanc, ["W1", "W2", "W3"], 3 * n, started, timeout)
    finally:
        if redis:
            redis.stop()


def restart_redis(tmp, orthanc, n, database="postgres", timeout=240):
    """Kill Redis (no persistence: every queued and unacknowledged task is lost) mid-run."""
    orthanc.clear()
    redis = Redis(Path(tmp) / "redis").start()
    row = Row("Redis SIGKILL + restart mid-run", 2 * n)
    try:
        with Node(
            tmp, database, "redis", workers=2, ORTHANC_URL=orthanc.url, CELERY_BROKER_URL=redis.url, **FAST_RECOVERY
        ) as node:
            started = time.monotonic()
            drop(node, "R1", n, seed=1)
            drop(node, "R2", n, seed=2)
            node.wait(lambda: any(v[0] != "NEW" for v in node.batches().values()), timeout=60)
            redis.kill()
            time.sleep(2)
            redis.start()  # same port, empty
            # celery/kombu 5.7 can exit with "Unrecoverable error: AttributeError" in
            # restore_unacked when the broker vanishes; deployments restart the worker
            # (docker-compose restart: unless-stopped), and so does this scenario.
            time.sleep(3)
            if node.worker is not None and node.worker.poll() is not None:
                row.notes.append("worker exited on broker loss (kombu), restarted")
                node.start_worker()
            return finish(row, node, orthanc, ["R1", "R2"], 2 * n, started, timeout)
    finally:
        redis.stop()


def duplicate_tasks(tmp, orthanc, n, database="postgres", timeout=240):
    """Every step delivered several times at once (a sweeper and a redelivery racing)."""
    orthanc.clear()
    redis = Redis(Path(tmp) / "redis").start()
    row = Row("each step queued 3x at once (2 workers)", n)
    try:
        with Node(
            tmp, database, "redis", workers=2, ORTHANC_URL=orthanc.url, CELERY_BROKER_URL=redis.url, **FAST_RECOVERY
        ) as node:
            started = time.monotonic()
            drop(node, "D", n)
            node.wait(lambda: "D" in node.batches(), timeout=60)
            [(batch_id,)] = node.query("SELECT id FROM main_batch WHERE uid = %s", "D")
            code = (
                "import django;django.setup();from sendit.apps.main.tasks import *;"
                f"[t.delay({batch_id}) for t in (get_identifiers, replace_identifiers, upload_storage, cleanup) "
                "for _ in range(3)]"
            )
            subprocess.run(
                [os.sys.executable, "-c", code],
                cwd=str(Path(__file__).parents[2]),
                env=node.env,
                check=True,
                capture_output=True,
                timeout=60,
            )
            return finish(row, node, orthanc, ["D"], n, started, timeout)
    finally:
        redis.stop()


def print_table(rows, out=None):
    import sys

    out = out or sys.stdout
    head = (
        f"{'scenario':44} {'in':>6} {'delivered':>9} {'duplicates':>10} {'resent':>6} {'seconds':>7} "
        f"{'recovery':>8}  result"
    )
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        print(
            f"{r.scenario:44} {r.images_in:6d} {r.delivered:9d} {r.duplicates:10d} {r.resent:6d} "
            f"{r.seconds:7.1f} {r.recovery:8.1f}  {r.result}{'  ' + '; '.join(r.notes) if r.notes else ''}",
            file=out,
        )
