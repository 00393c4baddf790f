"""The Celery app; tasks live in sendit/apps/main/tasks/."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sendit.settings")

app = Celery("sendit")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["sendit.apps.main"])
