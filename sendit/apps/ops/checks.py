"""Health of the node's parts, each as ok / not ok and nothing more.

/healthz needs no password, so anyone who reaches the page can call it as often as they
like: each check is bounded (CHECK_SECONDS, in a thread of its own, so a destination that
accepts and never answers costs that long, not its own timeout), only the parts asked for
are checked, and the destinations' answer is kept in Django's cache for DESTINATIONS_TTL
seconds, so a flood of requests costs one round of remote checks.
"""

import functools
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, connections
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


CHECK_SECONDS = 2.0
DESTINATIONS_TTL = 5.0
LOCAL_PARTS = ("database", "broker", "watcher")
# One round of destination checks at a time in this process; the others wait for its answer.
_destinations_lock = threading.Lock()


def _check_ok(destination: Any) -> bool:
    """Whether a destination answers (its check's first value)."""
    return bool(destination.check()[0])


def bounded(checks: dict[str, Callable[[], bool]], seconds: float = CHECK_SECONDS) -> dict[str, bool]:
    """Run the checks side by side, each in a daemon thread; one that raises, or has not
    answered after `seconds`, is not ok (its thread is left to end on its own timeout)."""
    answers: dict[str, bool] = {}

    def run(name, check):
        try:
            answers[name] = bool(check())
        except Exception:
            answers[name] = False
        finally:
            connections.close_all()  # this thread's own database connection, if it opened one

    threads = [
        threading.Thread(target=run, args=item, daemon=True, name=f"healthz-{item[0]}") for item in checks.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {name: answers.get(name, False) for name in checks}


def destinations_health() -> dict[str, bool]:
    """{destination name: ok}, from the cache when a check of this configuration is recent."""
    from sendit.apps.main.tasks.common import storage_config
    from sendit.storage import get_destinations

    config = storage_config()
    key = "sendit:healthz:destinations:" + hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest()
    with _destinations_lock:
        answer = cache.get(key)
        if answer is None:
            try:
                destinations = get_destinations(config)
            except Exception:
                answer = {"destinations": False}
            else:
                answer = bounded({d.name: functools.partial(_check_ok, d) for d in destinations})
            cache.set(key, answer, DESTINATIONS_TTL)
    return answer


def health(wanted: list[str] | None = None) -> dict[str, str]:
    """{"database": "ok", ...}: the parts asked for (all when `wanted` is empty), each bounded.

    The container health check asks for `database,broker` alone: no destination is called.
    """
    from sendit.apps.watcher.daemon import status as watcher_status

    def want(name):
        return not wanted or name in wanted

    local = {"database": database_ok, "broker": broker_ok}
    parts = bounded({name: check for name, check in local.items() if want(name)})
    if want("watcher"):
        parts["watcher"] = bool(watcher_status()["running"])
    if not wanted or set(wanted) - set(LOCAL_PARTS):
        parts.update(destinations_health())
    if wanted:
        parts = {name: parts.get(name, False) for name in wanted}
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
    metric(
        "sendit_batches", "gauge", "Batches by status.", [({"status": s}, batches.get(s, 0)) for s, _ in BATCH_STATUS]
    )
    images = dict(Image.objects.values_list("status").annotate(n=Count("id")))
    metric(
        "sendit_images",
        "gauge",
        "Images held by the node, by status.",
        [({"status": s}, images.get(s, 0)) for s, _ in IMAGE_STATUS],
    )
    metric(
        "sendit_batches_with_errors",
        "gauge",
        "Batches with has_error set.",
        [({}, Batch.objects.filter(has_error=True).count())],
    )
    errors, seconds, counts = {}, {s: 0.0 for s in STEPS}, {s: 0 for s in STEPS}
    for batch_errors, log in Batch.objects.values_list("errors", "log"):
        for error in batch_errors or []:
            errors[error.get("step", "unknown")] = errors.get(error.get("step", "unknown"), 0) + 1
        for step, figures in (log or {}).get("steps", {}).items():
            if step in seconds:
                seconds[step] += float(figures.get("seconds", 0) or 0)
                counts[step] += 1
    metric(
        "sendit_errors",
        "gauge",
        "Errors recorded on batches, by step.",
        [({"step": s}, n) for s, n in sorted(errors.items())],
    )
    metric(
        "sendit_step_seconds_sum",
        "counter",
        "Time spent in each pipeline step.",
        [({"step": s}, round(seconds[s], 3)) for s in STEPS],
    )
    metric(
        "sendit_step_seconds_count",
        "counter",
        "Batches that went through each step.",
        [({"step": s}, counts[s]) for s in STEPS],
    )
    depth = queue_depth()
    if depth is not None:
        metric("sendit_queue_depth", "gauge", "Tasks waiting in the broker.", [({}, depth)])
    return "\n".join(lines) + "\n"
