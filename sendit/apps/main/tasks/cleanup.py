"""Step 5: once every image is verified at every destination, remove what the node holds."""

import os
import shutil
import sys

from celery import shared_task
from django.db import transaction

from sendit.apps.main.models import Batch, BatchIdentifiers, Image
from sendit.apps.main.tasks.common import crash_point, media_dir, relative_media, run_step, timed_step


@shared_task(bind=True, acks_late=True, max_retries=None)
def cleanup(self, batch_id, lease=None):
    """Delete files and rows of a fully delivered batch, keeping the batch and its audit log."""
    run_step(self, batch_id, _cleanup, handed=lease)


def _cleanup(batch):
    if batch.status == "DONE":
        return  # a late duplicate
    images = Image.objects.filter(batch=batch)
    if batch.has_error or images.exclude(status__in=["SENT", "DONE"]).exists():
        # A batch with errors keeps its files: a person looks, then retries or deletes.
        batch.update_log(cleanup="skipped: the batch has errors or undelivered images")
        return
    if not batch.log.get("imported"):
        batch.update_log(cleanup="skipped: the batch's import has not finished")
        return
    unknown = _unrecorded_files(batch, images)
    if unknown:
        # Files moved in by an import that died before recording them: the only copy.
        batch.add_error(
            "cleanup",
            f"{len(unknown)} file(s) in this batch's media folder were never "
            "recorded as images; nothing was deleted (retry the batch)",
        )
        return
    with timed_step(batch, "cleanup") as figures:
        figures["images"] = images.count()
        # Files first: a crash after this leaves rows that a rerun (or the sweeper) finishes.
        failed = _remove_media(batch)
        if failed:
            batch.add_error("cleanup", f"{failed} media file(s) could not be removed; the batch is kept")
            return
        crash_point("cleanup")  # files removed, rows not yet
        with transaction.atomic():
            # All or nothing, so no crash leaves a batch without images and not DONE.
            images.filter(status="SENT").update(status="DONE")
            images.delete()
            # The identifier response holds the original ids: it goes with the data.
            BatchIdentifiers.objects.filter(batch=batch).delete()
            Batch.objects.filter(pk=batch.pk).update(status="DONE")
    batch.status = "DONE"
    batch.update_log(cleanup="done")


def _allowed(images):
    """Media files cleanup may remove, as paths relative to MEDIA_ROOT: each image's file,
    and the original a de-identified copy was made from (same name under raw/), left
    behind if a worker died after recording."""
    allowed = set()
    for relative in images.values_list("image", flat=True):
        allowed.add(relative)
        folder, _, name = relative.rpartition("/")
        allowed.add(f"{folder.rpartition('/')[0]}/raw/{name}")
    return allowed


def _unrecorded_files(batch, images):
    """Files under the batch's media folder that no image accounts for.

    Compared as strings: a batch's folder holds a file per image, and building a Path
    for each cost more than the rest of the cleanup's Python work.
    """
    root = media_dir(batch.id)
    if not root.exists():
        return []
    allowed = _allowed(images)
    prefix = relative_media(root)
    unknown = []
    for folder, _dirs, names in os.walk(root):
        relative = prefix + folder[len(str(root)) :]
        for name in names:
            # A *.part is a copy or output a dead worker left half-written; its source still exists.
            if f"{relative}/{name}" not in allowed and not name.endswith(".part"):
                unknown.append(os.path.join(folder, name))
    return unknown


def _remove_media(batch):
    """Remove the batch's media folder; the number of files that could not be removed."""
    failures = []

    def note(func, path, exc):
        failures.append(path)

    root = media_dir(batch.id)
    if root.exists():
        shutil.rmtree(root, **({"onexc": note} if sys.version_info >= (3, 12) else {"onerror": note}))
    return len([p for p in failures if os.path.exists(p)])
