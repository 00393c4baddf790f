"""Proof that a de-identified output may replace its original, and may leave.

Two checks, both run by :func:`sendit.deid.files.deidentify_file` on every file it writes,
before the caller records anything or removes the original:

* **The output is proven** (:class:`OutputNotProven` otherwise): its bytes, read back from
  disk, parse as a DICOM Part 10 file (:func:`read_layout`: preamble, file meta, every
  element at every depth within the bounds of its data set, item and sequence); it
  carries a SOP Instance UID that is not empty, matches its file meta and differs from
  the input's (unless the options keep UIDs); and it holds the input's pixel data. The
  input itself must have been read whole: a value cut short by the end of the file (an
  element whose length runs past it) swallowed whatever followed it, which then cannot
  be checked.
* **Nothing identifying is in it** (:class:`IdentifyingValueFound` otherwise): the
  identifying values of the input (:func:`identifying_values`, gathered before the
  scrub) are looked for in every value of the output's header, at every depth, private
  ones included (:func:`scan`).

The messages of both exceptions are plain words that name attributes and kinds of
values, never a value, so that they can be shown on the status page and logged.
"""

from __future__ import annotations

import bisect
import mmap
import os
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

from pydicom.charset import decode_bytes, default_encoding
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID_dictionary

from sendit.deid.dates import InvalidDate, shift_value
from sendit.deid.options import BASIC_PROFILE_CODE, OPTION_CODES, DeidOptions
from sendit.deid.profile import profile_for
from sendit.deid.scrub import CLASS_UID_TAGS, DUMMIES, DUMMY_TEXT
from sendit.deid.structure import (
    DICOMDIR_CLASS,
    EXPLICIT_BE,
    IMPLICIT_LE,
    ITEM,
    ITEM_END,
    PIXEL_TAGS,
    SEQ_END,
    UNDEFINED,
    Buffer,
    dictionary_vr,
    tag_text,
)
from sendit.deid.uids import is_well_known
from sendit.deid.values import LONG_VR_CODES, SHORT_VR_CODES

if TYPE_CHECKING:  # pragma: no cover
    from sendit.deid.identifiers import StudyIdentifiers
    from sendit.deid.recipe import Recipe

#: the tags from the top-level data set down to an element, through its sequences
TagPath = tuple[int, ...]
#: (value start, value end, path, VR as written) of one value in a written file
Span = tuple[int, int, TagPath, bytes]


class OutputNotProven(Exception):
    """The output could not be proven to be a whole, de-identified copy of its input.

    ``reason`` (also the message) is plain words, naming tags at most, never a value.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IdentifyingValueFound(Exception):
    """An identifying value of the input was found in the output.

    The message names the kind of value and the attribute it was found in, e.g.
    "the patient's id found in (0020,1041) SliceLocation"; never the value.
    """

    def __init__(self, kind: str, where: str) -> None:
        super().__init__(f"{kind} found in {where}")
        self.kind, self.where = kind, where


# -- reading an output's structure --------------------------------------------------
_LONG_VRS, _SHORT_VRS = LONG_VR_CODES, SHORT_VR_CODES
#: explicit VR element head (short length), implicit VR element head, 32-bit length
_HEADS = {
    little: (struct.Struct(order + "HH2sH"), struct.Struct(order + "HHL"), struct.Struct(order + "L"))
    for little, order in ((True, "<"), (False, ">"))
}
_MAX_DEPTH = 64
_DEFLATED = "1.2.840.10008.1.2.1.99"


class _Bad(Exception):
    """Raised inside the walk; becomes OutputNotProven."""


@lru_cache(maxsize=4096)
def _dictionary_vr_bytes(tag: int) -> bytes:
    return dictionary_vr(tag).encode("ascii")


def describe(path: TagPath) -> str:
    """'(0008,0100) CodeValue in (0008,2218) AnatomicRegionSequence' for a path of tags."""

    def one(tag: int) -> str:
        if tag >> 16 & 1:
            return f"{tag_text(tag)} (private)"
        name = keyword_for_tag(tag)
        return f"{tag_text(tag)} {name}" if name else tag_text(tag)

    if not path:
        return "the preamble"
    return " in ".join(one(tag) for tag in reversed(path))


@dataclass
class Layout:
    """What :func:`read_layout` learned of a written file."""

    buffer: Buffer  # the bytes walked (a deflated body inflated)
    #: (start, end, path, VR) of every value at every depth, pixel data values excepted
    spans: list[Span] = field(default_factory=list)
    syntax: str = ""
    sop_uid: str = ""
    meta_sop_uid: str = ""
    meta_class_uid: str = ""
    #: top-level pixel data elements: tag -> (element start, value start, value end)
    pixels: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    end: int = 0  # where the walk stopped (the pixel element when asked to stop there)


class _Walk:
    __slots__ = ("buf", "spans", "pixels", "stop_at_pixels", "stopped")

    def __init__(self, buf: Buffer, stop_at_pixels: bool) -> None:
        self.buf = buf
        self.spans: list[Span] = []
        self.pixels: dict[int, tuple[int, int, int]] = {}  # tag -> (element start, value start, value end)
        self.stop_at_pixels = stop_at_pixels
        self.stopped: int | None = None  # where the walk stopped at the pixel data element

    def dataset(
        self, pos: int, end: int, implicit: bool, little: bool, path: TagPath, depth: int, in_item: bool = False
    ) -> int:
        """Walk elements from pos to end; return where the walk stopped.

        ``in_item``: an undefined-length item, which ends at its delimiter.
        """
        if depth > _MAX_DEPTH:
            raise _Bad(f"sequences nested deeper than {_MAX_DEPTH} levels")
        buf, spans = self.buf, self.spans
        explicit_head, implicit_head, long_length = _HEADS[little]
        while pos < end:
            if end - pos < 8:
                raise _Bad(f"a data element is cut short{_at(path)}")
            if implicit:
                group, element, length = implicit_head.unpack_from(buf, pos)
                tag = group << 16 | element
                vr = _dictionary_vr_bytes(tag)
                value = pos + 8
            else:
                group, element, vr, length = explicit_head.unpack_from(buf, pos)
                tag = group << 16 | element
                value = pos + 8
                if vr in _LONG_VRS:
                    if end - pos < 12:
                        raise _Bad(f"a data element is cut short{_at(path)}")
                    length = long_length.unpack_from(buf, value)[0]
                    value = pos + 12
                elif vr not in _SHORT_VRS and group != 0xFFFE:
                    raise _Bad(f"{tag_text(tag)} has no valid VR{_at(path)}")
            if group == 0xFFFE:
                if tag == ITEM_END and in_item:
                    return pos + 8
                raise _Bad(f"an item or delimiter where an element should be{_at(path)}")
            inner = path + (tag,)
            if not path and tag in PIXEL_TAGS:
                if self.stop_at_pixels:
                    self.stopped = pos
                    return pos
                if length == UNDEFINED:
                    stop = self.fragments(value, end, little)
                    self.pixels[tag] = (pos, value, stop)
                    pos = stop + 8
                    continue
                if value + length > end:
                    raise _Bad("the pixel data runs past the end of the file")
                self.pixels[tag] = (pos, value, value + length)
                pos = value + length
                continue
            if length == UNDEFINED:
                if vr == b"SQ":
                    pos = self.sequence(value, end, implicit, little, inner, depth, True)
                elif vr == b"UN":  # an undefined-length UN holds an implicit VR LE sequence
                    pos = self.sequence(value, end, True, True, inner, depth, True)
                else:
                    raise _Bad(f"{tag_text(tag)} has an undefined length{_at(path)}")
                continue
            stop = value + length
            if stop > end:
                raise _Bad(f"the length of {tag_text(tag)} runs past the end of its data set{_at(path)}")
            if vr == b"SQ":
                self.sequence(value, stop, implicit, little, inner, depth, False)
            elif not (
                implicit
                and vr == b"UN"
                and length >= 8
                and implicit_head.unpack_from(buf, value)[:2] == (0xFFFE, 0xE000)
                and self.try_sequence(value, stop, implicit, little, inner, depth)
            ):
                spans.append((value, stop, inner, vr))
            pos = stop
        if in_item:
            raise _Bad(f"an item without its end{_at(path)}")
        return pos

    def try_sequence(self, start: int, end: int, implicit: bool, little: bool, path: TagPath, depth: int) -> bool:
        """An implicit-VR value of unknown VR (private) that starts like an item: walked as a
        sequence if it is one, so that the values inside are named; else it is one value."""
        mark = len(self.spans)
        try:
            self.sequence(start, end, implicit, little, path, depth, undefined=False)
            return True
        except _Bad:
            del self.spans[mark:]
            return False

    def sequence(
        self, pos: int, end: int, implicit: bool, little: bool, path: TagPath, depth: int, undefined: bool
    ) -> int:
        buf = self.buf
        order = "<" if little else ">"
        head = order + "HHL"
        while pos < end:
            if end - pos < 8:
                raise _Bad(f"a sequence item is cut short{_at(path)}")
            group, element, length = struct.unpack_from(head, buf, pos)
            tag = group << 16 | element
            if tag == SEQ_END and undefined:
                return pos + 8
            if tag != ITEM:
                raise _Bad(f"a sequence holds something other than items{_at(path)}")
            if length == UNDEFINED:
                pos = self.dataset(pos + 8, end, implicit, little, path, depth + 1, in_item=True)
            else:
                stop = pos + 8 + length
                if stop > end:
                    raise _Bad(f"an item runs past the end of its sequence{_at(path)}")
                self.dataset(pos + 8, stop, implicit, little, path, depth + 1)
                pos = stop
        if undefined:
            raise _Bad(f"a sequence without its end{_at(path)}")
        return pos

    def fragments(self, pos: int, end: int, little: bool) -> int:
        """Encapsulated pixel data: items up to the sequence delimiter; where it starts."""
        head = ("<" if little else ">") + "HHL"
        while end - pos >= 8:
            group, element, length = struct.unpack_from(head, self.buf, pos)
            tag = group << 16 | element
            if tag == SEQ_END:
                return pos
            if tag != ITEM or length == UNDEFINED or pos + 8 + length > end:
                raise _Bad("the encapsulated pixel data is broken")
            pos += 8 + length
        raise _Bad("the encapsulated pixel data has no end")


def _at(path: TagPath) -> str:
    return f" in {describe(path)}" if path else ""


def _text(buf: Buffer, span: tuple[int, int]) -> str:
    return bytes(buf[span[0] : span[1]]).decode("latin-1").strip("\0 ")


def read_layout(buf: Buffer, stop_at_pixels: bool = False) -> Layout:
    """Walk the bytes of a written file as a DICOM reader would; raise OutputNotProven.

    Every element at every depth must lie inside its data set, item and sequence; with
    ``stop_at_pixels`` the walk ends at the top-level pixel data element (the caller
    compares what follows it with the input), otherwise it goes to the end of ``buf``.
    """
    try:
        if len(buf) < 132 or bytes(buf[128:132]) != b"DICM":
            raise _Bad("it has no DICOM preamble and prefix")
        walk = _Walk(buf, False)
        # File meta: explicit VR little endian, group 0002, as readers take it.
        pos = 132
        meta: dict[int, tuple[int, int]] = {}  # tag -> (value start, value end)
        while len(buf) - pos >= 8 and struct.unpack_from("<H", buf, pos)[0] == 0x0002:
            start = len(walk.spans)
            pos = _meta_element(walk, pos)
            for value_start, value_end, path, _ in walk.spans[start:]:
                meta[path[-1]] = (value_start, value_end)
        if 0x00020010 not in meta:
            raise _Bad("its file meta has no transfer syntax")
        layout = Layout(buffer=buf, syntax=_text(buf, meta[0x00020010]))
        if 0x00020003 in meta:
            layout.meta_sop_uid = _text(buf, meta[0x00020003])
        if 0x00020002 in meta:
            layout.meta_class_uid = _text(buf, meta[0x00020002])
        implicit, little = layout.syntax == IMPLICIT_LE, layout.syntax != EXPLICIT_BE
        if layout.syntax == _DEFLATED:
            try:
                body = zlib.decompressobj(-zlib.MAX_WBITS).decompress(bytes(buf[pos:]))
            except zlib.error:
                raise _Bad("its deflated data set does not inflate") from None
            buf = bytes(buf[:pos]) + body
            walk.buf = layout.buffer = buf
        walk.stop_at_pixels = stop_at_pixels
        layout.end = walk.dataset(pos, len(buf), implicit, little, (), 0)
        if stop_at_pixels and walk.stopped is None:
            raise _Bad("it has no pixel data element where the input's was")
    except _Bad as exc:
        raise OutputNotProven(f"the output does not read back as DICOM: {exc}") from None
    except struct.error:  # pragma: no cover - bounds are checked before every unpack
        raise OutputNotProven("the output does not read back as DICOM") from None
    layout.spans, layout.pixels = walk.spans, walk.pixels
    for value_start, value_end, path, _ in walk.spans:
        if path == (0x00080018,):
            layout.sop_uid = _text(buf, (value_start, value_end))
            break
    # The preamble is scanned too (the scrub zeroes it).
    layout.spans.insert(0, (0, 128, (), b""))
    return layout


def _meta_element(walk: _Walk, pos: int) -> int:
    buf = walk.buf
    length: int
    if len(buf) - pos < 8:
        raise _Bad("its file meta is cut short")
    vr = bytes(buf[pos + 4 : pos + 6])
    if vr in _LONG_VRS:
        length, value = struct.unpack_from("<L", buf, pos + 8)[0], pos + 12
    else:
        length, value = struct.unpack_from("<H", buf, pos + 6)[0], pos + 8
    if length == UNDEFINED or value + length > len(buf):
        raise _Bad("an element of its file meta runs past the end of the file")
    tag = 0x00020000 | struct.unpack_from("<H", buf, pos + 2)[0]
    walk.spans.append((value, value + length, (tag,), vr))
    return value + length


# -- identifying values of an input --------------------------------------------------
#: top-level attributes whose values are looked for, and the kind of value each is
_NAME, _ID = "name", "id"
KEYWORD_KINDS = {
    0x00100010: ("the patient's name", _NAME),  # PatientName
    0x00101001: ("another name of the patient", _NAME),  # OtherPatientNames
    0x00101005: ("the patient's birth name", _NAME),  # PatientBirthName
    0x00101060: ("the patient's mother's birth name", _NAME),  # PatientMotherBirthName
    0x00100020: ("the patient's id", _ID),  # PatientID
    0x00101000: ("another id of the patient", _ID),  # OtherPatientIDs
    0x00100021: ("the issuer of the patient's id", _ID),  # IssuerOfPatientID
    0x00100030: ("the patient's birth date", _ID),  # PatientBirthDate
    0x00080050: ("the accession number", _ID),  # AccessionNumber
    0x00200010: ("the study id", _ID),  # StudyID
    0x00101040: ("the patient's address", _ID),  # PatientAddress
    0x00102154: ("a telephone number", _ID),  # PatientTelephoneNumbers
    0x00080094: ("a telephone number", _ID),  # ReferringPhysicianTelephoneNumbers
    0x00380010: ("the admission id", _ID),  # AdmissionID
}
#: person names other than the patient's: physicians, operators (any other PN at any
#: depth is "a person's name")
_PHYSICIAN = "a physician's or operator's name"
PERSON_KINDS = {
    tag: _PHYSICIAN
    for tag in (
        0x00080090,  # ReferringPhysicianName
        0x00081048,  # PhysiciansOfRecord
        0x00081050,  # PerformingPhysicianName
        0x00081060,  # NameOfPhysiciansReadingStudy
        0x00081070,  # OperatorsName
        0x00321032,  # RequestingPhysician
        0x0040A075,  # VerifyingObserverName
        0x00400006,  # ScheduledPerformingPhysicianName
    )
}
_OTHER_IDS_SEQUENCE = 0x00101002  # OtherPatientIDsSequence: its items' PatientID, Issuer
_UID, _DATE = "an original UID", "an original date"
_BIRTH_DATE = KEYWORD_KINDS[0x00100030][0]
_SPLIT_NAME = re.compile(rb"[\^= \\]+")
#: bytes that continue a word (ASCII letters and digits, and any non-ASCII byte, which may
#: be part of a letter): a value found next to one is part of a longer word, not itself
_WORD_BYTES = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyz") | frozenset(range(0x80, 0x100))
#: bytes that continue a number: a number found next to one is part of a longer number or UID
_NUMBER_BYTES = _WORD_BYTES | frozenset(b".")
#: numbers shorter than this are not looked for: they occur as ordinary values (kVp,
#: counts, sizes); the scrub's clean action counts 5+ digits as identifying too
MIN_DIGITS = 5
MIN_CHARS = 3


_new_needle = tuple.__new__


class Needle(NamedTuple):
    """One value to look for in an output."""

    value: bytes  # lower-cased
    kind: str
    leading_digit: bool
    trailing_digit: bool
    date: bool
    name: bool  # a part of a person's name


#: name parts that name nobody (placeholders of test and QA data, particles, titles) and
#: are ordinary words in headers (a manufacturer "... TEST", a "PHANTOM" protocol)
NOT_NAMES = frozenset(
    {
        b"test",
        b"patient",
        b"anonymous",
        b"anonymized",
        b"anon",
        b"unknown",
        b"phantom",
        b"doctor",
        b"referring",
        b"physician",
        b"operator",
        b"name",
        b"first",
        b"last",
        b"middle",
        b"none",
        b"mrs",
        b"mr.",
        b"mrs.",
        b"ms.",
        b"dr.",
        b"prof",
        b"prof.",
        b"jr.",
        b"sr.",
        b"iii",
        b"van",
        b"von",
        b"der",
        b"den",
        b"del",
        b"della",
        b"les",
        b"the",
        b"and",
    }
)

#: a well-formed code string value (PS3.5 6.2: capitals, digits, space, underscore)
_CODE_STRING = re.compile(rb"[A-Z0-9 _\\]*")


def _raw_values(elem: DataElement | RawDataElement) -> list[bytes]:
    """An element's values as the bytes they were read as (multi-values split)."""
    value = elem.value
    if type(value) is bytes and b"\\" not in value:
        value = value.strip(b"\0 ")
        return [value] if value else []
    if value is None:
        return []
    if not isinstance(value, bytes):
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            return [str(v).encode("utf-8", "replace") for v in value if str(v)]
        value = str(value).encode("utf-8", "replace")
    return [v.strip(b"\0 ") for v in value.split(b"\\") if v.strip(b"\0 ")]


@lru_cache(maxsize=1 << 12)
def _written_text(patient_suid: str, study_suid: str, recipe: Recipe | None) -> bytes:
    """Everything sendit writes into an output, lower-cased, one value per line: values
    found in it cannot be told apart from sendit's own."""
    ids = type("Ids", (), {"patient_suid": patient_suid, "study_suid": study_suid})
    parts = [
        DUMMY_TEXT,
        *[v for v in DUMMIES.values() if isinstance(v, str)],
        patient_suid,
        study_suid,
        "YES",
        "MODIFIED",
        "REMOVED",
        "DCM",
        *BASIC_PROFILE_CODE,
        *[text for code in OPTION_CODES.values() for text in code],
        *_recipe_values(recipe, ids),
    ]
    return "\n".join(str(p) for p in parts).lower().encode("utf-8", "replace")


def _recipe_values(recipe: Recipe | None, ids: object) -> tuple[str, ...]:
    if recipe is None:
        return ()
    values: list[str] = []
    for action in recipe.header:
        if action.action in ("ADD", "REPLACE") and action.value:
            value = action.value
            if value.startswith("var:"):
                value = str(getattr(ids, value[4:], ""))  # jitter: a number, too short to matter
            values.append(value)
    return tuple(values)


@lru_cache(maxsize=1 << 12)
def _shift(date: bytes, days: int) -> bytes:
    try:
        return shift_value("DA", date.decode("ascii"), days).encode("ascii")
    except (InvalidDate, UnicodeDecodeError):
        return b""


def _recipe_jitters(recipe: Recipe | None) -> tuple[int, ...]:
    if recipe is None:
        return ()
    days: list[int] = []
    for action in recipe.header:
        if action.action == "JITTER" and action.value:
            try:
                days.append(int(float(action.value)))
            except ValueError:
                continue  # var:, func:, deid_func: (var:jitter is the study's own jitter)
    return tuple(days)


@lru_cache(maxsize=64)
def _option_kept(enabled: tuple[str, ...], keep_tags: frozenset[int]) -> frozenset[int]:
    """Tags that an enabled option keeps and the Basic Profile does not (e.g. InstitutionName
    under Retain Institution Identity): their values are the user's choice to send."""
    if not enabled:
        return frozenset()
    basic, chosen = profile_for((), keep_tags), profile_for(enabled, keep_tags)
    return frozenset(tag for tag, action in chosen.actions.items() if action == "K" and basic.actions.get(tag) != "K")


_SKIP, _SEQUENCE, _KEPT, _UID_NEEDLE, _UID_KEPT, _DATE_VALUE, _BIRTH, _NAME_PARTS, _WHOLE = range(9)


class _Rules:
    """What the collection does with each attribute under one set of options (cached)."""

    def __init__(self, enabled: tuple[str, ...], keep_tags: frozenset[int], retain_uids: bool) -> None:
        self.profile = profile_for(enabled, keep_tags)
        self.option_kept = _option_kept(enabled, keep_tags)
        self.keep_tags, self.retain_uids = keep_tags, retain_uids
        #: public attributes whose values are never looked for nor kept aside: skipped at
        #: once unless read with a VR whose values are (a wrong VR is the scrub's to act on)
        self.plain = _plain_tags() - keep_tags - self.option_kept
        self.top: dict[int, tuple[str | None, int, str]] = {}  # tag -> (VR as read, what, kind)
        self.nested: dict[int, tuple[str | None, int, str]] = {}

    def category(self, tag: int, vr: str | None, top: bool) -> tuple[int, str]:
        """(what the collection does with the attribute, the kind of its values, "" for none)."""
        if not vr or vr == "UN":
            vr = dictionary_vr(tag)
        if vr == "SQ":
            removed = self.profile.action(tag) in ("X", "Z") and tag != _OTHER_IDS_SEQUENCE
            return (_SKIP, "") if removed else (_SEQUENCE, "")
        if tag in self.keep_tags or tag in self.option_kept:
            return (_KEPT, "")
        if vr == "UI":
            if tag in CLASS_UID_TAGS or self.profile.action(tag) == "K":
                return (_UID_KEPT, "")
            return (_SKIP, "") if self.retain_uids else (_UID_NEEDLE, _UID)
        if vr in ("DA", "DT"):
            return (_BIRTH, KEYWORD_KINDS[tag][0]) if tag == 0x00100030 else (_DATE_VALUE, "")
        known = KEYWORD_KINDS.get(tag) if top else None
        if vr == "PN" or (known and known[1] == _NAME):
            return (_NAME_PARTS, known[0] if known else PERSON_KINDS.get(tag, "a person's name"))
        if known:
            return (_WHOLE, known[0])
        return (_SKIP, "")


#: the VRs whose values are looked for, or that hold values that are
_VALUE_VRS = frozenset({"UI", "DA", "DT", "PN", "SQ", "UN"})


@lru_cache(maxsize=1)
def _plain_tags() -> frozenset[int]:
    """Dictionary attributes of other VRs than :data:`_VALUE_VRS` and not listed by kind."""
    from pydicom.datadict import DicomDictionary

    return frozenset(
        tag
        for tag, entry in DicomDictionary.items()
        if not set(entry[0].split(" or ")) & _VALUE_VRS and tag not in KEYWORD_KINDS
    )


@lru_cache(maxsize=64)
def _rules(enabled: tuple[str, ...], keep_tags: frozenset[int], retain_uids: bool) -> _Rules:
    return _Rules(enabled, keep_tags, retain_uids)


def _elements(ds: Dataset) -> list[tuple[int, DataElement | RawDataElement]]:
    """(tag, element as held) of a dataset, raw elements left raw (pydicom's own mapping:
    its public accessors convert tags and look every element up again)."""
    held = getattr(ds, "_dict", None)
    if isinstance(held, dict):
        return list(held.items())
    return [(tag, ds.get_item(tag)) for tag in list(ds.keys())]  # pragma: no cover


_SOP_INSTANCE_UID = BaseTag(0x00080018)


class _Collect:
    """One walk over an input dataset (before the scrub) for its identifying values."""

    def __init__(self, ds: Dataset, options: DeidOptions, keep_tags: frozenset[int]) -> None:
        self.rules = _rules(options.enabled(), keep_tags, options.retain_uids)
        self.found: dict[bytes, str] = {}  # value -> kind, first kind wins
        self.names: set[bytes] = set()  # the values that are parts of names
        self.dates: set[bytes] = set()
        self.kept: list[bytes] = []  # values the options or the recipe keep as they are
        self.uid_kept: set[bytes] = set()
        self.ds = ds
        self.encodings: list[str] | None = None  # the character sets of ds, once needed
        self.truncated: int | None = None
        self.sop: DataElement | RawDataElement | None = None
        meta = getattr(ds, "file_meta", None)
        if meta is not None:  # the file meta keeps its class and implementation UIDs
            held = dict(_elements(meta))
            for tag in (0x00020002, 0x00020010, 0x00020012):
                elem = held.get(tag)
                if elem is not None:
                    self.uid_kept.update(_raw_values(elem))

    def add(self, value: bytes, kind: str) -> None:
        if value not in self.found:
            self.found[value] = kind

    def text_forms(self, raw: bytes) -> list[bytes]:
        """The raw bytes and, when not ASCII, the value as text (UTF-8)."""
        if raw.isascii():
            return [raw]
        if self.encodings is None:
            self.encodings = _encodings(self.ds)
        try:
            text = decode_bytes(raw, self.encodings, set()).encode("utf-8")
        except Exception:
            return [raw]
        return [raw, text] if text != raw else [raw]

    def dataset(self, ds: Dataset, top: bool, depth: int = 0) -> None:
        if depth > _MAX_DEPTH:
            return
        rules = self.rules
        cache = rules.top if top else rules.nested
        elements = _elements(ds)
        if elements and self.truncated is None:
            # Only the last element of a data set can be cut short by the end of the file
            # (or of the sequence value it was read from): pydicom then keeps what there was.
            tag, elem = elements[-1]
            if isinstance(elem, RawDataElement) and elem.length != UNDEFINED and elem.length > len(elem.value or b""):
                self.truncated = int(tag)
        plain = rules.plain
        if top:
            self.sop = ds._dict.get(_SOP_INSTANCE_UID) if hasattr(ds, "_dict") else ds.get_item(_SOP_INSTANCE_UID)
        for tag, elem in elements:
            tag = int(tag)  # pydicom's tag type compares in Python: slow as a key
            vr = elem.VR
            if tag in plain and vr not in _VALUE_VRS:
                continue  # most of a header: nothing in it is looked for
            if tag & 0x10000:  # private: removed by the scrub, or kept as the safe list says
                continue
            known = cache.get(tag)
            if known is None or known[0] != vr:
                known = cache[tag] = (vr, *rules.category(tag, vr, top))
            what = known[1]
            if what == _SKIP:
                continue
            kind = known[2]
            if what == _SEQUENCE:
                for item in ds[tag].value:
                    self.dataset(item, False, depth + 1)
                    if tag == _OTHER_IDS_SEQUENCE:
                        for inner in (0x00100020, 0x00100021):
                            sub = item.get_item(inner)
                            if sub is not None:
                                for v in _raw_values(sub):
                                    for form in self.text_forms(v):
                                        self.add(form, "another id of the patient")
                continue
            values = _raw_values(elem)
            if what == _KEPT:
                self.kept.extend(values)
            elif what == _UID_KEPT:
                self.uid_kept.update(values)
            elif what == _UID_NEEDLE:
                for v in values:
                    if not is_well_known(v.decode("ascii", "replace")):
                        self.add(v, kind)
            elif what == _DATE_VALUE or what == _BIRTH:
                for v in values:
                    if len(v) >= 8 and v[:8].isdigit():
                        self.dates.add(v[:8])
                    if what == _BIRTH:
                        self.add(v, kind)
            elif what == _NAME_PARTS:
                for v in values:
                    for form in self.text_forms(v):
                        for part in _SPLIT_NAME.split(form):
                            self.add(part, kind)
                            self.names.add(part)
            else:  # _WHOLE
                for v in values:
                    for form in self.text_forms(v):
                        self.add(form, kind)


def _value_text(ds: Dataset, tag: int) -> str:
    elem = ds.get_item(tag)
    return b"".join(_raw_values(elem)).decode("latin-1") if elem is not None else ""


def _encodings(ds: Dataset) -> list[str]:
    elem = ds.get_item(0x00080005)
    if elem is None:
        return [default_encoding]
    from pydicom.charset import convert_encodings

    try:
        names = (
            [v.decode("ascii") for v in _raw_values(elem)]
            if isinstance(elem.value, bytes)
            else [str(v) for v in (elem.value if isinstance(elem.value, (list, tuple)) else [elem.value])]
        )
        return convert_encodings(names or [default_encoding])
    except Exception:
        return [default_encoding]


@dataclass
class InputFacts:
    """What the proof of one output needs to know of its input, gathered before the scrub."""

    sop_uid: str
    keep_sop_uid: bool
    needles: list[Needle]
    truncated: int | None  # tag of an element whose value the end of the file cut short


def identifying_values(ds: Dataset, ids: StudyIdentifiers, options: DeidOptions) -> InputFacts:
    """The input's identifying values (see module docstring), and what else the proof needs.

    Gathered from ``ds`` as read, before the scrub changes it: name parts (split on ^ =
    space, 3+ characters), ids, birth date, accession number, study id, issuer, address,
    telephone numbers, physicians' and operators' names (every PN at every depth), the
    instance UIDs the scrub maps (every UI value at every depth but class and well-known
    UIDs, none when UIDs are retained) and the dates (DA, and the date of DT values; none
    when dates are kept and the shift is zero). Left out: values that sendit writes itself
    (dummies, pseudonyms, the de-identification method), values of attributes the recipe
    keeps or an enabled option retains, dates that a shift of another date lands on, and
    values too short to mean anything (under 3 characters, numbers under 5 digits), and
    name parts that name nobody (:data:`NOT_NAMES`).
    """
    recipe = options.recipe
    keep_tags = recipe.keep_tags() | recipe.kept_tags(ds) if recipe is not None else frozenset()
    collect = _Collect(ds, options, frozenset(keep_tags))
    collect.dataset(ds, True)
    written = _written_text(str(ids.patient_suid), str(ids.study_suid), recipe)
    jitter = int(ids.jitter)
    shifted: set[bytes] = set()  # the dates the output carries: an input date equal to one is ambiguous
    if options.retain_long_modified_dates:
        for date in collect.dates:
            for days in (jitter, *_recipe_jitters(recipe)):
                shifted.add(_shift(date, days))
    if not (options.retain_long_modified_dates and jitter == 0):
        for date in collect.dates:
            collect.add(date, _DATE)
    kept = b"\n".join(collect.kept).lower()
    needles: list[Needle] = []
    for value, kind in collect.found.items():
        low = value.lower()
        digits = low.isdigit()
        if len(low) < (MIN_DIGITS if digits else MIN_CHARS):
            continue
        name = value in collect.names
        if name and low in NOT_NAMES:
            continue
        if low in written or low in kept or value in collect.uid_kept:
            continue
        is_date = kind == _DATE or (kind == _BIRTH_DATE and digits)
        if is_date and low in shifted:
            continue  # indistinguishable from another date's shifted value
        # (built as a tuple: a NamedTuple's own constructor is a Python function)
        needles.append(_new_needle(Needle, (low, kind, low[:1].isdigit(), low[-1:].isdigit(), is_date, name)))
    keep_sop = options.retain_uids or 0x00080018 in keep_tags
    sop = collect.sop
    meta = getattr(ds, "file_meta", None)
    if sop is None and meta is not None and _value_text(meta, 0x00020002) == DICOMDIR_CLASS:
        sop = meta.get_item(0x00020003)  # a DICOMDIR names itself in its file meta only
    sop_text = b"".join(_raw_values(sop)).decode("latin-1") if sop is not None else ""
    return InputFacts(sop_uid=sop_text, keep_sop_uid=keep_sop, needles=needles, truncated=collect.truncated)


# -- scanning an output --------------------------------------------------------------
def scan(layout: Layout, needles: Iterable[Needle]) -> None:
    """Look for every needle in every value of the output's header; raise on the first.

    The haystack is the values of every element at every depth (private ones, unknown
    ones, file meta and preamble included), joined with a NUL between them so that no
    match spans two values, and lower-cased once; each needle is one ``bytes.find``.
    A value must stand on its own: a match right next to a letter or digit is part of a
    longer word ("ann" in "scanner", a name part in "PREDECESSOR"), one that starts or
    ends with a digit must not touch a dot either (part of a longer number or UID); a
    date may run on into a time (a DT value). Value edges and every byte that is not a
    letter or digit (^, space, backslash, NUL, element header bytes in a swallowed value)
    count as boundaries. A name part is not reported in a well-formed code string (CS:
    only capitals, digits, space and underscore), whose values are defined terms such
    as TEXT, HEAD or PERFUSION; a name in a CS value holding anything else is.

    Pixel data values are not scanned: they are image samples, copied byte for byte from
    the input (and proven equal to it), in which any three letters occur by chance in
    every few megabytes, so looking there would hold images for nothing and read every
    pixel again; text drawn into the pixels is what the burned-in rules hold back.
    """
    if not needles:
        return
    buf, spans = layout.buffer, layout.spans
    starts: list[int] = []
    pieces: list[bytes] = []
    offset = 0
    for value_start, value_end, _, _ in spans:
        starts.append(offset)
        pieces.append(buf[value_start:value_end])
        offset += value_end - value_start + 1
    hay = b"\0".join(pieces).lower()
    for needle in needles:
        value = needle.value
        at = hay.find(value)
        while at >= 0:
            after = at + len(value)
            before_ok = not at or hay[at - 1] not in (_NUMBER_BYTES if needle.leading_digit else _WORD_BYTES)
            after_ok = (
                after == len(hay)
                or needle.date
                or hay[after] not in (_NUMBER_BYTES if needle.trailing_digit else _WORD_BYTES)
            )
            if before_ok and after_ok:
                index = bisect.bisect_right(starts, at) - 1
                value_start, value_end, path, vr = spans[index]
                if not (needle.name and vr == b"CS" and _CODE_STRING.fullmatch(buf[value_start:value_end])):
                    raise IdentifyingValueFound(needle.kind, describe(path))
            at = hay.find(value, at + 1)


# -- proving an output ---------------------------------------------------------------
def declares_pixels(ds: Dataset) -> bool:
    """True when a dataset says it is an image: its SOP class is an image storage class,
    or it has Rows and Columns. Such a dataset without pixel data was cut short (a file cut
    right after an element reads as a whole, smaller dataset) or damaged."""
    elements = getattr(ds, "_dict", None)
    if elements is None:  # pragma: no cover
        elements = {tag: ds.get_item(tag) for tag in ds.keys()}
    if 0x00280010 in elements and 0x00280011 in elements:
        return True
    sop_class = elements.get(0x00080016)
    if sop_class is None:
        return False
    uid = b"".join(_raw_values(sop_class)).decode("latin-1")
    return "Image Storage" in (UID_dictionary.get(uid, ("",))[0])


#: bytes of streamed pixel data compared with the source at each end of the element
EDGE = 16 * 1024


def _pread(fd: int, count: int, offset: int) -> bytes:
    chunks: list[bytes] = []
    while count > 0:
        chunk = os.pread(fd, count, offset)
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def check_identity(layout: Layout, facts: InputFacts) -> None:
    """The output names an instance of its own: a SOP Instance UID, not the input's (a
    DICOMDIR names itself in its file meta only)."""
    uid = layout.sop_uid
    if not uid and layout.meta_class_uid == DICOMDIR_CLASS:
        uid = layout.meta_sop_uid
    if not uid:
        raise OutputNotProven("the output has no SOP Instance UID")
    if layout.meta_sop_uid != uid:
        raise OutputNotProven("the output's file meta names another SOP instance than its data set")
    if not facts.keep_sop_uid and uid == facts.sop_uid:
        raise OutputNotProven("the output kept the input's SOP Instance UID")


def prove_streamed(
    out_fd: int, src_fd: int, header_end: int, start: int, size: int, pixel_header: bytes, facts: InputFacts
) -> Layout:
    """Prove an output whose pixel data element was copied from ``src[start:size]`` after
    a header of ``header_end`` bytes; then scan its header.

    The header is read back and walked up to the pixel data element, which must start at
    ``header_end`` with the input's element header (same tag, VR and length); the file
    must end where the copied element ends, and the first and last :data:`EDGE` bytes of
    the element must equal the source's. The pixels are not read whole a second time.
    """
    written = os.fstat(out_fd).st_size
    expected = header_end + size - start
    if written != expected:
        raise OutputNotProven(
            f"the output holds {written} bytes where {expected} were written (its pixel data is not whole)"
        )
    head = _pread(out_fd, header_end + len(pixel_header), 0)
    layout = read_layout(head, stop_at_pixels=True)
    if layout.end != header_end or head[header_end:] != pixel_header:
        raise OutputNotProven("the output's pixel data element is not the input's (tag, VR or length differ)")
    check_identity(layout, facts)
    edge = min(EDGE, size - start)
    if _pread(out_fd, edge, header_end) != _pread(src_fd, edge, start) or _pread(
        out_fd, edge, expected - edge
    ) != _pread(src_fd, edge, size - edge):
        raise OutputNotProven("the output's pixel data differs from the input's")
    scan(layout, facts.needles)
    return layout


def prove_whole(out_fd: int, facts: InputFacts, input_pixels: dict[int, bytes], had_pixels: bool) -> None:
    """Prove an output written from a dataset read whole (every element after the pixel
    data, a deflated file): the whole file is walked, each pixel data element's value
    must equal the input's byte for byte, and the header values are scanned. The file is
    mapped, not read into memory: the input's pixels are in memory already."""
    with mmap.mmap(out_fd, os.fstat(out_fd).st_size, access=mmap.ACCESS_READ) as data:
        layout = read_layout(data)
        check_identity(layout, facts)
        if had_pixels and not layout.pixels:
            raise OutputNotProven("the input has pixel data and the output has none")
        for tag, value in input_pixels.items():
            found = layout.pixels.get(tag)
            if found is None:
                raise OutputNotProven("the input has pixel data and the output has none")
            if not _equal(layout.buffer, found[1], found[2], value):
                raise OutputNotProven("the output's pixel data differs from the input's")
        scan(layout, facts.needles)
        layout.buffer = b""  # the mapping closes here


def _equal(buf: Buffer, start: int, end: int, value: bytes, chunk: int = 1 << 20) -> bool:
    """buf[start:end] == value, compared a megabyte at a time."""
    if end - start != len(value):
        return False
    for offset in range(0, len(value), chunk):
        stop = min(offset + chunk, len(value))
        if buf[start + offset : start + stop] != value[offset:stop]:
            return False
    return True
