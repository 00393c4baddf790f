"""Watch the data folder and queue each finished study folder for import, once.

watchdog gives inotify on Linux and a polling observer for mounts where inotify sees
nothing (NFS, many bind mounts). pyinotify, which the seed used, is unmaintained since
2015 and imports asyncore, which Python 3.12 removed.
"""
import logging
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from sendit.apps.main.importer import is_finished_name

logger = logging.getLogger("sendit.watcher")


class FolderWatcher(FileSystemEventHandler):
    """Decide when a top-level folder of the data folder is finished, and queue it once.

    A rename from NAME.tmpXXX to NAME is queued at once; a folder made directly with
    its final name is queued when nothing has changed inside it for `settle` seconds.
    """

    def __init__(self, root, queue, settle=1.0, polling=False, poll_interval=2.0):
        self.root = Path(root).resolve()
        self.queue = queue
        self.settle = settle
        self.polling = polling
        self.poll_interval = poll_interval
        self.pending = {}  # top-level folder name -> time it last changed
        self.queued = set()
        self.lock = threading.Lock()
        self.observer = None

    # -- events -------------------------------------------------------------
    def _top(self, path):
        try:
            relative = Path(path).resolve().relative_to(self.root)
        except (ValueError, OSError):
            return None
        return relative.parts[0] if relative.parts else None

    def on_any_event(self, event):
        if event.event_type in ("opened", "closed_no_write"):
            return
        src_top = self._top(event.src_path)
        dest_top = self._top(getattr(event, "dest_path", "") or "") if event.event_type == "moved" else None
        is_top_dir = event.is_directory and src_top is not None and Path(event.src_path).resolve().parent == self.root
        if is_top_dir or (dest_top and event.is_directory and Path(event.dest_path).resolve().parent == self.root):
            logger.info("EVENT %s %s", event.event_type, dest_top or src_top)
        with self.lock:
            if event.event_type in ("deleted", "moved") and is_top_dir:
                # Gone (imported, set aside, or renamed): a later folder of that name is new.
                self.queued.discard(src_top)
                self.pending.pop(src_top, None)
            if event.event_type == "moved" and dest_top and event.is_directory:
                if Path(event.dest_path).resolve().parent == self.root:
                    self._consider(dest_top, immediate=True)
                    return
            if event.event_type == "created" and is_top_dir:
                self._consider(src_top, immediate=False)
                return
            # Anything changing inside a folder that is settling restarts its clock.
            for top in (src_top, dest_top):
                if top in self.pending:
                    self.pending[top] = time.monotonic()

    def _consider(self, name, immediate):
        if not is_finished_name(name):
            logger.info("NOTFINISHED %s", name)
            return
        if name in self.queued:
            return
        self.pending[name] = 0.0 if immediate else time.monotonic()

    # -- decisions ----------------------------------------------------------
    def scan(self):
        """Queue folders that finished while the watcher was not running."""
        with self.lock:
            for path in sorted(self.root.iterdir()):
                if path.is_dir() and not path.is_symlink() and path.name not in self.queued:
                    self._consider(path.name, immediate=True)
        self.tick()

    def rescan(self, older_than):
        """Queue again finished folders still waiting after `older_than` seconds.

        A folder stays in the data folder until its import runs; one still there long
        after it was queued lost its import (a broker restart): queue it again. The
        import is idempotent, so a slow queue only costs a no-op.
        """
        now = time.time()
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
        now = time.monotonic()
        with self.lock:
            ready = [n for n, t in self.pending.items() if now - t >= self.settle or t == 0.0]
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
        self.observer = observer_class(timeout=self.poll_interval) if self.polling else observer_class()
        self.observer.schedule(self, str(self.root), recursive=True)
        self.observer.start()
        logger.info("watching %s (%s)", self.root, "polling" if self.polling else "inotify")
        self.scan()

    def stop(self):
        if self.observer:
            self.observer.stop()
            self.observer.join(timeout=10)

    def run_forever(self, stop_event=None, periodic=None, period=60.0):
        """Run until stop_event is set; call periodic() every `period` seconds."""
        self.start()
        last = time.monotonic()
        try:
            while not (stop_event and stop_event.is_set()):
                self.tick()
                if periodic and time.monotonic() - last >= period:
                    last = time.monotonic()
                    try:
                        periodic(self)
                    except Exception as exc:
                        logger.error("periodic check failed (%s)", type(exc).__name__)
                time.sleep(0.2)
        finally:
            self.stop()
