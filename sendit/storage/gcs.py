"""Google Cloud Storage: one object per image (or one tar.gz per study) plus study metadata.

Object names (prefix P = Collection/<GOOGLE_STORAGE_COLLECTION>/Entity/<patient pseudonym>):
  GOOGLE_STORAGE_FORMAT "dicom" (default):  P/<study uid>/<series uid>/<sop uid>.dcm
  GOOGLE_STORAGE_FORMAT "dicom.tar.gz":     P/<study uid>.tar.gz  (members <series>/<sop>.dcm)
  always, one per study:                    P/<study uid>.json

Exactly once: an object is uploaded only when it is missing or its MD5 differs from the
local bytes, with a generation precondition (if_generation_match: 0 for a new object, the
current generation for a replacement), so a re-send uploads nothing and leaves the
generation unchanged. Verification: after upload the object is reloaded and its md5_hash
(and crc32c when the server gives one) must equal the local file's before the item is ok.

The tar.gz of a study is deterministic (sorted members, zero mtimes, gzip mtime 0): the
same files give the same bytes and MD5. It holds the images of one send_batch call, so a
study should be sent in one batch in this format. The study JSON merges what is already
stored with this batch (keyed by SOPInstanceUID), so studies sent in parts stay complete.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import tarfile
import tempfile
from collections import defaultdict

from .base import (Destination, DestinationError, Outcome, SendItem, describe_oserror,
                   file_md5, register, setting_str)

FORMATS = ("dicom", "dicom.tar.gz")


def _crc32c_b64(path: str) -> str | None:
    try:
        import google_crc32c
    except ImportError:
        return None
    c = google_crc32c.Checksum()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            c.update(block)
    return base64.b64encode(c.digest()).decode()


def _classify(exc: Exception, what: str) -> Outcome:
    """Map a google / requests exception to an outcome (no paths, no object contents)."""
    from google.api_core import exceptions as gexc
    import requests
    try:
        from google.auth.exceptions import DefaultCredentialsError, RefreshError, TransportError
    except ImportError:  # pragma: no cover
        DefaultCredentialsError = RefreshError = TransportError = ()
    if isinstance(exc, (gexc.Unauthorized, gexc.Forbidden, RefreshError)):
        code = getattr(exc, "code", None)
        return Outcome.failed(f"gcs: authentication failed ({'HTTP %s' % code if code else type(exc).__name__} "
                              f"on {what}): check the service account", abort_batch=True)
    if isinstance(exc, DefaultCredentialsError):
        raise DestinationError("gcs: no Google credentials found (set GOOGLE_APPLICATION_CREDENTIALS "
                               "or STORAGE_EMULATOR_HOST)")
    if isinstance(exc, gexc.PreconditionFailed):
        return Outcome.retry(f"gcs: object changed concurrently during {what}")
    if isinstance(exc, gexc.NotFound):
        return Outcome.failed(f"gcs: not found on {what} (does the bucket exist?)", abort_batch=True)
    if isinstance(exc, (gexc.TooManyRequests, gexc.ServerError, gexc.RequestRangeNotSatisfiable)):
        return Outcome.retry(f"gcs: HTTP {exc.code} on {what}")
    if isinstance(exc, gexc.GoogleAPICallError):
        return Outcome.failed(f"gcs: HTTP {exc.code} on {what}")
    if isinstance(exc, gexc.RetryError):
        return Outcome.retry(f"gcs: retries exhausted on {what}", unreachable=True)
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, TransportError,
                        ConnectionError, TimeoutError)):
        reason = "connection refused" if "refused" in str(exc).lower() else \
            "timed out" if isinstance(exc, (requests.Timeout, TimeoutError)) else "connection failed"
        return Outcome.retry(f"gcs: {reason} on {what}", unreachable=True)
    if isinstance(exc, OSError):
        return Outcome.failed(f"gcs: local file error ({describe_oserror(exc)})")
    return Outcome.retry(f"gcs: unexpected {type(exc).__name__} on {what}")


@register("gcs")
class GoogleStorage(Destination):
    name = "gcs"

    def __init__(self, config: dict):
        super().__init__(config)
        self.bucket_name = setting_str(config, "GOOGLE_CLOUD_STORAGE")
        self.project = setting_str(config, "GOOGLE_PROJECT_NAME")
        self.collection = setting_str(config, "GOOGLE_STORAGE_COLLECTION")
        self.format = (setting_str(config, "GOOGLE_STORAGE_FORMAT", "dicom") or "dicom").lower()
        self.emulator = setting_str(config, "STORAGE_EMULATOR_HOST")
        if not self.bucket_name:
            raise DestinationError("gcs: SEND_TO_GOOGLE needs GOOGLE_CLOUD_STORAGE (the bucket name)")
        if not self.collection:
            raise DestinationError("gcs: SEND_TO_GOOGLE needs GOOGLE_STORAGE_COLLECTION")
        if "/" in self.collection:
            raise DestinationError("gcs: GOOGLE_STORAGE_COLLECTION must not contain '/'")
        if self.format not in FORMATS:
            raise DestinationError(f"gcs: GOOGLE_STORAGE_FORMAT must be one of {', '.join(FORMATS)}")
        if self.emulator and not self.emulator.startswith(("http://", "https://")):
            self.emulator = "http://" + self.emulator
        self.client = None
        self.bucket = None

    # -- naming ----------------------------------------------------------------------------
    def prefix(self, item: SendItem) -> str:
        return f"Collection/{self.collection}/Entity/{item.patient_id}"

    def image_name(self, item: SendItem) -> str:
        return (f"{self.prefix(item)}/{item.study_instance_uid}/{item.series_instance_uid}/"
                f"{item.sop_instance_uid}.dcm")

    def tar_name(self, item: SendItem) -> str:
        return f"{self.prefix(item)}/{item.study_instance_uid}.tar.gz"

    def json_name(self, item: SendItem) -> str:
        return f"{self.prefix(item)}/{item.study_instance_uid}.json"

    # -- client ----------------------------------------------------------------------------
    def _make_client(self):
        from google.cloud import storage
        if self.emulator:
            from google.auth.credentials import AnonymousCredentials
            return storage.Client(project=self.project or "sendit", credentials=AnonymousCredentials(),
                                  client_options={"api_endpoint": self.emulator})
        try:
            return storage.Client(project=self.project)
        except Exception as exc:
            raise DestinationError(f"gcs: cannot create the storage client ({type(exc).__name__}): "
                                   "check GOOGLE_APPLICATION_CREDENTIALS / GOOGLE_PROJECT_NAME") from None

    def open(self) -> None:
        if self.client is None:
            self.client = self._make_client()
            try:
                import requests.adapters
                adapter = requests.adapters.HTTPAdapter(pool_maxsize=max(self.workers, 10))
                self.client._http.mount("http://", adapter)
                self.client._http.mount("https://", adapter)
            except Exception:
                pass
            self.bucket = self.client.bucket(self.bucket_name)

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
        self.client = None
        self.bucket = None

    def reopen(self) -> None:
        pass  # the HTTP client reconnects by itself

    # -- one object, exactly once --------------------------------------------------------------
    def put_file(self, name: str, path: str, content_type: str) -> Outcome:
        """Upload path to name unless an identical object exists; verify by MD5/CRC32C."""
        try:
            _, md5_b64 = file_md5(path)
        except OSError as exc:
            return Outcome.failed(f"gcs: cannot read the local file ({describe_oserror(exc)})")
        crc = _crc32c_b64(path)
        try:
            blob = self.bucket.get_blob(name, timeout=self.timeout, retry=None)
        except Exception as exc:
            return _classify(exc, "get object")
        if blob is not None and blob.md5_hash == md5_b64:
            return Outcome.success(name, already_stored=True)
        generation = blob.generation if blob is not None else 0
        try:
            new = self.bucket.blob(name)
            new.md5_hash = md5_b64  # the server rejects the upload if the bytes differ
            new.upload_from_filename(path, content_type=content_type, if_generation_match=generation,
                                     checksum="md5", timeout=self.timeout, retry=None)
        except Exception as exc:
            out = _classify(exc, "upload")
            if "PreconditionFailed" in type(exc).__name__:  # someone stored it meanwhile: recheck
                out = Outcome.retry("gcs: object was written concurrently; checking again")
            return out
        try:
            stored = self.bucket.get_blob(name, timeout=self.timeout, retry=None)
        except Exception as exc:
            out = _classify(exc, "verify object")
            out.stored_fresh = True
            return out
        if stored is None:
            return Outcome.retry("gcs: object missing right after upload")
        if stored.md5_hash and stored.md5_hash != md5_b64:
            out = Outcome.retry("gcs: stored object MD5 differs from the local file")
            out.stored_fresh = True
            return out
        if crc and stored.crc32c and stored.crc32c != crc:
            out = Outcome.retry("gcs: stored object CRC32C differs from the local file")
            out.stored_fresh = True
            return out
        if not stored.md5_hash and not (crc and stored.crc32c):
            return Outcome.failed("gcs: cannot verify the object (no checksum returned)")
        return Outcome.success(name, already_stored=False)

    def put_bytes(self, name: str, data: bytes, content_type: str) -> Outcome:
        with tempfile.NamedTemporaryFile(prefix="sendit-gcs-", delete=False) as tmp:
            tmp.write(data)
        try:
            return self.put_file(name, tmp.name, content_type)
        finally:
            os.unlink(tmp.name)

    # -- rounds ----------------------------------------------------------------------------
    def send_round(self, batch):
        if self.format == "dicom":
            outcomes = self.parallel(batch, lambda i, item: self.put_file(
                self.image_name(item), item.path, "application/dicom"))
        else:
            outcomes = self._send_archives(batch)
        return self._send_metadata(batch, outcomes)

    def _send_archives(self, batch) -> dict[int, Outcome]:
        studies: dict[tuple, list] = defaultdict(list)
        for i, item in batch:
            studies[(item.patient_id, item.study_instance_uid)].append((i, item))
        outcomes: dict[int, Outcome] = {}
        for members in studies.values():
            out = self._send_archive(members)
            for i, _ in members:
                outcomes[i] = out
            if out.unreachable or out.abort_batch:
                break
        return outcomes

    def _send_archive(self, members) -> Outcome:
        fd, tmp = tempfile.mkstemp(prefix="sendit-gcs-", suffix=".tar.gz")
        os.close(fd)
        try:
            try:
                with open(tmp, "wb") as raw, \
                        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for _, item in sorted(members, key=lambda m: (m[1].series_instance_uid,
                                                                   m[1].sop_instance_uid)):
                        info = tarfile.TarInfo(f"{item.series_instance_uid}/{item.sop_instance_uid}.dcm")
                        info.size = os.path.getsize(item.path)
                        info.mtime, info.mode, info.uid, info.gid = 0, 0o644, 0, 0
                        with open(item.path, "rb") as f:
                            tar.addfile(info, f)
            except OSError as exc:
                return Outcome.failed(f"gcs: cannot build the study archive ({describe_oserror(exc)})")
            return self.put_file(self.tar_name(members[0][1]), tmp, "application/gzip")
        finally:
            os.unlink(tmp)

    def _send_metadata(self, batch, outcomes) -> dict[int, Outcome]:
        """Write (merge) each study's JSON; a study whose JSON fails fails its images."""
        studies: dict[tuple, list] = defaultdict(list)
        for i, item in batch:
            out = outcomes.get(i)
            if out is not None and out.ok:
                studies[(item.patient_id, item.study_instance_uid)].append((i, item))
        for members in studies.values():
            out = self._write_study_json(members)
            if out.ok:
                continue
            for i, _ in members:
                failed = Outcome(ok=False, transient=out.transient, error=f"{out.error} (study metadata)",
                                 unreachable=out.unreachable, abort_batch=out.abort_batch,
                                 stored_fresh=not outcomes[i].already_stored)
                outcomes[i] = failed
        return outcomes

    def _write_study_json(self, members) -> Outcome:
        first = members[0][1]
        name = self.json_name(first)
        try:
            blob = self.bucket.get_blob(name, timeout=self.timeout, retry=None)
            existing = json.loads(blob.download_as_bytes(timeout=self.timeout, retry=None)) if blob else {}
        except ValueError:
            existing = {}
        except Exception as exc:
            return _classify(exc, "read study metadata")
        instances = dict(existing.get("instances", {})) if isinstance(existing, dict) else {}
        for _, item in members:
            try:
                size = os.path.getsize(item.path)
            except OSError:
                size = None
            meta = {k: v for k, v in (item.metadata or {}).items() if _jsonable(v)}
            instances[item.sop_instance_uid] = {
                "series": item.series_instance_uid,
                "size": size,
                "object": self.image_name(item) if self.format == "dicom" else self.tar_name(item),
                "metadata": meta,
            }
        doc = study_document(self.collection, first.patient_id, first.study_instance_uid,
                             self.format, instances)
        data = json.dumps(doc, sort_keys=True, indent=1).encode()
        return self.put_bytes(name, data, "application/json")

    def check(self) -> tuple[bool, str]:
        try:
            client = self._make_client()
            exists = client.bucket(self.bucket_name).exists(timeout=min(self.timeout, 10), retry=None)
        except DestinationError as exc:
            return False, str(exc)
        except Exception as exc:
            try:
                return False, _classify(exc, "bucket check").error
            except DestinationError as err:
                return False, str(err)
        if not exists:
            return False, f"gcs: bucket {self.bucket_name} not found"
        where = f" (emulator {self.emulator})" if self.emulator else ""
        return True, f"gcs: bucket {self.bucket_name} reachable{where}"


def _jsonable(value) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, dict))


def study_document(collection, entity, study_uid, fmt, instances: dict) -> dict:
    """The per-study JSON: summary per series plus the instance list (no input paths)."""
    series: dict[str, dict] = {}
    for sop, inst in sorted(instances.items()):
        s = series.setdefault(inst["series"], {"SeriesInstanceUID": inst["series"], "images": 0,
                                               "bytes": 0})
        s["images"] += 1
        s["bytes"] += inst.get("size") or 0
        meta = inst.get("metadata") or {}
        for key in ("Modality", "BodyPartExamined", "SeriesDescription", "SeriesNumber"):
            if meta.get(key) not in (None, "") and key not in s:
                s[key] = meta[key]
    modalities = sorted({s["Modality"] for s in series.values() if s.get("Modality")})
    body_parts = sorted({s["BodyPartExamined"] for s in series.values() if s.get("BodyPartExamined")})
    study_desc = next((i["metadata"].get("StudyDescription") for i in instances.values()
                       if (i.get("metadata") or {}).get("StudyDescription")), None)
    return {
        "collection": collection,
        "entity": entity,
        "StudyInstanceUID": study_uid,
        "StudyDescription": study_desc,
        "format": fmt,
        "modalities": modalities,
        "body_parts": body_parts,
        "images": len(instances),
        "bytes": sum(i.get("size") or 0 for i in instances.values()),
        "series": [series[k] for k in sorted(series)],
        "instances": {k: instances[k] for k in sorted(instances)},
    }
