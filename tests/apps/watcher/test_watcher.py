"""The watcher: which folders are finished, queued exactly once, on inotify and polling."""

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from sendit.apps.main.importer import is_finished_name
from sendit.apps.watcher import daemon
from sendit.apps.watcher.watcher import FolderWatcher

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "name,finished",
    [
        ("ST-000001", True),
        ("ST-000001.tmp2343", False),
        ("ST.TMPabc", False),
        ("ST.tmp", False),
        ("1.2.840.113619.2", True),
        ("ST-000001.err", False),
        ("ST.err2", False),
        (".hidden", False),
    ],
)
def test_finished_names(name, finished):
    assert is_finished_name(name) is finished


def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for `condition` (a real filesystem event to arrive), polling briefly; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


SETTLE = 60.0  # on the test clock; a test runs for far less real time than this


class FakeClock:
    """A clock that moves only when the test moves it: settling takes no real time."""

    def __init__(self) -> None:
        self.mono = 1000.0  # never 0.0, which the watcher's pending folders use for "now"
        self.wall = time.time()

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        # The wall clock first: a tick that reads the new monotonic time reads the new wall time too.
        self.wall += seconds
        self.mono += seconds


class CountingWatcher(FolderWatcher):
    """A FolderWatcher that tells when a tick ends, so that a test waits for one instead of sleeping."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ticked = threading.Condition()
        self.last_tick: float | None = None  # the clock when the last finished tick began

    def tick(self) -> None:
        began = self.clock.monotonic()
        super().tick()
        with self.ticked:
            self.last_tick = began
            self.ticked.notify_all()


class Running:
    """A FolderWatcher in a thread on a FakeClock, recording what it queues.

    Filesystem events are real (inotify or polling), and waited for with a deadline;
    settle periods pass on the clock.
    """

    MARKER = "zz-marker-"

    def __init__(self, root: Path, polling: bool = False, settle: float = SETTLE, interval: float = 0.2) -> None:
        self.root = Path(root)
        self.clock = FakeClock()
        self.queued: list[str] = []
        self.markers = 0
        self.watcher = CountingWatcher(
            root, self.queued.append, settle=settle, polling=polling, poll_interval=0.1, clock=self.clock
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self.watcher.run_forever, args=(self.stop,), kwargs={"interval": interval}, daemon=True
        )

    def __enter__(self) -> "Running":
        self.thread.start()
        until(lambda: self.watcher.last_tick is not None, "the watcher to start")  # watching, scan done
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.watcher.wake.set()
        self.thread.join(10)
        for marker in self.root.glob(self.MARKER + "*"):
            marker.rmdir()

    def tick(self) -> None:
        """Wake the watcher and wait for a tick that read the clock as it is now."""
        now = self.clock.monotonic()
        with self.watcher.ticked:
            self.watcher.wake.set()
            assert self.watcher.ticked.wait_for(lambda: (self.watcher.last_tick or 0.0) >= now, timeout=10)

    def advance(self, seconds: float) -> None:
        """Move the clock on `seconds`, and wait for the watcher to tick with it."""
        self.clock.advance(seconds)
        self.tick()

    def pending(self, name: str) -> bool:
        with self.watcher.lock:
            return name in self.watcher.pending

    def names(self) -> list[str]:
        return [Path(p).name for p in list(self.queued) if not Path(p).name.startswith(self.MARKER)]

    def write(self, path: Path) -> None:
        """Write a file now by the test clock (its modification time set to the clock's)."""
        path.write_bytes(b"x")
        os.utime(path, (self.clock.time(), self.clock.time()))

    def settled(self) -> list[str]:
        """The names queued once every change made so far has been seen and has settled.

        A marker folder made now is seen after every earlier change (events are handled in
        order); the clock is moved past the settle time until the marker is queued, so that
        whatever those changes would queue is queued by then. No fixed sleep.
        """
        self.markers += 1
        marker = self.root / f"{self.MARKER}{self.markers}"
        marker.mkdir()
        deadline = time.monotonic() + 10
        while marker.name not in [Path(p).name for p in list(self.queued)]:
            assert time.monotonic() < deadline, "timed out waiting for the marker folder"
            self.advance(self.watcher.settle + 1)
            time.sleep(0.01)
        return self.names()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[str]:
        """Wait (without waking the watcher) until `count` folders are queued; then all it queues."""
        until(lambda: len(self.names()) >= count, f"{count} folder(s) queued", timeout)
        return self.settled()


def fill(folder, n=3):
    folder.mkdir()
    for i in range(n):
        (folder / f"image{i}.dcm").write_bytes(b"x" * 1000)


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_rename_from_tmp_queues_once(tmp_path, polling):
    with Running(tmp_path, polling=polling) as run:
        fill(tmp_path / "ST-000001.tmp2343")
        assert run.settled() == []  # however long it waits
        (tmp_path / "ST-000001.tmp2343").rename(tmp_path / "ST-000001")
        assert run.wait_for(1) == ["ST-000001"]


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_a_rename_is_queued_as_it_happens_not_at_the_next_tick(tmp_path, polling):
    with Running(tmp_path, polling=polling, interval=60) as run:
        fill(tmp_path / "ST-000003.tmp1")
        run.settled()  # seen arriving by the poller too, so that it sees a rename
        (tmp_path / "ST-000003.tmp1").rename(tmp_path / "ST-000003")
        assert run.wait_for(1) == ["ST-000003"]  # within 10 s; the next tick is 60 s away


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_plain_mkdir_is_queued_once_after_it_settles(tmp_path, polling):
    with Running(tmp_path, polling=polling) as run:
        folder = tmp_path / "ST-000002"
        folder.mkdir()
        until(lambda: run.pending("ST-000002"), "the folder's creation to be seen")
        for i in range(5):  # a file every third of the settle time: still being written, not yet
            run.write(folder / f"f{i}.dcm")
            run.advance(SETTLE / 3)
        run.advance(SETTLE * 2 / 3 - 1)  # a second short of the settle time since the last file
        assert run.queued == []
        run.advance(2)
        assert run.names() == ["ST-000002"]
        assert run.settled() == ["ST-000002"]


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_writes_deep_inside_a_settling_folder_hold_it_back(tmp_path, polling):
    """Only the data folder is watched; a tree still growing below it keeps it pending."""
    with Running(tmp_path, polling=polling) as run:
        deep = tmp_path / "ST-000003" / "series1" / "part"
        deep.mkdir(parents=True)
        until(lambda: run.pending("ST-000003"), "the folder's creation to be seen")
        for i in range(5):  # a file every third of the settle time, deep inside
            run.write(deep / f"f{i}.dcm")
            run.advance(SETTLE / 3)
        run.advance(SETTLE * 2 / 3 - 1)
        assert run.queued == []
        run.advance(2)
        assert run.names() == ["ST-000003"]
        assert run.settled() == ["ST-000003"]


def test_a_copy_keeping_old_modification_times_still_holds_a_folder_back(tmp_path):
    """cp -p / rsync -a set old mtimes; the inode change times still show the copy going on."""
    with Running(tmp_path) as run:
        folder = tmp_path / "ST-000004"
        folder.mkdir()
        until(lambda: run.pending("ST-000004"), "the folder's creation to be seen")
        for i in range(3):
            path = folder / f"f{i}.dcm"
            path.write_bytes(b"x")
            os.utime(path, (0, 0))  # 1970, as a preserving copy of an old file would leave it
            os.utime(folder, (0, 0))
        changed = max(os.stat(p).st_ctime for p in (folder, *folder.iterdir()))
        run.clock.wall = changed + SETTLE / 2  # its inodes changed half a settle time ago...
        run.clock.mono += SETTLE  # ...though it was made a settle time ago
        run.tick()
        assert run.queued == []
        run.advance(SETTLE)
        assert run.names() == ["ST-000004"]
        assert run.settled() == ["ST-000004"]


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
        until(lambda: "S" not in run.watcher.queued, "the removal to be seen")
        fill(tmp_path / "S.tmp2")
        (tmp_path / "S.tmp2").rename(tmp_path / "S")
        assert run.wait_for(2) == ["S", "S"]


def manage(*args, env):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_watcher_start_and_stop_commands(tmp_path, settings):
    """The daemon is a real process started by manage.py; the commands that only read its pid
    file and signal it run in this process (a Django start-up each saved)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sendit.settings",
        "LOCKDOWN_ENABLED": "false",
        "DATA_FOLDER": str(tmp_path / "data"),
        "WATCHER_PID_FILE": str(tmp_path / "watcher.pid"),
        "WATCHER_LOG_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "CELERY_BROKER_URL": "filesystem://",
        "VAR_DIR": str(tmp_path / "var"),
    }
    settings.WATCHER_PID_FILE = env["WATCHER_PID_FILE"]
    (tmp_path / "data").mkdir()
    assert manage("migrate", "--skip-checks", env=env).returncode == 0  # watcher_start runs the checks
    with pytest.raises(CommandError, match="not running"):
        call_command("watcher_stop")

    started = manage("watcher_start", env=env)
    assert started.returncode == 0, started.stderr
    assert "watcher started" in started.stdout
    try:
        pid = int((tmp_path / "watcher.pid").read_text())
        os.kill(pid, 0)
        with pytest.raises(CommandError, match="already running"):
            call_command("start_watcher")

        def log() -> str:
            path = tmp_path / "watcher.out"
            return path.read_text() if path.exists() else ""

        until(lambda: "watching" in log(), "the daemon to watch", timeout=15)
        fill(tmp_path / "data" / "ST.tmp9")
        until(lambda: "NOTFINISHED ST.tmp9" in log(), "the .tmp folder to be seen")
        (tmp_path / "data" / "ST.tmp9").rename(tmp_path / "data" / "ST")
        until(lambda: "FINISHED ST queued" in log(), "the folder to be queued", timeout=15)
    finally:
        out = StringIO()
        call_command("stop_watcher", stdout=out)
    assert "stopped" in out.getvalue()
    assert not (tmp_path / "watcher.pid").exists()
    assert daemon.exited(pid)
    status = manage(
        "shell",
        "-c",
        "from sendit.apps.watcher.daemon import status; "
        "from sendit.apps.watcher.models import Heartbeat; "
        "print(status()['running'], Heartbeat.objects.get(name='watcher').stopped)",
        env=env,
    )
    assert status.stdout.strip().splitlines()[-1] == "False True"  # the heartbeat says it stopped
