"""DICOM value helpers shared by the de-identification modules: which VRs are text, numbers
or bytes, a value as text, a VR's empty value. A leaf module (it imports no other sendit
module), so that scrub, recipe, files, proof and the importer can all use it."""

from __future__ import annotations

from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT"})
#: Explicit VRs whose element header has 2 reserved bytes and a 32-bit length (PS3.5 7.1.2),
#: and those with a 16-bit length; as the bytes a file holds in the *_CODES sets.
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
SHORT_VRS = frozenset(
    {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI"}
    | {"UL", "US"}
)
LONG_VR_CODES = frozenset(vr.encode("ascii") for vr in LONG_VRS)
SHORT_VR_CODES = frozenset(vr.encode("ascii") for vr in SHORT_VRS)
#: VRs whose values sendit writes are ASCII text (dummies, UIDs, dates, suids)
TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)


def as_text(value: object) -> str:
    """An element value as one backslash-joined string, whatever form the reader left."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1").strip("\0 ")
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value).strip("\0 ")


def empty_value(vr: str) -> Sequence | bytes | str | None:
    """The zero-length value of a VR (action Z)."""
    if vr == "SQ":
        return Sequence()
    if vr in BINARY_VRS:
        return b""
    if vr in NUMBER_VRS:
        return None
    return ""


def ascii_value(vr: str, text: str) -> bytes:
    """ASCII text encoded as pydicom writes it: padded to an even length, UIDs with a NUL,
    other text with a space."""
    data = text.encode("ascii")
    return data + (b"\0" if vr == "UI" else b" ") if len(data) % 2 else data
