"""Google Cloud Storage: one object per image, one tar.gz per study or one NIfTI per series,
plus study metadata in the bucket and (GOOGLE_DATASTORE) in Cloud Datastore.

Object names (prefix P = Collection/<GOOGLE_STORAGE_COLLECTION>/Entity/<patient pseudonym>):
  GOOGLE_STORAGE_FORMAT "dicom" (default):  P/<study uid>/<series uid>/<sop uid>.dcm
  GOOGLE_STORAGE_FORMAT "dicom.tar.gz":     P/<study uid>.tar.gz  (members <series>/<sop>.dcm)
  GOOGLE_STORAGE_FORMAT "nifti":            P/<study uid>/<series uid>/<BIDS stem>.nii.gz
                                            P/<study uid>/<series uid>/<BIDS stem>.json (sidecar)
                  (series that cannot be converted: as "dicom", with a SendResult.note)
  always, one per study:                    P/<study uid>.json

NIfTI: the items of one send_batch call are grouped by series and each series becomes one
volume (nifti.py). A series must therefore be passed whole in one call. When the items'
metadata carries "SeriesImageCount" (images of the series in the batch) and the call holds
fewer, or when the stored sidecar lists images this call does not have, the series is sent
as DICOM instead (never a partial volume over a complete one), with a note.

Exactly once: an object is uploaded only when it is missing or its MD5 differs from the
local bytes, with a generation precondition (if_generation_match: 0 for a new object, the
current generation for a replacement), so a re-send uploads nothing and leaves the
generation unchanged. Verification: after upload the object is reloaded and its md5_hash
(and crc32c when the server gives one) must equal the local file's before the item is ok.

One image's object (format "dicom", and the DICOM fall-back of "nifti") is named by its
UIDs, so an existing object with another MD5 / CRC32C is a different instance with the same
UIDs (another batch's, delivered already): it is never replaced, and the image fails
("a different instance with this UID is already stored"), without retry. The study JSON,
the study tar.gz and the NIfTI volume and sidecar describe what was sent and are replaced.

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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from .base import (
    Config,
    Destination,
    DestinationError,
    Outcome,
    SendItem,
    close_quietly,
    describe_oserror,
    file_md5,
    probe,
    register,
    setting_bool,
    setting_str,
)
from .datastore import DatastoreIndex, FieldValue, SeriesRecord, StoredObject, StudyRecord, header_fields, parse_fields
from .nifti import NotConvertible, bids_stem, build_volume, write_nifti
from .orthanc_rest import DIFFERENT_INSTANCE

if TYPE_CHECKING:  # pragma: no cover - google-cloud-storage is imported when a client is made
    from google.cloud.storage import Blob, Bucket, Client

#: (index in the batch, item) pairs, as a round gets them
Batch = list[tuple[int, SendItem]]


class SeriesInfo(TypedDict):
    """How one series went under GOOGLE_STORAGE_FORMAT=nifti, for its Datastore entity."""

    format: str  # "nifti", or "dicom" when the series could not be converted
    note: str | None
    objects: list[str] | None  # the volume and its sidecar (None: sent as DICOM)


FORMATS = ("dicom", "dicom.tar.gz", "nifti")
# De-identified header fields written to each NIfTI's JSON sidecar (plus GOOGLE_DATASTORE_FIELDS).
SIDECAR_FIELDS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "BodyPartExamined",
    "SeriesDescription",
    "SeriesNumber",
    "StudyDate",
    "SliceThickness",
    "PixelSpacing",
    "ImageOrientationPatient",
    "KVP",
    "ConvolutionKernel",
    "MagneticFieldStrength",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
    "ScanningSequence",
    "SequenceVariant",
    "ImageType",
    "PatientPosition",
)


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


def _same_object(blob: Blob, md5_b64: str, crc: str | None) -> bool | None:
    """Whether a stored object holds the local bytes: by MD5 (and CRC32C when both sides
    have one), by CRC32C alone for objects without an MD5 (composed ones); None when the
    object has no checksum to compare."""
    md5_hash: str | None = blob.md5_hash
    crc32c: str | None = blob.crc32c
    if md5_hash:
        return md5_hash == md5_b64 and not (crc and crc32c and crc32c != crc)
    if crc and crc32c:
        return crc32c == crc
    return None


def _classify(exc: Exception, what: str) -> Outcome:
    """Map a google / requests exception to an outcome (no paths, no object contents)."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import (  # api_core's own dependency
        DefaultCredentialsError,
        RefreshError,
        TransportError,
    )

    if isinstance(exc, (gexc.Unauthorized, gexc.Forbidden, RefreshError)):
        code = getattr(exc, "code", None)
        return Outcome.failed(
            f"gcs: authentication failed ({'HTTP %s' % code if code else type(exc).__name__} "
            f"on {what}): check the service account",
            abort_batch=True,
        )
    if isinstance(exc, DefaultCredentialsError):
        raise DestinationError(
            "gcs: no Google credentials found (set GOOGLE_APPLICATION_CREDENTIALS or STORAGE_EMULATOR_HOST)"
        )
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
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, TransportError, ConnectionError, TimeoutError)):
        reason = (
            "connection refused"
            if "refused" in str(exc).lower()
            else "timed out"
            if isinstance(exc, (requests.Timeout, TimeoutError))
            else "connection failed"
        )
        return Outcome.retry(f"gcs: {reason} on {what}", unreachable=True)
    if isinstance(exc, OSError):
        return Outcome.failed(f"gcs: local file error ({describe_oserror(exc)})")
    return Outcome.retry(f"gcs: unexpected {type(exc).__name__} on {what}")


@register("gcs")
class GoogleStorage(Destination):
    name = "gcs"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        bucket_name = setting_str(config, "GOOGLE_CLOUD_STORAGE")
        self.project = setting_str(config, "GOOGLE_PROJECT_NAME")
        collection = setting_str(config, "GOOGLE_STORAGE_COLLECTION")
        self.format = (setting_str(config, "GOOGLE_STORAGE_FORMAT", "dicom") or "dicom").lower()
        self.emulator = setting_str(config, "STORAGE_EMULATOR_HOST")
        if not bucket_name:
            raise DestinationError("gcs: SEND_TO_GOOGLE needs GOOGLE_CLOUD_STORAGE (the bucket name)")
        if not collection:
            raise DestinationError("gcs: SEND_TO_GOOGLE needs GOOGLE_STORAGE_COLLECTION")
        self.bucket_name: str = bucket_name
        self.collection: str = collection
        if "/" in self.collection:
            raise DestinationError("gcs: GOOGLE_STORAGE_COLLECTION must not contain '/'")
        if self.format not in FORMATS:
            raise DestinationError(f"gcs: GOOGLE_STORAGE_FORMAT must be one of {', '.join(FORMATS)}")
        if self.emulator and not self.emulator.startswith(("http://", "https://")):
            self.emulator = "http://" + self.emulator
        self.datastore = DatastoreIndex(config, self.timeout) if setting_bool(config, "GOOGLE_DATASTORE") else None
        self.sidecar_fields = tuple(
            dict.fromkeys(
                SIDECAR_FIELDS
                + (self.datastore.fields if self.datastore else parse_fields(config.get("GOOGLE_DATASTORE_FIELDS")))
            )
        )
        self.client: Client | None = None
        self.bucket: Bucket | None = None
        self._objects: dict[str, StoredObject] = {}  # name -> size, md5 of what put_file verified
        self._series_info: dict[tuple[str, str, str], SeriesInfo] = {}  # (patient, study, series) -> nifti outcome

    # -- naming ----------------------------------------------------------------------------
    def prefix(self, item: SendItem) -> str:
        return f"Collection/{self.collection}/Entity/{item.patient_id}"

    def image_name(self, item: SendItem) -> str:
        return f"{self.prefix(item)}/{item.study_instance_uid}/{item.series_instance_uid}/{item.sop_instance_uid}.dcm"

    def tar_name(self, item: SendItem) -> str:
        return f"{self.prefix(item)}/{item.study_instance_uid}.tar.gz"

    def json_name(self, item: SendItem) -> str:
        return f"{self.prefix(item)}/{item.study_instance_uid}.json"

    def nifti_names(self, item: SendItem, fields: Mapping[str, FieldValue]) -> tuple[str, str]:
        """(volume, sidecar) object names of item's series; fields: de-identified header."""
        stem = bids_stem(item.patient_id, item.study_instance_uid, {**item.metadata, **fields})
        base = f"{self.prefix(item)}/{item.study_instance_uid}/{item.series_instance_uid}/{stem}"
        return base + ".nii.gz", base + ".json"

    # -- client ----------------------------------------------------------------------------
    def _make_client(self) -> Client:
        from google.cloud import storage

        if self.emulator:
            from google.auth.credentials import AnonymousCredentials

            return storage.Client(
                project=self.project or "sendit",
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self.emulator},
            )
        try:
            return storage.Client(project=self.project)
        except Exception as exc:
            raise DestinationError(
                f"gcs: cannot create the storage client ({type(exc).__name__}): "
                "check GOOGLE_APPLICATION_CREDENTIALS / GOOGLE_PROJECT_NAME"
            ) from None

    def open(self) -> None:
        if self.client is None:
            self._objects.clear()  # what this send_batch call stored (for Datastore)
            self._series_info.clear()
            self.client = self._make_client()
            try:
                import requests.adapters

                adapter = requests.adapters.HTTPAdapter(pool_maxsize=max(self.workers, 10))
                self.client._http.mount("http://", adapter)
                self.client._http.mount("https://", adapter)
            except Exception:
                pass
            self.bucket = self.client.bucket(self.bucket_name)
        if self.datastore is not None:
            self.datastore.open()

    def close(self) -> None:
        if self.datastore is not None:
            self.datastore.close()
        close_quietly(self.client)
        self.client = None
        self.bucket = None

    def reopen(self) -> None:
        pass  # the HTTP client reconnects by itself

    @property
    def open_bucket(self) -> Bucket:
        """The bucket open() opened (the rounds run between open() and close())."""
        if self.bucket is None:
            raise RuntimeError("gcs: no bucket: open() was not called")
        return self.bucket

    # -- one object, exactly once --------------------------------------------------------------
    def put_file(self, name: str, path: str, content_type: str, replace: bool = True) -> Outcome:
        """Upload path to name unless an identical object exists; verify by MD5/CRC32C.

        replace=False (one image's object): an existing object with other contents is kept
        and this fails, permanently: it is another instance with the same UIDs."""
        try:
            md5_hex, md5_b64 = file_md5(path)
            size = os.path.getsize(path)
        except OSError as exc:
            return Outcome.failed(f"gcs: cannot read the local file ({describe_oserror(exc)})")
        out = self._put_file(name, path, content_type, md5_b64, replace)
        if out.ok:
            self._objects[name] = StoredObject(name, size, md5_hex)
        return out

    def _put_file(self, name: str, path: str, content_type: str, md5_b64: str, replace: bool = True) -> Outcome:
        crc = _crc32c_b64(path)
        try:
            blob = self.open_bucket.get_blob(name, timeout=self.timeout, retry=None)
        except Exception as exc:
            return _classify(exc, "get object")
        if blob is not None:
            same = _same_object(blob, md5_b64, crc)
            if same:
                return Outcome.success(name, already_stored=True)
            if not replace:
                if same is None:
                    return Outcome.failed(
                        "gcs: an object with this UID is already stored and "
                        "cannot be compared with this one (no checksum returned)"
                    )
                return Outcome.failed(f"gcs: {DIFFERENT_INSTANCE}")
        generation = blob.generation if blob is not None else 0
        try:
            new = self.open_bucket.blob(name)
            new.md5_hash = md5_b64  # the server rejects the upload if the bytes differ
            new.upload_from_filename(
                path,
                content_type=content_type,
                if_generation_match=generation,
                checksum="md5",
                timeout=self.timeout,
                retry=None,
            )
        except Exception as exc:
            out = _classify(exc, "upload")
            if "PreconditionFailed" in type(exc).__name__:  # someone stored it meanwhile: recheck
                out = Outcome.retry("gcs: object was written concurrently; checking again")
            return out
        try:
            stored = self.open_bucket.get_blob(name, timeout=self.timeout, retry=None)
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
    def send_round(self, batch: Batch) -> dict[int, Outcome]:
        if self.format == "dicom":
            outcomes = self._send_images(batch)
        elif self.format == "nifti":
            outcomes = self._send_nifti(batch)
        else:
            outcomes = self._send_archives(batch)
        return self._send_metadata(batch, outcomes)

    def _send_images(self, batch: Batch) -> dict[int, Outcome]:
        return self.parallel(
            batch, lambda i, item: self.put_file(self.image_name(item), item.path, "application/dicom", replace=False)
        )

    # -- NIfTI -----------------------------------------------------------------------------
    def _send_nifti(self, batch: Batch) -> dict[int, Outcome]:
        series: dict[tuple[str, str, str], Batch] = defaultdict(list)
        for i, item in batch:
            series[(item.patient_id, item.study_instance_uid, item.series_instance_uid)].append((i, item))
        outcomes: dict[int, Outcome] = {}
        for key, members in series.items():
            outs = self._send_series_nifti(key, members)
            outcomes.update(outs)
            if any(o.unreachable or o.abort_batch for o in outs.values()):
                break  # the rest is "not attempted" (retried by the base class)
        return outcomes

    def _send_series_nifti(self, key: tuple[str, str, str], members: Batch) -> dict[int, Outcome]:
        first = members[0][1]
        fields = header_fields(first.path, self.sidecar_fields, first.metadata)
        nii_name, sidecar_name = self.nifti_names(first, fields)
        sops = {item.sop_instance_uid for _, item in members}
        reason = None
        try:
            expected = int(first.metadata.get("SeriesImageCount") or 0)
        except (TypeError, ValueError):
            expected = 0
        if expected and len(sops) < expected:
            reason = f"series split across send calls ({len(sops)} of {expected} images in this call)"
        if reason is None:
            try:
                stored = self._stored_sidecar(sidecar_name)
            except Exception as exc:
                return {i: _classify(exc, "read NIfTI sidecar") for i, _ in members}
            if stored and set(stored.get("SourceSOPInstanceUIDs") or []) - sops:
                reason = "series split across send calls (the stored volume holds other images)"
        fd, tmp = tempfile.mkstemp(prefix="sendit-nifti-", suffix=".nii.gz")
        os.close(fd)
        try:
            if reason is None:
                try:
                    volume = build_volume([item.path for _, item in members])
                    write_nifti(volume, tmp)
                except NotConvertible as exc:
                    reason = str(exc)
                except OSError as exc:
                    return {
                        i: Outcome.failed(f"gcs: cannot write the NIfTI file ({describe_oserror(exc)})")
                        for i, _ in members
                    }
            if reason is not None:
                note = f"nifti: series not converted ({reason}); sent as DICOM"
                self._series_info[key] = {"format": "dicom", "note": note, "objects": None}
                outs = self._send_images(members)
                for out in outs.values():
                    if out.ok:
                        out.note = note
                return outs
            sidecar: dict[str, object] = dict(fields)
            sidecar.update(
                {
                    "StudyInstanceUID": first.study_instance_uid,
                    "SeriesInstanceUID": first.series_instance_uid,
                    "SourceSOPInstanceUIDs": volume.sop_instance_uids,
                    "SliceStep": round(volume.slice_step, 6),
                    "ConversionSoftware": "sendit (nibabel)",
                }
            )
            data = json.dumps(sidecar, sort_keys=True, indent=1).encode()
            out_nii = self.put_file(nii_name, tmp, "application/gzip")
            if not out_nii.ok:
                return {i: out_nii for i, _ in members}
            out_json = self.put_bytes(sidecar_name, data, "application/json")
            if not out_json.ok:
                out_json.stored_fresh = not out_nii.already_stored
                return {i: out_json for i, _ in members}
        finally:
            os.unlink(tmp)
        self._series_info[key] = {"format": "nifti", "note": None, "objects": [nii_name, sidecar_name]}
        done = Outcome.success(nii_name, already_stored=out_nii.already_stored and out_json.already_stored)
        return {i: done for i, _ in members}

    def _stored_sidecar(self, name: str) -> dict[str, Any] | None:
        blob = self.open_bucket.get_blob(name, timeout=self.timeout, retry=None)
        if blob is None:
            return None
        try:
            doc = json.loads(blob.download_as_bytes(timeout=self.timeout, retry=None))
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def _send_archives(self, batch: Batch) -> dict[int, Outcome]:
        studies: dict[tuple[str, str], Batch] = defaultdict(list)
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

    def _send_archive(self, members: Batch) -> Outcome:
        fd, tmp = tempfile.mkstemp(prefix="sendit-gcs-", suffix=".tar.gz")
        os.close(fd)
        try:
            try:
                with (
                    open(tmp, "wb") as raw,
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
                ):
                    for _, item in sorted(members, key=lambda m: (m[1].series_instance_uid, m[1].sop_instance_uid)):
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

    def _send_metadata(self, batch: Batch, outcomes: dict[int, Outcome]) -> dict[int, Outcome]:
        """Write (merge) each study's JSON; a study whose JSON fails fails its images."""
        studies: dict[tuple[str, str], Batch] = defaultdict(list)
        for i, item in batch:
            out = outcomes.get(i)
            if out is not None and out.ok:
                studies[(item.patient_id, item.study_instance_uid)].append((i, item))
        for members in studies.values():
            out = self._write_study_json(members, outcomes)
            if out.ok and self.datastore is not None:
                out = self._write_datastore(self.datastore, members, outcomes)
            if out.ok:
                continue
            for i, _ in members:
                failed = Outcome(
                    ok=False,
                    transient=out.transient,
                    error=f"{out.error} (study metadata)",
                    unreachable=out.unreachable,
                    abort_batch=out.abort_batch,
                    stored_fresh=not outcomes[i].already_stored,
                )
                outcomes[i] = failed
        return outcomes

    def _write_datastore(self, datastore: DatastoreIndex, members: Batch, outcomes: dict[int, Outcome]) -> Outcome:
        """One study's Study/Series entities (members: the study's items stored this round)."""
        first = members[0][1]
        study_objects = [self.json_name(first)]
        if self.format == "dicom.tar.gz":
            study_objects.insert(0, self.tar_name(first))
        by_series: dict[str, Batch] = defaultdict(list)
        for i, item in members:
            by_series[item.series_instance_uid].append((i, item))
        records: list[SeriesRecord] = []
        for series_uid, group in sorted(by_series.items()):
            item0 = group[0][1]
            info = self._series_info.get((item0.patient_id, item0.study_instance_uid, series_uid))
            names: list[str]
            if self.format == "nifti" and info is not None and info["format"] == "nifti":
                names, fmt = info["objects"] or [], "nifti"
            elif self.format == "dicom.tar.gz":
                names, fmt = [], "dicom.tar.gz"
            else:  # the images stored (an ok outcome names its object)
                names = sorted({rid for i, _ in group if (rid := outcomes[i].remote_id) is not None})
                fmt = "dicom"
            records.append(
                SeriesRecord(
                    series_uid=series_uid,
                    fields=header_fields(item0.path, datastore.fields, item0.metadata),
                    sop_instance_uids=sorted(item.sop_instance_uid for _, item in group),
                    objects=[self._stored(n) for n in names],
                    storage_format=fmt,
                    note=info["note"] if info is not None else None,
                )
            )
        study = StudyRecord(
            collection=self.collection,
            entity=first.patient_id,
            study_uid=first.study_instance_uid,
            bucket=self.bucket_name,
            storage_format=self.format,
            objects=[self._stored(n) for n in study_objects],
            series=records,
        )
        return datastore.write_study(study)

    def _stored(self, name: str) -> StoredObject:
        return self._objects.get(name) or StoredObject(name, None, None)

    def _write_study_json(self, members: Batch, outcomes: dict[int, Outcome] | None = None) -> Outcome:
        first = members[0][1]
        name = self.json_name(first)
        try:
            blob = self.open_bucket.get_blob(name, timeout=self.timeout, retry=None)
            existing = json.loads(blob.download_as_bytes(timeout=self.timeout, retry=None)) if blob else {}
        except ValueError:
            existing = {}
        except Exception as exc:
            return _classify(exc, "read study metadata")
        instances = dict(existing.get("instances", {})) if isinstance(existing, dict) else {}
        for i, item in members:
            try:
                size = os.path.getsize(item.path)
            except OSError:
                size = None
            meta = {k: v for k, v in (item.metadata or {}).items() if _jsonable(v)}
            out = (outcomes or {}).get(i)
            instances[item.sop_instance_uid] = {
                "series": item.series_instance_uid,
                "size": size,
                "object": (
                    out.remote_id
                    if out is not None and out.remote_id
                    else self.image_name(item)
                    if self.format == "dicom"
                    else self.tar_name(item)
                ),
                "metadata": meta,
            }
        doc = study_document(self.collection, first.patient_id, first.study_instance_uid, self.format, instances)
        data = json.dumps(doc, sort_keys=True, indent=1).encode()
        return self.put_bytes(name, data, "application/json")

    def check(self) -> tuple[bool, str]:
        ok, exists = probe(
            lambda: self._make_client().bucket(self.bucket_name).exists(timeout=min(self.timeout, 10), retry=None),
            _classify,
            "bucket check",
        )
        if not ok:
            return False, exists or ""
        if not exists:
            return False, f"gcs: bucket {self.bucket_name} not found"
        where = f" (emulator {self.emulator})" if self.emulator else ""
        status = f"gcs: bucket {self.bucket_name} reachable{where}"
        if self.datastore is not None:
            ok, ds_status = self.datastore.check()
            return ok, f"{status}; {ds_status}"
        return True, status


def _jsonable(value: object) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, dict))


def study_document(
    collection: str, entity: str, study_uid: str, fmt: str, instances: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The per-study JSON: summary per series plus the instance list (no input paths)."""
    series: dict[str, dict[str, Any]] = {}
    for _sop, inst in sorted(instances.items()):
        s = series.setdefault(inst["series"], {"SeriesInstanceUID": inst["series"], "images": 0, "bytes": 0})
        s["images"] += 1
        s["bytes"] += inst.get("size") or 0
        meta = inst.get("metadata") or {}
        for key in ("Modality", "BodyPartExamined", "SeriesDescription", "SeriesNumber"):
            if meta.get(key) not in (None, "") and key not in s:
                s[key] = meta[key]
    modalities = sorted({s["Modality"] for s in series.values() if s.get("Modality")})
    body_parts = sorted({s["BodyPartExamined"] for s in series.values() if s.get("BodyPartExamined")})
    study_desc = next(
        (
            i["metadata"].get("StudyDescription")
            for i in instances.values()
            if (i.get("metadata") or {}).get("StudyDescription")
        ),
        None,
    )
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
