"""One pass over a dataset applying the profile: ``deidentify_dataset``.

The pass walks the elements once, in tag order, at every sequence depth. It
reads element values only where an action needs them (UIDs to map, dates to
shift, descriptors to clean); everything else, pixel data above all, is left as
the reader produced it, so a kept element is written back byte for byte. A kept
sequence whose items hold only UIDs and elements kept or removed as they are (the
reference sequences) is scrubbed on its bytes, not parsed (``_scrub_raw_items``).

Attributes the table does not list are kept, with these exceptions (safety
first): private attributes are removed (unless Retain Safe Private keeps a
known-safe one), DA/DT/TM are shifted (or emptied when dates are not kept),
PN is replaced by a dummy, UI is mapped unless it is a well-known UID or sits
in an attribute that names a class rather than an instance, an element whose
VR cannot be known (UN, not in the dictionary) is removed, and group lengths
are dropped (they are retired and would be wrong after the scrub), as are
command elements (0000,eeee), which a stored instance cannot carry.

Sequences the table gives a dummy (``D``: Content Sequence, Person Identification
Code Sequence, Operator Identification Sequence, Verifying Observer Sequence,
Graphic Annotation Sequence, Flow Identifier Sequence, and any other sequence whose
action resolves to ``D``) keep their items, so that a required item is still there,
but nothing they hold survives as it was, at any depth (``_dummy_item``):

* private attributes, group lengths, command elements and unknown-VR elements go as
  everywhere else; a recipe ``KEEP`` and an option's ``K`` still keep an attribute;
* an attribute the table removes (``X``) or empties (``Z``) is removed or emptied;
* UI is mapped as everywhere (class UIDs and well-known UIDs are not; nothing is
  mapped under Retain UIDs), so references stay consistent;
* a nested sequence keeps its items and gets these same rules;
* CS (enumerated values and defined terms that make the structure: ValueType,
  RelationshipType, ContinuityOfContent, GraphicType...) and binary numbers (US, SS,
  UL, SL, UV, SV, FL, FD, AT: graphic data, counts, tags) are kept, and so is
  Referenced Frame Number (with the mapped UIDs, what keeps a reference valid),
  unless the table gives the attribute its own D;
* every other value is replaced by the dummy of its VR, each of its values for a
  multi-valued one (so its multiplicity stays): text (AE, LO, LT, PN, SH, ST, UC, UR,
  UT: code values, code meanings, coding scheme designators, names, free text)
  ``ANONYMIZED``, IS/DS ``0``, AS ``000Y``, DA/TM/DT the dummy date and time (not
  shifted), OB/OW/OF/OD/OL/OV emptied. An empty value stays empty.
"""

from __future__ import annotations

import functools
import logging
import re
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydicom.datadict import dictionary_has_tag, dictionary_VR, get_entry
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from sendit.deid.dates import InvalidDate, shift_value
from sendit.deid.options import BASIC_PROFILE_CODE, OPTION_CODES, DeidOptions
from sendit.deid.private import safe_private_tags
from sendit.deid.profile import DATE_VRS, Profile, load_table, profile_for, resolve_basic
from sendit.deid.uids import map_uids
from sendit.deid.values import (
    BINARY_VRS,
    LONG_VR_CODES,
    NUMBER_VRS,
    SHORT_VR_CODES,
    TEXT_VRS,
    as_text,
    ascii_value,
    empty_value,
)

if TYPE_CHECKING:  # pragma: no cover
    from sendit.deid.identifiers import StudyIdentifiers
    from sendit.deid.recipe import Function

logger = logging.getLogger(__name__)

DUMMY_TEXT = "ANONYMIZED"
DUMMIES: dict[str, str | int | float | bytes] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000Y",
    "IS": "0",
    "DS": "0",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
    "AT": 0,
    "OB": b"",
    "OW": b"",
    "OF": b"",
    "OD": b"",
    "OL": b"",
    "OV": b"",
    "UN": b"",
}
#: VRs kept inside a dummied sequence (structure, not content; see the module docstring)
DUMMY_KEEP_VRS = NUMBER_VRS | {"CS"}
#: one value per element whatever its backslashes (they are text there)
SINGLE_VALUE_VRS = frozenset({"LT", "ST", "UT", "UR"})
#: kept inside a dummied sequence: Referenced Frame Number (IS), part of a reference
DUMMY_KEEP_TAGS = frozenset({0x00081160})
#: text VRs whose value may be kept by a "C" (clean) action when it looks safe
CLEANABLE_VRS = frozenset({"LO", "SH", "CS", "UC", "AE"})

#: UI attributes (outside the table) that name a class, syntax or scheme, never an instance
CLASS_UID_TAGS = frozenset(
    {
        0x00020002,  # MediaStorageSOPClassUID
        0x00020010,  # TransferSyntaxUID
        0x00020012,  # ImplementationClassUID
        0x00041510,  # ReferencedSOPClassUIDInFile
        0x00041512,  # ReferencedTransferSyntaxUIDInFile
        0x00080016,  # SOPClassUID
        0x0008001A,  # RelatedGeneralSOPClassUID
        0x0008001B,  # OriginalSpecializedSOPClassUID
        0x0008010C,  # CodingSchemeUID
        0x00080117,  # ContextUID
        0x00080118,  # MappingResourceUID
        0x00081150,  # ReferencedSOPClassUID
    }
)

#: top-level attributes whose values, found inside a descriptor, make it unsafe to keep
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientBirthDate",
    "AccessionNumber",
    "StudyID",
    "IssuerOfPatientID",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "NameOfPhysiciansReadingStudy",
    "InstitutionName",
    "InstitutionAddress",
)
_TOKEN_SPLIT = re.compile(r"[\^\\ ,=]+")
_LONG_NUMBER = re.compile(r"\d{5,}")


#: Query/Retrieve attributes (PS3.4 C.4), which no stored composite instance holds
QUERY_TAGS = frozenset({0x00080052, 0x00080053, 0x00080054, 0x00080056, 0x00080058})


@functools.lru_cache(maxsize=8192)
def _vr_mismatch(tag: int, raw_vr: str | None) -> bool:
    """True when an explicit VR is one the dictionary does not allow for the tag (UN and
    the dictionary's alternatives, such as US or SS, are allowed)."""
    if not raw_vr or raw_vr == "UN" or tag >> 16 == 0x7FE0:
        return False
    try:
        allowed = get_entry(tag)[0].split(" or ")
    except KeyError:
        return False
    # Text where the dictionary has none, or anything but a sequence where it has one.
    return raw_vr not in allowed and (raw_vr in TEXT_VRS or "SQ" in allowed) and "UN" not in allowed


@functools.lru_cache(maxsize=8192)
def _in_dictionary(tag: int) -> bool:
    """True when the standard's dictionary, repeating groups (60xx...) included, knows the tag."""
    try:
        get_entry(tag)
    except KeyError:
        return False
    return True


def _element_vr(tag: int, raw_vr: str | None) -> str:
    """The VR to act on: the element's own, or the dictionary's when it is unknown."""
    if raw_vr and raw_vr != "UN":
        return raw_vr
    if dictionary_has_tag(tag):
        vr = dictionary_VR(tag)
        return vr.split(" or ")[0] if " or " in vr else vr
    return "UN"


def put(ds: Dataset, tag: int, vr: str, value: object) -> None:
    """Set an element; ASCII text goes in pre-encoded so it is written without conversion."""
    if vr in TEXT_VRS and isinstance(value, str) and value.isascii():
        data = ascii_value(vr, value)
        # no byte order nor VR encoding applies to ASCII text: None where pydicom types bool
        ds[tag] = RawDataElement(BaseTag(tag), vr, len(data), data, 0, None, None, True, False)  # type: ignore[arg-type]
    else:
        ds[tag] = DataElement(tag, vr, value)


def _dummy(vr: str) -> str | int | float | bytes:
    return DUMMIES.get(vr, DUMMY_TEXT)


def _identifying_tokens(ds: Dataset, skip_institution: bool) -> tuple[str, ...]:
    tokens: set[str] = set()
    for keyword in IDENTIFYING_KEYWORDS:
        if skip_institution and keyword.startswith("Institution"):
            continue
        elem = ds.get(keyword)
        if elem is None:
            continue
        text = as_text(elem).lower()
        for token in _TOKEN_SPLIT.split(text):
            if len(token) >= 3:
                tokens.add(token)
    return tuple(tokens)


def is_safe_descriptor(text: str, identifying: tuple[str, ...]) -> bool:
    """True when a short descriptor can be kept under a clean ("C") action.

    Kept only if it contains none of the patient's identifying values found in
    the same dataset (names, ids, dates, institution), no run of five or more
    digits (ids, dates, phone numbers) and no e-mail-like ``@``.
    """
    if not text:
        return True
    if "@" in text or _LONG_NUMBER.search(text):
        return False
    low = text.lower()
    return not any(token in low for token in identifying)


class _Run:
    """State of one dataset's scrub: options, jitter and what was done."""

    __slots__ = (
        "profile",
        "fallback",
        "options",
        "jitter",
        "shift",
        "keep_uids",
        "safe_private",
        "identifying",
        "shifted",
        "keep_tags",
        "named",
    )

    def __init__(
        self,
        ds: Dataset,
        jitter: int,
        options: DeidOptions,
        keep_tags: frozenset[int],
        named: dict[int, DataElement] | None = None,
    ) -> None:
        self.options = options
        self.profile = profile_for(options.enabled(), keep_tags, is_animal(ds))
        self.fallback = _fallbacks()
        self.jitter = int(jitter)
        self.shift = options.retain_long_modified_dates
        self.keep_uids = options.retain_uids
        self.safe_private = options.retain_safe_private
        self.keep_tags = keep_tags
        #: elements the recipe decided, by identity: the profile leaves them as they are
        self.named = named or {}
        self.shifted = False
        needs_clean = (
            options.clean_descriptors or options.retain_device_identity or options.retain_patient_characteristics
        )
        self.identifying = _identifying_tokens(ds, options.retain_institution_identity) if needs_clean else ()


def is_animal(ds: Dataset) -> bool:
    """True when the patient is an animal: Patient Species Description (0010,2201) or
    Patient Species Code Sequence (0010,2202) present and not empty."""
    for tag in (0x00102201, 0x00102202):
        elem = ds.get_item(tag)
        if elem is None:
            continue
        value = elem.value
        if isinstance(value, bytes):  # raw: any non-padding byte (a sequence's items too)
            if value.strip(b"\0 "):
                return True
        elif value:
            return True
    return False


_FALLBACKS: dict[int, str] = {}


def _fallbacks() -> dict[int, str]:
    """Basic Profile action per tag, used when a clean ("C") action cannot keep a value."""
    if not _FALLBACKS:
        for row in load_table():
            tag = row["tag"]
            if "x" in tag or tag == "private":
                continue
            value = int(tag, 16)
            vr = dictionary_VR(value) if dictionary_has_tag(value) else None
            _FALLBACKS[value] = resolve_basic(row["basic"], vr, value)
    return _FALLBACKS


def _public_elements(ds: Dataset, run: _Run) -> Iterator[tuple[int, DataElement | RawDataElement, str, str | None]]:
    """Each public element of ``ds`` as (tag, element, VR, table action), once the elements
    no walk keeps are gone: private ones (but those Retain Safe Private or the recipe keeps),
    group lengths, and command elements, which a stored file cannot hold."""
    keep_private = safe_private_tags(ds) if run.safe_private else ()
    named = run.named
    for tag in list(ds.keys()):
        if named and id(ds.get_item(tag)) in named:
            continue  # the recipe named it: it stays as the recipe left it
        group = tag >> 16
        if group & 1:
            if tag not in keep_private and tag not in run.keep_tags:
                del ds[tag]
            continue
        if not tag & 0xFFFF or not group:
            del ds[tag]
            continue
        raw = ds.get_item(tag)
        yield tag, raw, _element_vr(tag, raw.VR), run.profile.action(tag)


def _scrub(ds: Dataset, run: _Run) -> None:
    profile = run.profile
    for tag, raw, vr, action in _public_elements(ds, run):
        if action is None:
            if not _in_dictionary(tag) or tag in QUERY_TAGS or _vr_mismatch(tag, raw.VR):
                # A public tag no dictionary knows, a query attribute no stored instance
                # holds, or a VR the dictionary does not give the tag (a flipped bit?):
                # what the value means is unknown, so it does not leave.
                action = "X"
            elif vr == "SQ":
                action = "K"
            elif vr in DATE_VRS:
                action = "C" if run.shift else "Z"
            elif vr == "PN":
                action = "D"
            elif vr == "UI":
                action = "K" if run.keep_uids or tag in CLASS_UID_TAGS else "U"
            elif vr == "UN":
                action = "X"
            else:
                continue
        if action == "X":
            del ds[tag]
        elif vr == "SQ":
            if action == "Z":
                ds[tag] = DataElement(tag, "SQ", Sequence())
            elif action == "D":  # keep the items, replace what they hold
                for item in ds[tag].value:
                    _dummy_item(item, run)
            elif tag == 0x00041220:  # a DICOMDIR's records: their required keys stay present
                run.profile = profile_for(run.options.enabled(), run.keep_tags, profile.animal, True)
                try:
                    for item in ds[tag].value:
                        _scrub(item, run)
                finally:
                    run.profile = profile
            else:  # K, U, C: keep the items, scrub them by the same table
                if action != "C" and isinstance(raw, RawDataElement):
                    rewritten = _scrub_raw_items(raw, run)  # references, numbers: without parsing
                    if rewritten is not None:
                        if rewritten is not raw:
                            ds[tag] = rewritten
                        continue
                for item in ds[tag].value:
                    _scrub(item, run)
        elif action == "K":
            continue
        elif action == "Z":
            put(ds, tag, vr, empty_value(vr))
        elif action == "U" or (action == "D" and vr == "UI"):
            if vr == "UI":
                text = as_text(raw.value)
                new = map_uids(text, run.options.uid_secret, run.options.uid_root)
                if new != text:
                    put(ds, tag, "UI", new)
            else:
                put(ds, tag, vr, _dummy(vr))
        elif action == "D":
            put(ds, tag, vr, _dummy(vr))
        elif action == "C":
            _clean(ds, tag, vr, raw, run)
        else:  # pragma: no cover - the profile only yields the actions above
            raise ValueError(f"unknown action for {tag:08X}")


_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END = 0xFFFEE000, 0xFFFEE00D
_LONG_VRS = LONG_VR_CODES
_EXPLICIT_VRS = LONG_VR_CODES | SHORT_VR_CODES
_RAW_ITEM_BAIL = DATE_VRS | {"SQ", "PN", "UN"}


def _scrub_raw_items(raw: RawDataElement, run: _Run) -> RawDataElement | None:
    """A sequence kept as read (``K``/``U``), scrubbed on its bytes: the new raw element,
    ``raw`` itself when nothing in it changes, or None when it holds anything but elements
    the table keeps or removes and UIDs (then it is parsed and scrubbed as datasets).

    Reference sequences (Referenced Study, Referenced Performed Procedure Step, Referenced
    Image, Source Image...) hold SOP class and instance UIDs and a few numbers: parsing
    them into datasets and writing them back through pydicom cost more than the rest of
    the scrub of an image (0.2 ms of 1.7). The decision per element is ``_scrub``'s, for the
    cases handled here; the items are written back with defined lengths.
    """
    data = raw.value
    if (
        raw.length == _UNDEFINED
        or not isinstance(data, bytes)
        or not (raw.VR == "SQ" or (raw.VR is None and raw.is_implicit_VR))
    ):
        return None
    implicit, little = raw.is_implicit_VR, raw.is_little_endian
    order = "<" if little else ">"
    tag_len = struct.Struct(order + "HHL")
    explicit_short = struct.Struct(order + "HH2sH")
    explicit_long = struct.Struct(order + "HH2sHL")
    profile, options = run.profile, run.options
    items: list[bytes] = []
    changed, pos, end = False, 0, len(data)
    try:
        while pos < end:
            group, element, length = tag_len.unpack_from(data, pos)
            if (group << 16 | element) != _ITEM:
                return None
            pos += 8
            stop = end if length == _UNDEFINED else pos + length
            if stop > end:
                return None
            parts: list[bytes] = []
            closed = length != _UNDEFINED
            while pos < stop:
                group, element = struct.unpack_from(order + "HH", data, pos)
                tag = group << 16 | element
                if tag == _ITEM_END and not closed:
                    pos += 8
                    closed = True
                    break
                if group & 1 or not element or not group:  # private, group length, command
                    return None
                if implicit:
                    value_length = tag_len.unpack_from(data, pos)[2]
                    head = 8
                    vr = _element_vr(tag, None)
                else:
                    code = data[pos + 4 : pos + 6]
                    if code not in _EXPLICIT_VRS:  # e.g. items written in implicit VR: pydicom copes
                        return None
                    if code in _LONG_VRS:
                        value_length, head = explicit_long.unpack_from(data, pos)[4], 12
                    else:
                        value_length, head = explicit_short.unpack_from(data, pos)[3], 8
                    vr = _element_vr(tag, code.decode("ascii"))
                if value_length == _UNDEFINED or vr in _RAW_ITEM_BAIL or pos + head + value_length > stop:
                    return None
                value_end = pos + head + value_length
                action = profile.action(tag)
                if action is None and vr == "UI":
                    action = "K" if run.keep_uids or tag in CLASS_UID_TAGS else "U"
                if action is None or action == "K":
                    parts.append(data[pos:value_end])
                elif action == "X":
                    changed = True
                elif vr == "UI" and action in ("U", "D"):
                    text = data[pos + head : value_end].decode("ascii").strip("\0 ")
                    new = map_uids(text, options.uid_secret, options.uid_root)
                    if new == text:
                        parts.append(data[pos:value_end])
                    else:
                        value = ascii_value("UI", new)
                        if implicit:
                            parts.append(tag_len.pack(group, element, len(value)) + value)
                        else:
                            parts.append(explicit_short.pack(group, element, b"UI", len(value)) + value)
                        changed = True
                else:
                    return None
                pos = value_end
            if not closed:
                return None
            items.append(b"".join(parts))
    except (struct.error, UnicodeDecodeError):
        return None
    if not changed:
        return raw
    out = b"".join(tag_len.pack(0xFFFE, 0xE000, len(body)) + body for body in items)
    return RawDataElement(raw.tag, raw.VR, len(out), out, raw.value_tell, implicit, little, True, False)


def _dummy_text(vr: str, value: object) -> str:
    """The dummy of a text VR, once per value of ``value`` (raw bytes or converted)."""
    dummy = str(_dummy(vr))  # text already: the dummies of text VRs are text
    if vr in SINGLE_VALUE_VRS:
        return dummy
    if isinstance(value, bytes):
        count = value.count(b"\\") + 1
    elif isinstance(value, (list, MultiValue)):
        count = len(value)
    else:
        count = 1
    return "\\".join([dummy] * count) if count > 1 else dummy


def _dummy_item(ds: Dataset, run: _Run) -> None:
    """An item of a dummied sequence: its structure kept, nothing it holds kept as it was
    (the rules are in the module docstring)."""
    for tag, raw, vr, action in _public_elements(ds, run):
        if action == "K":
            continue
        if action == "X" or (vr == "UN" and action is None):
            del ds[tag]
        elif action == "Z":
            put(ds, tag, vr, empty_value(vr))
        elif vr == "SQ":
            for item in ds[tag].value:
                _dummy_item(item, run)
        elif vr == "UI":
            if not (run.keep_uids or tag in CLASS_UID_TAGS):
                text = as_text(raw.value)
                new = map_uids(text, run.options.uid_secret, run.options.uid_root)
                if new != text:
                    put(ds, tag, "UI", new)
        elif action != "D" and (vr in DUMMY_KEEP_VRS or tag in DUMMY_KEEP_TAGS):
            continue
        elif raw.value:  # an empty value stays empty: there is nothing in it to hide
            if vr in BINARY_VRS or vr in NUMBER_VRS:
                put(ds, tag, vr, _dummy(vr))
            else:
                put(ds, tag, vr, _dummy_text(vr, raw.value))


def _clean(ds: Dataset, tag: int, vr: str, raw: DataElement | RawDataElement, run: _Run) -> None:
    """Action C: shift a date, keep a safe descriptor, or fall back to the basic action."""
    if vr in DATE_VRS:
        if not run.shift:
            put(ds, tag, vr, "")
            return
        text = as_text(raw.value)
        try:
            new = shift_value(vr, text, run.jitter)
        except InvalidDate:
            logger.warning("emptied %08X: %s value could not be parsed", tag, vr)
            new = ""
        if text:
            run.shifted = True
        if new != text:
            put(ds, tag, vr, new)
        return
    if vr in CLEANABLE_VRS and is_safe_descriptor(as_text(ds[tag].value), run.identifying):
        return
    fallback = run.fallback.get(tag, "X")
    if fallback == "X":
        del ds[tag]
    elif fallback == "Z":
        put(ds, tag, vr, empty_value(vr))
    elif fallback == "U" and vr == "UI":
        put(ds, tag, vr, map_uids(as_text(raw.value), run.options.uid_secret, run.options.uid_root))
    else:
        put(ds, tag, vr, _dummy(vr))


def _method_text(options: DeidOptions) -> list[str]:
    return [BASIC_PROFILE_CODE[1]] + [OPTION_CODES[f][1] for f in options.enabled() if f in OPTION_CODES]


def _method_codes(ds: Dataset, options: DeidOptions) -> DataElement | RawDataElement:
    """DeidentificationMethodCodeSequence for the options applied, built once per set of
    options and encoding.

    Every de-identified dataset of a run gets the same items: building them for each
    file cost a third of the scrub's time, and encoding them a tenth of the whole
    de-identification. So the element goes in already encoded, in the encoding the
    dataset was read with (as its other elements are), and is written as those bytes.
    """
    enabled = tuple(options.enabled())
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or little is None:  # built in memory: no encoding to match
        return DataElement(0x00120064, "SQ", _method_codes_for(enabled))
    data = _method_codes_bytes(enabled, implicit, little)
    return RawDataElement(BaseTag(0x00120064), "SQ", len(data), data, 0, implicit, little, True, False)


@functools.lru_cache(maxsize=64)
def _method_codes_bytes(enabled: tuple[str, ...], implicit: bool, little: bool) -> bytes:
    """The items of the code sequence, encoded (defined lengths, ASCII values)."""
    out = DicomBytesIO()
    out.is_implicit_VR, out.is_little_endian = implicit, little
    for item in _method_codes_for(enabled):
        body = DicomBytesIO()
        body.is_implicit_VR, body.is_little_endian = implicit, little
        write_dataset(body, item)
        out.write_tag(0xFFFEE000)  # Item
        out.write_UL(len(body.getvalue()))
        out.write(body.getvalue())
    return out.getvalue()


@functools.lru_cache(maxsize=64)
def _method_codes_for(enabled: tuple[str, ...]) -> Sequence:
    items: list[Dataset] = []
    for value, meaning in [BASIC_PROFILE_CODE] + [OPTION_CODES[f] for f in enabled if f in OPTION_CODES]:
        item = Dataset()
        item[0x00080100] = DataElement(0x00080100, "SH", value)  # CodeValue
        item[0x00080102] = DataElement(0x00080102, "SH", "DCM")  # CodingSchemeDesignator
        item[0x00080104] = DataElement(0x00080104, "LO", meaning)  # CodeMeaning
        items.append(item)
    return Sequence(items)


def _stamp(ds: Dataset, ids: StudyIdentifiers, options: DeidOptions, run: _Run) -> None:
    """Write the pseudonyms and the record of what was done (PS3.15 E.1.1)."""
    keep = run.keep_tags
    values = [
        (0x00100020, "LO", ids.patient_suid),  # PatientID
        (0x00100010, "PN", ids.patient_suid),  # PatientName
        (0x00080050, "SH", ids.study_suid),  # AccessionNumber
        (0x00120062, "CS", "YES"),  # PatientIdentityRemoved
        (0x00120063, "LO", "\\".join(_method_text(options))),  # DeidentificationMethod
        # LongitudinalTemporalInformationModified
        (0x00280303, "CS", "MODIFIED" if options.retain_long_modified_dates else "REMOVED"),
    ]
    for tag, vr, value in values:
        if tag not in keep:
            put(ds, tag, vr, value)
    if 0x00120064 not in keep:
        ds[0x00120064] = _method_codes(ds, options)  # DeidentificationMethodCodeSequence


#: file meta elements kept (the rest, e.g. Source Application Entity Title, is dropped);
#: the group length stays so that every writer brings it up to date (pydicom's writer
#: without enforce_file_format, for a file without SOP class and instance, keeps one
#: only if it is there)
FILE_META_KEEP = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013})


def sync_file_meta(ds: Dataset, options: DeidOptions | None = None) -> None:
    """Make the file meta agree with the scrubbed dataset (SOP class and instance).

    With ``options``, a Media Storage SOP Instance UID that has no SOP Instance UID in
    the dataset to follow (a DICOMDIR, a damaged file) is mapped in place, unless
    Retain UIDs is on.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    for tag in list(meta.keys()):
        if tag not in FILE_META_KEEP:
            del meta[tag]
    for source, target in ((0x00080018, 0x00020003), (0x00080016, 0x00020002)):
        elem = ds.get_item(source)  # raw when untouched: no conversion needed to copy it
        value = as_text(elem.value) if elem is not None and elem.value else ""
        if value:
            meta[target] = DataElement(target, "UI", value)  # meta is validated: keep typed
        elif target == 0x00020003 and options is not None and not options.retain_uids:
            elem = meta.get_item(target)
            value = as_text(elem.value) if elem is not None and elem.value else ""
            if value:
                meta[target] = DataElement(target, "UI", map_uids(value, options.uid_secret, options.uid_root))


def deidentify_dataset(
    ds: Dataset, ids: StudyIdentifiers, options: DeidOptions, notes: list[str] | None = None
) -> Dataset:
    """De-identify ``ds`` in place with the profile, options and recipe; return it.

    ``ids`` is a :class:`~sendit.deid.identifiers.StudyIdentifiers`: its suids
    become PatientID/PatientName/AccessionNumber, its jitter shifts dates. ``notes``
    receives what the recipe could not do as written (line numbers and keywords, never
    a value).
    """
    if getattr(ds, "preamble", None):
        # 128 free bytes before "DICM": dual-format (DICOM/TIFF) files and some vendors put data there.
        ds.preamble = b"\x00" * 128
    recipe = options.recipe
    keep_tags: frozenset[int] = frozenset()
    named: dict[int, DataElement] = {}
    if recipe is not None:
        # The recipe first, on the values as they came, exactly as deid would; then the
        # profile, for every element the recipe did not name.
        profile = profile_for(options.enabled(), recipe.keep_tags(), is_animal(ds))
        applied = recipe.apply(
            ds, recipe_variables(ds, ids), recipe_functions(options), spare=functools.partial(_spared, profile)
        )
        named = applied.named
        if notes is not None:
            notes.extend(applied.notes)
        keep_tags = recipe.keep_tags() | {tag for tag in ds.keys() if id(ds.get_item(tag)) in named}
    run = _Run(ds, ids.jitter, options, keep_tags, named)
    _scrub(ds, run)
    _stamp(ds, ids, options, run)
    sync_file_meta(ds, options)
    return ds


def _spared(profile: Profile, tag: int, expression: str) -> str | None:
    """How a recipe's ``REMOVE`` treats a public attribute, so that the output stays as
    valid as its input (an IOD may require the attribute, empty or not) and holds nothing
    identifying. Attributes the profile removes are removed (None). Attributes it keeps or
    empties are emptied (``"empty"``), except that one a pattern (``endswith:Time``,
    ``ALL``...) happens to match and the profile keeps is left as it is (``"profile"``):
    the standard deems it safe, and an IOD may require its value (Frame Time, Echo
    Time). UIDs, dummies and shifted dates are left to the profile (mapped, dummy,
    shifted). Private attributes are removed."""
    if tag >> 16 & 1:
        return None
    action = profile.action(tag)
    if action is None:
        vr = dictionary_VR(tag) if dictionary_has_tag(tag) else None
        action = {"UI": "U", "PN": "D", "DA": "C", "DT": "C", "TM": "C"}.get(vr or "", "K")
    if action == "X":
        return None
    pattern = expression.lower() == "all" or (":" in expression and not expression.startswith(("values:", "fields:")))
    if action == "K" and pattern:
        return "profile"
    if action in ("Z", "K"):
        return "empty"
    return "profile"


def recipe_variables(ds: Dataset, ids: StudyIdentifiers) -> dict[str, str | int]:
    """What ``var:`` gives a recipe: the study's pseudonyms and jitter, also under the names
    deid's recipes use (``entity_*`` the patient, ``item_*`` the study; the timestamps are
    the birth and study dates shifted, absent when the input has no valid date)."""
    jitter = int(ids.jitter)
    variables: dict[str, str | int] = {
        "patient_suid": ids.patient_suid,
        "study_suid": ids.study_suid,
        "jitter": jitter,
        "entity_id": ids.patient_suid,
        "item_id": ids.study_suid,
    }
    for name, tag in (("entity_timestamp", 0x00100030), ("item_timestamp", 0x00080020)):
        elem = ds.get_item(tag)
        if elem is not None and elem.value:
            try:
                variables[name] = shift_value("DA", as_text(elem.value).strip(), jitter)
            except InvalidDate:
                pass
    return variables


def recipe_functions(options: DeidOptions) -> dict[str, Function]:
    """``func:`` functions bound to this node's keys (``hashuid`` maps UIDs as the profile does)."""
    from sendit.deid.recipe import builtin_functions

    return builtin_functions(options.uid_secret, options.uid_root)
