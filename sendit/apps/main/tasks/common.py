"""What the pipeline steps share: the batch lease, media paths, settings as plain values."""
import contextlib
import logging
import time
from pathlib import Path

from django.conf import settings

from sendit.apps.main.models import Batch

logger = logging.getLogger("sendit.tasks")

# Seconds to wait before trying again when another worker holds the batch.
BUSY_COUNTDOWN = 15


class BatchBusy(Exception):
    """Another worker holds this batch's lease."""


@contextlib.contextmanager
def batch_lease(batch_id):
    """Hold a batch for one step, so two workers never process it at once."""
    batch = Batch.objects.get(pk=batch_id)
    if not batch.acquire(settings.BATCH_LEASE_SECONDS):
        raise BatchBusy(batch_id)
    try:
        yield batch
    finally:
        batch.release()


@contextlib.contextmanager
def timed_step(batch, step, **fields):
    """Log one line per batch step (id and duration, never a patient value)."""
    started = time.monotonic()
    figures = dict(fields)
    yield figures
    figures["seconds"] = round(time.monotonic() - started, 3)
    batch.log_step(step, **figures)
    logger.info("batch=%s step=%s %s", batch.id, step,
                " ".join(f"{k}={v}" for k, v in sorted(figures.items())))


def media_dir(batch_id):
    return Path(settings.MEDIA_ROOT) / "batches" / str(batch_id)


def media_path(relative):
    return Path(settings.MEDIA_ROOT) / relative


def relative_media(path):
    return str(Path(path).relative_to(settings.MEDIA_ROOT))


STORAGE_KEYS = (
    "SEND_TO_ORTHANC", "ORTHANC_TRANSPORT", "ORTHANC_URL", "ORTHANC_USERNAME", "ORTHANC_PASSWORD",
    "ORTHANC_IPADDRESS", "ORTHANC_PORT", "ORTHANC_AET", "SENDIT_AET",
    "SEND_TO_GOOGLE", "GOOGLE_CLOUD_STORAGE", "GOOGLE_PROJECT_NAME", "GOOGLE_STORAGE_COLLECTION",
    "GOOGLE_STORAGE_FORMAT", "STORAGE_EMULATOR_HOST",
    "SEND_RETRIES", "SEND_BACKOFF", "SEND_BACKOFF_MAX",
)


def storage_config():
    """The storage settings as a plain dict: sendit.storage knows nothing of Django."""
    return {key: getattr(settings, key) for key in STORAGE_KEYS}
