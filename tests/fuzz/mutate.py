"""A seeded generator of broken DICOM files made from real ones.

Each generated file starts from a file the test-data packages ship (corpus.base_files()),
is given known identifying marker values (PatientName, PatientID, AccessionNumber,
ReferringPhysicianName, RequestingPhysician (0032,1032), AdmissionID (0038,0010),
OtherPatientIDs, a private element...: "FUZZPHI<n><code>", and UIDs under FUZZ_UID_ROOT),
is written in its own encoding, then broken by one named mutation (KINDS). Positions
come from walk(), which reads the element structure straight from the bytes (file meta
explicit VR little endian; the body implicit or explicit VR, little or big endian;
sequences and encapsulated pixel data of defined or undefined length), so a mutation
can aim at a tag, a VR, a length field, an element start or a fragment boundary.

    for case in generate(seed=1, count=100):
        case.kind, case.origin, case.details, case.data, case.identifying()

Everything is decided by random.Random(f"sendit-fuzz/{seed}/{n}"): the same seed and
number give the same bytes, whatever else is generated (`make_case(seed, n)`).
"""

from __future__ import annotations

import io
import random
import re
import string
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.fuzz import corpus

MARKER = "FUZZPHI"
#: every UID the fuzzer writes starts here (never a real one); none may reach Orthanc
FUZZ_UID_ROOT = "1.2.826.0.1.3680043.8.498.31337."
MARKER_RE = re.compile(rb"fuzzphi\d{5,7}[a-z0-9]{2}", re.IGNORECASE)
FUZZ_UID_RE = re.compile(re.escape(FUZZ_UID_ROOT.encode()) + rb"[0-9.]*")


def marker(n: int, code: str) -> str:
    """The marker value of file `n` for one field (14 characters: fits SH)."""
    return f"{MARKER}{n:05d}{code}"


# -- walking the bytes ---------------------------------------------------------------------

ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
UNDEFINED = 0xFFFFFFFF
LONG_VRS = frozenset("OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
SHORT_VRS = frozenset("AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split())
VRS = frozenset(v.encode() for v in LONG_VRS | SHORT_VRS)
IMPLICIT_LE, EXPLICIT_BE, DEFLATED = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"
MAX_ELEMENTS = 200_000


class _Stop(Exception):
    """The walk cannot go on (truncated, or not a structure it knows)."""


@dataclass
class Element:
    """One element, item or delimiter as it is in the bytes."""

    offset: int  # where its header starts
    tag: int
    vr: str | None  # explicit VR as written; None for implicit VR, items and delimiters
    header: int  # header bytes (8 or 12)
    length: int  # value length as declared (UNDEFINED: 0xFFFFFFFF)
    length_at: int  # offset of the length field
    length_size: int  # 2 or 4 bytes
    depth: int  # 0: top level; 1: inside an item of a top-level sequence...
    area: str  # "meta", "body", "item", "delimiter" or "fragment" (encapsulated pixel data)
    end: int = -1  # offset just past it (its delimiter included); -1: the walk stopped in it

    @property
    def value_at(self) -> int:
        return self.offset + self.header

    @property
    def defined(self) -> bool:
        return self.length != UNDEFINED


@dataclass
class Layout:
    """What walk() found: preamble, file meta, the body's encoding, every element."""

    size: int
    preamble: bool
    body_start: int
    transfer_syntax: str
    implicit: bool
    little: bool
    deflated: bool
    elements: list
    complete: bool
    problem: str = ""
    pixel_items: list = field(default_factory=list)  # fragments of encapsulated pixel data, and its delimiter

    def meta(self) -> list:
        return [e for e in self.elements if e.area == "meta"]

    def body(self) -> list:
        """Data elements of the body, at any depth (no items, delimiters or fragments)."""
        return [e for e in self.elements if e.area == "body"]

    def top(self) -> list:
        return [e for e in self.elements if e.area == "body" and e.depth == 0]

    def find(self, tag: int, depth: int = 0) -> Element | None:
        return next((e for e in self.elements if e.tag == tag and e.depth == depth and e.area == "body"), None)

    @property
    def pixel(self) -> Element | None:
        return self.find(PIXEL_DATA)

    @property
    def encapsulated(self) -> bool:
        pixel = self.pixel
        return pixel is not None and not pixel.defined and bool(self.pixel_items)

    def boundaries(self) -> dict:
        """Structural cut points by kind: after the preamble and DICM, element starts and
        value starts in the file meta and the body, fragment (item) starts and the ends of
        their headers in encapsulated pixel data."""
        points = {"preamble": [128, 132] if self.preamble else [], "meta": [], "element": [], "fragment": []}
        pixel_items = {id(e) for e in self.pixel_items}
        for e in self.elements:
            key = "fragment" if id(e) in pixel_items else "meta" if e.area == "meta" else "element"
            points[key] += [p for p in (e.offset, e.value_at) if p < self.size]
        return points


class _Walker:
    def __init__(self, data: bytes):
        self.data = data
        self.size = len(data)
        self.elements: list[Element] = []
        self.pixel_items: list[Element] = []

    def add(self, el: Element) -> Element:
        if len(self.elements) >= MAX_ELEMENTS:
            raise _Stop("too many elements")
        self.elements.append(el)
        return el

    def header(self, pos: int, implicit: bool, little: bool, depth: int, area: str) -> Element:
        data, order = self.data, "<" if little else ">"
        if pos + 8 > self.size:
            raise _Stop("truncated element header")
        group, number = struct.unpack_from(order + "HH", data, pos)
        tag = group << 16 | number
        if group == 0xFFFE:
            length = struct.unpack_from(order + "L", data, pos + 4)[0]
            kind = area if area == "fragment" else ("item" if tag == ITEM else "delimiter")
            return Element(pos, tag, None, 8, length, pos + 4, 4, depth, kind)
        if implicit:
            return Element(
                pos, tag, None, 8, struct.unpack_from(order + "L", data, pos + 4)[0], pos + 4, 4, depth, area
            )
        vr = data[pos + 4 : pos + 6]
        if vr not in VRS:
            raise _Stop(f"no VR at {pos}")
        if vr.decode() in LONG_VRS:
            if pos + 12 > self.size:
                raise _Stop("truncated element header")
            return Element(
                pos, tag, vr.decode(), 12, struct.unpack_from(order + "L", data, pos + 8)[0], pos + 8, 4, depth, area
            )
        return Element(
            pos, tag, vr.decode(), 8, struct.unpack_from(order + "H", data, pos + 6)[0], pos + 6, 2, depth, area
        )

    @staticmethod
    def is_sequence(el: Element, implicit: bool) -> bool:
        if el.vr == "SQ":
            return True
        if el.vr is None and implicit and el.tag >> 16 & 1 == 0:
            from pydicom.datadict import dictionary_VR

            try:
                return dictionary_VR(el.tag) == "SQ"
            except KeyError:
                return False
        return False

    def dataset(self, pos, end, depth, implicit, little, until_delimiter=False) -> int:
        while True:
            if end is not None and pos >= end:
                return pos
            if end is None and pos >= self.size:
                if until_delimiter:
                    raise _Stop("no item delimiter")
                return pos
            el = self.header(pos, implicit, little, depth, "body")
            if el.tag == ITEM_END and until_delimiter:
                el.area = "delimiter"
                self.add(el)
                el.end = pos + 8
                return el.end
            self.add(el)
            if el.tag >> 16 == 0xFFFE:
                raise _Stop("an item tag where an element was expected")
            if not el.defined:
                if el.tag == PIXEL_DATA:
                    pos = self.fragments(el.value_at, depth + 1, little)
                else:  # an undefined-length UN holds implicit VR little endian
                    pos = self.sequence(el.value_at, None, depth + 1, implicit or el.vr == "UN", little)
            else:
                pos = el.value_at + el.length
                if pos > self.size:
                    raise _Stop("a value goes past the end")
                if self.is_sequence(el, implicit):
                    self.sequence(el.value_at, pos, depth + 1, implicit, little)
            el.end = pos

    def sequence(self, pos, end, depth, implicit, little) -> int:
        while True:
            if end is not None and pos >= end:
                return pos
            el = self.header(pos, implicit, little, depth, "item")
            if el.tag >> 16 != 0xFFFE:
                raise _Stop("not an item")
            self.add(el)
            if el.tag == SEQ_END:
                el.end = pos + 8
                return el.end
            if el.tag != ITEM:
                raise _Stop("unexpected delimiter")
            if el.defined:
                stop = el.value_at + el.length
                if stop > self.size:
                    raise _Stop("an item goes past the end")
                self.dataset(el.value_at, stop, depth, implicit, little)
                pos = stop
            else:
                pos = self.dataset(el.value_at, None, depth, implicit, little, until_delimiter=True)
            el.end = pos

    def fragments(self, pos, depth, little) -> int:
        while True:
            el = self.header(pos, False, little, depth, "fragment")
            if el.tag >> 16 != 0xFFFE:
                raise _Stop("not a fragment item")
            self.add(el)
            self.pixel_items.append(el)
            if el.tag == SEQ_END:
                el.area = "delimiter"
                el.end = pos + 8
                return el.end
            if el.tag != ITEM or not el.defined:
                raise _Stop("not a fragment item")
            pos = el.value_at + el.length
            if pos > self.size:
                raise _Stop("a fragment goes past the end")
            el.end = pos

    def run(self) -> Layout:
        data, size = self.data, self.size
        preamble = size >= 132 and data[128:132] == b"DICM"
        pos, syntax = (132 if preamble else 0), ""
        if preamble:
            try:
                while pos + 6 <= size and struct.unpack_from("<H", data, pos)[0] == 0x0002:
                    el = self.add(self.header(pos, False, True, 0, "meta"))
                    if not el.defined:
                        raise _Stop("undefined length in the file meta")
                    end = el.value_at + el.length
                    if el.tag == 0x00020010:
                        syntax = data[el.value_at : min(end, size)].rstrip(b"\0 ").decode("ascii", "replace")
                    if end > size:
                        raise _Stop("a file meta value goes past the end")
                    el.end = pos = end
            except _Stop as exc:
                return Layout(size, preamble, pos, syntax, False, True, False, self.elements, False, str(exc))
        if preamble:
            implicit, little = syntax == IMPLICIT_LE, syntax != EXPLICIT_BE
        else:  # a bare dataset: guess as pydicom does
            implicit = data[pos + 4 : pos + 6] not in VRS
            little = data[pos : pos + 2] != b"\x00\x08"
        layout = Layout(
            size,
            preamble,
            pos,
            syntax,
            implicit,
            little,
            syntax == DEFLATED,
            self.elements,
            True,
            pixel_items=self.pixel_items,
        )
        if layout.deflated:
            layout.complete, layout.problem = False, "deflated body"
            return layout
        try:
            self.dataset(pos, None, 0, implicit, little)
        except _Stop as exc:
            layout.complete, layout.problem = False, str(exc)
        return layout


def walk(data: bytes) -> Layout:
    """The element structure of a DICOM file's bytes, as far as it goes."""
    return _Walker(bytes(data)).run()


# -- identifying values ------------------------------------------------------------------

#: PN elements whose name parts identify someone
NAME_KEYWORDS = (
    "PatientName",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "ReferringPhysicianName",
    "RequestingPhysician",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "PhysiciansOfRecord",
    "PersonName",
    "ScheduledPerformingPhysicianName",
    "ResponsiblePerson",
    "ContentCreatorName",
    "VerifyingObserverName",
    "ReviewerName",
    "PhysiciansReadingStudyIdentificationSequence",
)
#: text elements whose whole value identifies someone or something
TEXT_KEYWORDS = (
    "PatientID",
    "OtherPatientIDs",
    "AccessionNumber",
    "AdmissionID",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "StudyID",
    "RequestedProcedureID",
    "PerformedProcedureStepID",
    "ScheduledProcedureStepID",
    "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest",
    "DeviceSerialNumber",
    "StationName",
    "IssuerOfPatientID",
    "InstitutionalDepartmentName",
    "PatientInsurancePlanCodeSequence",
    "MilitaryRank",
    "RegionOfResidence",
    "CountryOfResidence",
    "PatientReligiousPreference",
    "EthnicGroup",
    "Occupation",
    "AdditionalPatientHistory",
)
#: values too common to mean anything when found (compared lowercased)
GENERIC = frozenset(
    """
anonymous anonymized anonymised anonymize anonymous^ unknown patient phantom removed none null
test tests testing doctor physician hospital radiology department dummy noname name
institution clinic station service research study series image images volunteer
""".split()
)


def _usable(value: str) -> bool:
    value = value.strip()
    if len(value) < 5 or value.lower() in GENERIC:
        return False
    if value.isdigit() and len(value) < 6:
        return False
    return len(set(value)) > 2  # not "00000" or "XXXXX"


#: UI elements that name a scheme or a program, not a patient, study or instance
SCHEME_UIDS = frozenset(
    {
        "CodingSchemeUID",
        "ContextGroupExtensionCreatorUID",
        "PrivateInformationCreatorUID",
        "ContextUID",
        "MappingResourceUID",
        "ImplementationClassUID",
        "TransferSyntaxUID",
        "MediaStorageSOPClassUID",
        "SOPClassUID",
        "ReferencedSOPClassUID",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
    }
)
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DS", "IS", "LO", "LT", "SH", "ST", "UC", "UT", "UR"})


def identifying_values(ds) -> tuple[dict, dict, dict]:
    """(text, dates, uids) of a pydicom dataset, each {value: label}: names (and each of
    their parts), ids and addresses, every date (DA, and the date of DT), every UID that is
    not a standard one (SOP classes, transfer syntaxes...) nor a scheme's or a program's.

    Values too short or too common to search for are left out, and so is a value the file
    also holds where it identifies no one (a name part that is also the Manufacturer, a
    UID that is also the ImplementationClassUID): finding it says nothing."""
    from pydicom.uid import UID_dictionary

    texts, dates, uids = {}, {}, {}
    other_texts, other_uids = [], set()
    names, plain = set(NAME_KEYWORDS), set(TEXT_KEYWORDS)

    def visit(elem):
        try:
            vr, keyword, value = elem.VR, elem.keyword, elem.value
        except Exception:
            return
        if isinstance(value, (bytes, bytearray)):  # a private or unknown element: markers only
            for m in MARKER_RE.findall(value):
                texts[m.decode().upper()] = keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"
            return
        if vr == "SQ" or value is None:
            return
        values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        for v in values:
            text = str(v).strip("\0 ")
            if not text:
                continue
            label = keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"
            if MARKER.lower() in text.lower():
                for m in re.findall(r"(?i)fuzzphi\d{5,7}[a-z0-9]{2}", text):
                    texts[m] = label
            if vr == "UI":
                if keyword in SCHEME_UIDS:
                    other_uids.add(text)
                elif text not in UID_dictionary and len(text) >= 10:
                    uids[text] = label
            elif vr in ("DA", "DT"):
                day = text[:8]
                if day.isdigit() and len(day) == 8 and len(set(day)) > 2 and day[:2] in ("18", "19", "20"):
                    dates[day] = label
            elif keyword in names:
                if _usable(text):
                    texts[text] = label
                for part in re.split(r"[\^= ,]+", text):
                    if _usable(part):
                        texts[part] = label
            elif keyword in plain:
                if _usable(text):
                    texts[text] = label
            elif vr in _TEXT_VRS and MARKER not in text.upper():
                other_texts.append(text.lower())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            sop = meta.get("MediaStorageSOPInstanceUID")
            if sop and str(sop) not in UID_dictionary:
                uids[str(sop)] = "MediaStorageSOPInstanceUID"
            implementation = meta.get("ImplementationClassUID")
            if implementation:
                other_uids.add(str(implementation))
        try:
            for elem in ds.iterall():
                visit(elem)
        except Exception:
            pass
    texts = {
        v: label
        for v, label in texts.items()
        if MARKER in v.upper() or not any(v.lower() in other for other in other_texts)
    }
    uids = {v: label for v, label in uids.items() if v not in other_uids}
    return texts, dates, uids


# -- cases ---------------------------------------------------------------------------------


@dataclass
class Case:
    """One generated (or shipped) file and what is known about it."""

    n: int
    seed: int
    kind: str  # the mutation's name, or "shipped"
    origin: str  # the shipped file it came from
    data: bytes
    sparse_size: int = 0  # >0: the file is `data`, then zeros (a hole) up to this size
    texts: dict = field(default_factory=dict)  # identifying text values -> label
    dates: dict = field(default_factory=dict)
    uids: dict = field(default_factory=dict)
    sop_uids: set = field(default_factory=set)  # the SOPInstanceUID(s) it was given
    details: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind}#{self.n}" if self.kind != "shipped" else f"shipped:{self.origin}"

    @property
    def size(self) -> int:
        return max(len(self.data), self.sparse_size)

    def write(self, path) -> None:
        """Write the file; a sparse one takes only its head on disk."""
        with open(path, "wb") as fp:
            fp.write(self.data)
            if self.sparse_size > len(self.data):
                fp.truncate(self.sparse_size)

    def identifying(self) -> dict:
        """Every identifying value of the file: {value: label}."""
        return {**self.texts, **self.dates, **self.uids}


class NotApplicable(Exception):
    """This mutation does not fit this file (no such element); another base is tried."""


@dataclass
class Context:
    rng: random.Random
    data: bytes
    layout: Layout
    n: int
    seed: int
    huge_size: int
    extra: dict = field(default_factory=dict)  # markers the mutation added: value -> label

    def choose(self, items):
        items = list(items)
        if not items:
            raise NotApplicable()
        return self.rng.choice(items)


#: the fields given markers (keyword, code); PatientName gets two parts
MARKED = (
    ("PatientID", "ID"),
    ("OtherPatientIDs", "OI"),
    ("AccessionNumber", "AC"),
    ("ReferringPhysicianName", "RF"),
    ("RequestingPhysician", "RQ"),
    ("AdmissionID", "AD"),
    ("PatientAddress", "PA"),
    ("PatientTelephoneNumbers", "PT"),
    ("InstitutionName", "IN"),
)
MARKED_TAGS = frozenset(
    {
        0x00100010,
        0x00100020,
        0x00101000,
        0x00080050,
        0x00080090,
        0x00321032,
        0x00380010,
        0x00101040,
        0x00102154,
        0x00080080,
    }
)


def prepare(base, seed: int, n: int, rng: random.Random):
    """The base file with markers and fresh UIDs, written in its own encoding: (bytes, dataset)."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(base.path)
        ds.PatientName = f"{marker(n, 'PN')}^{marker(n, 'GN')}"
        for keyword, code in MARKED:
            setattr(ds, keyword, marker(n, code))
        ds.PatientBirthDate = f"{rng.randint(1900, 1945)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        block = ds.private_block(0x0009, "SENDIT FUZZ", create=True)
        block.add_new(0x01, "LO", marker(n, "PV"))
        uid = f"{FUZZ_UID_ROOT}{seed}.{n}"
        ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = uid + ".1", uid + ".2", uid + ".3"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buf = io.BytesIO()
        ds.save_as(buf)
        data = buf.getvalue()
        # what was written, read back (the values identifying_values() sees are the file's)
        written = pydicom.dcmread(io.BytesIO(data))
    return data, written


def _pack_length(data: bytearray, el: Element, value: int, little: bool) -> None:
    order = "<" if little or el.area == "meta" else ">"
    fmt = order + ("H" if el.length_size == 2 else "L")
    struct.pack_into(fmt, data, el.length_at, value)


def _little(c: Context, el: Element) -> bool:
    return True if el.area == "meta" else c.layout.little


def _encode(tag: int, vr: str, value: bytes, implicit: bool, little: bool) -> bytes:
    """One element in the body's encoding (value padded to an even length)."""
    order = "<" if little else ">"
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB", "UN") else b" "
    group, number = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack(order + "HHL", group, number, len(value)) + value
    if vr in LONG_VRS:
        return struct.pack(order + "HH2sHL", group, number, vr.encode(), 0, len(value)) + value
    return struct.pack(order + "HH2sH", group, number, vr.encode(), len(value)) + value


def _sequence(tag: int, item: bytes, implicit: bool, little: bool, defined: bool) -> bytes:
    order = "<" if little else ">"
    if defined:
        body = struct.pack(order + "HHL", 0xFFFE, 0xE000, len(item)) + item
        length = len(body)
    else:
        body = (
            struct.pack(order + "HHL", 0xFFFE, 0xE000, UNDEFINED)
            + item
            + struct.pack(order + "HHL", 0xFFFE, 0xE00D, 0)
            + struct.pack(order + "HHL", 0xFFFE, 0xE0DD, 0)
        )
        length = UNDEFINED
    group, number = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack(order + "HHL", group, number, length) + body
    return struct.pack(order + "HH2sHL", group, number, b"SQ", 0, length) + body


def _insert_top(c: Context, tag: int, blob: bytes) -> tuple[bytes, int]:
    """Insert an encoded top-level element in tag order (replacing one with the same tag)."""
    top = c.layout.top()
    same = next((e for e in top if e.tag == tag), None)
    if same is not None:
        return c.data[: same.offset] + blob + c.data[same.end :], same.offset
    after = next((e for e in top if e.tag > tag), None)
    at = after.offset if after is not None else len(c.data)
    return c.data[:at] + blob + c.data[at:], at


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


# -- the mutations -------------------------------------------------------------------------


def m_flip_random(c: Context):
    """1-8 random bit flips, in the header part (before the pixel data) three times in four."""
    data = bytearray(c.data)
    start = 132 if c.layout.preamble else 0
    pixel = c.layout.pixel
    header_end = pixel.value_at if pixel is not None else len(data)
    offsets = []
    for _ in range(c.rng.randint(1, 8)):
        end = header_end if c.rng.random() < 0.75 else len(data)
        pos = c.rng.randrange(start, max(start + 1, end))
        data[pos] ^= 1 << c.rng.randrange(8)
        offsets.append(pos)
    return bytes(data), {"offsets": offsets}


def m_flip_tag(c: Context):
    """A bit flipped in the tag of an element, item or delimiter; half the time of a marked
    element (its value then stands under another tag, known or not)."""
    marked = [e for e in c.layout.elements if e.tag in MARKED_TAGS]
    el = c.choose(marked if marked and c.rng.random() < 0.5 else c.layout.elements)
    data = bytearray(c.data)
    pos = el.offset + c.rng.randrange(4)
    data[pos] ^= 1 << c.rng.randrange(8)
    return bytes(data), {"tag": _tag(el.tag), "area": el.area, "offset": pos}


def m_flip_vr(c: Context):
    """One byte of an explicit VR replaced (a random byte or another letter)."""
    el = c.choose(e for e in c.layout.elements if e.vr)
    data = bytearray(c.data)
    pos = el.offset + 4 + c.rng.randrange(2)
    old = data[pos]
    while data[pos] == old:
        data[pos] = c.rng.randrange(256) if c.rng.random() < 0.5 else ord(c.rng.choice(string.ascii_uppercase))
    return bytes(data), {
        "tag": _tag(el.tag),
        "vr": el.vr,
        "new_vr": bytes(data[el.offset + 4 : el.offset + 6]).hex(),
        "offset": pos,
    }


def m_flip_length(c: Context):
    """A bit flipped in a length field (element, item or fragment)."""
    el = c.choose(c.layout.elements)
    data = bytearray(c.data)
    pos = el.length_at + c.rng.randrange(el.length_size)
    data[pos] ^= 1 << c.rng.randrange(8)
    return bytes(data), {"tag": _tag(el.tag), "area": el.area, "offset": pos, "length": el.length}


def m_truncate_preamble(c: Context):
    """Cut inside the preamble, right after it, inside DICM, or right after DICM."""
    if not c.layout.preamble:
        raise NotApplicable()
    cut = c.choose([1, 64, 127, 128, 130, 132])
    return c.data[:cut], {"cut": cut}


def m_truncate_meta(c: Context):
    """Cut at a file meta element's start, inside its header, or inside its value."""
    el = c.choose(c.layout.meta())
    where = c.rng.choice(["start", "header", "value"])
    cut = {
        "start": el.offset,
        "header": el.offset + c.rng.randrange(1, el.header),
        "value": el.value_at + (c.rng.randrange(el.length) if el.length else 0),
    }[where]
    return c.data[:cut], {"tag": _tag(el.tag), "where": where, "cut": cut}


def m_truncate_element(c: Context):
    """Cut at an element boundary of the body (an element, item or delimiter starts, or
    its header ends), at any depth."""
    el = c.choose(
        e for e in c.layout.elements if e.area in ("body", "item", "delimiter") and e not in c.layout.pixel_items
    )
    where = c.rng.choice(["start", "value"])
    cut = el.offset if where == "start" else el.value_at
    return c.data[:cut], {"tag": _tag(el.tag), "depth": el.depth, "where": where, "cut": cut}


def m_truncate_value(c: Context):
    """Cut inside an element's value."""
    el = c.choose(e for e in c.layout.body() if e.defined and e.length >= 2)
    cut = el.value_at + c.rng.randrange(1, el.length)
    return c.data[:cut], {"tag": _tag(el.tag), "depth": el.depth, "cut": cut, "length": el.length}


def m_truncate_fragment(c: Context):
    """Cut inside encapsulated pixel data: at an item (fragment) start, inside its header,
    right after it, inside the fragment, or at / inside the sequence delimiter."""
    if not c.layout.encapsulated:
        raise NotApplicable()
    el = c.choose(c.layout.pixel_items)
    options = [("start", el.offset), ("header", el.offset + 4), ("after_header", el.value_at)]
    if el.tag == ITEM and el.length > 1:
        options.append(("inside", el.value_at + c.rng.randrange(1, el.length)))
    where, cut = c.rng.choice([o for o in options if o[1] < len(c.data)] or options[:1])
    index = c.layout.pixel_items.index(el)
    return c.data[:cut], {"item": index, "of": len(c.layout.pixel_items), "where": where, "cut": cut}


#: elements the Basic Profile keeps (not in Table E.1-1) that a length can be given to
KEPT = (
    0x00080008,
    0x00080060,
    0x00080016,
    0x00180050,
    0x00180088,
    0x00200011,
    0x00200013,
    0x00200020,
    0x00280004,
    0x00280030,
    0x00281050,
    0x00281051,
    0x00281052,
    0x00281053,
)
#: identifying elements the swallowed bytes are to hold
TARGETS = {"PatientName": 0x00100010, "RequestingPhysician": 0x00321032, "AdmissionID": 0x00380010}


def m_length_past_end(c: Context):
    """A value length far past the end of the file (0xFFFFFFF0 in implicit VR or a 4-byte
    explicit length, 0xFFF0 in a 2-byte one, or the header made UN with a 4-byte length
    when 0xFFF0 would still end inside the file), on an element placed before identifying
    elements (PatientName, RequestingPhysician, AdmissionID): read as it says, its value is
    the rest of the file."""
    before = c.rng.choice(sorted(TARGETS))
    target = c.layout.find(TARGETS[before])
    if target is None:
        raise NotApplicable()
    candidates = [
        e for e in c.layout.top() if e.offset < target.offset and e.defined and e.vr != "SQ" and e.tag != PIXEL_DATA
    ]
    kept = [e for e in candidates if e.tag in KEPT]
    el = c.choose(kept if kept and c.rng.random() < 0.7 else candidates)
    data = bytearray(c.data)
    little = c.layout.little
    if el.length_size == 4:
        new, header = 0xFFFFFFF0, "as is"
        _pack_length(data, el, new, little)
        length_at, length_size, value_at = el.length_at, 4, el.value_at
    elif el.value_at + 0xFFF0 > len(data):
        new, header = 0xFFF0, "as is"
        _pack_length(data, el, new, little)
        length_at, length_size, value_at = el.length_at, 2, el.value_at
    else:
        order = "<" if little else ">"
        new, header = 0xFFFFFFF0, "UN"
        head = c.data[el.offset : el.offset + 4] + b"UN\0\0" + struct.pack(order + "L", new)
        data = bytearray(c.data[: el.offset] + head + c.data[el.value_at :])
        length_at, length_size, value_at = el.offset + 8, 4, el.offset + 12
    return bytes(data), {
        "tag": _tag(el.tag),
        "vr": el.vr,
        "before": before,
        "offset": el.offset,
        "header": header,
        "declared": new,
        "length_at": length_at,
        "length_size": length_size,
        "value_at": value_at,
    }


def m_length_swallow(c: Context):
    """A value length made longer so that the value swallows the elements after it up to
    and including an identifying one (PatientName, RequestingPhysician, AdmissionID): the
    lengths still add up to the end of the file, only the values are wrong."""
    before = c.rng.choice(sorted(TARGETS))
    target = c.layout.find(TARGETS[before])
    if target is None:
        raise NotApplicable()
    candidates = [
        e
        for e in c.layout.top()
        if e.offset < target.offset
        and e.defined
        and e.vr != "SQ"
        and e.tag != PIXEL_DATA
        and (e.length_size == 4 or target.end - e.value_at <= 0xFFFF)
    ]
    kept = [e for e in candidates if e.tag in KEPT]
    el = c.choose(kept if kept and c.rng.random() < 0.7 else candidates)
    new = target.end - el.value_at
    data = bytearray(c.data)
    _pack_length(data, el, new, c.layout.little)
    swallowed = sum(1 for e in c.layout.top() if el.offset < e.offset <= target.offset)
    return bytes(data), {
        "tag": _tag(el.tag),
        "vr": el.vr,
        "before": before,
        "length": el.length,
        "new_length": new,
        "swallowed": swallowed,
    }


def m_length_odd(c: Context):
    """An even value length made odd (one more or one less)."""
    el = c.choose(e for e in c.layout.body() if e.defined and e.length >= 2 and e.length % 2 == 0 and e.length < 0xFFFF)
    new = el.length + c.rng.choice([1, -1])
    data = bytearray(c.data)
    _pack_length(data, el, new, _little(c, el))
    return bytes(data), {"tag": _tag(el.tag), "length": el.length, "new_length": new}


def m_wrong_vr(c: Context):
    """An explicit VR replaced by another valid one with the same header form (a 2-byte
    length VR by another, a 4-byte one by another); half the time on a marked element."""
    explicit = [e for e in c.layout.elements if e.vr]
    marked = [e for e in explicit if e.tag in MARKED_TAGS and e.depth == 0]
    el = c.choose(marked if marked and c.rng.random() < 0.5 else explicit)
    pool = SHORT_VRS if el.vr in SHORT_VRS else LONG_VRS
    new = c.rng.choice(sorted(pool - {el.vr}))
    data = bytearray(c.data)
    data[el.offset + 4 : el.offset + 6] = new.encode()
    return bytes(data), {"tag": _tag(el.tag), "vr": el.vr, "new_vr": new, "area": el.area}


NEST_TAGS = (0x00081115, 0x00081140, 0x00089215, 0x00283010, 0x00400260, 0x0040A730, 0x00081111, 0x00400275)


def m_deep_nesting(c: Context):
    """A sequence nested 50 to 150 levels deep, identifying values at the bottom (a
    PatientName, a PersonName and a referenced UID), lengths defined, undefined or mixed."""
    lay = c.layout
    if lay.deflated:
        raise NotApplicable()
    depth = c.rng.randint(50, 150)
    tag = c.rng.choice(NEST_TAGS)
    mode = c.rng.choice(["defined", "undefined", "mixed"])
    name, person = f"{marker(c.n, 'NP')}^{marker(c.n, 'NQ')}", marker(c.n, "NN")
    uid = f"{FUZZ_UID_ROOT}{c.seed}.{c.n}.9"
    inner = (
        _encode(0x00081155, "UI", uid.encode(), lay.implicit, lay.little)
        + _encode(0x00100010, "PN", name.encode(), lay.implicit, lay.little)
        + _encode(0x0040A123, "PN", person.encode(), lay.implicit, lay.little)
    )
    for _ in range(depth):
        defined = mode == "defined" or (mode == "mixed" and c.rng.random() < 0.5)
        inner = _sequence(tag, inner, lay.implicit, lay.little, defined)
    data, at = _insert_top(c, tag, inner)
    c.extra.update(
        {
            marker(c.n, "NP"): "nested PatientName",
            marker(c.n, "NQ"): "nested PatientName",
            person: "nested PersonName",
            uid: "nested ReferencedSOPInstanceUID",
        }
    )
    return data, {"tag": _tag(tag), "depth": depth, "lengths": mode, "offset": at}


def m_encaps_bad_item(c: Context):
    """Encapsulated pixel data with a broken item: a length past the end, an undefined or
    odd length, a wrong item tag, or no sequence delimiter."""
    if not c.layout.encapsulated:
        raise NotApplicable()
    items = [e for e in c.layout.pixel_items if e.tag == ITEM]
    el = c.choose(items)
    how = c.rng.choice(["length_past_end", "undefined_length", "odd_length", "item_tag", "no_delimiter"])
    data = bytearray(c.data)
    little = c.layout.little
    order = "<" if little else ">"
    if how == "length_past_end":
        _pack_length(data, el, 0xFFFFFFF0, little)
    elif how == "undefined_length":
        _pack_length(data, el, UNDEFINED, little)
    elif how == "odd_length":
        _pack_length(data, el, el.length + 1 if el.length % 2 == 0 else max(el.length - 1, 0), little)
    elif how == "item_tag":
        struct.pack_into(order + "HH", data, el.offset, 0xFFFE, c.rng.choice([0xE00D, 0xE0DD, 0xE001]))
    else:
        last = c.layout.pixel_items[-1]
        if last.tag != SEQ_END:
            raise NotApplicable()
        data = bytearray(c.data[: last.offset] + c.data[last.end :])
    return bytes(data), {"item": items.index(el), "of": len(items), "how": how}


def m_no_meta(c: Context):
    """The dataset alone: no preamble, no DICM, no file meta."""
    if not c.layout.preamble or c.layout.body_start >= len(c.data):
        raise NotApplicable()
    return c.data[c.layout.body_start :], {"dropped": c.layout.body_start, "transfer_syntax": c.layout.transfer_syntax}


def m_zeros_huge(c: Context):
    """Preamble, DICM and a valid file meta, then nothing but zeros up to a huge size (a
    hole: it takes no room on disk)."""
    if not c.layout.preamble:
        raise NotApplicable()
    head = c.data[: c.layout.body_start]
    c.extra["__sparse__"] = max(c.huge_size, len(head) + 1)
    return head, {"size": c.extra["__sparse__"]}


def _marked_top(c: Context):
    return [e for e in c.layout.top() if e.tag in MARKED_TAGS and e.defined]


def m_duplicate_tag(c: Context):
    """A marked element written twice: the same bytes, or a copy holding another marker,
    right after it or somewhere later."""
    el = c.choose(_marked_top(c))
    copy = c.data[el.offset : el.end]
    second = c.rng.random() < 0.5
    if second:
        copy = re.sub(rb"(FUZZPHI\d{5,7})[A-Z0-9]{2}", rb"\1DU", copy)
        c.extra[marker(c.n, "DU")] = "duplicated element"
    later = [e for e in c.layout.top() if e.offset > el.offset]
    at = el.end if not later or c.rng.random() < 0.5 else c.rng.choice(later).offset
    return c.data[:at] + copy + c.data[at:], {"tag": _tag(el.tag), "other_marker": second, "offset": at}


def m_out_of_order(c: Context):
    """A marked element moved out of tag order: to the start of the body, before a random
    element, or to the very end (after the pixel data)."""
    el = c.choose(_marked_top(c))
    blob = c.data[el.offset : el.end]
    rest = c.data[: el.offset] + c.data[el.end :]
    where = c.rng.choice(["start", "random", "end"])
    shift = lambda off: off - len(blob) if off > el.offset else off  # noqa: E731
    if where == "start":
        at = c.layout.body_start
    elif where == "end":
        at = len(rest)
    else:
        at = shift(c.choose(e for e in c.layout.top() if e is not el).offset)
    return rest[:at] + blob + rest[at:], {"tag": _tag(el.tag), "where": where, "offset": at}


def m_trailing_bytes(c: Context):
    """Bytes after the end of the dataset: a marker as plain text, an encoded PatientName
    element holding a marker, or random bytes around a marker."""
    lay = c.layout
    text = marker(c.n, "TB")
    c.extra[text] = "trailing bytes"
    how = c.rng.choice(["text", "element", "random"])
    if how == "text":
        tail = text.encode()
    elif how == "element":
        tail = _encode(0x00100010, "PN", text.encode(), lay.implicit, lay.little)
    else:
        tail = (
            bytes(c.rng.randrange(256) for _ in range(c.rng.randint(1, 64)))
            + text.encode()
            + bytes(c.rng.randrange(256) for _ in range(c.rng.randint(0, 64)))
        )
    return c.data + tail, {"how": how, "bytes": len(tail)}


def m_bad_magic(c: Context):
    """DICM after the preamble replaced."""
    if not c.layout.preamble:
        raise NotApplicable()
    magic = c.choose([b"DICN", b"dicm", b"\0\0\0\0", b"MCID", b"DIC\0"])
    return c.data[:128] + magic + c.data[132:], {"magic": magic.decode("latin-1")}


MUTATIONS: dict[str, Callable] = {
    "flip_random": m_flip_random,
    "flip_tag": m_flip_tag,
    "flip_vr": m_flip_vr,
    "flip_length": m_flip_length,
    "truncate_preamble": m_truncate_preamble,
    "truncate_meta": m_truncate_meta,
    "truncate_element": m_truncate_element,
    "truncate_value": m_truncate_value,
    "truncate_fragment": m_truncate_fragment,
    "length_past_end": m_length_past_end,
    "length_swallow": m_length_swallow,
    "length_odd": m_length_odd,
    "wrong_vr": m_wrong_vr,
    "deep_nesting": m_deep_nesting,
    "encaps_bad_item": m_encaps_bad_item,
    "no_meta": m_no_meta,
    "zeros_huge": m_zeros_huge,
    "duplicate_tag": m_duplicate_tag,
    "out_of_order": m_out_of_order,
    "trailing_bytes": m_trailing_bytes,
    "bad_magic": m_bad_magic,
}
KINDS = tuple(MUTATIONS)

#: what a base file must have for a mutation to apply
NEEDS: dict[str, Callable] = {
    "truncate_fragment": lambda b: b.encapsulated,
    "encaps_bad_item": lambda b: b.encapsulated,
    "flip_vr": lambda b: not b.implicit,
    "wrong_vr": lambda b: not b.implicit,
}

HUGE_SIZE = 1 << 30


def make_case(seed: int, n: int, kind: str | None = None, kinds=KINDS, bases=None, huge_size: int = HUGE_SIZE) -> Case:
    """Generated file number `n` of `seed` (its kind: kinds[n % len(kinds)] unless given)."""
    kind = kind or kinds[n % len(kinds)]
    bases = bases if bases is not None else corpus.base_files()
    fits = [b for b in bases if NEEDS.get(kind, lambda b: True)(b)]
    if not fits:
        raise RuntimeError(f"no shipped file fits mutation {kind}")
    rng = random.Random(f"sendit-fuzz/{seed}/{n}")
    for _attempt in range(50):
        base = rng.choice(fits)
        try:
            data, ds = prepare(base, seed, n, rng)
        except Exception:
            continue
        layout = walk(data)
        if not layout.complete:
            continue
        c = Context(rng, data, layout, n, seed, huge_size)
        try:
            mutated, details = MUTATIONS[kind](c)
        except NotApplicable:
            continue
        texts, dates, uids = identifying_values(ds)
        sparse = c.extra.pop("__sparse__", 0)
        for value, label in c.extra.items():
            (uids if value.startswith(FUZZ_UID_ROOT) else texts)[value] = label
        return Case(
            n=n,
            seed=seed,
            kind=kind,
            origin=base.label,
            data=bytes(mutated),
            sparse_size=sparse,
            texts=texts,
            dates=dates,
            uids=uids,
            sop_uids={str(ds.SOPInstanceUID)},
            details=details,
        )
    raise RuntimeError(f"mutation {kind} found no shipped file it applies to (seed {seed}, n {n})")


def generate(
    seed: int, count: int, kinds=KINDS, start: int = 0, max_base_bytes: int = 512 * 1024, huge_size: int = HUGE_SIZE
):
    """`count` cases, numbers start..start+count-1, the kinds taken in turn."""
    bases = corpus.base_files(max_base_bytes)
    for n in range(start, start + count):
        yield make_case(seed, n, kinds[n % len(kinds)], bases=bases, huge_size=huge_size)


def shipped_case(label: str, path, n: int = 0) -> Case:
    """A shipped file, unmodified, with the identifying values pydicom finds in it."""
    import pydicom

    data = open(path, "rb").read()
    texts, dates, uids, sops = {}, {}, {}, set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            texts, dates, uids = identifying_values(ds)
            sop = ds.get("SOPInstanceUID")
            if sop:
                sops.add(str(sop))
        except Exception:
            pass
    return Case(
        n=n, seed=0, kind="shipped", origin=label, data=data, texts=texts, dates=dates, uids=uids, sop_uids=sops
    )
