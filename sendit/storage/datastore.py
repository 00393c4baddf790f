"""Google Cloud Datastore: one entity per study and one per series, describing what GCS holds.

Used by the GCS destination (`gcs.py`) when GOOGLE_DATASTORE is true: after a study's
objects are stored and verified in Cloud Storage, `DatastoreIndex.write_study()` upserts

* a study entity,  key (GOOGLE_DATASTORE_STUDY_KIND "Study", <StudyInstanceUID>)
* a series entity per series, key (Study, <StudyInstanceUID>, GOOGLE_DATASTORE_SERIES_KIND
  "Series", <SeriesInstanceUID>)  (a child of its study: one entity group per study)

keyed by the de-identified UIDs, so a re-send updates the same entities. The
read-modify-write runs in one transaction (series sent in several calls are merged: SOP
UIDs and object lists are unions), then every entity is read back and compared with what
was written; only then is the study reported ok.

Properties (no original identifier: only values of the de-identified files, the pseudonym,
the de-identified UIDs and facts about the upload):

* the configured header fields (GOOGLE_DATASTORE_FIELDS, DICOM keywords), read from the
  first de-identified file of each series: numbers as numbers, multi-valued as lists.
  Identifying attributes (PatientName, PatientBirthDate, AccessionNumber...) are refused
  at configuration time. Study entities get the study-level ones (Study*, Patient{Age,Sex,
  Size,Weight}).
* `collection`, `entity` (patient pseudonym), `StudyInstanceUID`, `SeriesInstanceUID`
* `images` (distinct SOP instances), `sop_instance_uids` (unindexed)
* `storage_bucket`, `storage_format`, `objects`, `object_sizes`, `object_md5` (hex)
  (parallel, unindexed lists), `bytes`; `note` when NIfTI conversion fell back to DICOM
* study only: `series` (UIDs), `series_images`, `series_count`, `modalities`, `body_parts`
* `sent` (this write, UTC) and `first_sent`

Limits: Datastore entities are at most 1 MiB; a series entity lists its objects only up to
OBJECT_LIST_LIMIT objects (beyond that `objects_listed` is false and `object_prefix` says
where they are; the study JSON in the bucket lists every object).
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .base import Config, DestinationError, Outcome, close_quietly, probe, setting_str

if TYPE_CHECKING:  # pragma: no cover - the Google libraries are imported when a client is made
    from google.api_core.retry import Retry
    from google.cloud.datastore import Client, Entity, Key
    from pydicom.dataelem import DataElement

#: a header value as an entity property: text, a number, or a list of them
FieldValue = str | int | float | list[str | int | float]

logger = logging.getLogger("sendit.storage.datastore")

DEFAULT_FIELDS = (
    "Modality",
    "BodyPartExamined",
    "SeriesDescription",
    "StudyDate",
    "Manufacturer",
    "ManufacturerModelName",
    "SliceThickness",
    "PixelSpacing",
)

# Never written to Datastore, even de-identified: they name or locate a person, or a visit.
IDENTIFYING = frozenset(
    {
        "PatientName",
        "PatientID",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientBirthName",
        "PatientMotherBirthName",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientTelecomInformation",
        "IssuerOfPatientID",
        "MedicalRecordLocator",
        "MilitaryRank",
        "BranchOfService",
        "Occupation",
        "EthnicGroup",
        "PatientComments",
        "AdditionalPatientHistory",
        "PatientReligiousPreference",
        "AccessionNumber",
        "StudyID",
        "AdmissionID",
        "RequestedProcedureID",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "ReferringPhysicianName",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy",
        "OperatorsName",
        "PhysiciansOfRecord",
        "RequestingPhysician",
        "StationName",
        "DeviceSerialNumber",
        "ContentCreatorName",
        "PersonName",
        "ResponsiblePerson",
        "ResponsibleOrganization",
    }
)
STUDY_LEVEL_EXTRA = frozenset({"PatientAge", "PatientSex", "PatientSize", "PatientWeight"})
OBJECT_LIST_LIMIT = 2000


def _NO_RETRY() -> Retry:
    """A retry policy that never retries: the destination's rounds are the only retry policy.

    (google-cloud-datastore reads retry=None as "use the default retries", up to a minute.)
    """
    from google.api_core.retry import Retry

    return Retry(predicate=lambda exc: False)


def parse_fields(value: str | Iterable[object] | None) -> tuple[str, ...]:
    """GOOGLE_DATASTORE_FIELDS (comma list or sequence of DICOM keywords), validated."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_FIELDS
    names = value.split(",") if isinstance(value, str) else list(value)
    fields: list[str] = []
    for name in (str(n).strip() for n in names):
        if not name:
            continue
        tag = tag_for_keyword(name)
        if tag is None:
            raise DestinationError(f"datastore: GOOGLE_DATASTORE_FIELDS: {name!r} is not a DICOM keyword")
        if name in IDENTIFYING or dictionary_VR(tag) in ("PN", "SQ"):
            raise DestinationError(
                f"datastore: GOOGLE_DATASTORE_FIELDS: {name} identifies a person or is a sequence; it is never written"
            )
        if name not in fields:
            fields.append(name)
    return tuple(fields)


def _typed(elem: DataElement) -> FieldValue | None:
    """A pydicom element's value as Datastore-friendly Python (str/int/float or list)."""
    from pydicom.multival import MultiValue

    vr = elem.VR
    value = elem.value
    if value is None or value == "" or vr in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN", "PN"):
        return None

    def one(v: Any) -> str | int | float:
        if vr in ("DS", "FL", "FD"):
            return float(v)
        if vr in ("IS", "US", "SS", "UL", "SL", "UV", "SV"):
            return int(v)
        return str(v).strip()

    try:
        if isinstance(value, (MultiValue, list, tuple)):
            return [one(v) for v in value]
        return one(value)
    except (TypeError, ValueError):
        return str(value)


def header_fields(
    path: str | None, keywords: Iterable[str], metadata: Mapping[str, str] | None = None
) -> dict[str, FieldValue]:
    """The configured fields of one de-identified file (header only), typed.

    Falls back to the item's metadata strings for fields the file lacks or when the
    file cannot be read. Empty values are left out.
    """
    out: dict[str, FieldValue] = {}
    ds = None
    if path:
        try:
            import pydicom

            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception:
            ds = None
    for keyword in keywords:
        value: FieldValue | None = None
        if ds is not None and keyword in ds:
            value = _typed(ds[keyword])
        if value in (None, "", []) and metadata and metadata.get(keyword) not in (None, ""):
            value = metadata[keyword]
        if value not in (None, "", []):
            out[keyword] = value
    return out


@dataclass
class StoredObject:
    name: str
    size: int | None
    md5: str | None  # hex


@dataclass
class SeriesRecord:
    series_uid: str
    fields: dict[str, FieldValue]
    sop_instance_uids: list[str]
    objects: list[StoredObject]
    storage_format: str
    note: str | None = None


@dataclass
class StudyRecord:
    collection: str
    entity: str  # patient pseudonym
    study_uid: str
    bucket: str
    storage_format: str
    objects: list[StoredObject]  # study-level objects (study JSON, tar.gz)
    series: list[SeriesRecord] = field(default_factory=list)


def _classify(exc: Exception, what: str) -> Outcome:
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import (  # api_core's own dependency
        DefaultCredentialsError,
        RefreshError,
        TransportError,
    )

    if isinstance(exc, DefaultCredentialsError):
        raise DestinationError(
            "datastore: no Google credentials found (set GOOGLE_APPLICATION_CREDENTIALS or DATASTORE_EMULATOR_HOST)"
        )
    if isinstance(exc, (gexc.Unauthenticated, gexc.PermissionDenied, gexc.Unauthorized, gexc.Forbidden, RefreshError)):
        return Outcome.failed(
            f"datastore: authentication failed ({type(exc).__name__} on {what}): check the service account",
            abort_batch=True,
        )
    if isinstance(exc, (gexc.Aborted, gexc.Conflict)):
        return Outcome.retry(f"datastore: transaction contention on {what}")
    if isinstance(
        exc,
        (
            gexc.ServiceUnavailable,
            gexc.DeadlineExceeded,
            gexc.RetryError,
            TransportError,
            ConnectionError,
            TimeoutError,
        ),
    ):
        return Outcome.retry(f"datastore: unavailable on {what} ({type(exc).__name__})", unreachable=True)
    if isinstance(exc, (gexc.TooManyRequests, gexc.ResourceExhausted, gexc.InternalServerError)):
        return Outcome.retry(f"datastore: {type(exc).__name__} on {what}")
    if isinstance(exc, gexc.GoogleAPICallError):
        return Outcome.failed(f"datastore: {type(exc).__name__} on {what}")
    return Outcome.retry(f"datastore: unexpected {type(exc).__name__} on {what}")


def _union(old: list[str] | None, new: list[str]) -> list[str]:
    seen = dict.fromkeys(old or [])
    seen.update(dict.fromkeys(new))
    return sorted(seen)


def _objects(old: Mapping[str, Any] | None, new: Iterable[StoredObject]) -> dict[str, tuple[int | None, str | None]]:
    """name -> (size, md5) of the objects an earlier entity listed, updated by this call's."""
    old = old or {}
    objects = {
        name: (size, md5)
        for name, size, md5 in zip(old.get("objects") or [], old.get("object_sizes") or [], old.get("object_md5") or [])
    }
    objects.update((obj.name, (obj.size, obj.md5)) for obj in new)
    return objects


class DatastoreIndex:
    """Writes and verifies the Study/Series entities (see the module docstring)."""

    SERIES_UNINDEXED = ("sop_instance_uids", "objects", "object_sizes", "object_md5", "note")
    STUDY_UNINDEXED = ("objects", "object_sizes", "object_md5", "series_images")

    def __init__(self, config: Config, timeout: float = 60.0) -> None:
        self.project = setting_str(config, "GOOGLE_PROJECT_NAME")
        self.study_kind = setting_str(config, "GOOGLE_DATASTORE_STUDY_KIND", "Study")
        self.series_kind = setting_str(config, "GOOGLE_DATASTORE_SERIES_KIND", "Series")
        self.namespace = setting_str(config, "GOOGLE_DATASTORE_NAMESPACE")
        self.fields = parse_fields(config.get("GOOGLE_DATASTORE_FIELDS"))
        self.emulator = setting_str(config, "DATASTORE_EMULATOR_HOST")
        if self.emulator and not self.emulator.startswith(("http://", "https://")):
            self.emulator = "http://" + self.emulator
        self.timeout = timeout
        self.client: Client | None = None

    @property
    def study_fields(self) -> tuple[str, ...]:
        return tuple(f for f in self.fields if f.startswith("Study") or f in STUDY_LEVEL_EXTRA)

    # -- client ------------------------------------------------------------------------------
    def _make_client(self) -> Client:
        from google.cloud import datastore

        kwargs = {"project": self.project or ("sendit" if self.emulator else None), "namespace": self.namespace}
        if self.emulator:
            from google.auth.credentials import AnonymousCredentials

            try:
                return datastore.Client(
                    credentials=AnonymousCredentials(), client_options={"api_endpoint": self.emulator}, **kwargs
                )
            except ValueError:
                # DATASTORE_EMULATOR_HOST is in the process environment: the library then talks
                # to that emulator itself and refuses explicit credentials.
                return datastore.Client(**kwargs)
        try:
            return datastore.Client(**kwargs)
        except Exception as exc:
            from google.auth.exceptions import DefaultCredentialsError

            if isinstance(exc, DefaultCredentialsError):
                raise DestinationError(
                    "datastore: no Google credentials found (set "
                    "GOOGLE_APPLICATION_CREDENTIALS or DATASTORE_EMULATOR_HOST)"
                ) from None
            raise DestinationError(
                f"datastore: cannot create the client ({type(exc).__name__}): check GOOGLE_PROJECT_NAME"
            ) from None

    def open(self) -> None:
        if self.client is None:
            self.client = self._make_client()

    def close(self) -> None:
        close_quietly(self.client)
        self.client = None

    @property
    def session(self) -> Client:
        """The client open() made."""
        if self.client is None:
            raise RuntimeError("datastore: no client: open() was not called")
        return self.client

    def study_key(self, study_uid: str) -> Key:
        key: Key = self.session.key(self.study_kind, study_uid)
        return key

    def series_key(self, study_uid: str, series_uid: str) -> Key:
        key: Key = self.session.key(self.study_kind, study_uid, self.series_kind, series_uid)
        return key

    # -- entities ----------------------------------------------------------------------------
    def _series_entity(
        self, key: Key, old: Mapping[str, Any] | None, study: StudyRecord, rec: SeriesRecord, now: datetime.datetime
    ) -> Entity:
        from google.cloud import datastore

        props: dict[str, Any] = {k: v for k, v in rec.fields.items()}
        props.update(
            {
                "collection": study.collection,
                "entity": study.entity,
                "StudyInstanceUID": study.study_uid,
                "SeriesInstanceUID": rec.series_uid,
            }
        )
        sops = _union(old.get("sop_instance_uids") if old else None, rec.sop_instance_uids)
        same_listing = old and old.get("objects_listed", True) and old.get("storage_format") == rec.storage_format
        objects = _objects(old if same_listing else None, rec.objects)
        names = sorted(objects)
        listed = len(names) <= OBJECT_LIST_LIMIT
        prefix = os.path.commonprefix(names) if names else ""
        props.update(
            {
                "images": len(sops),
                "sop_instance_uids": sops,
                "storage_bucket": study.bucket,
                "storage_format": rec.storage_format,
                "objects_listed": listed,
                "object_prefix": prefix[:1400],
                "objects": names if listed else [],
                "object_sizes": [objects[n][0] for n in names] if listed else [],
                "object_md5": [objects[n][1] for n in names] if listed else [],
                "bytes": sum(objects[n][0] or 0 for n in names),
                "note": rec.note,
                "sent": now,
                "first_sent": (old or {}).get("first_sent") or now,
            }
        )
        entity = datastore.Entity(key, exclude_from_indexes=self.SERIES_UNINDEXED)
        entity.update(props)
        return entity

    def _study_entity(
        self,
        key: Key,
        old: Mapping[str, Any] | None,
        study: StudyRecord,
        series_entities: list[Entity],
        now: datetime.datetime,
    ) -> Entity:
        from google.cloud import datastore

        old = old or {}
        per_series = dict(zip(old.get("series") or [], old.get("series_images") or []))
        modalities = set(old.get("modalities") or [])
        body_parts = set(old.get("body_parts") or [])
        for ent in series_entities:
            per_series[ent["SeriesInstanceUID"]] = ent["images"]
            if ent.get("Modality"):
                modalities.add(str(ent["Modality"]))
            if ent.get("BodyPartExamined"):
                body_parts.add(str(ent["BodyPartExamined"]))
        objects = _objects(old, study.objects)
        names = sorted(objects)
        props: dict[str, Any] = {}
        for rec in study.series:
            for k in self.study_fields:
                if k in rec.fields and k not in props:
                    props[k] = rec.fields[k]
        for k in self.study_fields:  # keep what an earlier call wrote when this one lacks it
            if k not in props and k in old:
                props[k] = old[k]
        series = sorted(per_series)
        props.update(
            {
                "collection": study.collection,
                "entity": study.entity,
                "StudyInstanceUID": study.study_uid,
                "series": series,
                "series_images": [per_series[s] for s in series],
                "series_count": len(series),
                "images": sum(per_series.values()),
                "modalities": sorted(modalities),
                "body_parts": sorted(body_parts),
                "storage_bucket": study.bucket,
                "storage_format": study.storage_format,
                "objects": names,
                "object_sizes": [objects[n][0] for n in names],
                "object_md5": [objects[n][1] for n in names],
                "sent": now,
                "first_sent": old.get("first_sent") or now,
            }
        )
        entity = datastore.Entity(key, exclude_from_indexes=self.STUDY_UNINDEXED)
        entity.update(props)
        return entity

    def write_study(self, study: StudyRecord) -> Outcome:
        """Upsert the study's entities in one transaction, then read them back and compare."""
        self.open()
        client = self.session
        now = datetime.datetime.now(datetime.UTC)
        skey = self.study_key(study.study_uid)
        keys = [self.series_key(study.study_uid, rec.series_uid) for rec in study.series]
        txn = client.transaction()
        try:
            txn.begin(retry=_NO_RETRY(), timeout=self.timeout)
            found = client.get_multi([skey] + keys, transaction=txn, retry=_NO_RETRY(), timeout=self.timeout)
            existing = {ent.key.flat_path: ent for ent in found}
            series_entities = [
                self._series_entity(k, existing.get(k.flat_path), study, rec, now) for k, rec in zip(keys, study.series)
            ]
            study_entity = self._study_entity(skey, existing.get(skey.flat_path), study, series_entities, now)
            for ent in [study_entity] + series_entities:
                txn.put(ent)
            txn.commit(retry=_NO_RETRY(), timeout=self.timeout)
        except Exception as exc:
            try:
                if txn.id is not None:
                    txn.rollback(retry=_NO_RETRY(), timeout=self.timeout)
            except Exception:
                pass
            return _classify(exc, "write entities")
        return self.verify([study_entity] + series_entities)

    def verify(self, written: list[Entity]) -> Outcome:
        try:
            back = self.session.get_multi([e.key for e in written], retry=_NO_RETRY(), timeout=self.timeout)
        except Exception as exc:
            out = _classify(exc, "read back entities")
            out.stored_fresh = True
            return out
        by_path = {e.key.flat_path: e for e in back}
        for ent in written:
            got = by_path.get(ent.key.flat_path)
            if got is None:
                return Outcome.retry(f"datastore: {ent.key.kind} entity missing right after the write")
            if dict(got) != dict(ent):
                differ = sorted(k for k in set(got) | set(ent) if got.get(k) != ent.get(k))
                return Outcome.retry(f"datastore: {ent.key.kind} entity read back differs ({', '.join(differ[:5])})")
        return Outcome.success(None)

    def check(self) -> tuple[bool, str]:
        def get() -> None:
            client = self._make_client()
            client.get(
                client.key(self.study_kind, "sendit-health-check"), retry=_NO_RETRY(), timeout=min(self.timeout, 10)
            )

        ok, why = probe(get, _classify, "health check")
        if not ok:
            return False, why or ""
        where = f" (emulator {self.emulator})" if self.emulator else ""
        return True, f"datastore: reachable{where}"
