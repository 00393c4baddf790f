"""Orthanc over its REST API: POST /instances, then verify in bulk, per series.

One HTTP client (http.client, kept-alive connections shared by the sending threads) per
send_batch call; SEND_WORKERS files are uploaded in parallel (Orthanc ingests parallel
uploads faster).

Per file:
  1. POST /instances with the file's bytes -> {"ID", "ParentSeries", "Status"}; Status
     Success or AlreadyStored is accepted, Failure / FilteredOut are failures.
  2. The returned ID is compared with Orthanc's id computed from the item's PatientID,
     study, series and SOP instance UIDs (a mismatch is noted: the SendItem does not
     describe the file).
Per round, with ORTHANC_VERIFY=series (the default):
  3. GET /series/{ParentSeries} once per series; every accepted instance must be listed
     there, otherwise it is retried. An image is ok only once so verified.
With ORTHANC_VERIFY=md5, step 3 is instead, per file:
  3'. GET /instances/{ID}/attachments/dicom/md5 must equal the local file's MD5 (the bytes
     arrived intact). For AlreadyStored a different MD5 means Orthanc kept an earlier
     version of the same instance: still ok, with a note. If Orthanc stores no MD5
     (StoreMD5ForAttachments false) GET /instances/{ID} proves existence instead.
HTTP 401/403 fails the whole batch at once ("authentication failed"), without retries.
"""

from __future__ import annotations

import hashlib

from .base import (Destination, DestinationError, Outcome, SendItem, describe_oserror,
                   orthanc_id, register, setting_str)
from .http import Client, RequestFailed, Response

TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


def orthanc_settings(config: dict) -> tuple[str | None, tuple[str, str] | None]:
    url = setting_str(config, "ORTHANC_URL")
    if url:
        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise DestinationError("orthanc: ORTHANC_URL must start with http:// or https://")
    user = setting_str(config, "ORTHANC_USERNAME")
    auth = (user, config.get("ORTHANC_PASSWORD") or "") if user else None
    return url, auth


def http_failure(what: str, response: Response) -> Outcome:
    code = response.status_code
    if code in (401, 403):
        return Outcome.failed(f"orthanc: authentication failed (HTTP {code} on {what}): "
                              "check ORTHANC_USERNAME / ORTHANC_PASSWORD", abort_batch=True)
    detail = ""
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("OrthancError"):
            detail = f": {body['OrthancError']}"  # Orthanc's error code name, no data
    except ValueError:
        pass
    message = f"orthanc: HTTP {code} on {what}{detail}"
    if code in TRANSIENT_HTTP:
        return Outcome.retry(message)
    if code == 404 and what.startswith("POST"):
        return Outcome.failed(message + " (is ORTHANC_URL the root of an Orthanc server?)",
                              abort_batch=True)
    return Outcome.failed(message)


def connection_failure(what: str, exc: RequestFailed) -> Outcome:
    return Outcome.retry(f"orthanc: {exc.reason} on {what}", unreachable=True)


def series_instances(client: Client, url: str, series_id: str,
                     timeout: float) -> tuple[set[str], Outcome | None]:
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


@register("orthanc_rest")
class OrthancRest(Destination):
    name = "orthanc"

    def __init__(self, config: dict):
        super().__init__(config)
        self.url, self.auth = orthanc_settings(config)
        if not self.url:
            raise DestinationError("orthanc: SEND_TO_ORTHANC with the rest transport needs ORTHANC_URL")
        # "series" (default): POST's Success/AlreadyStored, then one GET /series/{id} per
        # series lists every instance; "md5": one GET of each stored file's MD5 as well.
        self.verify = (setting_str(config, "ORTHANC_VERIFY", "series") or "series").lower()
        if self.verify not in ("series", "md5"):
            raise DestinationError("orthanc: ORTHANC_VERIFY must be 'series' or 'md5'")
        self._series_of: dict[int, str] = {}
        self.session: Client | None = None

    def open(self) -> None:
        if self.session is None:
            self.session = Client(self.auth)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def send_round(self, batch):
        self._series_of = {}
        outcomes = self.parallel(batch, self._send_one)
        if self.verify == "series":
            self._verify_by_series(outcomes)
        return outcomes

    def _send_one(self, index: int, item: SendItem) -> Outcome:
        local_md5 = None
        try:
            with open(item.path, "rb") as f:
                # With MD5 verification the bytes are read to hash them; otherwise the file
                # goes to the socket without passing through Python (sendfile).
                data = f.read() if self.verify == "md5" else f
                if self.verify == "md5":
                    local_md5 = hashlib.md5(data).hexdigest()
                r = self.session.post(self.url + "/instances", data=data, timeout=self.timeout,
                                      headers={"Content-Type": "application/dicom"})
        except OSError as exc:  # open or read: the client turns its own into RequestFailed
            return Outcome.failed(f"orthanc: cannot read the local file ({describe_oserror(exc)})")
        except RequestFailed as exc:
            return connection_failure("POST /instances", exc)
        if r.status_code != 200:
            return http_failure("POST /instances", r)
        try:
            body = r.json()
            status, remote_id = body["Status"], body["ID"]
        except (ValueError, KeyError, TypeError):
            return Outcome.retry("orthanc: POST /instances returned an unexpected answer")
        if status not in ("Success", "AlreadyStored"):
            return Outcome.failed(f"orthanc: instance not stored (Status {status})", remote_id)
        fresh = status == "Success"
        expected = orthanc_id(item.patient_id, item.study_instance_uid,
                              item.series_instance_uid, item.sop_instance_uid)
        note = None
        if remote_id != expected:
            note = ("Orthanc id differs from the one computed from the item's identifiers "
                    "(SendItem does not match the file header)")
        if self.verify == "md5":
            out = self._verify(remote_id, local_md5, fresh)
        else:
            # Verified after the round, with one GET /series/{id} per series.
            out = Outcome.success(remote_id, already_stored=not fresh)
            out.stored_fresh = fresh
            series = body.get("ParentSeries") if isinstance(body.get("ParentSeries"), str) else None
            self._series_of[index] = series or orthanc_id(
                item.patient_id, item.study_instance_uid, item.series_instance_uid)
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
            listed, failure = series_instances(self.session, self.url, sid, self.timeout)
            for i in indexes:
                out = outcomes[i]
                if failure is None and out.remote_id in listed:
                    continue
                if failure is not None:
                    bad = Outcome(ok=False, transient=failure.transient, error=failure.error,
                                  unreachable=failure.unreachable, abort_batch=failure.abort_batch)
                else:
                    bad = Outcome.retry("orthanc: instance accepted but not listed in its series")
                bad.stored_fresh = out.stored_fresh
                outcomes[i] = bad

    def _verify(self, remote_id: str, local_md5: str, fresh: bool) -> Outcome:
        what = "GET /instances/{id}/attachments/dicom/md5"
        try:
            r = self.session.get(f"{self.url}/instances/{remote_id}/attachments/dicom/md5",
                                 timeout=self.timeout)
        except RequestFailed as exc:
            out = connection_failure(what, exc)
            out.stored_fresh = fresh
            return out
        if r.status_code == 200:
            remote_md5 = r.text.strip().strip('"')
            if remote_md5 == local_md5:
                return Outcome.success(remote_id, already_stored=not fresh)
            if fresh:
                out = Outcome.retry("orthanc: stored file MD5 differs from the local file")
                out.stored_fresh = True
                return out
            return Outcome.success(remote_id, already_stored=True,
                                   note="Orthanc keeps an earlier, different copy of this instance")
        if r.status_code in (400, 404) and "attachments" in r.url:
            # No MD5 stored for attachments (StoreMD5ForAttachments false)? Prove existence.
            try:
                r2 = self.session.get(f"{self.url}/instances/{remote_id}", timeout=self.timeout)
            except RequestFailed as exc:
                return connection_failure("GET /instances/{id}", exc)
            if r2.status_code == 200:
                return Outcome.success(remote_id, already_stored=not fresh,
                                       note="verified by existence (Orthanc stores no MD5)")
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
            return False, connection_failure("GET /system", exc).error
        finally:
            session.close()
        if r.status_code != 200:
            return False, http_failure("GET /system", r).error
        try:
            info = r.json()
            return True, f"Orthanc {info.get('Version', '?')} reachable at {self.url} (REST)"
        except ValueError:
            return False, "orthanc: GET /system did not answer JSON (is this Orthanc?)"
