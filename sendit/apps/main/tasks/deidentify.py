"""Step 3: scrub each image's header with the profile, writing a new file beside the original.

An original goes (deleted, or its file reused for a later output) only once its output is
proven (sendit.deid.proof: it reads back as DICOM, names a new instance, holds the input's
pixels and none of the input's identifying values) and recorded. An image whose output
cannot be proven, or cannot be recorded, is held: flagged with a reason that starts with
HOLD, its original kept, while the other images go on.
"""

import errno
import logging
from collections import Counter, defaultdict
from pathlib import Path

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count
from django.utils import timezone

from sendit.apps.main.bulk import update_rows
from sendit.apps.main.deidconfig import deid_options
from sendit.apps.main.models import BatchIdentifiers, Hold, Image
from sendit.apps.main.pipeline import HOLD, SEND_FIELDS
from sendit.apps.main.tasks.common import (
    crash_point,
    keep_lease,
    media_dir,
    media_path,
    relative_media,
    run_step,
    timed_step,
)
from sendit.deid import IdentifyingValueFound, OutputNotProven, deidentify_file
from sendit.deid.identifiers import StudyIdentifiers
from sendit.deid.options import BASIC_PROFILE_CODE, OPTION_CODES

logger = logging.getLogger("sendit.tasks")
# Images recorded at a time. Each chunk's originals take the next chunk's outputs, so
# only the first chunk's outputs are new files: small chunks create few files, large
# ones make fewer queries (50: one new file in six for a 300-image study).
CHUNK = 50
#: The start of every de-identification hold's reason: the identifiers step, retry_batch
#: (which clears these holds to try again) and the send step's message go by it.
_RECORDED = ["uid", "image", "status", "header", "modify_date"]
#: what every output is checked for before its original may go (the batch's deid_record)
CHECKS = (
    "reads back as DICOM",
    "a new SOP Instance UID",
    "the input's pixel data, byte for byte",
    "none of the input's identifying values in any header value",
)


def hold_reason(exc):
    """The flag of an image whose de-identification failed: never a value, only its kind."""
    if type(exc).__name__ == "TextUndecided":  # sendit.deid.ocr, loaded only with DEID_OCR on
        reason = f"{HOLD}: held for review: {exc.reason}"
    elif isinstance(exc, OutputNotProven):
        reason = f"{HOLD}: output not proven: {exc.reason}"
    elif isinstance(exc, IdentifyingValueFound):
        reason = f"{HOLD}: identifying value in the output: {exc}"
    elif isinstance(exc, DatabaseError):
        reason = f"{HOLD}: could not be recorded ({type(exc).__name__})"
    else:  # the type only: an exception's text may quote a header value
        reason = f"{HOLD}: unexpected {type(exc).__name__}"
    return reason[:255]


@shared_task(bind=True, acks_late=True, max_retries=None)
def replace_identifiers(self, batch_id, lease=None):
    """De-identify every image not yet done; the original stays until the new file is recorded."""
    run_step(self, batch_id, _replace, handed=lease, then=lambda done: "send" if done else None)


def _replace(batch):
    if batch.status == "DONE":
        return False  # a late duplicate: the batch was delivered and cleaned up
    if settings.ANONYMIZE_PIXELS and not batch.log.get("pixels_note"):
        batch.update_log(
            pixels_note="ANONYMIZE_PIXELS is set, but pixels are cleaned only where a recipe's "
            "filter rules give regions: other images flagged for burned-in text are held"
        )
    record = BatchIdentifiers.objects.filter(batch=batch).first()
    if record is None or not record.ids:
        # Nothing asked of the identifier provider yet: that step comes first.
        return False
    ids = {int(k): StudyIdentifiers(**v) for k, v in record.ids.items()}
    options = deid_options()
    ocr = _ocr_options()
    out_dir = media_dir(batch.id) / "deid"
    out_dir.mkdir(parents=True, exist_ok=True)
    checked, proven, held, notes = 0, 0, Counter(), Counter()
    with timed_step(batch, "deidentify") as figures:
        todo = Image.objects.filter(batch=batch, status__in=["NEW", "PROCESSING"])
        todo.filter(status="NEW").update(status="PROCESSING")
        processed = 0
        # Originals whose de-identified copy is recorded: instead of being deleted, each
        # one's file takes the output of a later image (sendit.deid.files._output says why).
        spares = []
        while True:
            chunk = list(
                Image.objects.filter(batch=batch, status="PROCESSING").exclude(hold=Hold.DEID).order_by("id")[:CHUNK]
            )
            if not chunk:
                break
            done, holds = [], []  # (image, its original, its output); (image, reason, its output)
            for image in chunk:
                source = media_path(image.image)
                target = out_dir / source.name
                spare = spares.pop() if spares else None
                checked += 1
                try:
                    result = deidentify_file(
                        source,
                        target,
                        ids[image.identity],
                        options,
                        fields=SEND_FIELDS,
                        reuse=spare,
                        require_pixels=True,
                        ocr=ocr,
                    )
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        batch.add_error("deidentify", "the media disk is full; free space and retry the batch")
                        figures["stopped"] = "disk full"
                        _discard(spares + [spare] + _record(done, holds, held))
                        _note_record(batch, options, checked, proven, notes)
                        return False
                    raise
                except Exception as exc:
                    # Not proven, an identifying value in it, or unreadable: held, the
                    # original kept, the other images go on.
                    if spare is not None and spare.exists():
                        spares.append(spare)  # not taken: still free for the next image
                    holds.append((image, hold_reason(exc), target))
                    if getattr(exc, "record", None) is not None:  # OCR: counts and boxes, never text
                        image.header = {**(image.header or {}), "ocr": exc.record}
                    continue
                proven += 1
                image.header = result["fields"]
                if result["cleaned"]:
                    image.header["cleaned"] = result["cleaned"][:255]  # the rules, never a value
                if result.get("ocr") is not None:
                    image.header["ocr"] = result["ocr"]  # counts and boxes, never text
                notes.update(result["notes"])
                image.uid = result["sop_uid"]
                image.image = relative_media(target)
                image.status = "DONEPROCESSING"
                done.append((image, source, target))
            crash_point("deidentify")  # new files written, not yet recorded
            free = _record(done, holds, held)
            spares.extend(free)
            processed += len(free)
            keep_lease(batch)
        _discard(spares)
        figures.update(images=processed, held=sum(held.values()))
    _note_record(batch, options, checked, proven, notes)
    if held:
        for reason, count in held.items():
            batch.add_error("deidentify", f"{count} image(s) held back, originals kept: {reason}")
    batch.set_status("DONEPROCESSING")
    return True


def _record(done, holds, held):
    """Record a chunk's de-identified images and hold the failed ones; return the originals
    whose outputs are recorded (now free to go). ``held`` counts the holds by reason.

    One statement for the chunk; if the database refuses it (an IntegrityError on the
    (batch, uid) key, any database error), image by image, so that the one it refuses is
    held (its output removed, its original kept) and the others are recorded.
    """
    saved, failed = _save([image for image, _, _ in done])
    refused = {id(image) for image, _ in failed}
    outputs = {id(image): target for image, _, target in done}
    holds = holds + [(image, hold_reason(exc), outputs[id(image)]) for image, exc in failed]
    by_flag = defaultdict(list)
    for image, reason, target in holds:
        if image.hold == Hold.BURNED_IN:
            # Held back already (burned-in text): said too; retry_batch checks it again.
            by_flag[f"{reason}; also held back: {image.flagged}"[:255]].append(image.pk)
        else:
            by_flag[reason].append(image.pk)
        # An output nobody recorded (this run's, refused, or a dead worker's): the
        # original, which is kept, is what a retry starts from.
        target.unlink(missing_ok=True)
        held[reason] += 1
        logger.warning("batch=%s image=%s held: %s", image.batch_id, image.id, reason)
    now = timezone.now()
    for image, _, _ in holds:
        if (image.header or {}).get("ocr"):
            Image.objects.filter(pk=image.pk).update(header=image.header)  # the boxes a person reviews
    for flag, pks in by_flag.items():
        # Only the flag: a refused image's other fields were set for a record that failed.
        Image.objects.filter(pk__in=pks).update(hold=Hold.DEID, flagged=flag, modify_date=now)
    return [source for image, source, _ in done if id(image) not in refused]


def _save(images):
    """Write the de-identified fields of these images; (saved, [(image, error)])."""
    now = timezone.now()
    for image in images:
        image.modify_date = now
    try:
        update_rows(Image, images, _RECORDED)
        return images, []
    except DatabaseError:
        logger.warning("recording %s de-identified image(s) at once failed; recording them one by one", len(images))
    saved, failed = [], []
    for image in images:
        try:
            update_rows(Image, [image], _RECORDED)
            saved.append(image)
        except DatabaseError as exc:
            failed.append((image, exc))
    return saved, failed


def _note_record(batch, options, checked, proven, notes):
    """The batch's de-identification record: what was applied and checked, the holds, the
    images whose pixels a recipe's rules cleaned, and what the recipe could not do as written."""
    previous = batch.log.get("deid_record") or {}
    holds = dict(
        Image.objects.filter(batch=batch, hold=Hold.DEID)
        .order_by()
        .values("flagged")
        .annotate(n=Count("id"))
        .values_list("flagged", "n")
    )
    headers = list(Image.objects.filter(batch=batch).order_by("id").values_list("id", "header"))
    cleaned = Counter(header["cleaned"] for _, header in headers if header and header.get("cleaned"))
    # Per image the OCR read: found, blanked, held (counts only, never the text).
    ocr_record = [
        {"image": pk, "ocr": True, **{k: header["ocr"][k] for k in ("found", "blanked", "held")}}
        for pk, header in headers
        if header and header.get("ocr")
    ]
    recipe_notes = Counter(previous.get("recipe_notes") or {})
    recipe_notes.update(notes)
    recipe = settings.STUDY_DEID
    batch.update_log(
        deid_record={
            "profile": BASIC_PROFILE_CODE[1],
            "options": [OPTION_CODES[name][1] for name in options.enabled() if name in OPTION_CODES],
            "uid_root": options.uid_root,
            "recipe": Path(recipe).name if recipe else None,
            "checks": list(CHECKS),
            "images_checked": int(previous.get("images_checked", 0)) + checked,
            "proofs_passed": int(previous.get("proofs_passed", 0)) + proven,
            "holds": {reason[len(HOLD) + 2 :] or reason: n for reason, n in holds.items()},
            "pixels_cleaned": dict(cleaned),
            "ocr": ocr_record if settings.DEID_OCR else None,
            "recipe_notes": dict(recipe_notes),
            "runs": int(previous.get("runs", 0)) + 1,
        }
    )


def _ocr_options():
    """DEID_OCR's options; None when off, and then nothing of the OCR is imported."""
    if not settings.DEID_OCR:
        return None
    from sendit.deid.ocr import OcrOptions

    return OcrOptions(
        modalities=tuple(settings.DEID_OCR_MODALITIES), scrub=settings.DEID_OCR_SCRUB, tessdata=settings.TESSDATA_PREFIX
    )


def _discard(paths):
    """Delete originals whose de-identified copies are recorded."""
    for path in paths:
        if path is not None:
            path.unlink(missing_ok=True)
