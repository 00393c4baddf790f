"""The dashboard's destinations card and DICOM receiver card.

Each destination: up or down (the same bounded, cached check /healthz makes) and since
when, its last delivery, and the images waiting for it. "Since when" is kept in Django's
cache, shared by every process of the node, and starts when this node first saw the state.
The receiver (a process of its own, maybe in another container) publishes its status to
the same cache every few seconds; the card shows it while that is fresh.
"""

from __future__ import annotations

import datetime
import time

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from sendit.apps.main.plain import destination_name

SINCE_KEY = "sendit:destination-since:"
RECEIVER_KEY = "sendit:receiver:status"
#: The receiver publishes every RECEIVER_PUBLISH_SECONDS; older than 3 of them it is not running.
RECEIVER_PUBLISH_SECONDS = 5
RECENT_BATCHES = 500


def configured() -> list[str]:
    """The names of the destinations this node sends to, without building clients."""
    from sendit.apps.main.tasks.common import storage_config
    from sendit.storage import get_destinations

    try:
        return [d.name for d in get_destinations(storage_config())]
    except Exception:
        return []


def _since(name: str, up: bool) -> datetime.datetime:
    """When this destination was first seen in its present state (kept in the shared cache)."""
    key = SINCE_KEY + name
    seen = cache.get(key)
    if not isinstance(seen, dict) or seen.get("up") != up:
        seen = {"up": up, "since": timezone.now().isoformat()}
        cache.set(key, seen, None)
    return datetime.datetime.fromisoformat(seen["since"])


def _last_deliveries(names: list[str]) -> dict[str, datetime.datetime]:
    """The time of the last send step that delivered to each destination (from the audit logs)."""
    from sendit.apps.main.models import Batch

    found: dict[str, datetime.datetime] = {}
    for log in Batch.objects.order_by("-modify_date").values_list("log", flat=True)[:RECENT_BATCHES]:
        if not isinstance(log, dict) or not isinstance(log.get("deliveries"), dict):
            continue
        when = (log.get("steps") or {}).get("send", {}).get("time")
        if not when:
            continue
        when = datetime.datetime.fromisoformat(when)
        for name in log["deliveries"]:
            if name in names and (name not in found or when > found[name]):
                found[name] = when
        if len(found) == len(names):
            break
    return found


def destinations_card() -> list[dict]:
    """[{name, label, up, since, last_delivery, waiting}] for the dashboard."""
    from sendit.apps.main.models import Hold, Image
    from sendit.apps.ops.checks import destinations_health

    names = configured()
    if not names:
        return []
    health = destinations_health()
    last = _last_deliveries(names)
    ready = Image.objects.filter(status="DONEPROCESSING", hold=Hold.NONE)
    card = []
    for name in names:
        up = bool(health.get(name, False))
        card.append(
            {
                "name": name,
                "label": destination_name(name),
                "up": up,
                "since": _since(name, up),
                "last_delivery": last.get(name),
                "waiting": ready.exclude(destinations__has_key=name).count(),
            }
        )
    return card


def publish_receiver(status: dict) -> None:
    """Called by the receiver every few seconds: its status, for the dashboard."""
    cache.set(RECEIVER_KEY, {**status, "beat": time.time()}, RECEIVER_PUBLISH_SECONDS * 6)


def receiver_card() -> dict | None:
    """The receiver's last published status while fresh; None when it has never run here.

    {listening, ae_title, port, associations, images_today, running}."""
    status = cache.get(RECEIVER_KEY)
    if not isinstance(status, dict):
        return None
    running = time.time() - float(status.get("beat", 0)) < 3 * RECEIVER_PUBLISH_SECONDS
    return {
        **status,
        "running": running,
        "listening": bool(status.get("listening")) and running,
        "bind": status.get("bind", getattr(settings, "RECEIVER_BIND", "")),
    }
