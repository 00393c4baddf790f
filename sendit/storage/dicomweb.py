"""A DICOMweb server: STOW-RS in multipart requests, verified by QIDO-RS.

For any DICOMweb service root (DICOMWEB_URL): Orthanc's DICOMweb plugin, a Google Cloud
Healthcare API DICOM store (`.../dicomStores/STORE/dicomWeb`, DICOMWEB_AUTH=google), dcm4chee.

Per round:
  1. Pre-check, per series: one QIDO-RS at the series level (GET {root}/studies/{uid}/series
     ?SeriesInstanceUID={uid}&includefield=00201209) says how many instances the series
     already holds; a series that is not there holds none of the round's instances. Else a
     QIDO-RS instance search for the round's own SOP Instance UIDs (a UID list, PS3.18
     8.3.4.1, UIDS_PER_SEARCH at a time) says which are already kept: a DICOMweb server
     answers the STOW-RS of an instance it already keeps with success (Orthanc) or a failure
     (0x0111, 0xA900...), neither of which says whether the stored instance is this one. Each
     instance found is fetched (WADO-RS, in the stored transfer syntax) and compared with the
     local file, data set against data set: the same instance is ok, already_stored, and not
     sent; a different one fails ("a different instance with this UID is already stored"),
     without retry. When the pre-check cannot be made, nothing is sent.
  2. STOW-RS: the other files in multipart/related requests (the files' own bytes, sent from
     disk), SEND_WORKERS requests at a time, at most DICOMWEB_INSTANCES_PER_REQUEST
     instances each. The answer (DICOM JSON) names each instance: in ReferencedSOPSequence
     (stored; a WarningReason becomes a note) or in FailedSOPSequence (its FailureReason
     fails that image alone, in plain words; 0xA7xx, out of resources, is retried). An
     instance the answer does not name, in an answer that refuses something (HTTP 400/409),
     could not be read: it fails alone. An answer that names no instance (a 4xx without a
     DICOM JSON body) is sent again one instance per request, so it fails alone too.
  3. Verification: every stored instance must be listed by the server with its study, series
     and SOP Instance UIDs (the de-identified ones). Two ways, chosen per series:
     * the series held no more instances before the round than the round sends to it (a new
       series, the usual case): one WADO-RS series metadata request (GET .../series/{uid}/
       metadata), by the worker that finishes the series' last STOW-RS request. Orthanc's
       DICOMweb plugin reads every stored file for either search, but its metadata costs about
       half the server CPU per instance of its QIDO-RS instance search (0.35-0.45 against
       0.65-0.9 ms, docs/benchmarks/2026-12-07-dicomweb.md), which is most of what the
       verification costs the round;
     * a series already bigger than what is sent to it (a later batch of a long series): the
       metadata would list every earlier instance too, so each request's instances are
       searched for by QIDO-RS (a UID list) by its worker as soon as it is answered, and the
       cost grows with what is sent, not with the series.
     If the metadata cannot be had (an error, a server without it), the series is verified by
     QIDO-RS. One stored but not listed is sent once more, and fails the second time. Two
     items of one round with the same UIDs are each compared with the one kept (step 1's
     comparison).

HTTP 401/403 and a root that answers 404/405 stop the batch (no retry storm); connection
failures, 408/425/429/5xx are retried in the rounds of base.Destination.

STOW-RS goes over sendit's http.client client (http.py), not dicomweb-client's
store_instances: that one takes pydicom datasets and writes them again (the bytes sent would
not be the file that was checked, and every pixel would pass through Python), through
requests (about 1 ms more CPU per request here). QIDO-RS, WADO-RS and the authenticated
session are dicomweb-client's, with its own retries switched off.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, BinaryIO

from .base import (
    Config,
    Destination,
    DestinationError,
    Outcome,
    SendItem,
    SendResult,
    describe_oserror,
    register,
    setting_int,
    setting_str,
)
from .http import BodyPart, Client, RequestFailed, Response
from .orthanc_rest import DIFFERENT_INSTANCE, TRANSIENT_HTTP, _without_group_lengths, uid_problems

if TYPE_CHECKING:  # pragma: no cover - the libraries are imported when a session is opened
    from dicomweb_client.api import DICOMwebClient
    from google.auth.credentials import Credentials as GoogleCredentials

#: (index in the batch, item) pairs
Batch = list[tuple[int, SendItem]]
#: (StudyInstanceUID, SeriesInstanceUID)
SeriesKey = tuple[str, str]
#: how a series' instances are listed (QIDO-RS or WADO-RS metadata): the SOP Instance UIDs
#: each series lists among those asked about, or the failure that kept them from being read
Listing = Callable[[Mapping[SeriesKey, set[str]]], tuple[dict[SeriesKey, set[str]], Outcome | None]]

# dicomweb-client logs every search and retrieval with its UIDs at INFO: the original ones
# when DEIDENTIFY is off. sendit logs images by batch index; only its warnings are kept.
logging.getLogger("dicomweb_client").setLevel(logging.WARNING)

AUTH_KINDS = ("none", "basic", "bearer", "google")
GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

# DICOM JSON keys (PS3.18 F.2) of the STOW-RS response (PS3.18 Table 10.5.3-1).
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
SERIES_SIZE = "00201209"  # NumberOfSeriesRelatedInstances
# SOP Instance UIDs per QIDO-RS search (a UID list in the query string: 50 UIDs of 64
# characters keep its URL under 4 kB, which every server and proxy takes).
UIDS_PER_SEARCH = 50

# FailureReason values (PS3.18 Table I.2-1 and PS3.4 C-STORE statuses), in plain words.
FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0111: "duplicate SOP instance",
    0x0112: "no such SOP instance",
    0x0117: "invalid SOP instance",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0x0131: "duplicate transaction UID",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "referenced transfer syntax not supported",
    0xC409: "study instance UID mismatch",
}
WARNING_REASONS = {
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
}
NOT_KEPT = "the DICOMweb server did not keep this instance"


def dicomweb_settings(config: Config) -> tuple[str, str]:
    """(service root without a trailing slash, auth kind); DestinationError when wrong."""
    url = setting_str(config, "DICOMWEB_URL")
    if not url:
        raise DestinationError(
            "dicomweb: SEND_TO_DICOMWEB needs DICOMWEB_URL (the service root, e.g. http://host:8042/dicom-web)"
        )
    if not url.startswith(("http://", "https://")):
        raise DestinationError("dicomweb: DICOMWEB_URL must start with http:// or https://")
    auth = (setting_str(config, "DICOMWEB_AUTH", "none") or "none").lower()
    if auth not in AUTH_KINDS:
        raise DestinationError(f"dicomweb: DICOMWEB_AUTH must be one of {', '.join(AUTH_KINDS)}")
    if auth == "basic" and not setting_str(config, "DICOMWEB_USERNAME"):
        raise DestinationError("dicomweb: DICOMWEB_AUTH=basic needs DICOMWEB_USERNAME")
    if auth == "bearer" and not setting_str(config, "DICOMWEB_TOKEN"):
        raise DestinationError("dicomweb: DICOMWEB_AUTH=bearer needs DICOMWEB_TOKEN")
    return url.rstrip("/"), auth


class Credentials:
    """The Authorization header of every request, for both HTTP stacks; Google's access
    token is refreshed when it expires (Application Default Credentials)."""

    def __init__(self, config: Config, kind: str) -> None:
        self.kind = kind
        self.header: str | None = None
        self._google: GoogleCredentials | None = None
        self._lock = threading.Lock()
        if kind == "basic":
            import base64

            token = f"{setting_str(config, 'DICOMWEB_USERNAME')}:{config.get('DICOMWEB_PASSWORD') or ''}"
            self.header = "Basic " + base64.b64encode(token.encode("utf-8")).decode("ascii")
        elif kind == "bearer":
            self.header = "Bearer " + str(config.get("DICOMWEB_TOKEN")).strip()

    def headers(self) -> dict[str, str]:
        if self.kind == "google":
            return {"Authorization": "Bearer " + self._google_token()}
        return {"Authorization": self.header} if self.header else {}

    def _google_token(self) -> str:
        import google.auth
        import google.auth.exceptions
        from google.auth.transport.requests import Request

        with self._lock:
            try:
                if self._google is None:
                    self._google, _ = google.auth.default(scopes=[GOOGLE_SCOPE])
                if not self._google.valid:
                    self._google.refresh(Request())
            except google.auth.exceptions.DefaultCredentialsError:
                raise DestinationError(
                    "dicomweb: DICOMWEB_AUTH=google but no Application Default "
                    "Credentials were found (GOOGLE_APPLICATION_CREDENTIALS)"
                ) from None
            except google.auth.exceptions.GoogleAuthError as exc:
                raise RequestFailed(f"Google credentials could not be refreshed ({type(exc).__name__})") from None
            token = self._google.token
            if not isinstance(token, str):  # refresh() leaves one
                raise RequestFailed("Google credentials gave no access token")
            return token


def _values(element: object) -> list[Any]:
    """The values of a DICOM JSON element (none when it is not one)."""
    if not isinstance(element, dict):
        return []
    value = element.get("Value")
    return value if isinstance(value, list) else []


def _first(dataset: Mapping[str, Any], tag: str) -> Any:
    values = _values(dataset.get(tag))
    return values[0] if values else None


def stow_answer(response: Response) -> dict[str, Any] | None:
    """The STOW-RS answer as DICOM JSON (a data set, or a list of one), None when it is not
    one (an error page, XML, nothing): the answer then names no instance."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not isinstance(body, dict):
        return None
    if FAILED_SOP_SEQUENCE not in body and REFERENCED_SOP_SEQUENCE not in body:
        return None
    return body


def reason_text(code: Any) -> str:
    try:
        code = int(code)
    except (TypeError, ValueError):
        return "no reason given"
    return f"0x{code:04X}, {FAILURE_REASONS.get(code) or WARNING_REASONS.get(code) or 'unknown reason'}"


def http_failure(what: str, code: int) -> Outcome:
    """An answer that concerns the destination as a whole, or one request to it."""
    message = f"dicomweb: HTTP {code} on {what}"
    if code in (401, 403):
        return Outcome.failed(
            f"dicomweb: authentication failed (HTTP {code} on {what}): check DICOMWEB_AUTH and its credentials",
            abort_batch=True,
        )
    if code in TRANSIENT_HTTP:
        return Outcome.retry(message)
    if code in (404, 405):
        return Outcome.failed(message + " (is DICOMWEB_URL the DICOMweb service root?)", abort_batch=True)
    return Outcome.failed(message)


def library_failure(what: str, exc: Exception) -> Outcome:
    """dicomweb-client's (requests') exception as an Outcome, in words without data."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return http_failure(what, exc.response.status_code)
    if isinstance(exc, requests.Timeout):
        return Outcome.retry(f"dicomweb: timed out on {what}", unreachable=True)
    if isinstance(exc, requests.ConnectionError):
        return Outcome.retry(f"dicomweb: connection failed on {what}", unreachable=True)
    if isinstance(exc, RequestFailed):
        return Outcome.retry(f"dicomweb: {exc.reason} on {what}", unreachable=True)
    if isinstance(exc, ValueError):
        return Outcome.retry(f"dicomweb: {what} did not answer DICOM JSON")
    return Outcome.retry(f"dicomweb: {type(exc).__name__} on {what}")


@register("dicomweb")
class DicomWeb(Destination):
    name = "dicomweb"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.url, self.auth_kind = dicomweb_settings(config)
        self.per_request = max(1, setting_int(config, "DICOMWEB_INSTANCES_PER_REQUEST", 25))
        self.credentials = Credentials(config, self.auth_kind)
        self.http: Client | None = None
        self.web: DICOMwebClient | None = None
        self._not_listed: dict[int, int] = {}  # index -> times stored but not listed

    # -- sessions ----------------------------------------------------------------------------
    def _web_client(self) -> DICOMwebClient:
        import requests
        from dicomweb_client.api import DICOMwebClient

        if self.auth_kind == "google":
            from dicomweb_client.ext.gcp.session_utils import create_session_from_gcp_credentials

            try:
                session = create_session_from_gcp_credentials()
            except Exception as exc:  # google.auth's DefaultCredentialsError
                raise DestinationError(
                    "dicomweb: DICOMWEB_AUTH=google but no Application Default "
                    f"Credentials were found ({type(exc).__name__})"
                ) from None
        else:
            session = requests.Session()
            session.headers.update(self.credentials.headers())
        client = DICOMwebClient(self.url, session=session, timeout=self.timeout)
        client.set_http_retry_params(retry=False)  # the rounds are the retry policy
        return client

    def open(self) -> None:
        if self.http is None:
            self.http = Client()
        if self.web is None:
            self.web = self._web_client()

    @property
    def http_client(self) -> Client:
        """The HTTP session open() opened (STOW-RS)."""
        if self.http is None:
            raise RuntimeError("dicomweb: no HTTP session: open() was not called")
        return self.http

    @property
    def web_client(self) -> DICOMwebClient:
        """The dicomweb-client session open() opened (QIDO-RS, WADO-RS)."""
        if self.web is None:
            raise RuntimeError("dicomweb: no DICOMweb session: open() was not called")
        return self.web

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None
        if self.web is not None:
            try:
                self.web._session.close()
            except Exception:
                pass
            self.web = None

    def send_batch(
        self,
        items: list[SendItem],
        heartbeat: Callable[[], object] | None = None,
        on_wait: Callable[[str, float], object] | None = None,
    ) -> list[SendResult]:
        self._not_listed = {}
        return super().send_batch(items, heartbeat, on_wait)

    # -- one round ---------------------------------------------------------------------------
    def send_round(self, batch: Batch) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        series = self._by_series(batch)
        sizes, failure = self._series_sizes(series)
        if failure is None:
            stored, failure = self._listed({key: uids for key, uids in series.items() if sizes.get(key) != 0})
        if failure is not None:
            return {i: failure for i, _ in batch}
        to_send: Batch = []
        to_compare: Batch = []
        for i, item in batch:
            (to_compare if item.sop_instance_uid in stored.get(_series_key(item), ()) else to_send).append((i, item))
        if to_compare:
            outcomes.update(self.parallel(to_compare, self._compare))
        if any(out.abort_batch or out.unreachable for out in outcomes.values()):
            return outcomes
        counts: dict[str, int] = {}
        for _, item in batch:
            counts[item.sop_instance_uid] = counts.get(item.sop_instance_uid, 0) + 1
        # Step 3's choice: WADO-RS series metadata where it lists at most twice what it must
        # find (QIDO-RS costs Orthanc about twice as much per instance listed).
        sending = self._by_series(to_send)
        by_metadata = {
            key for key, uids in sending.items() if (size := sizes.get(key)) is not None and size <= len(uids)
        }
        outcomes.update(self._stow_all(to_send, counts, by_metadata))
        return outcomes

    @staticmethod
    def _by_series(batch: Iterable[tuple[int, SendItem]]) -> dict[SeriesKey, set[str]]:
        """The SOP Instance UIDs of the batch, by (study, series)."""
        series: dict[tuple[str, str], set[str]] = {}
        for _, item in batch:
            series.setdefault(_series_key(item), set()).add(item.sop_instance_uid)
        return series

    def _series_sizes(self, series: Iterable[SeriesKey]) -> tuple[dict[tuple[str, str], int | None], Outcome | None]:
        """How many instances each series holds on the server (QIDO-RS at the series level,
        NumberOfSeriesRelatedInstances): 0 for a series the server does not have, None when
        its answer does not say; or the failure that kept them from being read."""
        sizes: dict[tuple[str, str], int | None] = {}
        what = "QIDO-RS GET /studies/{uid}/series"
        for study, serie in series:
            try:
                found = self.web_client.search_for_series(
                    study_instance_uid=study,
                    search_filters={"SeriesInstanceUID": serie},
                    fields=[SERIES_UID, SERIES_SIZE],
                )
            except Exception as exc:
                return sizes, library_failure(what, exc)
            found = [d for d in found if isinstance(d, dict)]
            this = [d for d in found if _first(d, SERIES_UID) == serie]
            if this:
                try:
                    sizes[(study, serie)] = max(0, int(_first(this[0], SERIES_SIZE)))
                except (TypeError, ValueError):
                    sizes[(study, serie)] = None
            else:  # not there, unless an answer without SeriesInstanceUID hides it
                sizes[(study, serie)] = 0 if all(_first(d, SERIES_UID) for d in found) else None
        return sizes, None

    def _listed(self, series: Mapping[SeriesKey, set[str]]) -> tuple[dict[tuple[str, str], set[str]], Outcome | None]:
        """Which of these SOP Instance UIDs each series lists (QIDO-RS instance searches for
        the UIDs themselves, UIDS_PER_SEARCH at a time: the server's work grows with the
        instances asked about, not with the series), with its study and series UIDs checked;
        or the failure that kept them from being read.

        A server may answer a search in pages (Google's DICOM store, or Orthanc with
        LimitFindInstances): the next page (offset) is asked for only while some of the
        wanted UIDs have not been seen.
        """
        listed: dict[tuple[str, str], set[str]] = {}
        what = "QIDO-RS GET /studies/{uid}/series/{uid}/instances"
        for (study, serie), wanted in series.items():
            seen: set[str] = set()
            uids = sorted(wanted)
            for start in range(0, len(uids), UIDS_PER_SEARCH):
                chunk = uids[start : start + UIDS_PER_SEARCH]
                offset = 0
                while True:
                    try:
                        page = self.web_client.search_for_instances(
                            study_instance_uid=study,
                            series_instance_uid=serie,
                            fields=[STUDY_UID, SERIES_UID, SOP_UID],
                            offset=offset or None,
                            search_filters={"SOPInstanceUID": ",".join(chunk)},
                        )
                    except Exception as exc:
                        return listed, library_failure(what, exc)
                    for d in page:
                        if (
                            isinstance(d, dict)
                            and _first(d, STUDY_UID) in (None, study)
                            and _first(d, SERIES_UID) in (None, serie)
                        ):
                            seen.add(_first(d, SOP_UID))
                    offset += len(page)
                    if not page or seen.issuperset(chunk):
                        break
            listed[(study, serie)] = seen & wanted
        return listed, None

    def _metadata_listed(
        self, series: Mapping[SeriesKey, set[str]]
    ) -> tuple[dict[tuple[str, str], set[str]], Outcome | None]:
        """As _listed, from one WADO-RS series metadata request per series: the instances
        whose metadata carries this study's and this series' UIDs. A series whose metadata
        cannot be had (any error: a server without it, a 404 for a series not there yet, a
        refusal) is searched by QIDO-RS instead, which then says what is true."""
        listed: dict[tuple[str, str], set[str]] = {}
        for (study, serie), wanted in series.items():
            try:
                metadata = self.web_client.retrieve_series_metadata(study, serie)
            except Exception:
                metadata = None
            if not isinstance(metadata, list):
                found, failure = self._listed({(study, serie): wanted})
                if failure is not None:
                    return listed, failure
                listed.update(found)
                continue
            listed[(study, serie)] = {
                _first(d, SOP_UID)
                for d in metadata
                if isinstance(d, dict) and _first(d, STUDY_UID) == study and _first(d, SERIES_UID) == serie
            } & wanted
        return listed, None

    def _compare(self, index: int, item: SendItem) -> Outcome:
        """Is the instance the server keeps under these UIDs the one in this local file?
        (WADO-RS in the stored transfer syntax; data sets compared, file meta aside.)"""
        import pydicom

        what = "WADO-RS GET /studies/{uid}/series/{uid}/instances/{uid}"
        try:
            stored = self.web_client.retrieve_instance(
                item.study_instance_uid,
                item.series_instance_uid,
                item.sop_instance_uid,
                media_types=(("application/dicom", "*"),),
            )
        except Exception as exc:
            return library_failure(what, exc)
        try:
            local = pydicom.dcmread(item.path)
        except OSError as exc:
            return Outcome.failed(f"dicomweb: cannot read the local file ({describe_oserror(exc)})")
        try:
            same = _without_group_lengths(local) == _without_group_lengths(stored)
        except Exception:
            return Outcome.failed(
                "dicomweb: an instance with this UID is already stored and cannot be compared with this one"
            )
        if same:
            return Outcome.success(item.sop_instance_uid, already_stored=True)
        return Outcome.failed(f"dicomweb: {DIFFERENT_INSTANCE}")

    def _stow_all(
        self, batch: Batch, counts: dict[str, int], by_metadata: AbstractSet[SeriesKey] = frozenset()
    ) -> dict[int, Outcome]:
        """STOW-RS requests over SEND_WORKERS threads: enough requests to keep every worker
        busy, none with more than DICOMWEB_INSTANCES_PER_REQUEST instances, and no two items
        with one SOP Instance UID in one request (the answer names instances by that UID).

        Verification (step 3) overlaps the stores: a request's instances in a series searched
        by QIDO-RS are verified by its worker as soon as it is answered; a series in
        by_metadata is verified (WADO-RS metadata) by the worker that gets the answer to its
        last request, while the other workers store the other series."""
        if not batch:
            return {}
        n = max(-(-len(batch) // self.per_request), min(self.workers, len(batch)))
        requests_: list[list[tuple[int, SendItem]]] = [[] for _ in range(n)]
        uids: list[set[str]] = [set() for _ in range(n)]
        for k, (i, item) in enumerate(batch):
            slot = k * n // len(batch)
            while item.sop_instance_uid in uids[slot]:
                slot = (slot + 1) % n
                if slot == k * n // len(batch):  # every request holds this UID: a new one
                    requests_.append([])
                    uids.append(set())
                    slot = len(requests_) - 1
            requests_[slot].append((i, item))
            uids[slot].add(item.sop_instance_uid)
        pieces = [members for members in requests_ if members]
        stop = threading.Event()
        cause: list[Outcome] = []
        outcomes: dict[int, Outcome] = {}
        lock = threading.Lock()
        # by_metadata series: requests not answered yet, and the members answered so far
        waiting: dict[tuple[str, str], int] = {}
        held: dict[tuple[str, str], list[tuple[int, SendItem]]] = {}
        for members in pieces:
            for key in {_series_key(item) for _, item in members} & set(by_metadata):
                waiting[key] = waiting.get(key, 0) + 1
                held.setdefault(key, [])

        def one(members: Batch) -> None:
            # As Destination.parallel: once a request meets a dead or refusing destination,
            # the requests not started yet are not attempted.
            if stop.is_set():
                first = cause[0]
                out = first if first.abort_batch else Outcome.retry(f"{first.error} (not attempted)", unreachable=True)
                got = {i: out for i, _ in members}
            else:
                got = self._stow(members)
            with lock:
                outcomes.update(got)
            self._verify([m for m in members if _series_key(m[1]) not in by_metadata], outcomes, counts, self._listed)
            ready: list[SeriesKey] = []
            with lock:
                for key in {_series_key(item) for _, item in members} & set(by_metadata):
                    held[key] += [m for m in members if _series_key(m[1]) == key]
                    waiting[key] -= 1
                    if waiting[key] == 0:
                        ready.append(key)
            for key in ready:
                self._verify(held[key], outcomes, counts, self._metadata_listed)
            for out in got.values():
                if out.unreachable or out.abort_batch:
                    cause.append(out)
                    stop.set()
                    break

        if len(pieces) == 1:
            one(pieces[0])
            return outcomes
        with concurrent.futures.ThreadPoolExecutor(
            min(self.workers, len(pieces)), thread_name_prefix="send-dicomweb"
        ) as pool:
            for _ in pool.map(one, pieces):
                pass
        return outcomes

    def _stow(self, members: list[tuple[int, SendItem]]) -> dict[int, Outcome]:
        """One STOW-RS request; an Outcome per member from the server's answer."""
        what = "STOW-RS POST /studies"
        boundary = uuid.uuid4().hex
        part = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        files: list[BinaryIO] = []
        body: list[BodyPart] = []
        try:
            for _, item in members:
                f = open(item.path, "rb")
                files.append(f)
                body += [part, f, b"\r\n"]
            body.append(f"--{boundary}--\r\n".encode())
            headers = {
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
                **self.credentials.headers(),
            }
            r = self.http_client.post(self.url + "/studies", data=body, headers=headers, timeout=self.timeout)
        except OSError as exc:
            if len(members) > 1:  # which file? each alone says
                return {i: out for m in members for i, out in self._stow([m]).items()}
            return {members[0][0]: Outcome.failed(f"dicomweb: cannot read the local file ({describe_oserror(exc)})")}
        except RequestFailed as exc:
            out = Outcome.retry(f"dicomweb: {exc.reason} on {what}", unreachable=True)
            return {i: out for i, _ in members}
        finally:
            for opened in files:
                opened.close()
        answer = stow_answer(r) if r.status_code in (200, 202, 400, 409) else None
        if answer is None:
            if r.status_code in (200, 202):  # stored, without a DICOM JSON answer: verified after
                return {i: Outcome.success(item.sop_instance_uid) for i, item in members}
            if r.status_code in (400, 409, 413, 415, 422) and len(members) > 1:
                # The answer names no instance: each one alone, so one refusal fails one image.
                return {i: o for m in members for i, o in self._stow([m]).items()}
            out = http_failure(what, r.status_code)
            if not out.transient and not out.abort_batch:
                why = uid_problems(members[0][1].path)
                out = Outcome.failed(
                    f"dicomweb: the DICOMweb server refused this instance: "
                    f"{why + ' ' if why else ''}(HTTP {r.status_code})"
                )
            return {i: out for i, _ in members}
        return self._read_answer(members, answer, r.status_code)

    def _read_answer(self, members: Batch, answer: dict[str, Any], code: int) -> dict[int, Outcome]:
        referenced: dict[object, Any] = {}  # SOP Instance UID -> WarningReason
        failed: dict[object, Any] = {}  # SOP Instance UID -> FailureReason
        for entry in _values(answer.get(REFERENCED_SOP_SEQUENCE)):
            if isinstance(entry, dict):
                referenced[_first(entry, REFERENCED_SOP_INSTANCE_UID)] = _first(entry, WARNING_REASON)
        for entry in _values(answer.get(FAILED_SOP_SEQUENCE)):
            if isinstance(entry, dict):
                failed[_first(entry, REFERENCED_SOP_INSTANCE_UID)] = _first(entry, FAILURE_REASON)
        outcomes: dict[int, Outcome] = {}
        for i, item in members:
            uid = item.sop_instance_uid
            if uid in failed:
                reason = failed[uid]
                if isinstance(reason, int) and (reason & 0xFF00) == 0xA700:
                    outcomes[i] = Outcome.retry(f"dicomweb: STOW-RS failed ({reason_text(reason)})")
                    continue
                why = uid_problems(item.path)
                outcomes[i] = Outcome.failed(
                    "dicomweb: the DICOMweb server refused this instance: "
                    + (f"{why} " if why else "")
                    + f"(FailureReason {reason_text(reason)})"
                )
            elif uid in referenced:
                warning = referenced[uid]
                outcomes[i] = Outcome.success(uid, note=f"DICOMweb warning {reason_text(warning)}" if warning else None)
            elif code in (400, 409):
                why = uid_problems(item.path) or "not a DICOM instance the server could read"
                outcomes[i] = Outcome.failed(
                    f"dicomweb: the DICOMweb server refused this instance: {why} (HTTP {code}, not named in its answer)"
                )
            else:
                outcomes[i] = Outcome.success(uid)  # not named, not refused: verified below
        return outcomes

    def _verify(self, members: Batch, outcomes: dict[int, Outcome], counts: dict[str, int], listing: Listing) -> None:
        """Every instance a request stored must be listed by its series (`listing`: QIDO-RS
        or WADO-RS metadata), with its study, series and SOP Instance UIDs; items sharing
        UIDs are compared with the one kept. Updates `outcomes` in place."""
        fresh = [
            (i, item)
            for i, item in members
            if outcomes.get(i) is not None and outcomes[i].ok and not outcomes[i].already_stored
        ]
        if not fresh:
            return
        listed, failure = listing(self._by_series(fresh))
        for i, item in fresh:
            out = outcomes[i]
            if failure is not None:
                bad = Outcome(
                    ok=False,
                    transient=failure.transient,
                    error=failure.error,
                    unreachable=failure.unreachable,
                    abort_batch=failure.abort_batch,
                )
            elif item.sop_instance_uid not in listed.get(_series_key(item), ()):
                self._not_listed[i] = self._not_listed.get(i, 0) + 1
                bad = (
                    Outcome.failed(f"dicomweb: {NOT_KEPT} (stored, then not listed in its series)")
                    if self._not_listed[i] > 1
                    else Outcome.retry("dicomweb: instance accepted but not listed in its series")
                )
            elif counts[item.sop_instance_uid] > 1:
                bad = self._compare(i, item)
                if bad.ok:
                    bad.already_stored, bad.note = False, out.note
            else:
                out.stored_fresh = True
                continue
            bad.stored_fresh = True  # this call stored it: found again later, it is ours
            outcomes[i] = bad

    def check(self) -> tuple[bool, str]:
        """A QIDO-RS search for one study: the root answers DICOMweb (no patient data)."""
        what = "QIDO-RS GET /studies"
        try:
            web = self._web_client()
        except DestinationError as exc:
            return False, str(exc)
        try:
            web.search_for_studies(limit=1, fields=[STUDY_UID])
        except Exception as exc:
            return False, library_failure(what, exc).error or ""
        finally:
            web._session.close()
        return True, f"DICOMweb server reachable at {self.url}"


def _series_key(item: SendItem) -> tuple[str, str]:
    return (item.study_instance_uid, item.series_instance_uid)
