"""Resuming the batches of a worker that died: at once when a worker starts, and within
about a lease period on the surviving workers of other hosts.

A SIGKILLed worker leaves its batches with a lease it will never release and, on the
filesystem broker, loses the tasks it had taken (Redis gives them back only after
BROKER_VISIBILITY_TIMEOUT). A step's message a worker has taken is reserved in the batch's
lease (:func:`reserve`, at Celery's task_received), so those are leases too. Every worker
therefore runs a small loop in its main process:

- when it starts, it queues the next step of every batch that nobody is working on (lease
  free, expired, or held by a dead process of this machine);
- then, every LEASE_HEARTBEAT_SECONDS, it renews the reservations it holds, and queues the
  next step of every batch whose lease its holder stopped renewing (expired: a host that is
  gone) or whose holder is a dead local process.

Each batch is queued once however many workers look at the same time: the lease is handed
to the queued step by a guarded UPDATE (Batch.hand_over), which only one worker wins. The
watcher's sweeper stays for what this cannot see (a broker that lost its queue).
"""

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from sendit.apps.main import lease
from sendit.apps.main.models import Batch
from sendit.apps.main.pipeline import next_step, task
from sendit.apps.main.tasks.common import heartbeat_seconds

logger = logging.getLogger("sendit.recovery")


#: free batches a starting worker found moving through their steps: looked at again next pass
_deferred: set[int] = set()


def candidates(at_start: bool):
    """Batches recovery may have to resume: not DONE, no error (a person decides), and, except
    at a worker's start, held by someone (free batches have their next step queued)."""
    found = Batch.objects.filter(has_error=False).exclude(status="DONE")
    if not at_start:
        found = found.exclude(Q(lease_owner="") & ~Q(pk__in=_deferred))
    return found.order_by("id")


def _moving(batch, now) -> bool:
    """A free batch that recorded a step moments ago is between two steps of its chain (the
    next one queued): handing it over now would only make that step wait for the lease."""
    return (now - batch.modify_date).total_seconds() < heartbeat_seconds()


def requeue_abandoned(at_start: bool) -> dict[int, str]:
    """Queue the next step of every abandoned batch, once; returns {batch id: step name}."""
    queued = {}
    now = timezone.now()
    for batch in candidates(at_start):
        starting = at_start or batch.pk in _deferred
        _deferred.discard(batch.pk)
        if starting and not batch.lease_owner and _moving(batch, now):
            _deferred.add(batch.pk)  # looked at again next pass, as a starting worker would
            continue
        if not lease.abandoned(batch.lease_owner, batch.lease_until, now, starting):
            continue
        step = next_step(batch)
        if step is None:
            continue
        name, args = step
        token = lease.owner_token(handover=True)
        if batch.hand_over(token, settings.BATCH_LEASE_SECONDS):
            task(name).delay(*args, lease=token)
            queued[batch.id] = name
            logger.info("RECOVER batch=%s requeued %s", batch.id, name)
    return queued


def reserve(handover: str) -> bool:
    """The step queued with the hand-over `handover` has reached this worker: hold its
    batch by this process (renewed by :func:`renew_reservations`) until the step takes the
    lease. Were this worker to die first, its reservation lapses and recovery finds the step."""
    until = timezone.now() + timedelta(seconds=settings.BATCH_LEASE_SECONDS)
    return bool(
        Batch.objects.filter(lease_owner=handover).update(lease_owner=lease.reservation(handover), lease_until=until)
    )


def renew_reservations() -> int:
    """Renew the reservations of this process (the worker's main process); how many."""
    until = timezone.now() + timedelta(seconds=settings.BATCH_LEASE_SECONDS)
    return Batch.objects.filter(lease_owner__startswith=lease.reservations_prefix()).update(lease_until=until)


class RecoveryLoop:
    """The worker's recovery thread: a pass at start, then one every heartbeat period."""

    def __init__(self):
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sendit-recovery", daemon=True)

    def start(self) -> "RecoveryLoop":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        at_start = True
        while not self.stopped.is_set():
            try:
                renew_reservations()
                requeue_abandoned(at_start)
                at_start = False
            except Exception as exc:  # the database or broker is away: try again next period
                logger.warning("recovery pass failed (%s)", type(exc).__name__)
            finally:
                connection.close()  # no connection kept across forks of the pool
            self.stopped.wait(heartbeat_seconds())
