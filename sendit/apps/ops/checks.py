"""Health of the node's parts, each as ok / not ok and nothing more."""
import hmac
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.db.models import Count

from sendit.apps.main.metrics import STEPS
from sendit.apps.main.models import BATCH_STATUS, IMAGE_STATUS, Batch, Image


def database_ok():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


def broker_ok():
    from sendit.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False


def queue_depth():
    """Messages waiting in the default queue, or None when it cannot be read."""
    from sendit.celery import app

    url = settings.CELERY_BROKER_URL
    try:
        if url.startswith("filesystem://"):
            folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
            return sum(1 for p in folder.glob("*.msg"))
        with app.connection_for_read() as conn:
            return conn.default_channel.queue_declare("celery", passive=True).message_count
    except Exception:
        return None


def health():
    """{"database": "ok", ...}: the parts a docker health check needs to know about."""
    from sendit.apps.main.tasks.common import storage_config
    from sendit.apps.watcher.daemon import status as watcher_status
    from sendit.storage import get_destinations

    parts = {
        "database": database_ok(),
        "broker": broker_ok(),
        "watcher": watcher_status()["running"],
    }
    try:
        for destination in get_destinations(storage_config()):
            parts[destination.name] = bool(destination.check()[0])
    except Exception:
        parts["destinations"] = False
    return {name: "ok" if good else "not ok" for name, good in parts.items()}


def token_ok(request):
    """The metrics token from `Authorization: Bearer <token>`, compared in constant time."""
    expected = getattr(settings, "METRICS_TOKEN", "")
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def prometheus_text():
    """Images and batches by status, errors by step, step durations, queue depth."""
    lines = []

    def metric(name, kind, help_text, samples):
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")

    batches = dict(Batch.objects.values_list("status").annotate(n=Count("id")))
    metric("sendit_batches", "gauge", "Batches by status.",
           [({"status": s}, batches.get(s, 0)) for s, _ in BATCH_STATUS])
    images = dict(Image.objects.values_list("status").annotate(n=Count("id")))
    metric("sendit_images", "gauge", "Images held by the node, by status.",
           [({"status": s}, images.get(s, 0)) for s, _ in IMAGE_STATUS])
    metric("sendit_batches_with_errors", "gauge", "Batches with has_error set.",
           [({}, Batch.objects.filter(has_error=True).count())])
    errors, seconds, counts = {}, {s: 0.0 for s in STEPS}, {s: 0 for s in STEPS}
    for batch_errors, log in Batch.objects.values_list("errors", "log"):
        for error in batch_errors or []:
            errors[error.get("step", "unknown")] = errors.get(error.get("step", "unknown"), 0) + 1
        for step, figures in (log or {}).get("steps", {}).items():
            if step in seconds:
                seconds[step] += float(figures.get("seconds", 0) or 0)
                counts[step] += 1
    metric("sendit_errors", "gauge", "Errors recorded on batches, by step.",
           [({"step": s}, n) for s, n in sorted(errors.items())])
    metric("sendit_step_seconds_sum", "counter", "Time spent in each pipeline step.",
           [({"step": s}, round(seconds[s], 3)) for s in STEPS])
    metric("sendit_step_seconds_count", "counter", "Batches that went through each step.",
           [({"step": s}, counts[s]) for s in STEPS])
    depth = queue_depth()
    if depth is not None:
        metric("sendit_queue_depth", "gauge", "Tasks waiting in the broker.", [({}, depth)])
    return "\n".join(lines) + "\n"
