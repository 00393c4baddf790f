"""Watch the data folder and queue each finished study folder for import, once.

watchdog gives inotify on Linux and a polling observer for mounts where inotify sees
nothing (NFS, many bind mounts). pyinotify, which the original sendit used, is unmaintained since
2015 and imports asyncore, which Python 3.12 removed.
"""

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from sendit.apps.main.importer import is_finished_name
from sendit.redact import RedactFilter

logger = logging.getLogger("sendit.watcher")
# Folder names are the sender's: each line is written on one line, control characters and
# bytes that are not UTF-8 escaped, whichever handlers the watcher's process gives it.
logger.addFilter(RedactFilter())


class Clock(Protocol):
    """Where the watcher reads the time: tests hand it one they move on instead of sleeping."""

    def monotonic(self) -> float:
        """Seconds for measuring intervals, as time.monotonic()."""

    def time(self) -> float:
        """Seconds since the epoch, to compare with file times, as time.time()."""


class SystemClock:
    """The real clock, the watcher's unless it is handed another."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


SYSTEM_CLOCK = SystemClock()


class FolderWatcher(FileSystemEventHandler):
    """Decide when a top-level folder of the data folder is finished, and queue it once.

    A rename from NAME.tmpXXX to NAME is queued at once; a folder made directly with
    its final name is queued when nothing has changed inside it for `settle` seconds.

    Only the data folder itself is watched, not the trees below it: a study copied in
    raises several events per file, and handling them all made the watcher a noticeable
    share of the node's CPU. Whether a settling folder is quiet is read from the newest
    modification time in its tree, at each tick, for the few folders that settle.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        queue: Callable[[str], object],
        settle: float = 1.0,
        polling: bool = False,
        poll_interval: float = 2.0,
        clock: Clock = SYSTEM_CLOCK,
    ):
        self.root = Path(root).resolve()
        self.clock = clock
        self._prefix = str(self.root) + os.sep
        self.queue = queue
        self.settle = settle
        self.polling = polling
        self.poll_interval = poll_interval
        self.pending: dict[str, float] = {}  # top-level folder name -> time it last changed
        self.queued: set[str] = set()
        self.lock = threading.Lock()
        self.wake = threading.Event()  # set when a folder is ready now: tick at once
        self.observer: BaseObserver | None = None

    # -- events -------------------------------------------------------------
    def _where(self, path):
        """(top-level name, True when `path` is that top-level entry itself), or (None, False).

        Plain string work, no lookups on disk: watchdog builds event paths from the
        (resolved) root it was given.
        """
        if not path or not path.startswith(self._prefix):
            return None, False
        top, sep, _rest = path[len(self._prefix) :].partition(os.sep)
        return (top or None), not sep

    def on_any_event(self, event):
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        src_top, src_is_top = self._where(event.src_path)
        dest_top, dest_is_top = self._where(getattr(event, "dest_path", "") or "") if kind == "moved" else (None, False)
        # A study folder that is a symbolic link arrives as a file event: it is queued too, so
        # that the import records it (and sets it aside) instead of skipping it unseen.
        link = os.path.islink(event.dest_path if dest_is_top else event.src_path)
        top_dir_event = (
            (event.is_directory or link or kind == "deleted") and (src_is_top or dest_is_top) and kind != "modified"
        )
        if not top_dir_event:
            return  # a file, or a folder's own change: settling is judged at the tick
        logger.info("EVENT %s %s", kind, dest_top if dest_is_top else src_top)
        with self.lock:
            if kind in ("deleted", "moved") and src_is_top:
                # Gone (imported, set aside, or renamed): a later folder of that name is new.
                self.queued.discard(src_top)
                self.pending.pop(src_top, None)
            if kind == "moved" and dest_is_top:
                self._consider(dest_top, immediate=True)
            elif kind == "created" and src_is_top:
                self._consider(src_top, immediate=False)

    def _consider(self, name, immediate):
        if not is_finished_name(name):
            logger.info("NOTFINISHED %s", name)
            return
        if name in self.queued:
            return
        self.pending[name] = 0.0 if immediate else self.clock.monotonic()
        if immediate:
            self.wake.set()

    # -- decisions ----------------------------------------------------------
    def scan(self):
        """Queue folders that finished while the watcher was not running."""
        with self.lock:
            for path in sorted(self.root.iterdir()):
                if path.is_dir() and path.name not in self.queued:  # a link to a folder too: recorded
                    self._consider(path.name, immediate=True)
        self.tick()

    def rescan(self, older_than):
        """Queue again finished folders still waiting after `older_than` seconds.

        A folder stays in the data folder until its import runs; one still there long
        after it was queued lost its import (a broker restart): queue it again. The
        import is idempotent, so a slow queue only costs a no-op.
        """
        now = self.clock.time()
        with self.lock:
            for path in sorted(self.root.iterdir()):
                name = path.name
                if not path.is_dir() or path.is_symlink() or name in self.pending:
                    continue
                if not is_finished_name(name):
                    continue
                try:
                    age = now - path.stat().st_mtime
                except OSError:
                    continue
                if name not in self.queued or age > older_than:
                    if name in self.queued:
                        logger.info("REQUEUE %s still waiting", name)
                    self.queued.discard(name)
                    self.pending[name] = 0.0
        self.tick()

    def tick(self):
        """Queue every pending folder that has been quiet long enough."""
        now = self.clock.monotonic()
        with self.lock:
            settling = [n for n, t in self.pending.items() if t != 0.0 and now - t >= self.settle]
            ready = [n for n, t in self.pending.items() if t == 0.0]
        for name in settling:
            quiet = self.clock.time() - newest_change(self.root / name)
            if quiet >= self.settle:
                ready.append(name)
            else:
                with self.lock:
                    if name in self.pending:
                        self.pending[name] = now - quiet  # look again `settle` after that change
        for name in ready:
            path = self.root / name
            with self.lock:
                self.pending.pop(name, None)
                if name in self.queued or not path.is_dir():
                    continue
            try:
                self.queue(str(path))
            except Exception as exc:  # broker down: try again on the next tick
                logger.error("QUEUEFAILED %s (%s)", name, type(exc).__name__)
                with self.lock:
                    self.pending[name] = now
                continue
            with self.lock:
                self.queued.add(name)
            logger.info("FINISHED %s queued for import", name)

    # -- running ------------------------------------------------------------
    def start(self):
        self.root.mkdir(parents=True, exist_ok=True)
        observer_class = PollingObserver if self.polling else Observer
        self.observer = observer = observer_class(timeout=self.poll_interval) if self.polling else observer_class()
        observer.schedule(self, str(self.root), recursive=False)
        observer.start()
        logger.info("watching %s (%s)", self.root, "polling" if self.polling else "inotify")
        self.scan()

    def stop(self):
        if self.observer:
            self.observer.stop()
            self.observer.join(timeout=10)

    def run_forever(self, stop_event=None, periodic=None, period=60.0, interval=0.2):
        """Run until stop_event is set; call periodic() every `period` seconds; look at
        settling folders every `interval` seconds."""
        self.start()
        last = self.clock.monotonic()
        try:
            while not (stop_event and stop_event.is_set()):
                self.wake.clear()
                self.tick()
                if periodic and self.clock.monotonic() - last >= period:
                    last = self.clock.monotonic()
                    try:
                        periodic(self)
                    except Exception as exc:
                        logger.error("periodic check failed (%s)", type(exc).__name__)
                # A rename is queued as it happens, not at the next tick: a study's import
                # then starts within milliseconds of its arrival.
                self.wake.wait(interval)
        finally:
            self.stop()


def newest_change(folder) -> float:
    """The newest change time of `folder` and everything below it (0 when gone).

    The inode change time as well as the modification time: a copy that keeps the
    source's modification times (cp -p, rsync -a) still changes every inode it writes.
    """
    newest, stack = 0.0, [str(folder)]
    try:
        info = os.stat(folder, follow_symlinks=False)
    except OSError:
        return newest
    newest = max(info.st_mtime, info.st_ctime)
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                        newest = max(newest, info.st_mtime, info.st_ctime)
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                    except OSError:
                        continue
        except OSError:
            continue
    return newest
