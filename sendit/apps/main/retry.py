"""Resuming a batch that stopped on an error: redo only what is missing."""
from pathlib import Path

from django.conf import settings
from django.db import transaction

from sendit.apps.main.models import Batch, Image


def set_aside_folders(batch):
    """The NAME.err folders of this batch still in the data folder."""
    root = Path(settings.DATA_FOLDER)
    return sorted(p for p in root.glob(f"{batch.uid}.err*") if p.is_dir())


def retry_batch(batch):
    """Archive the errors, then queue the first step something is missing from.

    The errors are not simply cleared: each step checks its own work again and records
    a new error if the problem is still there, so cleanup only runs on a clean batch.
    """
    from sendit.apps.main.tasks import get_identifiers, import_dicomdir

    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        log = dict(locked.log)
        log["previous_errors"] = list(log.get("previous_errors", [])) + list(locked.errors)
        log["retries"] = int(log.get("retries", 0)) + 1
        locked.log, locked.errors, locked.has_error = log, [], False
        locked.lease_owner, locked.lease_until = "", None
        locked.save()
        Image.objects.filter(batch=locked, flagged__startswith="de-identification failed").update(
            flagged="", status="PROCESSING")
    folders = set_aside_folders(batch)
    if folders:
        for folder in folders:
            import_dicomdir.delay(str(folder))
        return "import of the set-aside files"
    get_identifiers.delay(batch.id)
    return "the pipeline from identifiers on"
