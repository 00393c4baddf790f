"""Run the watcher as a daemon: a pid file, and size-capped watcher.out / watcher.err logs."""

import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
from pathlib import Path

from django.conf import settings

from sendit.apps.watcher.watcher import FolderWatcher


def pid_file():
    return Path(settings.WATCHER_PID_FILE)


def running_pid():
    """The pid of a running watcher, or None (a stale pid file is removed)."""
    path = pid_file()
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return None
    except PermissionError:
        pass
    return pid


HEARTBEAT_SECONDS = 10


def beat(started=None, stopped=False):
    """Record that the watcher is alive (or has stopped), for status pages on any host."""
    import socket

    from django.utils import timezone

    from sendit.apps.watcher.models import Heartbeat

    now = timezone.now()
    defaults = {
        "beat": now,
        "stopped": stopped,
        "folder": str(Path(settings.DATA_FOLDER).resolve()),
        "mode": "polling" if settings.WATCHER_POLLING else "inotify",
        "host": socket.gethostname(),
    }
    if started:
        defaults["started"] = started
    Heartbeat.objects.update_or_create(
        name="watcher", defaults=defaults, create_defaults={**defaults, "started": started or now}
    )


def status():
    """Is the watcher running, since when, and on which folder (for the status page).

    Running means a heartbeat in the last 3 x HEARTBEAT_SECONDS, so a watcher in another
    container or on another host counts too; a local pid file is reported alongside.
    """
    from django.utils import timezone

    from sendit.apps.watcher.models import Heartbeat

    found = Heartbeat.objects.filter(name="watcher").first()
    fresh = bool(found and not found.stopped and (timezone.now() - found.beat).total_seconds() < 3 * HEARTBEAT_SECONDS)
    return {
        "running": fresh,
        "pid": running_pid(),
        "since": found.started if fresh else None,
        "last_seen": found.beat if found else None,
        "folder": found.folder if found else str(Path(settings.DATA_FOLDER).resolve()),
        "mode": "polling" if settings.WATCHER_POLLING else "inotify",
    }


def _configure_logging():
    log_dir = Path(settings.WATCHER_LOG_DIR)
    log_dir.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    out = logging.handlers.RotatingFileHandler(
        log_dir / "watcher.out", maxBytes=settings.WATCHER_LOG_MAX_BYTES, backupCount=settings.WATCHER_LOG_BACKUPS
    )
    out.setFormatter(formatter)
    out.setLevel(logging.INFO)
    err = logging.handlers.RotatingFileHandler(
        log_dir / "watcher.err", maxBytes=settings.WATCHER_LOG_MAX_BYTES, backupCount=settings.WATCHER_LOG_BACKUPS
    )
    err.setFormatter(formatter)
    err.setLevel(logging.WARNING)
    for name in ("sendit.watcher", "sendit"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(out)
        logger.addHandler(err)
        logger.propagate = False
    return err


def queue_import(path):
    from sendit.apps.main.tasks import import_dicomdir

    import_dicomdir.delay(path)


def periodic_check(watcher):
    """Re-queue folders and batches that a lost task left waiting."""
    from sendit.apps.main.retry import sweep

    watcher.rescan(settings.SWEEP_AFTER_SECONDS)
    for batch_id, step in sweep(settings.SWEEP_AFTER_SECONDS).items():
        logging.getLogger("sendit.watcher").info("SWEEP batch=%s requeued %s", batch_id, step)


def run():
    """Watch until SIGTERM or SIGINT, beating every HEARTBEAT_SECONDS."""
    from django.db import close_old_connections
    from django.utils import timezone

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    started = timezone.now()
    state = {"sweep": time.monotonic()}

    def every_beat(watcher):
        close_old_connections()
        try:
            beat(started)
        except Exception as exc:
            logging.getLogger("sendit.watcher").error("heartbeat failed (%s)", type(exc).__name__)
        if time.monotonic() - state["sweep"] >= settings.SWEEP_INTERVAL:
            state["sweep"] = time.monotonic()
            periodic_check(watcher)

    watcher = FolderWatcher(
        settings.DATA_FOLDER,
        queue_import,
        settle=settings.WATCHER_SETTLE_SECONDS,
        polling=settings.WATCHER_POLLING,
        poll_interval=settings.WATCHER_POLL_INTERVAL,
    )
    try:
        beat(started)
    except Exception as exc:
        logging.getLogger("sendit.watcher").error("heartbeat failed (%s)", type(exc).__name__)
    try:
        watcher.run_forever(stop, periodic=every_beat, period=HEARTBEAT_SECONDS)
    finally:
        try:
            beat(started, stopped=True)
        except Exception:
            pass


def daemonize():
    """Detach (double fork), write the pid file, and run; the parent returns the child's pid."""
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        pid = int(os.read(read_end, 32) or b"0")
        os.close(read_end)
        return pid
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    pid_file().parent.mkdir(parents=True, exist_ok=True)
    pid_file().write_text(str(os.getpid()))
    os.write(write_end, str(os.getpid()).encode())
    os.close(write_end)
    err_handler = _configure_logging()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    # Uncaught tracebacks go to watcher.err too.
    os.dup2(err_handler.stream.fileno(), 2)
    code = 0
    try:
        run()
    except Exception:
        logging.getLogger("sendit.watcher").exception("watcher stopped on an error")
        code = 1
    finally:
        pid_file().unlink(missing_ok=True)
    os._exit(code)


def run_in_foreground():
    """For containers and `make run`: log to the console and to the files, keep a pid file."""
    _configure_logging()
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(asctime)s watcher %(message)s"))
    logging.getLogger("sendit.watcher").addHandler(console)
    pid_file().parent.mkdir(parents=True, exist_ok=True)
    pid_file().write_text(str(os.getpid()))
    try:
        run()
    finally:
        pid_file().unlink(missing_ok=True)


def exited(pid: int) -> bool:
    """True once `pid` has exited: no such process, or a zombie not reaped yet.

    The daemon is double-forked, so init reaps it, when it will: a container's init can
    leave it a zombie for seconds, and kill(pid, 0) still finds a zombie.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read()
    except OSError:  # no /proc (not Linux), or reaped since: kill(pid, 0) tells next time
        return False
    return fields[fields.rindex(b")") + 2 :][:1] == b"Z"  # the state follows "(command) "


def stop(timeout: float = 15) -> bool:
    """Stop a running watcher; False when none was running."""
    pid = running_pid()
    if not pid:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exited(pid):
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_file().unlink(missing_ok=True)
    return True
