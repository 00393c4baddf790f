"""Step 5: once every image is verified at every destination, remove what the node holds."""
import shutil

from celery import shared_task

from sendit.apps.main.models import BatchIdentifiers, Image
from sendit.apps.main.tasks.common import BUSY_COUNTDOWN, BatchBusy, batch_lease, media_dir, timed_step


@shared_task(bind=True, acks_late=True, max_retries=None)
def cleanup(self, batch_id):
    """Delete files and rows of a fully delivered batch, keeping the batch and its audit log."""
    try:
        with batch_lease(batch_id) as batch:
            _cleanup(batch)
    except BatchBusy:
        raise self.retry(countdown=BUSY_COUNTDOWN)


def _cleanup(batch):
    images = Image.objects.filter(batch=batch)
    if batch.has_error or images.exclude(status__in=["SENT", "DONE"]).exists():
        # A batch with errors keeps its files: a person looks, then retries or deletes.
        batch.update_log(cleanup="skipped: the batch has errors or undelivered images")
        return
    with timed_step(batch, "cleanup") as figures:
        images.filter(status="SENT").update(status="DONE")
        figures["images"] = images.count()
        shutil.rmtree(media_dir(batch.id), ignore_errors=True)
        images.delete()
        # The identifier response holds the original ids: it goes with the data.
        BatchIdentifiers.objects.filter(batch=batch).delete()
    batch.update_log(cleanup="done")
    batch.set_status("DONE")
