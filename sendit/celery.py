"""The Celery app; tasks live in sendit/apps/main/tasks/."""

from celery import Celery, signals

from sendit.config import use_django_settings

use_django_settings()

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
