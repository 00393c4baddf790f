"""Reading an arriving study folder: which files are DICOM, and what each one is.

Plain functions, no Django: the import task decides what to record. Problems are
described without patient values (no file names, no header values).
"""

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from sendit.deid.structure import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, BadStructure, check_structure
from sendit.deid.values import as_text
from sendit.redact import escape_controls


# A name ending like this is still arriving (NAME.tmpXXXX).
def is_finished_name(name: str) -> bool:
    """A folder is finished when no extension of its name starts with 'tmp'."""
    if name.startswith("."):
        return False
    parts = name.split(".")[1:]
    if any(part.lower().startswith("tmp") for part in parts):
        return False
    # Folders sendit itself set aside.
    return not any(part.lower().startswith("err") for part in parts)


@dataclass
class Header:
    """What the import keeps of one file's header."""

    sop_uid: str
    identity: dict[str, str]  # the values that key the identifier request (build_request)
    dataset: pydicom.Dataset = field(repr=False)


class NotImportable(Exception):
    """A file that cannot become an Image; the message is safe to show."""


#: the Image Pixel elements the expected pixel data length depends on
_GEOMETRY_TAGS = (0x00280002, 0x00280004, 0x00280008, 0x00280010, 0x00280011, 0x00280100)


def _expected_pixel_bytes(ds: pydicom.Dataset) -> int | None:
    """Bytes of uncompressed pixel data the header promises (pydicom's own rule, which
    knows YBR_FULL_422 subsampling and 1-bit images); None when it cannot tell.

    The images of a series share their geometry, so the answer is kept by the encoded
    elements it depends on: converting them for every file cost a tenth of the import.
    """
    parts: list[object] = [tuple(ds.original_encoding)]
    for tag in _GEOMETRY_TAGS:
        elem = ds.get_item(tag)
        parts.append(None if elem is None else (elem.VR, elem.value if elem.is_raw else repr(elem.value)))
    key = tuple(parts)
    if key not in _EXPECTED:
        if len(_EXPECTED) > 256:
            _EXPECTED.clear()
        _EXPECTED[key] = _expected_length(ds)
    return _EXPECTED[key]


_EXPECTED: dict[tuple[object, ...], int | None] = {}


def _expected_length(ds: pydicom.Dataset) -> int | None:
    from pydicom.pixels.utils import get_expected_length  # pydicom 3 (pyproject requires it)

    try:
        expected = get_expected_length(ds, unit="bytes")
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    # An invalid value (badVR.dcm's NumberOfFrames '1A') makes no sense of the sum.
    return expected if isinstance(expected, int) else None


class DicomDir(Exception):
    """A CD's index file (DICOMDIR): it describes the other files and is never sent."""


_MAX_PADDING = 16 * 1024 * 1024


def _zeros(path: str | os.PathLike[str], start: int, length: int) -> bool:
    """True when the file holds only zero bytes from ``start`` for ``length`` bytes."""
    if length > _MAX_PADDING:
        return False
    with open(path, "rb") as fp:
        fp.seek(start)
        data = fp.read(length)
    return len(data) == length and data.count(0) == length


def read_header(
    path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> Header:
    """Read one file as DICOM, checking what a later step would trip over.

    Its structure is walked first (sendit.deid.structure): no value of a file is
    trusted before every element is known to fit where it stands.
    """
    try:
        layout = check_structure(path, max_bytes=max_bytes, max_depth=max_depth)
    except BadStructure as exc:
        raise NotImportable(str(exc)) from None
    except OSError as exc:
        raise NotImportable(f"the file cannot be read ({type(exc).__name__})") from None
    if layout.is_dicomdir:
        raise DicomDir()
    try:
        with open(path, "rb") as fp:
            # A data set without preamble and file meta (old exports) is read as the
            # walk found it; de-identification writes it out with a proper file meta.
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not layout.preamble)
    except InvalidDicomError:
        raise NotImportable("not a DICOM file (no DICOM file meta header)") from None
    except Exception as exc:  # pydicom raises many kinds on broken files
        raise NotImportable(f"unreadable DICOM file ({type(exc).__name__})") from None
    try:
        sop = ds.get_item(0x00080018)  # UI is ASCII: its raw bytes are its text
        sop_uid = as_text(sop.value if sop.is_raw else str(sop.value or "")) if sop is not None else ""
        if not sop_uid:
            raise NotImportable("no SOPInstanceUID (not an image instance a PACS can store)")
        if len(sop_uid) > 64:
            raise NotImportable("the SOPInstanceUID is longer than the 64 characters a UID may have")
        if layout.pixel_value is not None and layout.pixel_length is not None:  # found together
            # The walk found the pixel data element and its declared length fits the file;
            # what the header's geometry needs is checked here.
            declared, offset = layout.pixel_length, layout.pixel_value
            available = layout.size - offset
            ts = UID(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
            expected = _expected_pixel_bytes(ds)
            if not ts.is_compressed and expected and min(declared, available) < expected:
                raise NotImportable("pixel data is truncated")
            if (
                not ts.is_compressed
                and expected
                and declared != 0xFFFFFFFF
                and declared > expected + 1
                and not _zeros(path, offset + expected, declared - expected)
            ):
                # Bytes past the image (other elements swallowed by a wrong length?) would
                # leave inside the pixel data, where no scrub looks; zero padding is harmless.
                raise NotImportable(
                    f"pixel data holds {declared - expected} bytes more than "
                    "its rows, columns, frames and bits need, and they are not padding"
                )
        identity = {
            "patient_id": str(ds.get("PatientID", "") or ""),
            "birth_date": str(ds.get("PatientBirthDate", "") or ""),
            "accession": str(ds.get("AccessionNumber", "") or ""),
            "study_date": str(ds.get("StudyDate", "") or ""),
            "study_time": str(ds.get("StudyTime", "") or ""),
            "study_uid": str(ds.get("StudyInstanceUID", "") or ""),
        }
    except NotImportable:
        raise
    except Exception as exc:
        raise NotImportable(f"unreadable DICOM header ({type(exc).__name__})") from None
    return Header(sop_uid=sop_uid, identity=identity, dataset=ds)


def list_files(folder: str | os.PathLike[str]) -> tuple[list[Path], list[Path]]:
    """Every file under a folder, nested folders included, in a stable order.

    Symbolic links are listed apart: following one could read outside the data folder.
    """
    files: list[Path] = []
    links: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for d in list(dirs):
            if os.path.islink(os.path.join(root, d)):
                links.append(Path(root) / d)
                dirs.remove(d)
        for name in sorted(names):
            path = Path(root) / name
            (links if path.is_symlink() else files).append(path)
    return files, links


def remove_empty_tree(folder: str | os.PathLike[str]) -> bool:
    """Remove a folder whose files have all been moved away; False if anything is left."""
    for root, dirs, names in os.walk(folder, topdown=False):
        if names:
            return False
        for d in dirs:
            try:
                os.rmdir(os.path.join(root, d))
            except OSError:
                return False
    try:
        os.rmdir(folder)
    except OSError:
        return False
    return True


# The longest file name Linux file systems take, in bytes; room kept for ".err99".
NAME_MAX = 255
_ERR_ROOM = len(".err99")


def set_aside_name(folder):
    """NAME.err, or NAME.err2... when an earlier NAME.err is still there.

    A name too long to take ".err" is shortened to fit (its start, "~" and 8 characters of
    a hash of the whole name): the caller records the name it was set aside as.
    """
    folder = Path(folder)
    base = folder.name
    if len(os.fsencode(base)) + _ERR_ROOM > NAME_MAX:
        digest = hashlib.sha256(os.fsencode(base)).hexdigest()[:8]
        while len(os.fsencode(base)) + _ERR_ROOM + 9 > NAME_MAX:
            base = base[:-1]
        base = f"{base}~{digest}"
    candidate = folder.with_name(base + ".err")
    n = 2
    while candidate.exists() or candidate.is_symlink():
        candidate = folder.with_name(f"{base}.err{n}")
        n += 1
    return candidate


def is_utf8(name: str) -> bool:
    """Whether a folder name (as Python decoded it from the file system) is valid UTF-8:
    a name with other bytes cannot be stored in the database or sent as it is."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_name(name: str) -> str:
    """A folder name as shown on pages, in errors and logs: bytes that are not UTF-8 as \\xNN,
    control characters (a newline that would forge a log line) escaped."""
    return escape_controls(os.fsencode(name).decode("utf-8", "backslashreplace"))
