"""Structural validation of a DICOM file, before any of its values is trusted.

A parser that meets an element whose length runs past where it should end reads
everything after it as that one value: the elements swallowed are then invisible to the
scrub and leave inside the value. So before a file is imported, its bytes are walked
here, element by element, with nothing but their headers and lengths:

* the file is no larger than the node accepts (checked before anything is read);
* every element's length fits inside its file, item or sequence; a length may be
  undefined (0xFFFFFFFF) only where the standard allows it (sequences, UN, pixel data);
* elements of a data set come in increasing tag order, each at most once (PS3.5 7.1),
  so no value can hide a second copy of an attribute;
* values of fixed-size VRs (US, UL, FL, FD, AT, OW...) are a whole number of values,
  and text values hold text: a date only digits, a UID only digits and dots, a person's
  name no control bytes. Header bytes swallowed into a value fail these checks;
* sequences are nested no deeper than a limit (some archives crash on deep nesting);
* encapsulated pixel data is a sequence of complete items up to its delimiter.

The walk reads the file through mmap: only the pages holding element headers are
touched, pixel data is stepped over by its length. It knows nothing of Django and
raises :class:`BadStructure` with a message a person can act on, carrying tags and
sizes, never a value.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import NoReturn

from pydicom.datadict import dictionary_has_tag, dictionary_VR, get_entry

from sendit.deid.values import LONG_VRS, NUMBER_VRS, SHORT_VRS

#: Transfer syntaxes by how their data set is encoded.
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"

DEFAULT_MAX_BYTES = 4 * 1024**3
DEFAULT_MAX_DEPTH = 16

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})

_LONG_VRS, _SHORT_VRS = LONG_VRS, SHORT_VRS
_ALL_VRS = _LONG_VRS | _SHORT_VRS
_VR_BY_BYTES = {vr.encode("ascii"): vr for vr in _ALL_VRS}
_UL = {little: struct.Struct("<L" if little else ">L") for little in (True, False)}
_TAG = {little: struct.Struct("<HH" if little else ">HH") for little in (True, False)}
_US = {little: struct.Struct("<H" if little else ">H") for little in (True, False)}
#: bytes per value of the binary VRs: a length must be a multiple of it
_VALUE_SIZE = {
    "US": 2,
    "SS": 2,
    "UL": 4,
    "SL": 4,
    "FL": 4,
    "FD": 8,
    "AT": 4,
    "UV": 8,
    "SV": 8,
    "OW": 2,
    "OF": 4,
    "OD": 8,
    "OL": 4,
    "OV": 8,
}
#: text VRs and the bytes their values may hold (besides backslash between values and
#: the padding), as the standard's character repertoires say (PS3.5 6.2)
_DIGITS = frozenset(b"0123456789")
_CHARSETS = {
    "DA": _DIGITS | frozenset(b".-"),  # ACR-NEMA dates (YYYY.MM.DD) are still met
    "TM": _DIGITS | frozenset(b".:-"),
    "DT": _DIGITS | frozenset(b".+-"),
    "UI": _DIGITS | frozenset(b"."),
    "IS": _DIGITS | frozenset(b"+-"),
    "DS": _DIGITS | frozenset(b"+-.eE"),
    "AS": _DIGITS | frozenset(b"DWMY"),
}
_CHARSET_NAMES = {
    "DA": "digits",
    "TM": "digits",
    "DT": "digits and a time zone",
    "UI": "digits and dots",
    "IS": "digits and a sign",
    "DS": "a decimal number",
    "AS": "digits and D, W, M or Y",
}
#: control bytes a text value may hold: ESC (character set switches) and TAB, LF, FF, CR,
#: which the standard keeps for LT, ST and UT but real files carry in LO and SH too. Header
#: bytes swallowed into a value show other ones (NULs and small numbers of tags and lengths).
_TEXT_CONTROLS = frozenset(b"\x1b\t\n\x0c\r")
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_CONTROL_BYTES = frozenset(range(0x20)) | {0x7F}
#: per text VR, the bytes a value may hold, as a deletion table for bytes.translate: a
#: value is sound when nothing is left once they are deleted (one C call per value)
_DELETIONS = {vr: bytes(sorted(chars | {0x5C, 0x20})) for vr, chars in _CHARSETS.items()}
_DELETIONS.update({vr: bytes(sorted((frozenset(range(256)) - _CONTROL_BYTES) | _TEXT_CONTROLS)) for vr in _TEXT_VRS})


#: the bytes walked: a file mapped into memory, or a file (or inflated data set) held in memory
Buffer = bytes | mmap.mmap


class BadStructure(Exception):
    """A file whose structure cannot be trusted; the message is safe to show."""


@dataclass
class Layout:
    """What the walk learned of a file, for the import to decide with."""

    size: int
    preamble: bool
    meta: bool
    transfer_syntax: str
    media_class: str
    #: the top-level pixel data element, in the file's own bytes (None without one, or in a
    #: deflated file): where it starts, where its value starts, its value length
    #: (0xFFFFFFFF: encapsulated)
    pixel_offset: int | None
    pixel_value: int | None
    pixel_length: int | None
    max_depth: int

    @property
    def is_dicomdir(self) -> bool:
        return self.media_class == DICOMDIR_CLASS


def tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _size_text(n: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("kB", 1024)):
        if n >= scale:
            return f"{n / scale:.0f} {unit}" if n >= 10 * scale else f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


@lru_cache(maxsize=4096)
def dictionary_vr(tag: int) -> str:
    """The VR an implicit-VR element has, as the dictionary says (UN when unknown)."""
    if tag >> 16 == 0xFFFE:
        return "NONE"
    if (tag & 0xFFFF) == 0:
        return "UL"  # group lengths
    if not dictionary_has_tag(tag):
        return "UN"
    vr = dictionary_VR(tag)
    return vr.split(" or ")[0] if " or " in vr else vr


#: binary VRs of numbers, whose value multiplicity the dictionary gives


@lru_cache(maxsize=4096)
def _single_valued(tag: int) -> bool:
    """True when the dictionary (repeating groups included) says the attribute holds one value."""
    try:
        return get_entry(tag)[1] == "1"
    except KeyError:
        return False


class _Walker:
    """One walk over one buffer; raises BadStructure at the first problem."""

    def __init__(self, buf: Buffer, file_size: int, max_depth: int) -> None:
        self.buf = buf
        self.file_size = file_size
        self.max_depth = max_depth
        self.deepest = 0
        self.pixel_offset: int | None = None
        self.pixel_value: int | None = None
        self.pixel_length: int | None = None

    def fail(self, message: str) -> NoReturn:
        raise BadStructure(message)

    # -- data sets -----------------------------------------------------------------------
    def dataset(
        self, pos: int, end: int, implicit: bool, little: bool, depth: int, item_undefined: bool = False
    ) -> int:
        """Walk the elements from ``pos``; return where the data set ends.

        ``end`` is where the enclosing item (or the file) ends. An item of undefined
        length ends at its Item Delimitation Item, which must come before ``end``.
        """
        buf = self.buf
        tag_struct = _TAG[little]
        last, last_at = -1, pos
        while pos < end:
            if pos + 8 > end:
                self.fail(
                    f"the file ends inside an element header at byte {pos}"
                    if end == self.file_size
                    else f"an element header at byte {pos} runs past the end of its sequence item"
                )
            group, number = tag_struct.unpack_from(buf, pos)
            tag = group << 16 | number
            if tag == ITEM_END:
                if not item_undefined:
                    self.fail(f"an unexpected item delimiter at byte {pos}")
                return pos + 8
            if group == 0xFFFE:
                self.fail(f"an unexpected sequence delimiter or item at byte {pos}")
            if tag <= last:
                following = self.element(pos, end, tag, implicit, little, depth)
                if tag == last and buf[last_at:pos] == buf[pos:following]:
                    pos = following  # the same element twice, byte for byte: one copy is read
                    continue
                what = "repeated" if tag == last else "out of order"
                self.fail(
                    f"element {tag_text(tag)} is {what} at byte {pos} (elements must "
                    "come once each, in increasing tag order)"
                )
            last, last_at = tag, pos
            pos = self.element(pos, end, tag, implicit, little, depth)
        if item_undefined:
            self.fail(
                "a sequence item of undefined length has no item delimiter"
                if end != self.file_size
                else "the file ends inside a sequence item (no item delimiter)"
            )
        return pos

    def element(self, pos: int, end: int, tag: int, implicit: bool, little: bool, depth: int) -> int:
        """Check one element at ``pos``; return where the next one starts."""
        buf = self.buf
        ul, us = _UL[little], _US[little]
        vr: str | None
        length: int
        if implicit:
            vr = dictionary_vr(tag)
            (length,) = ul.unpack_from(buf, pos + 4)
            start = pos + 8
        else:
            vr = _VR_BY_BYTES.get(buf[pos + 4 : pos + 6])
            if vr is None:
                self.fail(f"element {tag_text(tag)} at byte {pos} has no valid VR")
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    self.fail(f"the file ends inside the header of element {tag_text(tag)}")
                (length,) = ul.unpack_from(buf, pos + 8)
                start = pos + 12
            else:
                (length,) = us.unpack_from(buf, pos + 6)
                start = pos + 8
        if length == UNDEFINED:
            if tag in PIXEL_TAGS and vr in ("OB", "OW", "UN", "NONE", "OF", "OD"):
                self.pixels(pos, start, length, depth)
                return self.encapsulated(start, end, little, tag)
            if vr in ("SQ", "UN") or (implicit and vr not in _VALUE_SIZE):
                # UN of undefined length is a sequence in implicit VR little endian (PS3.5 6.2.2)
                seq_implicit = implicit or vr == "UN"
                return self.sequence(
                    start, end, seq_implicit, little if not vr == "UN" else True, depth + 1, tag, undefined=True
                )
            self.fail(
                f"element {tag_text(tag)} ({vr}) has an undefined length, which only sequences and pixel data may have"
            )
        if start + length > end:
            where = "file" if end == self.file_size else "sequence item"
            if tag in PIXEL_TAGS and end == self.file_size:
                self.fail(
                    f"the pixel data is truncated: it claims {_size_text(length)} and the "
                    f"file holds {_size_text(max(0, end - start))} of it"
                )
            self.fail(
                f"element {tag_text(tag)} claims {_size_text(length)} in a "
                f"{_size_text(self.file_size)} file ({_size_text(max(0, end - start))} "
                f"left in its {where})"
            )
        if vr == "SQ" or (implicit and vr == "UN" and length and self._looks_like_items(start, length, little)):
            return self.sequence(start, start + length, implicit or vr == "UN", little, depth + 1, tag)
        if tag in PIXEL_TAGS:
            self.pixels(pos, start, length, depth)
        self.value(tag, vr, start, length)
        return start + length

    def pixels(self, pos: int, start: int, length: int, depth: int) -> None:
        """Note the first top-level pixel data element (an icon's, inside a sequence, is not it)."""
        if depth == 0 and self.pixel_offset is None:
            self.pixel_offset, self.pixel_value, self.pixel_length = pos, start, length

    def _looks_like_items(self, start: int, length: int, little: bool) -> bool:
        """An implicit-VR element the dictionary does not know that holds sequence items."""
        if length < 8:
            return False
        group: int
        number: int
        group, number = struct.unpack_from("<HH" if little else ">HH", self.buf, start)
        return (group << 16 | number) == ITEM

    def sequence(
        self, pos: int, end: int, implicit: bool, little: bool, depth: int, tag: int, undefined: bool = False
    ) -> int:
        """Walk the items of a sequence; return where it ends."""
        if depth > self.max_depth:
            self.fail(
                f"sequences are nested more than {self.max_depth} deep (at element "
                f"{tag_text(tag)}); the limit is MAX_SEQUENCE_DEPTH"
            )
        self.deepest = max(self.deepest, depth)
        head = struct.Struct(("<" if little else ">") + "HHL")
        while pos < end or undefined:
            if pos + 8 > end:
                self.fail(
                    f"sequence {tag_text(tag)} is cut short: the file ends before its delimiter"
                    if undefined
                    else f"sequence {tag_text(tag)} is cut short: an item header runs past its end"
                )
            group, number, length = head.unpack_from(self.buf, pos)
            item = group << 16 | number
            if item == SEQ_END:
                if not undefined:
                    self.fail(f"sequence {tag_text(tag)} of defined length holds a sequence delimiter")
                return pos + 8
            if item != ITEM:
                self.fail(f"sequence {tag_text(tag)} holds something other than items at byte {pos}")
            start = pos + 8
            if length == UNDEFINED:
                pos = self.dataset(start, end, implicit, little, depth, item_undefined=True)
            else:
                if start + length > end:
                    self.fail(
                        f"an item of sequence {tag_text(tag)} claims {_size_text(length)}, more than its sequence holds"
                    )
                self.dataset(start, start + length, implicit, little, depth)
                pos = start + length
        return pos

    def encapsulated(self, pos: int, end: int, little: bool, tag: int) -> int:
        """Encapsulated pixel data: complete items up to the sequence delimiter."""
        head = struct.Struct(("<" if little else ">") + "HHL")
        items = 0
        while True:
            if pos + 8 > end:
                self.fail(
                    "the compressed pixel data is truncated (the file ends before its "
                    f"delimiter, after {items} fragment(s))"
                )
            group, number, length = head.unpack_from(self.buf, pos)
            item = group << 16 | number
            if item == SEQ_END:
                if items == 0:
                    self.fail("the compressed pixel data has no basic offset table item")
                if items == 1:
                    self.fail("the compressed pixel data holds no fragment")
                return pos + 8
            if item != ITEM or length == UNDEFINED:
                self.fail(f"the compressed pixel data is malformed at byte {pos} (an item was expected)")
            pos += 8
            if pos + length > end:
                self.fail(
                    f"the compressed pixel data is truncated: fragment {items} claims "
                    f"{_size_text(length)} and {_size_text(max(0, end - pos))} are left"
                )
            pos += length
            items += 1

    def value(self, tag: int, vr: str, start: int, length: int) -> None:
        """Check one value's bytes against its VR."""
        size = _VALUE_SIZE.get(vr)
        if size is not None:
            if length % size:
                self.fail(
                    f"element {tag_text(tag)} ({vr}) has a length of {length} bytes, "
                    f"not a whole number of {size}-byte values"
                )
            if length > size and vr in NUMBER_VRS and _single_valued(tag):
                # BitsAllocated of 122 bytes: the lengths still add up, and what follows
                # (a physician's name...) would ride inside a number no scrub reads.
                self.fail(
                    f"element {tag_text(tag)} ({vr}) holds {length // size} values where "
                    "the standard allows one (a wrong length may have swallowed other elements)"
                )
            return
        deletions = _DELETIONS.get(vr)
        if deletions is None or length == 0:
            return
        data = self.buf[start : start + length].rstrip(b"\x00")  # NUL padding (UIDs, some writers' text)
        if not data.translate(None, deletions):
            return
        if vr in _CHARSETS:
            self.fail(
                f"element {tag_text(tag)} holds a value that is not a valid {vr} "
                f"({_CHARSET_NAMES[vr]} only; a wrong length may have swallowed other elements)"
            )
        self.fail(
            f"element {tag_text(tag)} ({vr}) holds control bytes that text cannot "
            "(a length error may have swallowed other elements)"
        )


def _meta(buf: Buffer, pos: int, size: int, walker: _Walker) -> tuple[int, dict[int, str]]:
    """Walk the file meta group (explicit VR little endian); return its end and its UI values."""
    values: dict[int, str] = {}
    last = -1
    while pos + 8 <= size:
        group, number = struct.unpack_from("<HH", buf, pos)
        if group != 0x0002:
            break
        tag = group << 16 | number
        if tag <= last:
            walker.fail(f"file meta element {tag_text(tag)} is repeated or out of order")
        last = tag
        vr = bytes(buf[pos + 4 : pos + 6])
        if vr not in (b"UL", b"OB", b"UI", b"SH", b"AE", b"UN", b"US", b"UT", b"UR", b"CS", b"LO"):
            walker.fail(
                f"file meta element {tag_text(tag)} has no valid VR (the meta must be explicit VR little endian)"
            )
        if vr in (b"OB", b"UN", b"UT", b"UR"):
            if pos + 12 > size:
                walker.fail("the file ends inside its file meta header")
            (length,) = struct.unpack_from("<L", buf, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", buf, pos + 6)
            start = pos + 8
        if length == UNDEFINED or start + length > size:
            walker.fail(f"file meta element {tag_text(tag)} claims {_size_text(length)} in a {_size_text(size)} file")
        if vr == b"UI":
            walker.value(tag, "UI", start, length)
            values[tag] = bytes(buf[start : start + length]).rstrip(b"\x00 ").decode("ascii")
        pos = start + length
    return pos, values


def _guess_encoding(buf: Buffer, pos: int) -> tuple[bool, bool]:
    """(implicit, little) of a data set that has no file meta, guessed from its first
    element as pydicom does: a valid VR after the tag means explicit VR, and a first group
    read as 0x0008 rather than 0x0800 means little endian."""
    vr = bytes(buf[pos + 4 : pos + 6]).decode("latin-1")
    implicit = vr not in _ALL_VRS
    little = implicit or struct.unpack_from("<H", buf, pos)[0] < 0x0100
    return implicit, little


def check_structure(
    path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> Layout:
    """Walk a file's structure; return its :class:`Layout` or raise :class:`BadStructure`."""
    size = os.stat(path).st_size
    if size == 0:
        raise BadStructure("the file is empty (zero bytes)")
    if size > max_bytes:
        raise BadStructure(
            f"the file is {_size_text(size)}, more than the {_size_text(max_bytes)} this node accepts (MAX_FILE_BYTES)"
        )
    with open(path, "rb") as fp:
        with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _check(buf, size, max_bytes, max_depth)


def check_bytes(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH) -> Layout:
    """:func:`check_structure` of a file held in memory."""
    if not data:
        raise BadStructure("the file is empty (zero bytes)")
    return _check(bytes(data), len(data), max_bytes, max_depth)


def _check(buf: Buffer, size: int, max_bytes: int, max_depth: int) -> Layout:
    walker = _Walker(buf, size, max_depth)
    preamble = size >= 132 and bytes(buf[128:132]) == b"DICM"
    pos = 132 if preamble else 0
    if size - pos < 8:
        raise BadStructure("not a DICOM file (too short to hold a data element)")
    has_meta = struct.unpack_from("<H", buf, pos)[0] == 0x0002
    if not preamble and not has_meta:
        group = struct.unpack_from("<H", buf, 0)[0]
        if group not in (0x0008, 0x0800) and not 0x0002 < group <= 0x0010:
            raise BadStructure("not a DICOM file (no DICOM preamble, and it does not start like a DICOM data set)")
    syntax, media_class = "", ""
    if has_meta:
        pos, values = _meta(buf, pos, size, walker)
        syntax = values.get(0x00020010, "")
        media_class = values.get(0x00020002, "")
    elif preamble:
        raise BadStructure("the file has a DICOM preamble but no file meta")
    if media_class == DICOMDIR_CLASS:
        # A CD's index: never imported nor sent, so its records need no walk.
        return Layout(
            size=size,
            preamble=preamble,
            meta=has_meta,
            transfer_syntax=syntax,
            media_class=media_class,
            pixel_offset=None,
            pixel_value=None,
            pixel_length=None,
            max_depth=0,
        )
    if pos + 8 > size:
        raise BadStructure("the file holds a file meta header and no data set")
    guessed_implicit, guessed_little = _guess_encoding(buf, pos)
    if not syntax:  # no meta, or a meta without transfer syntax: read as the bytes say
        implicit, little = guessed_implicit, guessed_little
        syntax = IMPLICIT_LE if implicit else ("1.2.840.10008.1.2.1" if little else EXPLICIT_BE)
    else:
        implicit, little = syntax == IMPLICIT_LE, syntax != EXPLICIT_BE
        if syntax not in DEFLATED and guessed_implicit != implicit:
            implicit = guessed_implicit  # a body encoded unlike its syntax says, as pydicom reads it
    if syntax in DEFLATED:
        try:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            body = inflater.decompress(bytes(buf[pos:]), max_bytes)
        except zlib.error:
            raise BadStructure("the deflated data set cannot be inflated") from None
        if inflater.unconsumed_tail:
            raise BadStructure("the deflated data set inflates to more than MAX_FILE_BYTES")
        inner = _Walker(body, len(body), max_depth)
        inner.dataset(0, len(body), False, True, 0)
        walker.deepest = inner.deepest
    else:
        walker.dataset(pos, size, implicit, little, 0)
    return Layout(
        size=size,
        preamble=preamble,
        meta=has_meta,
        transfer_syntax=syntax,
        media_class=media_class,
        pixel_offset=walker.pixel_offset,
        pixel_value=walker.pixel_value,
        pixel_length=walker.pixel_length,
        max_depth=walker.deepest,
    )
