"""The watcher: which folders are finished, queued exactly once, on inotify and polling."""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sendit.apps.main.importer import is_finished_name
from sendit.apps.watcher.watcher import FolderWatcher

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name,finished", [
    ("ST-000001", True), ("ST-000001.tmp2343", False), ("ST.TMPabc", False), ("ST.tmp", False),
    ("1.2.840.113619.2", True), ("ST-000001.err", False), ("ST.err2", False), (".hidden", False),
])
def test_finished_names(name, finished):
    assert is_finished_name(name) is finished


class Running:
    """A FolderWatcher in a thread, recording what it queues."""

    def __init__(self, root, polling=False, settle=0.5, interval=0.2):
        self.queued = []
        self.watcher = FolderWatcher(root, self.queued.append, settle=settle,
                                     polling=polling, poll_interval=0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watcher.run_forever, args=(self.stop,),
                                       kwargs={"interval": interval}, daemon=True)

    def __enter__(self):
        self.thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.watcher.wake.set()
        self.thread.join(10)

    def wait_for(self, count, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.queued) < count:
            time.sleep(0.05)
        time.sleep(1.0)  # and nothing more arrives
        return [Path(p).name for p in self.queued]


def fill(folder, n=3):
    folder.mkdir()
    for i in range(n):
        (folder / f"image{i}.dcm").write_bytes(b"x" * 1000)


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_rename_from_tmp_queues_once(tmp_path, polling):
    with Running(tmp_path, polling=polling) as run:
        fill(tmp_path / "ST-000001.tmp2343")
        time.sleep(0.6)
        assert run.queued == []
        (tmp_path / "ST-000001.tmp2343").rename(tmp_path / "ST-000001")
        assert run.wait_for(1) == ["ST-000001"]


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_a_rename_is_queued_as_it_happens_not_at_the_next_tick(tmp_path, polling):
    with Running(tmp_path, polling=polling, interval=60) as run:
        fill(tmp_path / "ST-000003.tmp1")
        time.sleep(0.6)  # seen arriving by the poller too, so that it sees a rename
        (tmp_path / "ST-000003.tmp1").rename(tmp_path / "ST-000003")
        assert run.wait_for(1, timeout=20) == ["ST-000003"]


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_plain_mkdir_is_queued_once_after_it_settles(tmp_path, polling):
    with Running(tmp_path, polling=polling, settle=1.0) as run:
        folder = tmp_path / "ST-000002"
        folder.mkdir()
        for i in range(5):  # still being written: not yet
            (folder / f"f{i}.dcm").write_bytes(b"x")
            time.sleep(0.2)
        assert run.queued == []
        assert run.wait_for(1) == ["ST-000002"]


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_writes_deep_inside_a_settling_folder_hold_it_back(tmp_path, polling):
    """Only the data folder is watched; a tree still growing below it keeps it pending."""
    with Running(tmp_path, polling=polling, settle=1.0) as run:
        deep = tmp_path / "ST-000003" / "series1" / "part"
        deep.mkdir(parents=True)
        for i in range(8):  # 1.6 s of writes, each well inside the settle time
            (deep / f"f{i}.dcm").write_bytes(b"x")
            time.sleep(0.2)
        assert run.queued == []
        assert run.wait_for(1) == ["ST-000003"]


def test_a_copy_keeping_old_modification_times_still_holds_a_folder_back(tmp_path):
    """cp -p / rsync -a set old mtimes; the inode change times still show the copy going on."""
    with Running(tmp_path, settle=1.0) as run:
        folder = tmp_path / "ST-000004"
        folder.mkdir()
        for i in range(8):
            path = folder / f"f{i}.dcm"
            path.write_bytes(b"x")
            os.utime(path, (0, 0))  # 1970, as a preserving copy of an old file would leave it
            os.utime(folder, (0, 0))
            time.sleep(0.2)
        assert run.queued == []
        assert run.wait_for(1) == ["ST-000004"]


def test_folders_finished_while_down_are_queued_at_start(tmp_path):
    fill(tmp_path / "A")
    fill(tmp_path / "B.tmp1")
    fill(tmp_path / "C.err")
    with Running(tmp_path) as run:
        assert run.wait_for(1) == ["A"]


def test_a_name_gone_and_back_is_queued_again(tmp_path):
    with Running(tmp_path) as run:
        fill(tmp_path / "S.tmp1")
        (tmp_path / "S.tmp1").rename(tmp_path / "S")
        assert run.wait_for(1) == ["S"]
        for f in (tmp_path / "S").iterdir():
            f.unlink()
        (tmp_path / "S").rmdir()  # imported and removed
        time.sleep(0.5)
        fill(tmp_path / "S.tmp2")
        (tmp_path / "S.tmp2").rename(tmp_path / "S")
        assert run.wait_for(2) == ["S", "S"]


def manage(*args, env):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_watcher_start_and_stop_commands(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "sendit.settings", "LOCKDOWN_ENABLED": "false",
           "DATA_FOLDER": str(tmp_path / "data"), "WATCHER_PID_FILE": str(tmp_path / "watcher.pid"),
           "WATCHER_LOG_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
           "CELERY_BROKER_URL": "filesystem://", "VAR_DIR": str(tmp_path / "var")}
    (tmp_path / "data").mkdir()
    assert manage("migrate", env=env).returncode == 0
    stopped = manage("watcher_stop", env=env)
    assert stopped.returncode != 0 and "not running" in stopped.stderr

    started = manage("watcher_start", env=env)
    assert started.returncode == 0, started.stderr
    assert "watcher started" in started.stdout
    try:
        pid = int((tmp_path / "watcher.pid").read_text())
        os.kill(pid, 0)
        again = manage("start_watcher", env=env)
        assert again.returncode != 0 and "already running" in again.stderr
        fill(tmp_path / "data" / "ST.tmp9")
        time.sleep(1)
        (tmp_path / "data" / "ST.tmp9").rename(tmp_path / "data" / "ST")
        deadline = time.monotonic() + 15
        out = ""
        while time.monotonic() < deadline and "FINISHED ST queued" not in out:
            time.sleep(0.2)
            out = (tmp_path / "watcher.out").read_text()
        assert "NOTFINISHED ST.tmp9" in out and "FINISHED ST queued" in out
    finally:
        result = manage("stop_watcher", env=env)
    assert result.returncode == 0 and "stopped" in result.stdout
    assert not (tmp_path / "watcher.pid").exists()
    status = manage("shell", "-c", "from sendit.apps.watcher.daemon import status; print(status()['running'])", env=env)
    assert status.stdout.strip().splitlines()[-1] == "False"  # the heartbeat says it stopped
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
