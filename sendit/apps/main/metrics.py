"""Figures about batches, from their audit logs: per-batch step times and totals."""

from django.db.models import Count

from sendit.apps.main.models import Batch, Image
from sendit.apps.main.pipeline import STEPS


def batch_row(batch):
    """One batch's processing times, as the TSV export and the summary use them."""
    steps = batch.log.get("steps", {})
    seconds = {step: steps.get(step, {}).get("seconds") for step in STEPS}
    total = sum(s for s in seconds.values() if s)
    return {
        "batch_id": batch.id,
        "batch": batch.uid,
        "status": batch.status,
        "has_error": batch.has_error,
        "images": batch.log.get("images", 0),
        **{f"{step}_seconds": seconds[step] for step in STEPS},
        "total_seconds": round(total, 3),
        "added": batch.add_date.isoformat(),
        "modified": batch.modify_date.isoformat(),
    }


def summary():
    """Totals and rates over every batch the node remembers."""
    batches = Batch.objects.all()
    by_status = dict(batches.values_list("status").annotate(n=Count("id")))
    images = 0
    step_seconds = {step: 0.0 for step in STEPS}
    for log in batches.values_list("log", flat=True):
        images += int(log.get("images", 0) or 0)
        for step in STEPS:
            step_seconds[step] += float(log.get("steps", {}).get(step, {}).get("seconds", 0) or 0)
    busy = sum(step_seconds.values())
    return {
        "batches": batches.count(),
        "batches_by_status": by_status,
        "batches_with_errors": batches.filter(has_error=True).count(),
        "images_imported": images,
        "images_waiting": Image.objects.exclude(status="DONE").count(),
        "seconds_by_step": {k: round(v, 3) for k, v in step_seconds.items()},
        "images_per_second_of_work": round(images / busy, 2) if busy else None,
    }
