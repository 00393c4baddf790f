"""The DASHER request and response bodies, shared by every provider.

Both providers answer in the DASHER response format, so the pipeline stores one
shape whichever provider produced it. See docs/deidentify.md and
/work/shared/reference/dasher-api.md for the protocol.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PATIENT_SOURCE = "Stanford MRN"
ACCESSION_SOURCE = "DCM Accession #"
#: used when a study has no PatientID or no AccessionNumber (documented fallback)
STUDY_UID_SOURCE = "DCM StudyInstanceUID"
MAX_ITEMS = 1000
SUID_RE = re.compile(r"^[A-Za-z0-9_-]+$")

#: a JSON object of the DASHER protocol: a request or response body, an entity or an item
#: (what a provider answers is checked by :func:`validate_response` before it is used)
JSONObject = dict[str, Any]


class IdentifierError(Exception):
    """Identifiers could not be obtained; the message never carries patient values."""


@dataclass
class StudyIdentifiers:
    """Pseudonyms and date shift for one study of one patient."""

    patient_suid: str
    study_suid: str
    jitter: int  # days, applied to every date and datetime


def _iso_date(da: str, tm: str = "") -> str | None:
    """DICOM DA (+ optional TM) as ISO 8601 UTC ``YYYY-MM-DDTHH:MM:SSZ``; None if unusable."""
    da = (da or "").strip()
    if not re.fullmatch(r"\d{8}", da):
        return None
    tm = (tm or "").strip().replace(":", "")
    match = re.match(r"^(\d{2})(\d{2})?(\d{2})?", tm)
    hh, mm, ss = ("00", "00", "00")
    if match:
        hh, mm, ss = match.group(1), match.group(2) or "00", match.group(3) or "00"
    if int(hh) > 23 or int(mm) > 59 or int(ss) > 59:
        hh, mm, ss = ("00", "00", "00")
    return f"{da[:4]}-{da[4:6]}-{da[6:]}T{hh}:{mm}:{ss}Z"


def entity_key(identity: Mapping[str, str]) -> tuple[str, str]:
    """(id_source, id) of the patient of one identity (see :func:`build_request`)."""
    patient_id = (identity.get("patient_id") or "").strip()
    if patient_id:
        return PATIENT_SOURCE, patient_id
    study_uid = (identity.get("study_uid") or "").strip()
    if study_uid:
        return STUDY_UID_SOURCE, study_uid
    raise IdentifierError("a file has neither PatientID nor StudyInstanceUID")


def item_key(identity: Mapping[str, str]) -> tuple[str, str]:
    """(id_source, id) of the study of one identity (see :func:`build_request`)."""
    accession = (identity.get("accession") or "").strip()
    if accession:
        return ACCESSION_SOURCE, accession
    study_uid = (identity.get("study_uid") or "").strip()
    if study_uid:
        return STUDY_UID_SOURCE, study_uid
    raise IdentifierError("a file has neither AccessionNumber nor StudyInstanceUID")


def build_request(identities: Iterable[Mapping[str, str]]) -> JSONObject:
    """The DASHER request body for the identities of a batch (``read_identity`` dicts).

    One entity per distinct patient (``Stanford MRN`` = PatientID, timestamp =
    birth date), with one item per distinct study (``DCM Accession #`` =
    AccessionNumber, timestamp = study date and time). A file without
    PatientID is its own entity keyed by StudyInstanceUID, and a study without
    AccessionNumber is an item keyed by StudyInstanceUID, both with id_source
    ``DCM StudyInstanceUID``; a file with neither raises IdentifierError.
    """
    entities: dict[tuple[str, str], JSONObject] = {}
    seen_items: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for identity in identities:
        ekey = entity_key(identity)
        entity = entities.get(ekey)
        if entity is None:
            entity = {"id": ekey[1], "id_source": ekey[0]}
            stamp = _iso_date(identity.get("birth_date", "")) if ekey[0] == PATIENT_SOURCE else None
            if stamp:
                entity["id_timestamp"] = stamp
            entity["items"] = []
            entities[ekey] = entity
            seen_items[ekey] = set()
        ikey = item_key(identity)
        if ikey in seen_items[ekey]:
            continue
        seen_items[ekey].add(ikey)
        item: JSONObject = {"id": ikey[1], "id_source": ikey[0]}
        stamp = _iso_date(identity.get("study_date", ""), identity.get("study_time", ""))
        if stamp:
            item["id_timestamp"] = stamp
        entity["items"].append(item)
    return {"identifiers": list(entities.values())}


def _check_jitter(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise IdentifierError(f"invalid identifiers response: {where} jitter is not a whole number")
    return value


def _check_suid(value: object, where: str) -> str:
    if not isinstance(value, str) or not SUID_RE.match(value):
        raise IdentifierError(f"invalid identifiers response: {where} suid is missing or malformed")
    return value


def validate_response(request_body: JSONObject, response: JSONObject) -> JSONObject:
    """Raise IdentifierError unless ``response`` answers every entity and item of the request."""
    if not isinstance(response, dict) or not isinstance(response.get("results"), list):
        raise IdentifierError("invalid identifiers response: no results list")
    answered: dict[tuple[object, str], set[tuple[object, str]]] = {}  # (id_source, id) -> its items'
    for result in response["results"]:
        if not isinstance(result, dict):
            raise IdentifierError("invalid identifiers response: a result is not an object")
        _check_suid(result.get("suid"), "an entity")
        _check_jitter(result.get("jitter"), "an entity")
        items = result.get("items") or []
        if not isinstance(items, list):
            raise IdentifierError("invalid identifiers response: items is not a list")
        item_keys: set[tuple[object, str]] = set()
        for item in items:
            if not isinstance(item, dict):
                raise IdentifierError("invalid identifiers response: an item is not an object")
            _check_suid(item.get("suid"), "an item")
            _check_jitter(item.get("jitter"), "an item")
            item_keys.add((item.get("id_source"), str(item.get("id"))))
        key = (result.get("id_source"), str(result.get("id")))
        answered.setdefault(key, set()).update(item_keys)
    for entity in request_body.get("identifiers", []):
        key = (entity.get("id_source"), str(entity.get("id")))
        if key not in answered:
            raise IdentifierError("invalid identifiers response: a requested entity is not answered")
        for item in entity.get("items", []):
            if (item.get("id_source"), str(item.get("id"))) not in answered[key]:
                raise IdentifierError("invalid identifiers response: a requested item is not answered")
    return response


def extract_identifiers(response: JSONObject, patient_id: str, accession: str, study_uid: str = "") -> StudyIdentifiers:
    """Pick one study's identifiers out of a provider response.

    The jitter is the entity's (the patient's), so all of a patient's studies
    move by the same number of days. ``study_uid`` is needed only for files
    without PatientID or AccessionNumber (the StudyInstanceUID fallback).
    """
    identity = {"patient_id": patient_id, "accession": accession, "study_uid": study_uid}
    ekey, ikey = entity_key(identity), item_key(identity)
    for result in response.get("results", []):
        if (result.get("id_source"), str(result.get("id"))) != ekey:
            continue
        for item in result.get("items") or []:
            if (item.get("id_source"), str(item.get("id"))) == ikey:
                return StudyIdentifiers(
                    patient_suid=_check_suid(result.get("suid"), "the entity"),
                    study_suid=_check_suid(item.get("suid"), "the item"),
                    jitter=_check_jitter(result.get("jitter"), "the entity"),
                )
        raise IdentifierError("the identifiers response has no item for this study")
    raise IdentifierError("the identifiers response has no entity for this patient")
