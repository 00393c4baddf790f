"""A batch's state and errors in plain words, for people.

The one place that turns a batch's status, errors, log and held images into a sentence
such as "Delivered and cleaned up" or "Stopped: Orthanc is not answering; 3 images wait on
this node". Pages, the API and commands all call :func:`plain_state`; the send step writes
its errors with :func:`send_failure`. The original sendit's statuses (NEW, PROCESSING, DONEPROCESSING,
DONE) are unchanged: this is a read-only explanation beside them.

Nothing here reads an image or a header value: only counts, step names, destination names,
the batch name (chosen by the sender) and the node's own messages, which carry no patient
value by construction and are scrubbed again before being shown.
"""

from __future__ import annotations

import datetime
import re
from collections import Counter
from dataclasses import dataclass

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from sendit.apps.main.models import Hold

#: How a destination is named for people.
DESTINATION_NAMES = {
    "orthanc": "Orthanc",
    "gcs": "Google Cloud Storage",
    "google": "Google Cloud Storage",
    "dicomweb": "the DICOMweb server",
    "datastore": "Google Datastore",
}

#: Short words for why a file was set aside at import (the start of the importer's message).
SET_ASIDE_KINDS = (
    ("not a DICOM file", "not DICOM"),
    ("is empty", "empty"),
    ("truncated", "truncated"),
    ("repeats an instance", "repeated instance"),
    ("no SOPInstanceUID", "no instance UID"),
    ("DICOM preamble but no file meta", "no file meta"),
    ("more than", "too large"),
    ("symbolic link", "symbolic link"),
    ("not UTF-8", "name not UTF-8"),
    ("arrived again", "name of an earlier batch"),
    ("nested more than", "nested too deep"),
)

RETRY_BUTTON = "“Retry what failed”"


def destination_name(name: str) -> str:
    """'orthanc' -> 'Orthanc': how a destination is called on a page."""
    return DESTINATION_NAMES.get(str(name).lower(), str(name))


def retry_hint(batch_id: int | None) -> str:
    """What a person can do: the page's button, or the same from a shell."""
    command = f"python manage.py retry_batch {batch_id}" if batch_id else "python manage.py retry_batch ID"
    return f"press {RETRY_BUTTON} on the batch page or run `{command}`"


# -- send failures ---------------------------------------------------------------------
_PREFIX = re.compile(r"^(?:[a-z_]+: )+")
_GAVE_UP = re.compile(r"gave up after (\d+) attempts?: ", re.IGNORECASE)
# The request that failed ("on POST /instances", "on GET /series/..."): noise for a person,
# and a path a page would mask as [path].
_REQUEST = re.compile(r"\s*\(?\bon (?:GET|POST|PUT|DELETE|HEAD) [^\s)]*\)?")
_HTTP = re.compile(r"HTTP (\d{3})")
HTTP_WORDS = {
    401: "refused the password",
    403: "refused access",
    404: "has no such address",
    413: "found the request too large",
    500: "failed internally",
    502: "is behind a proxy that got no answer",
    503: "is unavailable",
    504: "did not answer in time",
}


@dataclass
class SendFailure:
    """What one send error says, taken apart: who, how many, why, and whether it was given up."""

    destination: str
    count: int
    cause: str
    attempts: int | None
    unreachable: bool


def _cause(why: str) -> tuple[str, int | None, bool]:
    """(the cause in plain words, attempts made when the destination was given up, unreachable?)."""
    text = _PREFIX.sub("", str(why or "not delivered").strip())
    attempts = None
    match = _GAVE_UP.search(text)
    if match:
        attempts = int(match.group(1))
        text = _PREFIX.sub("", text[match.end() :])
    text = _REQUEST.sub("", text).strip(" :;")
    lower = text.lower()
    unreachable = (
        any(
            word in lower
            for word in (
                "refused",
                "unreachable",
                "timed out",
                "cannot connect",
                "connection",
                "no c-store response",
                "association lost",
                "did not answer",
            )
        )
        and "refused this instance" not in lower
    )
    code = _HTTP.search(text)
    if code and int(code.group(1)) in (502, 503, 504):
        unreachable = True
    if code and int(code.group(1)) in HTTP_WORDS and text.startswith("HTTP"):
        text = f"it {HTTP_WORDS[int(code.group(1))]} (HTTP {code.group(1)})"
    elif unreachable and "connection refused" in lower:
        text = "it is not answering (connection refused)"
    elif unreachable and "timed out" in lower:
        text = "it did not answer in time"
    return text, attempts, unreachable


def send_failure(
    destination: str, count: int, why: str, batch_id: int | None = None, when: datetime.datetime | None = None
) -> str:
    """The error a person reads when images could not be delivered: the destination once,
    the cause, what sendit did (gave up at, after how many tries) and what to do."""
    cause, attempts, unreachable = _cause(why)
    who = destination_name(destination)
    images = f"{count} image{'s' if count != 1 else ''}"
    when = when or timezone.now()
    if cause.lower().startswith(who.lower() + " "):
        cause = "it " + cause[len(who) + 1 :]  # the destination named once
    told = f"{who} did not take {images}: {cause}."
    if attempts:
        told += f" Sendit tried {attempts} times and gave up at {when:%H:%M} UTC; the images wait on this node."
    else:
        told += " Sendit did not try again (trying again would not change the answer); the images wait on this node."
    fix = f"When {who} answers again, " if unreachable else "Once the cause is fixed, "
    return f"{told} {fix}{retry_hint(batch_id)}."


def parse_send_error(message: str) -> SendFailure | None:
    """A send error, old wording or new, taken apart (None when it is not one)."""
    text = str(message or "")
    old = re.match(r"^([\w-]+): (\d+) image\(s\) not delivered: (.*)$", text, re.DOTALL)
    if old:
        cause, attempts, unreachable = _cause(old.group(3))
        return SendFailure(old.group(1), int(old.group(2)), cause, attempts, unreachable)
    new = re.match(r"^(.+?) did not take (\d+) images?: (.*?)\. Sendit (?:tried (\d+) times)?", text, re.DOTALL)
    if new:
        names = {v: k for k, v in DESTINATION_NAMES.items()}
        cause = new.group(3)
        unreachable = "When " in text and "answers again" in text
        return SendFailure(
            names.get(new.group(1), new.group(1)),
            int(new.group(2)),
            cause,
            int(new.group(4)) if new.group(4) else None,
            unreachable,
        )
    return None


def plain_error(error: dict, batch_id: int | None = None) -> str:
    """An error as shown: a send error of the old wording is rewritten for people; the others
    are the node's own sentences (docs/errors.md)."""
    message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
    if message.startswith("files that could not be imported were left in ") and "retry" not in message:
        return (
            f"{message}: fix or remove them there (the Errors page of the documentation says why each "
            f"kind is set aside), then {retry_hint(batch_id)}; what is left is imported again."
        )
    if isinstance(error, dict) and error.get("step") == "send" and " not delivered: " in message:
        failure = parse_send_error(message)
        if failure is not None:
            when = _when(error.get("time"))
            return send_failure(
                failure.destination, failure.count, message.split(" not delivered: ", 1)[1], batch_id, when
            )
    return message


# -- the state of a batch --------------------------------------------------------------
def _when(value) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value
    parsed = parse_datetime(str(value)) if value else None
    if parsed and timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, datetime.UTC)
    return parsed


def _in(delta_seconds: float) -> str:
    """'in 40 s', 'in 2 min'."""
    seconds = max(0, int(round(delta_seconds)))
    if seconds < 90:
        return f"in {seconds} s"
    return f"in {round(seconds / 60)} min"


def _set_aside(errors: list[dict]) -> str | None:
    """ "3 files set aside in ST-000004.err: not DICOM (2), truncated (1)" from import errors."""
    kinds: Counter = Counter()
    folder = None
    for error in errors:
        message = str(error.get("message", ""))
        left = re.search(r"(?:left in|set aside as) (\S+?\.err\d*)\b", message)
        if left:
            folder = left.group(1)
        if message.startswith("files that could not be imported were left in"):
            continue
        count = re.search(r" \(x(\d+)\)$", message)
        n = int(count.group(1)) if count else 1
        word = next((short for start, short in SET_ASIDE_KINDS if start in message), "damaged")
        kinds[word] += n
    if not kinds and not folder:
        return None
    total = sum(kinds.values())
    where = f" in {folder}" if folder else ""
    if not kinds:
        return f"Files set aside{where}"
    detail = ", ".join(f"{word} ({n})" for word, n in kinds.most_common())
    return f"{total} file{'s' if total != 1 else ''} set aside{where}: {detail}"


#: Each kind of hold in a few words.
HOLD_WORDS = {Hold.DEID: "de-identification failed", Hold.BURNED_IN: "burned-in text suspected"}


def _held(flags: Counter) -> str | None:
    """ "Held for review: burned-in text suspected (4 images)" from the held images' counts by
    kind of hold (Image.hold)."""
    if not flags:
        return None
    reasons: Counter = Counter()
    for hold, n in flags.items():
        reasons[HOLD_WORDS.get(hold, HOLD_WORDS[Hold.BURNED_IN])] += n
    parts = [f"{why} ({n} image{'s' if n != 1 else ''})" for why, n in reasons.most_common()]
    return "Held for review: " + ", ".join(parts)


def plain_state(
    batch, flags: Counter | None = None, image_statuses: Counter | None = None, now: datetime.datetime | None = None
) -> str:
    """The batch's state in one sentence (or a few joined by '; ').

    `flags` counts the batch's held images by kind of hold and `image_statuses` its images by status;
    :func:`batch_facts` reads both in two queries when they are not given.
    """
    if flags is None or image_statuses is None:
        flags, image_statuses = batch_facts(batch)
    now = now or timezone.now()
    log = batch.log if isinstance(batch.log, dict) else {}
    errors = [e if isinstance(e, dict) else {"step": "", "message": str(e)} for e in batch.errors or []]
    parts: list[str] = []

    set_aside = _set_aside([e for e in errors if e.get("step") == "import"])
    if set_aside:
        parts.append(set_aside)
    stopped = []
    for error in errors:
        if error.get("step") != "send":
            continue
        failure = parse_send_error(str(error.get("message", "")))
        if failure is None:
            continue
        who = destination_name(failure.destination)
        images = f"{failure.count} image{'s' if failure.count != 1 else ''} wait on this node"
        if failure.unreachable:
            stopped.append(f"Stopped: {who} is not answering; {images}")
        else:
            stopped.append(
                f"Stopped: {who} refused {failure.count} image{'s' if failure.count != 1 else ''} ({failure.cause})"
            )
    parts.extend(dict.fromkeys(stopped))
    held = _held(flags)
    if held:
        parts.append(held)
    # Held images are said once, by their flags, whichever step recorded them.
    others = [
        e
        for e in errors
        if e.get("step") not in ("import", "send") and not (flags and "held back" in str(e.get("message", "")))
    ]
    if others:
        steps = ", ".join(dict.fromkeys(str(e.get("step") or "a step") for e in others))
        parts.append(f"Stopped at {steps}: see the errors")
    if batch.has_error and not parts:
        parts.append("Stopped: see the errors")
    if parts:
        return "; ".join(parts)

    waiting = log.get("waiting") if isinstance(log.get("waiting"), dict) else None
    if waiting and batch.status != "DONE":
        who = destination_name(waiting.get("destination", "a destination"))
        next_try = _when(waiting.get("next_try"))
        later = f", next try {_in((next_try - now).total_seconds())}" if next_try and next_try > now else ""
        return f"Waiting: {who} is not answering{later}"
    if batch.status == "DONE":
        return "Delivered and cleaned up"
    total = sum(image_statuses.values())
    if log.get("imported") and not total and not log.get("images"):
        return "Nothing to send: no file of the folder was an image to import"
    if batch.status == "NEW":
        return "Received; waiting for a worker to import it" if not total else "Imported; waiting for a worker"
    if batch.status == "PROCESSING" or image_statuses.get("NEW") or image_statuses.get("PROCESSING"):
        return "De-identifying"
    if log.get("kept_in_media") or log.get("destinations") == []:
        return "De-identified and kept on this node (no destination is switched on)"
    if image_statuses.get("DONEPROCESSING"):
        names = ", ".join(destination_name(n) for n in log.get("destinations") or []) or "the destinations"
        return f"Sending to {names}"
    if total and image_statuses.get("SENT") == total:
        return "Delivered; cleaning up"
    return "De-identified"


def batch_facts(batch) -> tuple[Counter, Counter]:
    """(held images by kind of hold, images by status): what plain_state needs beyond the batch row."""
    from django.db.models import Count

    from sendit.apps.main.models import Image

    rows = Image.objects.filter(batch_id=batch.pk)
    flags = Counter(dict(rows.exclude(hold=Hold.NONE).values_list("hold").annotate(n=Count("id")).order_by()))
    statuses = Counter(dict(rows.values_list("status").annotate(n=Count("id")).order_by()))
    return flags, statuses


def facts_of_many(batch_ids: list[int]) -> dict[int, tuple[Counter, Counter]]:
    """batch_facts for many batches in two queries (the dashboard's list)."""
    from django.db.models import Count

    from sendit.apps.main.models import Image

    facts: dict[int, tuple[Counter, Counter]] = {pk: (Counter(), Counter()) for pk in batch_ids}
    rows = Image.objects.filter(batch_id__in=batch_ids)
    for pk, hold, n in rows.exclude(hold=Hold.NONE).values_list("batch_id", "hold").annotate(n=Count("id")).order_by():
        facts[pk][0][hold] += n
    for pk, status, n in rows.values_list("batch_id", "status").annotate(n=Count("id")).order_by():
        facts[pk][1][status] += n
    return facts


def image_state(image) -> str:
    """An image's state in a few words, beside its seed status."""
    if image.flagged:
        why = "de-identification failed" if image.hold == Hold.DEID else "burned-in text suspected"
        return f"Held for review: {why}"
    if image.status in ("NEW", "PROCESSING"):
        return "Waiting to be de-identified"
    if image.status == "DONEPROCESSING":
        return "De-identified; waiting to be sent"
    names = ", ".join(destination_name(n) for n in (image.destinations or {}))
    if image.status == "SENT":
        return f"Delivered to {names}" if names else "Delivered"
    return "Delivered and cleaned up"
