"""Step 5: once every image is verified at every destination, remove what the node holds."""
import shutil

from celery import shared_task
from django.db import transaction

from sendit.apps.main.models import Batch, BatchIdentifiers, Image
from sendit.apps.main.tasks.common import crash_point, media_dir, run_step, timed_step


@shared_task(bind=True, acks_late=True, max_retries=None)
def cleanup(self, batch_id):
    """Delete files and rows of a fully delivered batch, keeping the batch and its audit log."""
    run_step(self, batch_id, _cleanup)


def _cleanup(batch):
    if batch.status == "DONE":
        return  # a late duplicate
    images = Image.objects.filter(batch=batch)
    if batch.has_error or images.exclude(status__in=["SENT", "DONE"]).exists():
        # A batch with errors keeps its files: a person looks, then retries or deletes.
        batch.update_log(cleanup="skipped: the batch has errors or undelivered images")
        return
    with timed_step(batch, "cleanup") as figures:
        figures["images"] = images.count()
        # Files first: a crash after this leaves rows that a rerun (or the sweeper) finishes.
        shutil.rmtree(media_dir(batch.id), ignore_errors=True)
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
    batch.set_status("DONE")
