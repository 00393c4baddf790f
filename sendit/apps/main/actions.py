"""What a person does to a batch (retry, re-send, delete, forget old ones), one implementation
for the page's buttons and the management commands, each written to the batch's audit log.

An audit entry is {time, action, origin, result}: the origin is "page, client 10.0.0.7" or
"command retry_batch (user alice)", the result a count or a step name. Never a patient
value: the batch is named by its id and the sender's folder name. Deleting a batch deletes
its log too, so every entry also goes to the ``sendit.audit`` logger (var/logs).
"""

from __future__ import annotations

import getpass
import logging
import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from sendit.apps.main import pipeline
from sendit.apps.main import retry as _retry
from sendit.apps.main.models import Batch, Image
from sendit.apps.main.retry import BatchInUse
from sendit.apps.main.tasks.common import pass_on

logger = logging.getLogger("sendit.audit")

__all__ = ["BatchInUse", "audit", "page_origin", "command_origin", "retry", "resend", "delete", "forget_finished"]


def page_origin(request) -> str:
    """Where a page's action came from: the client address the server saw (nginx's)."""
    return f"page, client {request.META.get('REMOTE_ADDR') or 'unknown'}"


def command_origin(name: str) -> str:
    """Where a command's action came from: its name and the account that ran it."""
    try:
        user = getpass.getuser()
    except Exception:  # no name for this uid (a container's numeric user)
        user = "unknown"
    return f"command {name} (user {user})"


def audit(batch: Batch, action: str, origin: str, result: str = "") -> None:
    """Append {time, action, origin, result} to the batch's audit log, and to sendit.audit."""
    entry = {"time": timezone.now().isoformat(), "action": action, "origin": origin, "result": result}
    with transaction.atomic():
        locked = Batch.objects.select_for_update().filter(pk=batch.pk).first()
        if locked is not None:
            log = dict(locked.log or {})
            log["audit"] = list(log.get("audit", [])) + [entry]
            locked.log = log
            locked.save(update_fields=["log", "modify_date"])
            batch.log = log
    logger.info("AUDIT batch=%s %s from %s: %s", batch.pk, action, origin, result or "done")


def retry(batch: Batch, origin: str) -> str | None:
    """Retry what failed (the page's button and ``retry_batch``): the step queued, or None.

    Raises BatchInUse while a worker holds the batch."""
    try:
        step = _retry.retry_batch(batch)
    except BatchInUse:
        audit(batch, "retry", origin, REFUSED)
        raise
    audit(batch, "retry", origin, f"queued {step}" if step else "nothing left to do")
    return step


REFUSED = "refused: a worker is working on the batch"


def _take(batch: Batch, action: str, origin: str) -> None:
    """Hold the batch's lease for an action from the page or a command; audited and
    BatchInUse when a worker holds it."""
    if not batch.acquire(60):
        audit(batch, action, origin, REFUSED)
        raise BatchInUse(batch.pk)


def resend(batch: Batch, origin: str) -> int:
    """Forget where the batch's de-identified images went and send them again; how many.

    Raises BatchInUse while a worker holds the batch."""
    _take(batch, "re-send", origin)
    token = None
    try:
        with transaction.atomic():
            count = Image.objects.filter(batch=batch, status__in=["SENT", "DONEPROCESSING"]).update(
                destinations={}, status="DONEPROCESSING", modify_date=timezone.now()
            )
        if count:
            token = pass_on(batch)  # held for the send step, as between two steps
    finally:
        batch.release()  # nothing to do once passed on
    if count:
        pipeline.queue("send", batch.id, lease=token)
    audit(batch, "re-send", origin, f"{count} image(s) queued" if count else "no image ready to send")
    return count


def batch_media(batch: Batch) -> Path | None:
    """The batch's media folder, or None when it would not be a safe thing to remove."""
    media_root = Path(settings.MEDIA_ROOT).resolve()
    folder = (media_root / "batches" / str(batch.id)).resolve()
    data = Path(settings.DATA_FOLDER).resolve()
    if media_root not in folder.parents:
        return None
    if folder == data or data in folder.parents or folder in data.parents:
        return None
    return folder


def delete(batch: Batch, origin: str) -> str:
    """Remove the batch's media files and rows (never input data); its name.

    Raises BatchInUse while a worker holds the batch."""
    _take(batch, "delete", origin)
    name, images = batch.uid, batch.images.count()
    audit(batch, "delete", origin, f"{images} image(s) and the media folder")
    folder = batch_media(batch)
    try:
        if folder is not None and folder.exists():
            shutil.rmtree(folder)
        batch.delete()
    except Exception:
        batch.release()
        raise
    return name


def forget_finished(older_than_days: int, origin: str, dry_run: bool = False) -> int:
    """``cleanup --older-than DAYS``: delete DONE batches without errors last changed more
    than DAYS ago (their images are long gone); each is audited before it goes."""
    from datetime import timedelta

    cutoff = timezone.now() - timedelta(days=older_than_days)
    old = Batch.objects.filter(status="DONE", has_error=False, modify_date__lt=cutoff)
    count = old.count()
    if dry_run:
        return count
    for batch in old.iterator():
        logger.info(
            "AUDIT batch=%s cleanup (audit log forgotten, older than %s days) from %s",
            batch.pk,
            older_than_days,
            origin,
        )
    old.delete()
    return count
