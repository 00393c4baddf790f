"""What the pipeline steps share: the batch lease, media paths, settings as plain values.

The lease (Batch.acquire / renew / release, a guarded UPDATE on the batch row): a step
runs only while it holds it, renews it after every chunk, and stops (LeaseLost) the moment
another worker has taken it over, so two workers never process one batch at once. A lease
names its holder (sendit.apps.main.lease), so the lease of a process that died on this
machine is taken over at once instead of after BATCH_LEASE_SECONDS. While a step works, a
heartbeat thread renews its lease every LEASE_HEARTBEAT_SECONDS, so the lease stays short
(it lapses about BATCH_LEASE_SECONDS after its holder dies, wherever that was) however long
one chunk takes. A step that queues the next one hands its lease on to it (pass_on) instead
of releasing it, so a batch is never free between two steps (sendit.apps.main.lease).
"""

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from sendit import config
from sendit.apps.main import lease, pipeline
from sendit.apps.main.models import Batch

logger = logging.getLogger("sendit.tasks")

# Seconds to wait before trying again when another worker holds the batch.
BUSY_COUNTDOWN = 15


class BatchBusy(Exception):
    """Another worker holds this batch's lease."""


class LeaseLost(Exception):
    """This worker's lease expired and another worker took the batch over: stop now."""


def busy_countdown():
    """How long a step waits for a held batch: never longer than a lease lasts."""
    return max(1, min(BUSY_COUNTDOWN, int(settings.BATCH_LEASE_SECONDS)))


def keep_lease(batch):
    """Renew the lease after a chunk of work; raise LeaseLost if it is no longer ours."""
    if not batch.renew(settings.BATCH_LEASE_SECONDS):
        raise LeaseLost(batch.pk)


def heartbeat_seconds() -> float:
    """How often a held lease is renewed: at least three times per lease period."""
    return max(0.5, min(float(settings.LEASE_HEARTBEAT_SECONDS), settings.BATCH_LEASE_SECONDS / 3))


class Heartbeat:
    """Renews a step's lease from a thread while the step works.

    A step renews its lease itself only between chunks; a slow chunk (a large file, a slow
    destination, the identifier provider) must not let a short lease lapse under a live
    worker. The thread dies with its process, so a dead holder's lease lapses on time.
    """

    def __init__(self, batch: Batch):
        self.batch = batch
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"lease-{batch.pk}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()

    def _run(self) -> None:
        try:
            while not self.stopped.wait(heartbeat_seconds()):
                if not self.batch.renew(settings.BATCH_LEASE_SECONDS):
                    if self.batch.lease_owner:
                        # Taken over: the step finds out at its next keep_lease and stops.
                        logger.warning("batch=%s heartbeat: the lease is no longer ours", self.batch.pk)
                    return  # or passed on to the next step
        except Exception as exc:  # the database is away: the step's own renewals decide
            logger.warning("batch=%s heartbeat failed (%s)", self.batch.pk, type(exc).__name__)
        finally:
            connection.close()  # this thread's own connection


@contextlib.contextmanager
def batch_lease(batch_id, handed=None):
    """Hold a batch for one step, so two workers never process it at once.

    `handed`: the hand-over token recovery queued the step with (sendit.apps.main.recovery).
    """
    batch = Batch.objects.get(pk=batch_id)
    if not batch.acquire(settings.BATCH_LEASE_SECONDS, handed=handed):
        raise BatchBusy(batch_id)
    try:
        with Heartbeat(batch):
            yield batch
    finally:
        batch.release()


def pass_on(batch) -> str:
    """Hand the lease we hold to the step we queue next (its token, for the message): the
    batch stays held, by the step's message and then by the worker that takes it, until
    that step runs."""
    token = lease.owner_token(handover=True)
    if not batch.pass_on(token, settings.BATCH_LEASE_SECONDS):
        raise LeaseLost(batch.pk)
    return token


def run_step(task, batch_id, step, name=None, handed=None, then=None):
    """Run step(batch) under the batch's lease; retry later when another worker has it.

    `then(value)` names the step that follows (or None): it is queued, once this step is
    over, with the lease handed to it.
    Returns step's value, or None when the lease was lost midway (the new holder carries on).
    """
    following = token = None
    try:
        with batch_lease(batch_id, handed) as batch:
            value = step(batch)
            following = then(value) if then else None
            if following:
                token = pass_on(batch)
    except Batch.DoesNotExist:
        logger.info("batch=%s no longer exists, nothing to do", batch_id)
        return None
    except BatchBusy:
        raise task.retry(countdown=busy_countdown()) from None
    except LeaseLost:
        logger.warning("batch=%s lease lost to another worker; this run stops", batch_id)
        return None
    except Exception as exc:
        # Anything unforeseen stops the batch where a person sees it (the sweeper leaves
        # batches with errors alone); the type only: a message may quote a value.
        Batch.objects.get(pk=batch_id).add_error(
            name or task.name.rsplit(".", 2)[-2], f"unexpected {type(exc).__name__}; see the worker log, then retry"
        )
        raise
    if following:  # published outside the lease's handling: a failure here is the broker's
        pipeline.queue(following, batch_id, lease=token)
    return value


def crash_point(name):
    """Fault injection for the reliability tests and scripts/chaos.py; a no-op otherwise.

    With SENDIT_CRASH_AT=name and SENDIT_CRASH_MARKER=/path, the first process to reach
    this point creates the marker file and kills itself with SIGKILL (no clean-up, no
    acknowledgement), as the OOM killer or a power cut would. Later runs find the marker
    and pass. Never set these variables in production.
    """
    if settings.SENDIT_CRASH_AT != name:
        return
    marker = settings.SENDIT_CRASH_MARKER
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"{name} {os.getpid()} {time.time()}\n".encode())
    os.close(fd)
    logger.warning("crash_point %s: SIGKILL pid %s (fault injection)", name, os.getpid())
    if os.getpid() == 1:
        # A pid namespace's first process (a container's, a test's other host) cannot
        # signal itself; its exit kills the namespace's other processes just the same.
        os._exit(137)
    os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def timed_step(batch, step, **fields):
    """Log one line per batch step (id, duration and the worker's CPU time, never a patient
    value): wall time against CPU time shows whether a step waited or worked."""
    started, cpu = time.monotonic(), time.process_time()
    figures = dict(fields)
    yield figures
    figures["seconds"] = round(time.monotonic() - started, 3)
    figures["cpu_seconds"] = round(time.process_time() - cpu, 3)
    batch.log_step(step, **figures)
    logger.info("batch=%s step=%s %s", batch.id, step, " ".join(f"{k}={v}" for k, v in sorted(figures.items())))


def media_dir(batch_id):
    return Path(settings.MEDIA_ROOT) / "batches" / str(batch_id)


def media_path(relative):
    return Path(settings.MEDIA_ROOT) / relative


def relative_media(path):
    return str(Path(path).relative_to(settings.MEDIA_ROOT))


def storage_config():
    """The storage settings as a plain dict: sendit.storage knows nothing of Django."""
    return {name: getattr(settings, name) for name in config.names(*config.STORAGE_CONCERNS)}
