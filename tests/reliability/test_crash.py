"""SIGKILL of the worker at each step, of the watcher, and of Redis: every image delivered
exactly once, every batch DONE. Scaled down (scripts/chaos.py runs the full size)."""
import shutil

import pytest

from tests.reliability import scenarios

from tests.services import reachable

pytestmark = pytest.mark.e2e




needs_stack = pytest.mark.skipif(not (reachable(5432) and shutil.which("redis-server")),
                                 reason="PostgreSQL is not running or redis-server is not installed")


def check(row):
    assert row.result == "PASS", row
    assert row.delivered == row.images_in and row.duplicates == 0


@needs_stack
@pytest.mark.parametrize("step", ["import", "deidentify", "send", "cleanup"])
def test_worker_killed_during_a_step(tmp_path, orthanc_server, step):
    check(scenarios.kill_worker_at(tmp_path, orthanc_server, step, n=220, timeout=180))


def test_worker_killed_on_sqlite_and_filesystem_broker(tmp_path, orthanc_server):
    """The filesystem broker forgets a taken task when the worker dies: the sweeper finds it."""
    check(scenarios.kill_worker_at(tmp_path, orthanc_server, "send", n=30, database="sqlite",
                                   broker="filesystem", timeout=180))


@needs_stack
def test_watcher_killed_misses_no_folder(tmp_path, orthanc_server):
    check(scenarios.kill_watcher(tmp_path, orthanc_server, n=10, timeout=180))


@needs_stack
def test_redis_restarted_mid_run_loses_no_batch(tmp_path, orthanc_server):
    check(scenarios.restart_redis(tmp_path, orthanc_server, n=150, timeout=180))


@needs_stack
def test_duplicate_deliveries_of_every_step(tmp_path, orthanc_server):
    check(scenarios.duplicate_tasks(tmp_path, orthanc_server, n=60, timeout=180))
