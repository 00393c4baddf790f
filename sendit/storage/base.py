"""The destination interface: items to send, per-item results, retries, the registry.

A destination sends a batch of already de-identified DICOM files, verifies that each one
arrived, and returns one `SendResult` per item. Failures of single items never raise:
they are results. Only a configuration error (a missing URL, an unknown transport...)
raises `DestinationError`.

Retries work in rounds over the whole batch: every pending item is tried once; items that
failed for a transient reason (connection refused, timeout, HTTP 5xx, association aborted)
are tried again after an exponential backoff (SEND_BACKOFF * 2**n, capped at
SEND_BACKOFF_MAX), at most SEND_RETRIES times. A round in which some item succeeded resets
the backoff, so a long batch survives several short outages. When a round meets an
unreachable destination the rest of that round is not attempted (one refused connection
says enough), so a dead destination costs the capped backoff, not one backoff per file.

No log line or message here carries patient data: items are named by their index in the
batch and their (de-identified) SOPInstanceUID, never by their input file name.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar, overload

logger = logging.getLogger("sendit.storage")

__all__ = [
    "Destination",
    "DestinationError",
    "SendItem",
    "SendResult",
    "Outcome",
    "register",
    "REGISTRY",
    "orthanc_id",
    "file_md5",
    "setting_bool",
    "setting_int",
    "setting_float",
]


#: the settings a destination reads (SEND_*, ORTHANC_*, GOOGLE_*...): names to values as
#: Django's settings hold them (text, numbers, booleans, None)
Config = Mapping[str, Any]

_T = TypeVar("_T")
_D = TypeVar("_D", bound="Destination")


class DestinationError(Exception):
    """A destination is misconfigured (never raised for the failure of a single item)."""


@dataclass
class SendItem:
    """One de-identified DICOM file to send.

    `patient_id` is the pseudonym (the de-identified PatientID), `metadata` holds
    de-identified header fields (Modality, BodyPartExamined, SeriesDescription...).
    """

    path: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None) -> SendItem:
        """Build an item from a (de-identified) file's header; pixels are not read."""
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        meta: dict[str, str] = {}
        for keyword in (
            "Modality",
            "BodyPartExamined",
            "SeriesDescription",
            "StudyDescription",
            "SOPClassUID",
            "InstanceNumber",
        ):
            value = ds.get(keyword)
            if value not in (None, ""):
                meta[keyword] = str(value)
        if metadata:
            meta.update(metadata)
        return cls(
            path=str(path),
            sop_instance_uid=str(ds.SOPInstanceUID),
            study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            patient_id=str(ds.get("PatientID", "")),
            metadata=meta,
        )


@dataclass
class SendResult:
    """What happened to one item at one destination.

    ok: stored and verified. already_stored: it was there before this call (a re-send).
    remote_id: the destination's id (Orthanc instance id, GCS object name).
    error: why it failed (no patient data). note: a remark on a success (e.g. a DICOM
    warning status), None otherwise.
    """

    item: SendItem
    ok: bool
    remote_id: str | None = None
    already_stored: bool = False
    error: str | None = None
    note: str | None = None
    attempts: int = 0


@dataclass
class Outcome:
    """The result of one attempt at one item: final (ok or failed) or transient."""

    ok: bool = False
    transient: bool = False
    remote_id: str | None = None
    already_stored: bool = False
    error: str | None = None
    note: str | None = None
    unreachable: bool = False  # the destination itself is down: skip the rest of the round
    abort_batch: bool = False  # permanent for every item (e.g. authentication failed)
    stored_fresh: bool = False  # this attempt stored the item, though it failed afterwards

    @classmethod
    def success(cls, remote_id: str | None = None, already_stored: bool = False, note: str | None = None) -> Outcome:
        return cls(ok=True, remote_id=remote_id, already_stored=already_stored, note=note)

    @classmethod
    def failed(cls, error: str, remote_id: str | None = None, abort_batch: bool = False) -> Outcome:
        return cls(ok=False, error=error, remote_id=remote_id, abort_batch=abort_batch)

    @classmethod
    def retry(cls, error: str, unreachable: bool = False) -> Outcome:
        return cls(ok=False, transient=True, error=error, unreachable=unreachable)


# -- settings helpers ----------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on", "y", "t"}


def setting_bool(config: Config, key: str, default: bool = False) -> bool:
    value = config.get(key, default)
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return bool(value)


def setting_int(config: Config, key: str, default: int) -> int:
    value = config.get(key)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DestinationError(f"{key} must be an integer") from None


def setting_float(config: Config, key: str, default: float) -> float:
    value = config.get(key)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DestinationError(f"{key} must be a number") from None


@overload
def setting_str(config: Config, key: str, default: str) -> str: ...
@overload
def setting_str(config: Config, key: str, default: None = None) -> str | None: ...
def setting_str(config: Config, key: str, default: str | None = None) -> str | None:
    value = config.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    return str(value).strip()


# -- small shared functions ------------------------------------------------------------------


def orthanc_id(*values: str) -> str:
    """Orthanc's resource id: SHA-1 of the '|'-joined identifiers as 5 dash-separated groups.

    Instance: orthanc_id(PatientID, StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID);
    series: the first three; study: the first two; patient: PatientID alone.
    """
    digest = hashlib.sha1("|".join(v.strip() for v in values).encode("utf-8")).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def file_md5(path: str, chunk: int = 1 << 20) -> tuple[str, str]:
    """(hex, base64) MD5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest(), base64.b64encode(h.digest()).decode()


def describe_oserror(exc: OSError) -> str:
    """An OSError without its file name (input file names may carry patient data)."""
    import errno as _errno

    name = _errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return f"{name}: {exc.strerror or type(exc).__name__}"


def item_label(index: int, item: SendItem) -> str:
    return f"image {index} (SOPInstanceUID {item.sop_instance_uid})"


# -- registry and base class -------------------------------------------------------------------

REGISTRY: dict[str, type[Destination]] = {}


def register(kind: str) -> Callable[[type[_D]], type[_D]]:
    """Class decorator: make a destination kind available to get_destinations()."""

    def wrap(cls: type[_D]) -> type[_D]:
        REGISTRY[kind] = cls
        cls.kind = kind
        return cls

    return wrap


class Destination:
    """A place de-identified files are sent to. Subclasses implement one round of sending.

    Subclasses set `name` (the stable key recorded per image: "orthanc", "gcs"), implement
    `open()` / `close()` (one session or association per send_batch call), `send_round()`
    (try every given item once) and `check()`.
    """

    name: ClassVar[str] = "destination"
    kind: ClassVar[str] = "destination"

    def __init__(self, config: Config) -> None:
        self.config = dict(config)
        self.retries = max(0, setting_int(config, "SEND_RETRIES", 5))
        self.backoff = max(0.0, setting_float(config, "SEND_BACKOFF", 1.0))
        self.backoff_max = max(self.backoff, setting_float(config, "SEND_BACKOFF_MAX", 30.0))
        self.workers = max(1, setting_int(config, "SEND_WORKERS", 8))
        self.timeout = setting_float(config, "SEND_TIMEOUT", 60.0)
        self.log = logging.getLogger(f"sendit.storage.{self.name}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # -- to implement ------------------------------------------------------------------------
    def open(self) -> None:
        """Open the session / association used for a whole send_batch call."""

    def close(self) -> None:
        """Close what open() opened. Must not raise."""

    def send_round(self, items: list[tuple[int, SendItem]]) -> dict[int, Outcome]:
        """Try each (index, item) once; return an Outcome per index (missing = skipped)."""
        raise NotImplementedError

    def check(self) -> tuple[bool, str]:
        """Is the destination reachable? (ok, human-readable status without patient data)."""
        raise NotImplementedError

    # -- shared machinery ------------------------------------------------------------------
    def delay(self, failed_rounds: int) -> float:
        factor: int = 2**failed_rounds
        return min(self.backoff * factor, self.backoff_max)

    def send_batch(
        self,
        items: list[SendItem],
        heartbeat: Callable[[], object] | None = None,
        on_wait: Callable[[str, float], object] | None = None,
    ) -> list[SendResult]:
        """Send and verify every item; one SendResult per item, in the same order.

        ``heartbeat``, when given, is called before every round: a caller holding a lease
        renews it there, and may raise to stop (a long outage outlasting the lease).
        ``on_wait(error, seconds)``, when given, is called before each wait between rounds,
        so a status page can say "next try in 2 min" (the error carries no patient value).
        """
        items = list(items)
        if not items:
            return []
        started = time.monotonic()
        results: list[SendResult | None] = [None] * len(items)
        attempts = [0] * len(items)
        fresh: set[int] = set()  # stored by an earlier attempt of this call
        last_error: dict[int, str] = {}
        pending = list(range(len(items)))
        failed_rounds = 0
        self.open()
        try:
            while pending:
                if heartbeat is not None:
                    heartbeat()
                outcomes = self._guarded_round([(i, items[i]) for i in pending])
                next_pending, progress, abort = [], False, None
                for i in pending:
                    attempts[i] += 1
                    out = outcomes.get(i) or Outcome.retry("not attempted: destination unreachable", unreachable=True)
                    if out.abort_batch and abort is None:
                        abort = out.error
                    if out.ok:
                        progress = True
                        already = out.already_stored and i not in fresh
                        results[i] = SendResult(items[i], True, out.remote_id, already, None, out.note, attempts[i])
                    elif out.transient:
                        last_error[i] = out.error or "transient failure"
                        if out.stored_fresh:
                            fresh.add(i)
                        next_pending.append(i)
                    else:
                        results[i] = SendResult(items[i], False, out.remote_id, False, out.error, out.note, attempts[i])
                if abort is not None:
                    for i in next_pending:
                        results[i] = SendResult(items[i], False, None, False, abort, None, attempts[i])
                    next_pending = []
                pending = next_pending
                if not pending:
                    break
                if progress:
                    failed_rounds = 0
                if failed_rounds >= self.retries:
                    for i in pending:
                        results[i] = SendResult(
                            items[i],
                            False,
                            None,
                            False,
                            f"{self.name}: gave up after {attempts[i]} attempts: {last_error[i]}",
                            None,
                            attempts[i],
                        )
                    break
                wait = self.delay(failed_rounds)
                failed_rounds += 1
                self.log.warning(
                    "%s: %d of %d images not delivered yet (%s); retry %d/%d in %.1fs",
                    self.name,
                    len(pending),
                    len(items),
                    last_error[pending[0]],
                    failed_rounds,
                    self.retries,
                    wait,
                )
                if on_wait is not None:
                    on_wait(last_error[pending[0]], wait)
                time.sleep(wait)
                self.reopen()
        finally:
            self.close()
        done = [r for r in results if r is not None]
        if len(done) != len(items):  # pragma: no cover - each round settles an item or retries it
            raise RuntimeError(f"{self.name}: an image was left without a result")
        n_ok = sum(r.ok for r in done)
        elapsed = time.monotonic() - started
        if n_ok == len(items):
            self.log.info(
                "%s: %d images sent and verified in %.2fs (%d already stored)",
                self.name,
                n_ok,
                elapsed,
                sum(r.already_stored for r in done),
            )
        else:
            failed = [i for i, r in enumerate(done) if not r.ok]
            self.log.error(
                "%s: %d of %d images failed (indexes %s); first error: %s",
                self.name,
                len(failed),
                len(items),
                _short_list(failed),
                done[failed[0]].error,
            )
        return done

    def reopen(self) -> None:
        """Called between retry rounds: drop a possibly broken connection."""
        self.close()
        self.open()

    def _guarded_round(self, batch: list[tuple[int, SendItem]]) -> dict[int, Outcome]:
        try:
            return self.send_round(batch)
        except DestinationError:
            raise
        except Exception as exc:  # a bug or unexpected library error: retry, say what it was
            self.log.exception("%s: unexpected error during a send round", self.name)
            return {i: Outcome.retry(f"unexpected {type(exc).__name__}") for i, _ in batch}

    def parallel(self, batch: list[tuple[int, SendItem]], fn: Callable[[int, SendItem], Outcome]) -> dict[int, Outcome]:
        """Run fn over the batch in a small thread pool; stop early when unreachable."""
        stop = threading.Event()
        cause: list[Outcome] = []

        def one(pair: tuple[int, SendItem]) -> tuple[int, Outcome]:
            i, item = pair
            if stop.is_set():
                first = cause[0]
                if first.abort_batch:
                    return i, first
                return i, Outcome.retry(f"{first.error} (not attempted)", unreachable=True)
            try:
                out = fn(i, item)
            except Exception as exc:
                self.log.exception("%s: unexpected error sending image %d", self.name, i)
                out = Outcome.retry(f"unexpected {type(exc).__name__}")
            if out.unreachable or out.abort_batch:
                if not cause:
                    cause.append(out)
                stop.set()
            return i, out

        if self.workers == 1 or len(batch) == 1:
            return {i: out for i, out in map(one, batch) if out is not None}
        with concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix=f"send-{self.name}") as ex:
            return {i: out for i, out in ex.map(one, batch) if out is not None}


def _short_list(values: list[int], limit: int = 20) -> str:
    text = ",".join(str(v) for v in values[:limit])
    return text + (f",... ({len(values)} total)" if len(values) > limit else "")


def probe(
    call: Callable[[], _T], classify: Callable[[Exception, str], Outcome], what: str
) -> tuple[bool, _T | str | None]:
    """Run a destination's reachability check: (True, its value) or (False, why).

    ``classify`` maps the client library's exception to an Outcome in the destination's
    words (no paths, no contents); a DestinationError (configuration) is reported as is.
    The why of a failure is text (None only when the classified Outcome carries no error).
    """
    try:
        return True, call()
    except DestinationError as exc:
        return False, str(exc)
    except Exception as exc:
        try:
            return False, classify(exc, what).error
        except DestinationError as err:
            return False, str(err)


class _Closeable(Protocol):
    def close(self) -> object: ...


def close_quietly(client: _Closeable | None) -> None:
    """Close a client library's connection; failing to close one already broken changes nothing."""
    if client is None:
        return
    try:
        client.close()
    except Exception:
        pass
