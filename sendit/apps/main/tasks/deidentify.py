"""Step 3: scrub each image's header with the profile, writing a new file beside the original."""
import errno
import logging

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from sendit.apps.main.deidconfig import deid_options
from sendit.apps.main.bulk import update_rows
from sendit.apps.main.models import BatchIdentifiers, Image
from sendit.apps.main.tasks.send import SEND_FIELDS
from sendit.apps.main.tasks.common import (
    crash_point, keep_lease, media_dir, media_path, relative_media, run_step, timed_step,
)
from sendit.deid import deidentify_file
from sendit.deid.identifiers import StudyIdentifiers

logger = logging.getLogger("sendit.tasks")
# Images recorded at a time. Each chunk's originals take the next chunk's outputs, so
# only the first chunk's outputs are new files: small chunks create few files, large
# ones make fewer queries (50: one new file in six for a 300-image study).
CHUNK = 50


@shared_task(bind=True, acks_late=True, max_retries=None)
def replace_identifiers(self, batch_id):
    """De-identify every image not yet done; the original stays until the new file is recorded."""
    done = run_step(self, batch_id, _replace)
    if done:
        from sendit.apps.main.tasks.send import upload_storage
        upload_storage.delay(batch_id)


def _replace(batch):
    if batch.status == "DONE":
        return False  # a late duplicate: the batch was delivered and cleaned up
    if settings.ANONYMIZE_PIXELS and not batch.log.get("pixels_note"):
        batch.update_log(pixels_note="ANONYMIZE_PIXELS is set but pixel scrubbing is not implemented: "
                                     "images flagged for burned-in text are held, not scrubbed")
    record = BatchIdentifiers.objects.filter(batch=batch).first()
    if record is None or not record.ids:
        # Nothing asked of the identifier provider yet: that step comes first.
        return False
    ids = {int(k): StudyIdentifiers(**v) for k, v in record.ids.items()}
    options = deid_options()
    out_dir = media_dir(batch.id) / "deid"
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    with timed_step(batch, "deidentify") as figures:
        todo = Image.objects.filter(batch=batch, status__in=["NEW", "PROCESSING"])
        todo.filter(status="NEW").update(status="PROCESSING")
        processed = 0
        # Originals whose de-identified copy is recorded: instead of being deleted, each
        # one's file takes the output of a later image (sendit.deid.files._output says why).
        spares = []
        while True:
            chunk = list(Image.objects.filter(batch=batch, status="PROCESSING")
                         .exclude(flagged__startswith="de-identification failed")
                         .order_by("id")[:CHUNK])
            if not chunk:
                break
            done, raw_files = [], []
            for image in chunk:
                source = media_path(image.image)
                target = out_dir / source.name
                spare = spares.pop() if spares else None
                try:
                    result = deidentify_file(source, target, ids[image.identity], options,
                                             fields=SEND_FIELDS, reuse=spare)
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        batch.add_error("deidentify", "the media disk is full; free space and retry the batch")
                        figures["stopped"] = "disk full"
                        _save(done)
                        _discard(spares + [spare] + raw_files)
                        return False
                    raise
                except Exception as exc:
                    if spare is not None and spare.exists():
                        spares.append(spare)  # not taken: still free for the next image
                    image.flagged = f"de-identification failed ({type(exc).__name__})"
                    image.save(update_fields=["flagged", "modify_date"])
                    failed += 1
                    continue
                image.header = result["fields"]
                image.uid = result["sop_uid"]
                image.image = relative_media(target)
                image.status = "DONEPROCESSING"
                done.append(image)
                raw_files.append(source)
            crash_point("deidentify")  # new files written, not yet recorded
            _save(done)
            spares.extend(raw_files)
            processed += len(done)
            keep_lease(batch)
        _discard(spares)
        figures.update(images=processed, failed=failed)
    if failed:
        batch.add_error("deidentify", f"{failed} image(s) could not be de-identified and are held, not sent")
    batch.set_status("DONEPROCESSING")
    return True


def _save(images):
    now = timezone.now()
    for image in images:
        image.modify_date = now
    update_rows(Image, images, ["uid", "image", "status", "header", "modify_date"])


def _discard(paths):
    """Delete originals whose de-identified copies are recorded."""
    for path in paths:
        if path is not None:
            path.unlink(missing_ok=True)
