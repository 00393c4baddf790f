"""SIGKILL of the worker at each step, of the watcher, and of Redis: every image delivered
exactly once, every batch DONE. Scaled down (scripts/chaos.py runs the full size).

The worker crashes run with the production recovery settings (lease 60 s, heartbeat 15 s,
sweep after 900 s, Redis visibility 3600 s) and assert how soon the batches finish: a
restarted worker resumes them itself (sendit.apps.main.recovery), and the surviving workers
of other hosts take a dead host's batches over once its leases lapse."""

import shutil

import pytest

from tests.reliability import scenarios
from tests.services import reachable

pytestmark = pytest.mark.e2e

# Seconds from a killed worker's restart to its batch DONE (the bound: within 30 s).
RESTART_BOUND = 30
# Seconds from one of three workers' death to every batch DONE on the two others.
OTHER_HOSTS_BOUND = 120

needs_stack = pytest.mark.skipif(
    not (reachable(5432) and shutil.which("redis-server")),
    reason="PostgreSQL is not running or redis-server is not installed",
)


def check(row):
    scenarios.print_table([row])  # shown with pytest -s: the recovery times measured
    if row.diagnostics:  # pytest shows a failed test's captured output: logs, broker folder
        print(row.diagnostics)
    assert row.result == "PASS", row
    assert row.delivered == row.images_in and row.duplicates == 0


@needs_stack
@pytest.mark.parametrize("broker", ["redis", "filesystem"])
@pytest.mark.parametrize("step", ["import", "deidentify", "send", "cleanup"])
def test_worker_killed_during_a_step_resumes_within_30s_of_its_restart(tmp_path, orthanc_server, step, broker):
    row = scenarios.kill_worker_at(tmp_path, orthanc_server, step, n=220, broker=broker, timeout=180)
    check(row)
    assert row.recovery <= RESTART_BOUND, row


def test_worker_killed_on_sqlite_and_filesystem_broker(tmp_path, orthanc_server):
    """The filesystem broker forgets a taken task when the worker dies: the restarted
    worker queues the batch's next step again itself."""
    row = scenarios.kill_worker_at(
        tmp_path, orthanc_server, "send", n=30, database="sqlite", broker="filesystem", timeout=180
    )
    check(row)
    assert row.recovery <= RESTART_BOUND, row


@needs_stack
@pytest.mark.skipif(not shutil.which("unshare"), reason="unshare (util-linux) is not installed")
def test_one_of_three_workers_killed_other_hosts_finish_within_2_minutes(tmp_path, orthanc_server):
    row = scenarios.kill_one_of_three_workers(tmp_path, orthanc_server, studies=6, n=40, timeout=300)
    check(row)
    assert row.recovery <= OTHER_HOSTS_BOUND, row


@needs_stack
@pytest.mark.skipif(not shutil.which("unshare"), reason="unshare (util-linux) is not installed")
def test_a_host_killed_holding_a_steps_message_is_resumed_once_its_reservation_lapses(tmp_path, orthanc_server):
    """Between two steps the batch is held by the next step's message; a host that took the
    message and died holds it no longer than a lease (10 s here), not until Redis gives the
    message back (an hour) or the sweeper looks (15 minutes)."""
    row = scenarios.kill_host_holding_a_message(tmp_path, orthanc_server, n=20, timeout=120, lease_seconds=10)
    check(row)
    assert row.recovery <= 10 + 20, row  # the lease, two recovery passes, the remaining steps


@needs_stack
def test_watcher_killed_misses_no_folder(tmp_path, orthanc_server):
    check(scenarios.kill_watcher(tmp_path, orthanc_server, n=10, timeout=180))


@needs_stack
def test_redis_restarted_mid_run_loses_no_batch(tmp_path, orthanc_server):
    check(scenarios.restart_redis(tmp_path, orthanc_server, n=150, timeout=180))


@needs_stack
def test_duplicate_deliveries_of_every_step(tmp_path, orthanc_server):
    check(scenarios.duplicate_tasks(tmp_path, orthanc_server, n=60, timeout=180))
