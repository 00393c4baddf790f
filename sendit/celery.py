"""The Celery app; tasks live in sendit/apps/main/tasks/."""
import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sendit.settings")

app = Celery("sendit")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["sendit.apps.main"])


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
