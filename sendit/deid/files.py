"""Reading identities and de-identifying files on disk.

Files are written back with the encoding they were read with (transfer syntax,
VR form, endianness), so pixel data bytes, compressed or not, are copied as
read and never decoded.
"""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from sendit.deid.options import DeidOptions
from sendit.deid.scrub import deidentify_dataset

IDENTITY_TAGS = {
    "patient_id": 0x00100020,
    "birth_date": 0x00100030,
    "accession": 0x00080050,
    "study_date": 0x00080020,
    "study_time": 0x00080030,
    "study_uid": 0x0020000D,
    "sop_uid": 0x00080018,
    "burned_in": 0x00280301,
}


def _value(ds, tag: int) -> str:
    elem = ds.get(tag)
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).strip("\0 ")


def read_identity(path) -> dict:
    """The raw values that key the identifier request, read from the header only."""
    ds = dcmread(path, stop_before_pixels=True, specific_tags=list(IDENTITY_TAGS.values()))
    return {name: _value(ds, tag) for name, tag in IDENTITY_TAGS.items()}


def _encoding(ds) -> tuple[bool, bool]:
    """(implicit VR, little endian) the dataset was read with."""
    original = getattr(ds, "original_encoding", None)
    if original and original[0] is not None:
        return original
    return True, True


def _read_as_implicit(ds) -> bool:
    """True when the body was read as implicit VR (its elements carry no VR)."""
    for tag in ds.keys():
        elem = ds.get_item(tag)
        if getattr(elem, "is_raw", False):
            return elem.VR is None
    return False


def write_dataset(ds, dst) -> None:
    """Write ``ds`` as a DICOM file in its original encoding.

    A dataset read without file meta gets one when it has a SOP class and
    instance (so the output is a proper Part 10 file); otherwise it is written
    as it came, without meta.
    """
    meta = getattr(ds, "file_meta", None)
    implicit, little = _encoding(ds)
    has_sop = "SOPClassUID" in ds and "SOPInstanceUID" in ds
    if meta is not None and "TransferSyntaxUID" in meta:
        if not meta.TransferSyntaxUID.is_implicit_VR and _read_as_implicit(ds):
            # body encoded unlike its transfer syntax says: give every element
            # its dictionary VR so it can be written as the syntax requires
            for _ in ds.iterall():
                pass
        ds.save_as(dst, enforce_file_format=has_sop)
        return
    if has_sop:
        meta = meta if meta is not None else FileMetaDataset()
        if implicit:
            meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:
            meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta = meta
        ds.save_as(dst, enforce_file_format=True)
    else:
        ds.save_as(dst, implicit_vr=implicit, little_endian=little)


def deidentify_file(src, dst, ids, options: DeidOptions) -> dict:
    """Read ``src``, de-identify it, write ``dst``; return the new instance/series/study UIDs."""
    ds = dcmread(src)
    deidentify_dataset(ds, ids, options)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    write_dataset(ds, dst)
    return {
        "sop_uid": str(ds.get("SOPInstanceUID", "") or ""),
        "study_uid": str(ds.get("StudyInstanceUID", "") or ""),
        "series_uid": str(ds.get("SeriesInstanceUID", "") or ""),
    }
