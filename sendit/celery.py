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
