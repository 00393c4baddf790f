"""Orthanc over its REST API: POST /instances, then verify in bulk, per series.

One HTTP client (http.client, kept-alive connections shared by the sending threads) per
send_batch call; SEND_WORKERS files are uploaded in parallel (Orthanc ingests parallel
uploads faster).

Per file:
  1. POST /instances with the file's bytes -> {"ID", "ParentSeries", "Status"}; Status
     Success or AlreadyStored is accepted, Failure / FilteredOut are failures of that file.
  2. The returned ID is compared with Orthanc's id computed from the item's PatientID,
     study, series and SOP instance UIDs (a mismatch is noted: the SendItem does not
     describe the file).
  3. AlreadyStored (and not stored by an earlier attempt of this call): Orthanc keeps the
     first instance with these four UIDs, so the stored one is compared with the local file
     (`compare_stored`: the attachment's MD5, else the stored file's data set). A different
     instance fails the image ("a different instance with this UID is already stored"),
     without retry; the same one is ok, already_stored.
Per round, with ORTHANC_VERIFY=series (the default):
  4. GET /series/{ParentSeries} once per series; every instance stored fresh must be listed
     there, otherwise it is retried. An image is ok only once so verified.
With ORTHANC_VERIFY=md5, step 4 is instead, per file:
  4'. GET /instances/{ID}/attachments/dicom/md5 must equal the local file's MD5 (the bytes
     arrived intact). If Orthanc stores no MD5 (StoreMD5ForAttachments false)
     GET /instances/{ID} proves existence instead.

What stops the batch and what fails one image: Orthanc's refusal of one file (an HTTP 4xx
whose body is an Orthanc error, e.g. 404 "Inexistent tag" for a file without
SeriesInstanceUID, 400 "Bad file format"; any 400, 413 or 415) fails that image only, in
plain words. HTTP 401/403 fails the whole batch at once ("authentication failed"); so does a
404 or 405 that is not Orthanc's (no Orthanc error body) or Orthanc's "Unknown resource"
(ORTHANC_URL is not Orthanc's root). 408/425/429/5xx and connection failures are retried.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import TYPE_CHECKING

from .base import (
    Config,
    Destination,
    DestinationError,
    Outcome,
    SendItem,
    SendResult,
    describe_oserror,
    file_md5,
    orthanc_id,
    register,
    setting_str,
)
from .http import Client, RequestFailed, Response

if TYPE_CHECKING:  # pragma: no cover - pydicom is imported when a header is read
    from pydicom.dataset import Dataset

TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
# The failure of one image that must not be mistaken for Orthanc's refusal of it.
DIFFERENT_INSTANCE = "a different instance with this UID is already stored"
# Whose answer a 4xx without an Orthanc error body is: the file's (the request was
# understood and refused for what it carried) or the address's (nothing there takes DICOM).
REFUSED_FILE_HTTP = {
    400: "bad request",
    413: "file too large",
    415: "unsupported media type",
    422: "unprocessable content",
}
WRONG_ADDRESS_HTTP = {404, 405}
# Orthanc's error names (OrthancError) for a file it cannot take, in plain words.
ORTHANC_REFUSALS = {
    "Inexistent tag": "a tag Orthanc requires is missing",
    "Bad file format": "not a DICOM file Orthanc can read",
    "Bad request": "Orthanc could not read the request",
    "Incompatible image format": "its image format is not supported",
    "Not implemented": "Orthanc does not support it",
    "Parameter out of range": "a value is out of range",
}
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def orthanc_settings(config: Config) -> tuple[str | None, tuple[str, str] | None]:
    url = setting_str(config, "ORTHANC_URL")
    if url:
        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise DestinationError("orthanc: ORTHANC_URL must start with http:// or https://")
    user = setting_str(config, "ORTHANC_USERNAME")
    auth = (user, config.get("ORTHANC_PASSWORD") or "") if user else None
    return url, auth


def orthanc_error(response: Response) -> str | None:
    """Orthanc's error name (OrthancError) in a JSON error body, None when the body is not
    Orthanc's. A fixed vocabulary ("Inexistent tag", "Bad file format"...): no data."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("OrthancError") if isinstance(body, dict) else None
    if isinstance(error, str) and error:
        return error
    return None


def http_failure(what: str, response: Response) -> Outcome:
    """An answer other than 200 that concerns the destination, or one request to it."""
    code = response.status_code
    if code in (401, 403):
        return Outcome.failed(
            f"orthanc: authentication failed (HTTP {code} on {what}): check ORTHANC_USERNAME / ORTHANC_PASSWORD",
            abort_batch=True,
        )
    error = orthanc_error(response)
    message = f"orthanc: HTTP {code} on {what}" + (f": {error}" if error else "")
    if code in TRANSIENT_HTTP:
        return Outcome.retry(message)
    if code in WRONG_ADDRESS_HTTP and what.startswith("POST") and error in (None, "Unknown resource"):
        return Outcome.failed(message + " (is ORTHANC_URL the root of an Orthanc server?)", abort_batch=True)
    return Outcome.failed(message)


def refused_instance(response: Response, path: str) -> Outcome:
    """POST /instances was answered with an error: Orthanc's refusal of this one file (that
    image fails, in plain words; the batch goes on), or a failure of the whole destination."""
    out = http_failure("POST /instances", response)
    if out.transient or out.abort_batch:
        return out
    code = response.status_code
    error = orthanc_error(response)
    if error is None and code not in REFUSED_FILE_HTTP:
        return out  # not Orthanc's answer about this file: say what was answered
    why = uid_problems(path)
    if error is not None:
        plain = why or ORTHANC_REFUSALS.get(error)
        reason = f"{plain} (Orthanc: {error}, HTTP {code})" if plain else f"Orthanc: {error}, HTTP {code}"
        return Outcome.failed(f"orthanc: Orthanc refused this instance: {reason}")
    reason = f"{why} (HTTP {code}, {REFUSED_FILE_HTTP[code]})" if why else f"HTTP {code}, {REFUSED_FILE_HTTP[code]}"
    return Outcome.failed(f"orthanc: the destination refused this instance: {reason}")


def uid_problems(path: str) -> str | None:
    """Which identifying UID the file lacks, in words naming the tag (never its value); None
    when the three are there or the file's header cannot be read."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return None
    return missing_uids(ds)


def missing_uids(ds: Dataset) -> str | None:
    problems: list[str] = []
    for keyword in REQUIRED_UIDS:
        if keyword not in ds:
            problems.append(f"it has no {keyword}")
        elif not str(ds.get(keyword) or "").strip():
            problems.append(f"its {keyword} is empty")
    return "; ".join(problems) or None


def connection_failure(what: str, exc: RequestFailed) -> Outcome:
    return Outcome.retry(f"orthanc: {exc.reason} on {what}", unreachable=True)


def series_instances(client: Client, url: str, series_id: str, timeout: float) -> tuple[set[str], Outcome | None]:
    """The Orthanc instance ids one series lists (none when Orthanc has no such series),
    or the failure that kept them from being read."""
    what = "GET /series/{id}"
    try:
        r = client.get(f"{url}/series/{series_id}", timeout=timeout)
    except RequestFailed as exc:
        return set(), connection_failure(what, exc)
    if r.status_code == 404:
        return set(), None
    if r.status_code != 200:
        return set(), http_failure(what, r)
    try:
        return set(r.json().get("Instances", [])), None
    except (ValueError, AttributeError):
        return set(), Outcome.retry("orthanc: GET /series/{id} did not answer JSON")


def compare_stored(
    client: Client, url: str, remote_id: str, path: str, timeout: float, local_md5: str | None = None
) -> Outcome:
    """Is the instance Orthanc already keeps under remote_id the one in this local file?

    Orthanc keeps the first instance stored under a set of four UIDs and answers any later
    one AlreadyStored (REST) or success (C-STORE). Rare (a re-send, or two different images
    given the same UIDs), so each costs a request: the stored attachment's MD5 against the
    local file's; when they differ (a copy stored over C-STORE has Orthanc's own file meta
    header) or Orthanc stores no MD5, the stored file itself, whose data set (the file
    without its meta header) must equal the local one.
    Ok and already_stored when the same; failed, not retried, when different.
    """
    what = "GET /instances/{id}/attachments/dicom/md5"
    try:
        r = client.get(f"{url}/instances/{remote_id}/attachments/dicom/md5", timeout=timeout)
    except RequestFailed as exc:
        return connection_failure(what, exc)
    if r.status_code in (401, 403) or r.status_code in TRANSIENT_HTTP:
        return http_failure(what, r)
    try:
        if r.status_code == 200:
            if local_md5 is None:
                local_md5 = file_md5(path)[0]
            if r.text.strip().strip('"') == local_md5:
                return Outcome.success(remote_id, already_stored=True)
        with open(path, "rb") as f:
            local = f.read()
    except OSError as exc:
        return Outcome.failed(f"orthanc: cannot read the local file ({describe_oserror(exc)})")
    what = "GET /instances/{id}/file"
    try:
        r = client.get(f"{url}/instances/{remote_id}/file", timeout=timeout)
    except RequestFailed as exc:
        return connection_failure(what, exc)
    if r.status_code == 404:
        return Outcome.retry("orthanc: instance accepted but not found afterwards")
    if r.status_code != 200:
        return http_failure(what, r)
    same = same_dataset(local, r.content)
    if same is None:
        return Outcome.failed(
            "orthanc: an instance with this UID is already stored and cannot be compared with this one", remote_id
        )
    if same:
        return Outcome.success(remote_id, already_stored=True)
    return Outcome.failed(f"orthanc: {DIFFERENT_INSTANCE}", remote_id)


def dataset_bytes(data: bytes) -> bytes:
    """A DICOM file's bytes after its preamble and file meta group (group 0002, which the
    receiver may rewrite: Orthanc writes its own over C-STORE)."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return data
    pos = 132
    long_vrs = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
    while pos + 8 <= len(data) and data[pos : pos + 2] == b"\x02\x00":
        vr = data[pos + 4 : pos + 6]
        if vr in long_vrs:
            pos += 12 + int.from_bytes(data[pos + 8 : pos + 12], "little")
        else:
            pos += 8 + int.from_bytes(data[pos + 6 : pos + 8], "little")
    return data[pos:]


def same_dataset(local: bytes, stored: bytes) -> bool | None:
    """Whether two files hold the same data set (their meta headers aside); None when one of
    them cannot be read as DICOM. Byte for byte first, else element by element, group
    lengths (gggg,0000) left out: a receiver may re-encode without changing a value."""
    if dataset_bytes(local) == dataset_bytes(stored):
        return True
    import pydicom

    try:
        a = _without_group_lengths(pydicom.dcmread(io.BytesIO(local)))
        b = _without_group_lengths(pydicom.dcmread(io.BytesIO(stored)))
        return a == b  # the data sets' elements; file_meta is not part of the comparison
    except Exception:
        return None


def _without_group_lengths(ds: Dataset) -> Dataset:
    for tag in [t for t in ds.keys() if t.element == 0]:
        del ds[tag]
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _without_group_lengths(item)
    return ds


@register("orthanc_rest")
class OrthancRest(Destination):
    name = "orthanc"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        url, self.auth = orthanc_settings(config)
        if not url:
            raise DestinationError("orthanc: SEND_TO_ORTHANC with the rest transport needs ORTHANC_URL")
        self.url: str = url
        # "series" (default): POST's Success/AlreadyStored, then one GET /series/{id} per
        # series lists every instance; "md5": one GET of each stored file's MD5 as well.
        self.verify = (setting_str(config, "ORTHANC_VERIFY", "series") or "series").lower()
        if self.verify not in ("series", "md5"):
            raise DestinationError("orthanc: ORTHANC_VERIFY must be 'series' or 'md5'")
        self._series_of: dict[int, str] = {}
        self._stored_here: set[int] = set()
        self.session: Client | None = None

    def open(self) -> None:
        if self.session is None:
            self.session = Client(self.auth)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    @property
    def client(self) -> Client:
        """The session open() opened (the sending rounds run between open() and close())."""
        if self.session is None:
            raise RuntimeError("orthanc: no session: open() was not called")
        return self.session

    def send_batch(
        self,
        items: list[SendItem],
        heartbeat: Callable[[], object] | None = None,
        on_wait: Callable[[str, float], object] | None = None,
    ) -> list[SendResult]:
        # Indexes whose POST was answered Success during this call: answered AlreadyStored on a
        # later attempt, they are this call's own copy and need no comparison.
        self._stored_here = set()
        try:
            return super().send_batch(items, heartbeat, on_wait)
        finally:
            self._stored_here = set()

    def send_round(self, batch: list[tuple[int, SendItem]]) -> dict[int, Outcome]:
        self._series_of = {}
        outcomes = self.parallel(batch, self._send_one)
        if self.verify == "series":
            self._verify_by_series(outcomes)
        return outcomes

    def _send_one(self, index: int, item: SendItem) -> Outcome:
        local_md5: str | None = None
        try:
            with open(item.path, "rb") as f:
                # With MD5 verification the bytes are read to hash them; otherwise the file
                # goes to the socket without passing through Python (sendfile).
                data = f.read() if self.verify == "md5" else f
                if isinstance(data, bytes):  # ORTHANC_VERIFY=md5
                    local_md5 = hashlib.md5(data).hexdigest()
                r = self.client.post(
                    self.url + "/instances",
                    data=data,
                    timeout=self.timeout,
                    headers={"Content-Type": "application/dicom"},
                )
        except OSError as exc:  # open or read: the client turns its own into RequestFailed
            return Outcome.failed(f"orthanc: cannot read the local file ({describe_oserror(exc)})")
        except RequestFailed as exc:
            return connection_failure("POST /instances", exc)
        if r.status_code != 200:
            return refused_instance(r, item.path)
        try:
            body = r.json()
            status, remote_id = body["Status"], body["ID"]
        except (ValueError, KeyError, TypeError):
            return Outcome.retry("orthanc: POST /instances returned an unexpected answer")
        if status == "FilteredOut":
            return Outcome.failed(
                "orthanc: Orthanc did not keep this instance (Status FilteredOut: "
                "a filter configured in Orthanc refused it)",
                remote_id,
            )
        if status not in ("Success", "AlreadyStored"):
            return Outcome.failed(f"orthanc: Orthanc did not store this instance (Status {status})", remote_id)
        fresh = status == "Success"
        if fresh:
            self._stored_here.add(index)
        expected = orthanc_id(item.patient_id, item.study_instance_uid, item.series_instance_uid, item.sop_instance_uid)
        note = None
        if remote_id != expected:
            note = (
                "Orthanc id differs from the one computed from the item's identifiers "
                "(SendItem does not match the file header)"
            )
        if not fresh and (self.verify == "md5" or index not in self._stored_here):
            # Orthanc kept an instance with these UIDs from before: is it this one? (In md5
            # mode this is the verification too.)
            out = compare_stored(self.client, self.url, remote_id, item.path, self.timeout, local_md5)
        elif self.verify == "md5":
            out = self._verify(remote_id, local_md5, fresh)
        else:
            # Verified after the round, with one GET /series/{id} per series.
            out = Outcome.success(remote_id, already_stored=not fresh)
            out.stored_fresh = fresh
            series = body.get("ParentSeries") if isinstance(body.get("ParentSeries"), str) else None
            self._series_of[index] = series or orthanc_id(
                item.patient_id, item.study_instance_uid, item.series_instance_uid
            )
        if out.ok and note:
            out.note = note if not out.note else f"{out.note}; {note}"
        return out

    def _verify_by_series(self, outcomes: dict[int, Outcome]) -> None:
        """Each accepted instance must be listed by its series: one GET per series.

        Orthanc answers POST /instances with Success or AlreadyStored only once the file is
        parsed and written; this check proves, in bulk, that it is still there and indexed.
        """
        by_series: dict[str, list[int]] = {}
        for i, out in outcomes.items():
            if out.ok and i in self._series_of:
                by_series.setdefault(self._series_of.pop(i), []).append(i)
        for sid, indexes in by_series.items():
            listed, failure = series_instances(self.client, self.url, sid, self.timeout)
            for i in indexes:
                out = outcomes[i]
                if failure is None and out.remote_id in listed:
                    continue
                if failure is not None:
                    bad = Outcome(
                        ok=False,
                        transient=failure.transient,
                        error=failure.error,
                        unreachable=failure.unreachable,
                        abort_batch=failure.abort_batch,
                    )
                else:
                    bad = Outcome.retry("orthanc: instance accepted but not listed in its series")
                bad.stored_fresh = out.stored_fresh
                outcomes[i] = bad

    def _verify(self, remote_id: str, local_md5: str | None, fresh: bool) -> Outcome:
        """ORTHANC_VERIFY=md5, for an instance this call stored: its stored MD5 is the file's."""
        what = "GET /instances/{id}/attachments/dicom/md5"
        try:
            r = self.client.get(f"{self.url}/instances/{remote_id}/attachments/dicom/md5", timeout=self.timeout)
        except RequestFailed as exc:
            out = connection_failure(what, exc)
            out.stored_fresh = fresh
            return out
        if r.status_code == 200:
            remote_md5 = r.text.strip().strip('"')
            if remote_md5 == local_md5:
                return Outcome.success(remote_id, already_stored=not fresh)
            out = Outcome.retry("orthanc: stored file MD5 differs from the local file")
            out.stored_fresh = True
            return out
        if r.status_code in (400, 404) and "attachments" in r.url:
            # No MD5 stored for attachments (StoreMD5ForAttachments false)? Prove existence.
            try:
                r2 = self.client.get(f"{self.url}/instances/{remote_id}", timeout=self.timeout)
            except RequestFailed as exc:
                return connection_failure("GET /instances/{id}", exc)
            if r2.status_code == 200:
                return Outcome.success(
                    remote_id, already_stored=not fresh, note="verified by existence (Orthanc stores no MD5)"
                )
            out = http_failure("GET /instances/{id}", r2)
            if r2.status_code == 404:
                out = Outcome.retry("orthanc: instance accepted but not found afterwards")
            return out
        return http_failure(what, r)

    def check(self) -> tuple[bool, str]:
        session = Client(self.auth)
        try:
            r = session.get(self.url + "/system", timeout=min(self.timeout, 10))
        except RequestFailed as exc:
            return False, connection_failure("GET /system", exc).error or ""
        finally:
            session.close()
        if r.status_code != 200:
            return False, http_failure("GET /system", r).error or ""
        try:
            info = r.json()
            return True, f"Orthanc {info.get('Version', '?')} reachable at {self.url} (REST)"
        except ValueError:
            return False, "orthanc: GET /system did not answer JSON (is this Orthanc?)"
