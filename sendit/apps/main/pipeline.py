"""The pipeline, defined once: its steps in order, the task that runs each, and how a batch
resumes.

A batch goes import -> identifiers -> deidentify -> send -> cleanup. Each task, when its step
is done, asks :func:`queue` for the step it names next (identifiers may skip de-identification
when DEIDENTIFY is off; a batch with nothing to send goes to cleanup). Retry, the sweeper and
recovery ask :func:`next_step` what a batch still needs, from its images' statuses; the batch
page and the metrics list the steps in :data:`STEPS` order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

from sendit import config
from sendit.apps.main.models import Batch, Hold, Image, ImageStatus

#: The steps, in the order a batch goes through them (also the keys of batch.log["steps"]).
STEPS = ("import", "identifiers", "deidentify", "send", "cleanup")

# De-identified header fields a researcher searches by; sent as metadata to cloud destinations.
METADATA_FIELDS = (
    "Modality",
    "BodyPartExamined",
    "SeriesDescription",
    "StudyDescription",
    "Manufacturer",
    "ManufacturerModelName",
    "SliceThickness",
    "StudyDate",
)
# What the send step needs of each de-identified header; the de-identification step
# records these on the Image so that sending does not read every header again.
SEND_FIELDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID") + METADATA_FIELDS

#: The words that begin the flag of an image de-identification holds (Hold.DEID), for people.
HOLD = "de-identification failed"


def task(step: str) -> Any:
    """The Celery task that runs `step`. Imported here, when asked: each task module asks for
    the next step's task, so importing them at the top would make a circle."""
    from sendit.apps.main.tasks.cleanup import cleanup
    from sendit.apps.main.tasks.deidentify import replace_identifiers
    from sendit.apps.main.tasks.identifiers import get_identifiers
    from sendit.apps.main.tasks.import_dicom import import_dicomdir
    from sendit.apps.main.tasks.send import upload_storage

    return {
        "import": import_dicomdir,
        "identifiers": get_identifiers,
        "deidentify": replace_identifiers,
        "send": upload_storage,
        "cleanup": cleanup,
    }[step]


def queue(step: str, *args: Any, **kwargs: Any) -> None:
    """Queue `step` with its arguments (a batch id; the import takes a folder)."""
    task(step).delay(*args, **kwargs)


def sending() -> bool:
    """Whether any destination is on (a SEND_TO_* switch of a storage concern); else the send
    step has nothing to do."""
    switches = [n for n in config.names(*config.STORAGE_CONCERNS) if n.startswith("SEND_TO_")]
    return any(getattr(settings, name) for name in switches)


def next_step(batch: Batch) -> tuple[str, tuple[Any, ...]] | None:
    """The first step that still has work in this batch: (name, task arguments), or None.

    An import that has not finished while the batch's folder is still in the data folder
    comes first (the files not yet moved are there); then what the images' statuses say.
    """
    folder = Path(settings.DATA_FOLDER) / batch.uid
    if not batch.log.get("imported") and folder.is_dir():
        return "import", (str(folder),)
    images = Image.objects.filter(batch=batch)
    waiting = images.filter(status__in=[ImageStatus.NEW, ImageStatus.PROCESSING])
    if waiting.exclude(hold=Hold.DEID).exists():
        return "identifiers", (batch.id,)
    if sending() and images.filter(status=ImageStatus.DONEPROCESSING, hold=Hold.NONE).exists():
        return "send", (batch.id,)
    if images.exists() and not images.exclude(status__in=[ImageStatus.SENT, ImageStatus.DONE]).exists():
        return "cleanup", (batch.id,)
    return None


def resume(batch: Batch) -> str | None:
    """Queue the first step that still has work in this batch; its name, or None."""
    step = next_step(batch)
    if step is None:
        return None
    name, args = step
    queue(name, *args)
    return name


def step_order(name: str) -> int:
    """Where a step name sorts (unknown names last), for pages listing a batch's steps."""
    return STEPS.index(name) if name in STEPS else len(STEPS)
