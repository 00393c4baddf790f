"""Step 4: deliver each image to every enabled destination, verified, exactly once."""

from collections import Counter, defaultdict
from datetime import timedelta

import pydicom
from celery import shared_task
from django.utils import timezone

from sendit.apps.main.bulk import update_rows
from sendit.apps.main.models import Hold, Image
from sendit.apps.main.pipeline import METADATA_FIELDS, SEND_FIELDS
from sendit.apps.main.plain import retry_hint, send_failure
from sendit.apps.main.tasks.common import (
    crash_point,
    keep_lease,
    media_path,
    run_step,
    storage_config,
    timed_step,
)
from sendit.storage import SendItem, get_destinations

CHUNK = 200


@shared_task(bind=True, acks_late=True, max_retries=None)
def upload_storage(self, batch_id, lease=None):
    """Send what each destination lacks; an image is SENT once every destination has it."""
    run_step(self, batch_id, _send, handed=lease, then=lambda complete: "cleanup" if complete else None)


def _item(image):
    header = image.header if image.header and set(SEND_FIELDS) <= set(image.header) else None
    if header is None:  # sent as it arrived (DEIDENTIFY=false), or recorded before this field
        ds = pydicom.dcmread(media_path(image.image), stop_before_pixels=True)
        header = {f: str(ds.get(f, "") or "") for f in SEND_FIELDS}
    return SendItem(
        path=str(media_path(image.image)),
        sop_instance_uid=header["SOPInstanceUID"],
        study_instance_uid=header["StudyInstanceUID"],
        series_instance_uid=header["SeriesInstanceUID"],
        patient_id=header["PatientID"],
        metadata={f: header[f] for f in METADATA_FIELDS},
    )


def series_chunks(images, items):
    """Up to CHUNK images per send call, never splitting a series across calls.

    Per-series formats (NIfTI, one tar.gz per study) need a whole series in one call;
    a series larger than CHUNK is a call of its own. Each item learns how many images
    its series has, so a destination can tell a partial series from a whole one.
    """
    groups = defaultdict(list)
    for image in images:
        item = items[image.id]
        groups[(item.study_instance_uid, item.series_instance_uid)].append(image)
    chunk = []
    for members in groups.values():
        for image in members:
            items[image.id].metadata["SeriesImageCount"] = len(members)
        if chunk and len(chunk) + len(members) > CHUNK:
            yield chunk
            chunk = []
        chunk.extend(members)
    if chunk:
        yield chunk


def _waiting(batch, name):
    """on_wait for a destination: the batch's log says who is awaited and when the next try is,
    for the status page's "Waiting: Orthanc is not answering, next try in 2 min"."""

    def wait(error, seconds):
        next_try = timezone.now() + timedelta(seconds=seconds)
        batch.update_log(waiting={"destination": name, "next_try": next_try.isoformat()})

    return wait


def _send(batch):
    if batch.status == "DONE":
        return False  # a late duplicate: delivered and cleaned up already
    destinations = get_destinations(storage_config())
    if not destinations:
        # The original sendit's "static storage": de-identified images stay in media.
        batch.update_log(destinations=[], kept_in_media=True)
        batch.set_status("DONEPROCESSING")
        return False
    names = [d.name for d in destinations]
    batch.update_log(destinations=names)
    ready = Image.objects.filter(batch=batch, status="DONEPROCESSING", hold=Hold.NONE)
    failures = Counter()
    delivered = Counter()  # (destination, "stored" | "already_stored")
    notes = Counter()
    with timed_step(batch, "send", destinations=",".join(names)) as figures:
        sent = 0
        images = list(ready.order_by("id"))
        items = {image.id: _item(image) for image in images}
        for chunk in series_chunks(images, items):
            for destination in destinations:
                missing = [image for image in chunk if destination.name not in image.destinations]
                if not missing:
                    continue
                # The lease is renewed before every retry round, so a long outage does not
                # let the sweeper start a second sender on this batch.
                results = destination.send_batch(
                    [items[image.id] for image in missing],
                    heartbeat=lambda: keep_lease(batch),
                    on_wait=_waiting(batch, destination.name),
                )
                for image, result in zip(missing, results):
                    if result.ok and result.note:
                        notes[(destination.name, result.note)] += 1
                    if result.ok:
                        delivered[(destination.name, "already_stored" if result.already_stored else "stored")] += 1
                        image.destinations = {
                            **image.destinations,
                            destination.name: {
                                "time": timezone.now().isoformat(),
                                "remote_id": result.remote_id,
                                "already_stored": result.already_stored,
                            },
                        }
                    else:
                        # One line per reason: images skipped in a round that met a dead
                        # destination share the reason of the one that met it.
                        why = (result.error or "not delivered").replace(" (not attempted)", "")
                        failures[(destination.name, why)] += 1
            crash_point("send")  # delivered, not yet recorded
            for image in chunk:
                if all(name in image.destinations for name in names):
                    image.status = "SENT"
                    sent += 1
            update_rows(Image, chunk, ["destinations", "status"])
            keep_lease(batch)
        figures.update(
            images=sent,
            failed=sum(failures.values()),
            already_stored=sum(n for (_, kind), n in delivered.items() if kind == "already_stored"),
        )
    if batch.log.get("waiting"):
        batch.update_log(waiting=None)  # no longer waiting: delivered, or given up (an error says so)
    if delivered:
        # Totals over every run of this step: a re-send after a crash shows as already_stored.
        totals = {name: dict(counts) for name, counts in batch.log.get("deliveries", {}).items()}
        for (name, kind), n in delivered.items():
            totals.setdefault(name, {})
            totals[name][kind] = totals[name].get(kind, 0) + n
        batch.update_log(deliveries=totals)
    if notes:
        batch.update_log(
            notes=list(batch.log.get("notes", []))
            + [f"{name}: {count} image(s): {note}" for (name, note), count in notes.items()]
        )
    for (name, why), count in failures.items():
        batch.add_error("send", send_failure(name, count, why, batch.id))
    held = Image.objects.filter(batch=batch).exclude(hold=Hold.NONE).count()
    if held:
        batch.add_error(
            "send",
            f"{held} image(s) held back and not sent (burned-in text suspected, or a "
            "de-identified copy not proven or holding an identifying value); their originals "
            "are kept. Look at each on the batch page (its flag says why), "
            f"then {retry_hint(batch.id)} to check them again.",
        )
    return not failures and not Image.objects.filter(batch=batch, status="DONEPROCESSING").exists()
