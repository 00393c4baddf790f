"""The Celery app; tasks live in sendit/apps/main/tasks/."""

import logging

from celery import Celery, signals

from sendit.config import use_django_settings

use_django_settings()

logger = logging.getLogger("sendit.recovery")

app = Celery("sendit")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["sendit.apps.main"])


@signals.celeryd_init.connect
def prepare_folders(**kwargs):
    """A starting worker makes the folders its configuration names (logs, the embedded
    broker's) before Django sets up logging; importing this module writes nothing."""
    from sendit.config import start

    start()


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def redact_worker_logs(logger, **kwargs):
    """The worker's own log handlers get the same redaction as the app's (sendit.redact)."""
    from sendit.redact import RedactFilter

    for handler in logger.handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())


_recovery = None


@signals.task_received.connect
def reserve_handed_batch(request, **kwargs):
    """A step queued with its batch's lease (a hand-over) has reached this worker: the lease
    names this worker until the step takes it (sendit.apps.main.recovery.reserve)."""
    token = (request.kwargs or {}).get("lease")
    if not token:
        return
    from django.db import connection

    from sendit.apps.main.recovery import reserve
    from sendit.apps.main.tasks.common import crash_point

    try:
        reserve(token)
    except Exception as exc:  # the database is away: the hand-over lapses, recovery finds it
        logger.warning("could not reserve a received step's batch (%s)", type(exc).__name__)
    finally:
        connection.close()  # the consumer keeps no connection across forks of the pool
    crash_point("reserved")


@signals.worker_ready.connect
def start_recovery(**kwargs):
    """A started worker resumes at once what dead workers left, then keeps watching for
    leases that lapse (sendit.apps.main.recovery)."""
    global _recovery
    from sendit.apps.main.recovery import RecoveryLoop

    if _recovery is None:
        _recovery = RecoveryLoop().start()


@signals.worker_shutdown.connect
def stop_recovery(**kwargs):
    global _recovery
    if _recovery is not None:
        _recovery.stop()
        _recovery = None
