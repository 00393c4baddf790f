"""Reading identities and de-identifying files on disk.

Files are written back with the encoding they were read with (transfer syntax,
VR form, endianness), so pixel data bytes, compressed or not, are copied as
read and never decoded.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypedDict, TypeGuard

from pydicom import __version_info__ as pydicom_version_info
from pydicom import dcmread
from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_description, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO, DicomFileLike, DicomIO
from pydicom.filewriter import write_data_element
from pydicom.filewriter import write_dataset as pydicom_write_dataset
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from sendit.deid.burned_in import pixel_decision
from sendit.deid.options import DeidOptions
from sendit.deid.pixels import Region, clean_pixels, resolve_regions
from sendit.deid.proof import (
    InputFacts,
    OutputNotProven,
    declares_pixels,
    describe,
    identifying_values,
    prove_streamed,
    prove_whole,
)
from sendit.deid.scrub import deidentify_dataset
from sendit.deid.structure import PIXEL_TAGS
from sendit.deid.values import TEXT_VRS, as_text, ascii_value

if TYPE_CHECKING:  # pragma: no cover
    from sendit.deid.identifiers import StudyIdentifiers
    from sendit.deid.ocr import OcrDecision, OcrOptions

#: a file to read or write by name
PathArg = str | os.PathLike[str]

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


def _value(ds: Dataset, tag: int | None) -> str:
    """An element's value as text, raw bytes decoded here: pydicom's own conversion (with
    its validation) costs more than the scrub itself for the few values read back."""
    elem = ds.get_item(tag) if tag is not None else None
    return "" if elem is None else as_text(elem.value)


def read_identity(path: PathArg) -> dict[str, str]:
    """The raw values that key the identifier request, read from the header only."""
    ds = dcmread(path, stop_before_pixels=True, specific_tags=list(IDENTITY_TAGS.values()))
    return {name: _value(ds, tag) for name, tag in IDENTITY_TAGS.items()}


def encoding(ds: Dataset) -> tuple[bool, bool]:
    """(implicit VR, little endian) the dataset was read with."""
    original: tuple[bool, bool] | tuple[None, None] | None = getattr(ds, "original_encoding", None)
    if original and original[0] is not None:
        return original
    return True, True


def _read_as_implicit(ds: Dataset) -> bool:
    """True when the body was read as implicit VR (its elements carry no VR)."""
    for tag in ds.keys():
        elem = ds.get_item(tag)
        if getattr(elem, "is_raw", False):
            return elem.VR is None
    return False


def _plain_header(ds: Dataset, meta: FileMetaDataset) -> bool:
    """A header-only dataset in a standard, non-deflated syntax, its meta matching it."""
    syntax = meta.TransferSyntaxUID
    return (
        0x7FE00010 not in ds
        and syntax.is_transfer_syntax
        and not syntax.is_private
        and syntax != DeflatedExplicitVRLittleEndian
        and _value(meta, 0x00020003) == _value(ds, 0x00080018)
        and _value(meta, 0x00020002) == _value(ds, 0x00080016)
        and (getattr(ds, "preamble", None) is None or len(ds.preamble) == 128)
    )


def _write_header(ds: Dataset, meta: FileMetaDataset, fp: BinaryIO) -> None:
    """What ``save_as(enforce_file_format=True)`` writes, without its copy of the meta.

    The scrubbed header of every image goes through here, so the per-file costs of
    dcmwrite (deep-copying and re-validating the file meta) are worth skipping; the
    bytes are the same (tests/deid/test_streaming.py compares them).
    """
    syntax = meta.TransferSyntaxUID
    for tag in (0x00080016, 0x00080018):
        # dcmwrite reads SOP class and instance, which turns a raw UN element into UI as
        # it goes: do the same so the bytes match (a raw UI element is written as read).
        elem = ds.get_item(tag)
        if elem is not None and elem.VR != "UI":
            ds.get(tag)
    out = DicomFileLike(fp)
    out.is_implicit_VR, out.is_little_endian = syntax.is_implicit_VR, syntax.is_little_endian
    out.write(getattr(ds, "preamble", None) or b"\x00" * 128)
    out.write(b"DICM")
    _write_meta(out, meta)
    _write_body(out, ds)


_REQUIRED_META = (0x00020002, 0x00020003, 0x00020010)


def _complete_meta(meta: FileMetaDataset) -> None:
    """pydicom's ``validate_file_meta(enforce_standard=True)``: the same additions and
    errors, judged on the elements as read, so that none is converted (and re-encoded)."""
    if any(tag >> 16 != 0x0002 for tag in meta.keys()):
        raise ValueError("Only File Meta Information group (0002,eeee) elements may be present in 'file_meta'.")

    def blank(tag: int) -> bool:
        elem = meta.get_item(tag)
        return elem is None or not (elem.value if tag == 0x00020001 else as_text(elem.value))

    if blank(0x00020001):
        meta.FileMetaInformationVersion = b"\x00\x01"
    if blank(0x00020012):
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    if 0x00020013 not in meta:
        meta.ImplementationVersionName = f"PYDICOM {'.'.join(pydicom_version_info)}"
    missing = [f"{Tag(tag)} {dictionary_description(tag)}" for tag in _REQUIRED_META if blank(tag)]
    if missing:
        raise AttributeError(
            f"Required File Meta Information elements are either missing or have an empty value: {', '.join(missing)}"
        )


def _write_meta(fp: DicomIO, meta: FileMetaDataset) -> None:
    """pydicom's ``write_file_meta_info(enforce_standard=True)``: the same checks and bytes,
    with the elements kept as read written by ``_write_body``.

    Profiled in a running node, pydicom's version spent about a third of de-identification's
    Python time on these half-dozen elements (its writer converts and re-encodes each one).
    """
    _complete_meta(meta)
    if 0x00020000 in meta:
        del meta[0x00020000]  # rewritten below with the length of what follows it
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    _write_body(buffer, meta)
    body = buffer.getvalue()
    meta.FileMetaInformationGroupLength = len(body)
    fp.write(_HEADS[True][0].pack(0x0002, 0x0000, b"UL", 4) + struct.pack("<L", len(body)))
    fp.write(body)


_UNDEFINED = 0xFFFFFFFF
#: element headers by endianness: explicit VR short and long length, implicit VR
_HEADS = {
    little: tuple(struct.Struct(order + fmt) for fmt in ("HH2sH", "HH2sHL", "HHL"))
    for little, order in ((True, "<"), (False, ">"))
}
#: struct codes of the binary integer VRs, for a single int value
_INT_CODES = {"US": "H", "UL": "L", "SS": "h", "SL": "l"}


def _simple_value(elem: DataElement, little: bool) -> bytes | None:
    """The encoded value of a converted element whose value is one ASCII string, one
    integer or bytes, exactly as pydicom encodes it; None for anything else.

    Such elements are the ones the reader converts on its way (SpecificCharacterSet,
    PixelRepresentation, file meta) and the scrub writes; pydicom's writer costs more
    per element than all the rest of the de-identification of one.
    """
    value, vr, kind = elem.value, elem.VR, type(elem.value)
    if (kind is str or kind is UID) and vr in TEXT_VRS and value.isascii():
        return ascii_value(vr, value)
    if kind is int and vr in _INT_CODES:
        try:
            return struct.pack(("<" if little else ">") + _INT_CODES[vr], value)
        except struct.error:
            return None  # out of range: pydicom says so
    if kind is bytes and vr in ("OB", "UN"):
        data: bytes = value
        return data + b"\0" if len(data) % 2 else data
    return None


def _write_body(fp: DicomIO, ds: Dataset) -> None:
    """pydicom's ``write_dataset``, with the elements the scrub left untouched written as
    the bytes they were read as, and one-value elements encoded here.

    Most of a header is kept as read (pydicom holds such elements raw), and pydicom
    spends more on each one's buffers and checks than the scrub spends on its decision;
    packing the 8 or 12 header bytes here is the same encoding. Anything else (sequences,
    other values, undefined lengths, a new encoding or character set) goes through pydicom.
    """
    implicit, little = fp.is_implicit_VR, fp.is_little_endian
    if (implicit, little) != tuple(ds.original_encoding) or ds.original_character_set != ds._character_set:
        pydicom_write_dataset(fp, ds)
        return
    short_head, long_head, implicit_head = _HEADS[little]
    charset = ds.get("SpecificCharacterSet", default_encoding)
    write = fp.write
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:
            continue  # retired group lengths, as pydicom drops them
        elem: DataElement | RawDataElement = ds.get_item(tag)  # raw when kept as read
        vr = elem.VR
        if not (implicit or (vr and len(vr) == 2)):
            write_data_element(fp, elem, charset)
            continue
        if isinstance(elem, RawDataElement):
            if elem.length == _UNDEFINED:
                write_data_element(fp, elem, charset)
                continue
            value = elem.value or b""
        else:
            simple = _simple_value(elem, little)
            if simple is None or (len(simple) > 0xFFFF and not implicit and vr not in EXPLICIT_VR_LENGTH_32):
                # (over 64 kB in a 16-bit length: pydicom writes it as UN, with a warning)
                write_data_element(fp, elem, charset)
                continue
            value = simple
        group, number = tag >> 16, tag & 0xFFFF
        if implicit:
            write(implicit_head.pack(group, number, len(value)))
        else:
            code = (vr or "").encode("ascii")  # two letters: checked above
            if vr in EXPLICIT_VR_LENGTH_32:
                write(long_head.pack(group, number, code, 0, len(value)))
            else:
                write(short_head.pack(group, number, code, len(value)))
        write(value)


def _is_file(dst: PathArg | BinaryIO) -> TypeGuard[BinaryIO]:
    """Whether ``dst`` is a file object rather than a name."""
    return hasattr(dst, "write")


def write_dataset(ds: Dataset, dst: PathArg | BinaryIO) -> None:
    """Write ``ds`` as a DICOM file in its original encoding.

    A dataset read without file meta gets one when it has a SOP class and
    instance (so the output is a proper Part 10 file); otherwise it is written
    as it came, without meta.
    """
    meta = getattr(ds, "file_meta", None)
    implicit, little = encoding(ds)
    has_sop = "SOPClassUID" in ds and "SOPInstanceUID" in ds
    if meta is not None and "TransferSyntaxUID" in meta:
        if not meta.TransferSyntaxUID.is_implicit_VR and _read_as_implicit(ds):
            # body encoded unlike its transfer syntax says: give every element
            # its dictionary VR so it can be written as the syntax requires
            for _ in ds.iterall():
                pass
        if has_sop and _plain_header(ds, meta) and _is_file(dst):
            _write_header(ds, meta, dst)
        else:
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


#: VRs that an explicit-VR pixel data element can carry (4-byte length after 2 reserved bytes)
_LONG_VRS = frozenset({b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"})
_PIXEL_TAGS = frozenset({0x0008, 0x0009, 0x0010})  # (7FE0,0008/0009/0010)
_COPY_CHUNK = 1 << 20


def pixel_element_at(fp: BinaryIO, start: int, implicit: bool, little: bool) -> tuple[int, int] | None:
    """(header length, value length) of the pixel data element at ``start``, else None.

    Reads only the element's 8 or 12 header bytes; a length of 0xFFFFFFFF means
    encapsulated (compressed) pixel data.
    """
    fp.seek(start)
    head = fp.read(12)
    if len(head) < 8:
        return None
    order = "<" if little else ">"
    group, element = struct.unpack(order + "HH", head[:4])
    if group != 0x7FE0 or element not in _PIXEL_TAGS:
        return None
    if implicit:
        return 8, struct.unpack(order + "L", head[4:8])[0]
    if head[4:6] in _LONG_VRS and len(head) == 12:
        return 12, struct.unpack(order + "L", head[8:12])[0]
    return None


def _pixels_end_the_file(fp: BinaryIO, start: int, size: int, implicit: bool, little: bool) -> bool:
    """True when the bytes from ``start`` to the end of the file are one pixel data element.

    Then the element can be copied as bytes, never parsed; anything after it (a
    trailing padding, a digital signature) sends the file down the full path.
    """
    found = pixel_element_at(fp, start, implicit, little)
    if found is None:
        return False
    header, length = found
    if length == 0xFFFFFFFF:  # encapsulated: must end with its sequence delimiter
        fp.seek(size - 8)
        return fp.read(8) == struct.pack("<HHL" if little else ">HHL", 0xFFFE, 0xE0DD, 0)
    return start + header + length == size


def _copy_tail(src: BinaryIO, dst: BinaryIO, start: int, size: int) -> None:
    """Append src[start:size] to dst, in the kernel where it can (copy_file_range)."""
    dst.flush()
    offset, remaining = start, size - start
    try:
        while remaining:
            copied = os.copy_file_range(src.fileno(), dst.fileno(), remaining, offset)
            if not copied:
                break
            offset += copied
            remaining -= copied
    except (AttributeError, OSError):  # no copy_file_range here, or not across these files
        pass
    if remaining:
        src.seek(offset)
        shutil.copyfileobj(src, dst, _COPY_CHUNK)


def _create(path: Path) -> BinaryIO:
    """A new file for writing; its folder is made only when missing (not asked for every
    file: the de-identification step writes a whole batch into one folder)."""
    try:
        return open(path, "w+b")  # read as well: the output is read back to be proven
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "w+b")


def _output(part: Path, reuse: PathArg | None) -> BinaryIO:
    """The file the output is written into: ``reuse`` renamed to ``part`` and overwritten
    from its start (the caller truncates it where the output ends), or a new file.

    Creating a file can cost more than everything else done to an image: on ext4 without
    a journal, each new inode is found past every inode deleted in the last minute (0.8 ms
    a file measured here, against 0.02 ms to rename and reopen one; docs/performance.md).
    """
    if reuse is not None:
        try:
            if os.stat(reuse).st_nlink == 1:
                os.replace(reuse, part)
                return open(part, "r+b")
            # Another name for the same file (a study staged with hard links, cp -al or
            # rsync --link-dest) would see the overwrite: drop only this name.
            os.unlink(reuse)
        except OSError:
            pass  # gone already: a new file does as well
    return _create(part)


class DeidentifiedFile(TypedDict):
    """What :func:`deidentify_file` tells of the output it wrote."""

    sop_uid: str
    study_uid: str
    series_uid: str
    #: values of the de-identified dataset the caller asked for, as text
    fields: dict[str, str]
    #: the filter rules whose regions cleaned the pixels ("" when none did)
    cleaned: str
    #: what the OCR found and blanked (counts and boxes, never text); None: not run
    ocr: dict[str, Any] | None
    #: what the recipe could not do as written, and did instead (no values)
    notes: list[str]


def deidentify_file(
    src: PathArg,
    dst: PathArg,
    ids: StudyIdentifiers,
    options: DeidOptions,
    fields: Iterable[str] = (),
    reuse: PathArg | None = None,
    require_pixels: bool = False,
    ocr: OcrOptions | None = None,
) -> DeidentifiedFile:
    """Read ``src``, de-identify it, write ``dst``, prove it; return the new instance/series/study UIDs.

    Only the header is parsed: when the pixel data element ends the file (nearly
    always), its bytes are copied straight from ``src`` to ``dst`` after the scrubbed
    header, so pixels are never decoded or held in memory and stay byte-identical.
    Other files (deflated, or with elements after the pixels) are read whole.
    ``fields`` names keywords whose de-identified values are returned as text under
    "fields", so a caller need not read the output again. ``reuse`` names a file the
    caller no longer needs (in ``dst``'s file system): its inode takes the output, every
    byte of it overwritten, instead of a new file's, unless the file has other names (hard
    links), which keep their bytes. It is gone once this returns; after an error it may
    still be there, or be gone.

    ``dst`` takes the output only once it is proven (:mod:`sendit.deid.proof`): it reads
    back as DICOM, names a new SOP instance, holds the input's pixel data, and none of the
    input's identifying values is in its header. With ``require_pixels`` (the pipeline's
    choice) an input that says it is an image (an image storage SOP class, or Rows and
    Columns) must hold pixel data too: a file cut right after an element reads as a whole,
    smaller dataset. It is off by default for header-only datasets built by tests and tools.
    With ``ocr`` (``DEID_OCR=true``), an image of one of its modalities, or one a filter
    rule flags, is read whole and its text read by OCR (:mod:`sendit.deid.ocr`): the
    words that match the input's identifying values are blanked with the recipe's
    regions, and text that cannot be decided raises :class:`~sendit.deid.ocr.TextUndecided`.
    Otherwise
    :class:`~sendit.deid.proof.OutputNotProven` or
    :class:`~sendit.deid.proof.IdentifyingValueFound` is raised, nothing is left at
    ``dst`` or beside it, and ``src`` is never touched: it is only ever read.
    """
    with open(src, "rb") as fp:
        # force: a data set without preamble and file meta (old exports) is read too; the
        # import walked its structure already (sendit.deid.structure).
        ds = dcmread(fp, stop_before_pixels=True, force=True)
        start, size = fp.tell(), os.fstat(fp.fileno()).st_size
        implicit, little = encoding(ds)
        syntax = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) else None
        deflated = syntax == DeflatedExplicitVRLittleEndian  # the reader inflated it whole
        pixel_at = None if deflated or start >= size else pixel_element_at(fp, start, implicit, little)
        stream = not deflated and start < size and _pixels_end_the_file(fp, start, size, implicit, little)
        # The pixels are decoded, so the file is read whole, when a filter rule with regions
        # matched (they are cleaned) or when the OCR is to read them (DEID_OCR: images of its
        # modalities, and those a rule flags, wherever their pixel data lies in the file).
        cleaning = pixel_decision(ds, options.recipe) if pixel_at is not None or ocr is not None else None
        read_text = ocr is not None and cleaning is not None and (cleaning.hold is not None or _wants_ocr(ds, ocr))
        if pixel_at is None or cleaning is None or not cleaning.clean:
            cleaning = None
        if cleaning is not None or read_text:
            stream = False
        if deflated or (start < size and not stream):
            header_tags = list(ds.keys())
            fp.seek(0)
            ds = dcmread(fp, force=True)
            lost = sum(1 for tag in header_tags if tag not in ds)
            if lost:
                raise OutputNotProven(
                    f"reading the whole input lost {lost} element(s) that its header read found (the file is damaged)"
                )
        facts = identifying_values(ds, ids, options)
        if facts.truncated is not None:
            raise OutputNotProven(
                f"the length of {describe((facts.truncated,))} runs past the end of the input "
                "file, so what follows it cannot be checked (the file is damaged or cut short)"
            )
        if not stream:
            input_pixels = {tag: _pixel_bytes(ds.get_item(tag)) for tag in PIXEL_TAGS if tag in ds}
            if require_pixels and not input_pixels and pixel_at is None and declares_pixels(ds):
                raise OutputNotProven(
                    "the input is an image (by its SOP class, or rows and columns) without "
                    "pixel data: the file is cut short or damaged"
                )
        regions: list[Region] | None = None
        if cleaning is not None:
            try:
                regions = resolve_regions(ds, cleaning.coordinates)
            except ValueError as exc:  # the message names the rule's regions, never a value
                raise OutputNotProven(f"a filter rule says where to clean the pixels, but {exc}") from None
        text = _read_text(ds, facts, ocr, syntax) if ocr is not None and read_text and "PixelData" in ds else None
        if text is not None and text.blank:
            regions = (regions or []) + text.regions(int(ds.Rows), int(ds.Columns))
        notes: list[str] = []
        deidentify_dataset(ds, ids, options, notes)
        if regions is not None:
            try:
                clean_pixels(ds, regions)
            except Exception as exc:  # whatever the decoder makes of a damaged file: held, never sent
                raise _undecodable("a filter rule says where to clean the pixels", syntax, exc) from None
            input_pixels = {}  # changed on purpose: the proof checks the output has pixel data
        if regions is not None or text is not None:
            ds.BurnedInAnnotation = "NO"  # the matched rules or the OCR say where the text is: it is gone
        part = Path(f"{dst}.part")  # a half-written file never takes the final name
        try:
            with _output(part, reuse) as out:
                write_dataset(ds, out)
                header_end = out.tell()
                if stream:
                    _copy_tail(fp, out, start, size)
                out.truncate()  # a reused file may have been longer
                out.flush()
                if stream:
                    if pixel_at is None:  # pragma: no cover - stream means the element was found
                        raise OutputNotProven("the input's pixel data element was not found where it was")
                    fp.seek(start)
                    pixel_header = fp.read(pixel_at[0])
                    prove_streamed(out.fileno(), fp.fileno(), header_end, start, size, pixel_header, facts)
                else:
                    prove_whole(out.fileno(), facts, input_pixels, had_pixels=pixel_at is not None)
        except BaseException:
            part.unlink(missing_ok=True)  # never leave a mix of old and new bytes behind
            raise
    os.replace(part, dst)
    return {
        "sop_uid": _value(ds, 0x00080018),
        "study_uid": _value(ds, 0x0020000D),
        "series_uid": _value(ds, 0x0020000E),
        # Values of the de-identified dataset the caller asked for, as text.
        "fields": {name: _value(ds, tag_for_keyword(name)) for name in fields},
        # The filter rules whose regions cleaned the pixels ("" when none did).
        "cleaned": cleaning.rules if cleaning is not None else "",
        # What the OCR found and blanked (counts and boxes, never text); None: not run.
        "ocr": text.record() if text is not None else None,
        # What the recipe could not do as written, and did instead (no values).
        "notes": notes,
    }


def _wants_ocr(ds: Dataset, ocr: OcrOptions) -> bool:
    from sendit.deid.ocr import wants_ocr  # only with DEID_OCR on: nothing of OCR is loaded otherwise

    return wants_ocr(ds, ocr.modalities)


def _undecodable(what: str, syntax: str | None, exc: Exception) -> OutputNotProven:
    """Why an image whose pixels had to be decoded is held: the syntax and the error's
    type, never its message (a decoder may quote header values)."""
    name = getattr(syntax, "name", "") or "its transfer syntax"
    return OutputNotProven(f"{what}, but they cannot be decoded ({name}: {type(exc).__name__})")


def _read_text(ds: Dataset, facts: InputFacts, ocr: OcrOptions, syntax: str | None) -> OcrDecision:
    """The OCR's decision on ``ds`` (read whole, before the scrub); raises TextUndecided
    when it holds the image, OutputNotProven when the pixels cannot be decoded."""
    from sendit.deid.ocr import TextUndecided, ocr_image

    try:
        decision = ocr_image(ds, facts.needles, ocr.scrub, ocr.tessdata)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError) as exc:
        raise _undecodable("OCR was to read the pixels", syntax, exc) from None
    if decision.hold is not None:
        raise TextUndecided(decision.hold, decision.record())
    return decision


def _pixel_bytes(elem: DataElement | RawDataElement) -> bytes:
    """A pixel data element's value as the bytes read (encapsulated: the items, without
    the sequence delimiter, as pydicom holds them)."""
    value = elem.value
    return value if isinstance(value, bytes) else bytes(value or b"")
