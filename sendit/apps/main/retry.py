"""Resuming a batch that stopped on an error: redo only what is missing."""

import glob
import re
from pathlib import Path

from django.conf import settings
from django.db import transaction

from sendit.apps.main.models import Batch, Hold, Image
from sendit.apps.main.pipeline import queue, resume


def set_aside_folders(batch):
    """The NAME.err folders of this batch still in the data folder."""
    root = Path(settings.DATA_FOLDER)
    pattern = re.compile(re.escape(batch.uid) + r"(\.err\d*)+")
    return sorted(p for p in root.glob(f"{glob.escape(batch.uid)}.err*") if p.is_dir() and pattern.fullmatch(p.name))


def _holds_files(folder: Path) -> bool:
    return any(path.is_file() or path.is_symlink() for path in folder.rglob("*"))


class BatchInUse(Exception):
    """A worker holds the batch's lease: retry when it has finished."""


def _burned_in_again(held):
    """A de-identification hold replaced the image's flag: check the burned-in rules on its
    original again, so that an image held back for burned-in text stays held back."""
    from pydicom import dcmread

    from sendit.apps.main.deidconfig import site_recipe
    from sendit.apps.main.tasks.common import media_path
    from sendit.deid import burned_in_reason

    for pk, relative in held:
        try:
            reason = burned_in_reason(dcmread(media_path(relative), stop_before_pixels=True, force=True), site_recipe())
        except Exception:  # unreadable: de-identification fails on it again, and holds it
            continue
        if reason:
            Image.objects.filter(pk=pk).update(hold=Hold.BURNED_IN, flagged=reason[:255])


def retry_batch(batch):
    """Archive the errors, then queue the first step something is missing from.

    The errors are not simply cleared: each step checks its own work again and records
    a new error if the problem is still there, so cleanup only runs on a clean batch.
    """
    from django.utils import timezone

    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        if locked.lease_until and locked.lease_until > timezone.now():
            # A worker is on it: clearing its lease would let two workers share the batch.
            raise BatchInUse(batch.pk)
        log = dict(locked.log)
        log["previous_errors"] = list(log.get("previous_errors", [])) + list(locked.errors)
        log["retries"] = int(log.get("retries", 0)) + 1
        if str(log.get("cleanup", "")).startswith("skipped"):
            log.pop("cleanup")  # said of the batch before this retry; cleanup says it again if still true
        locked.log, locked.errors, locked.has_error = log, [], False
        locked.save()
        # Images held by de-identification (not proven, an identifying value in the output,
        # not recorded) are tried again from their originals; any that fail again are held
        # again, the others go on.
        held = list(Image.objects.filter(batch=locked, hold=Hold.DEID).values_list("id", "image"))
        Image.objects.filter(pk__in=[pk for pk, _ in held]).update(hold=Hold.NONE, flagged="", status="PROCESSING")
    _burned_in_again(held)
    folders = []
    for folder in set_aside_folders(batch):
        # A person removed the bad files: an emptied NAME.err has nothing to import, and an
        # import of nothing would queue no next step (the batch would stay DONEPROCESSING).
        if _holds_files(folder):
            folders.append(folder)
        else:
            from sendit.apps.main.importer import remove_empty_tree

            remove_empty_tree(folder)
    if folders:
        for folder in folders:
            queue("import", str(folder))
        return "import of the set-aside files"
    return resume(batch)


def stuck_batches(older_than_seconds):
    """Batches with no error, not DONE, untouched for a while and held by no worker.

    A broker restart or a killed worker can lose a queued step; these are the batches
    that would wait forever.
    """
    from datetime import timedelta

    from django.db.models import Q
    from django.utils import timezone

    now = timezone.now()
    return (
        Batch.objects.filter(has_error=False, modify_date__lt=now - timedelta(seconds=older_than_seconds))
        .exclude(status="DONE")
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
    )


def sweep(older_than_seconds):
    """Re-queue the next step of every stuck batch; returns {batch id: step}."""
    queued = {}
    for batch in stuck_batches(older_than_seconds):
        step = resume(batch)
        if step:
            queued[batch.id] = step
    return queued
