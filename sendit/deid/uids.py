"""Deterministic UID replacement (action U).

A UID is replaced by a keyed hash (HMAC-SHA256 with the site secret) of the
original, so the same input UID always maps to the same output UID: references
between instances (ReferencedSOPInstanceUID, FrameOfReferenceUID, ...) stay
intact across files, batches and runs, and nobody without the secret can map a
new UID back or confirm a guess.

UIDs that name a standard thing rather than an instance (SOP classes, transfer
syntaxes, coding schemes: anything in pydicom's UID dictionary) are never mapped.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import lru_cache

from pydicom.uid import UID_dictionary

UUID_ROOT = "2.25."
_ROOT_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.$")
#: at least this many digits of hash follow an organisation root (about 80 bits)
MIN_HASH_DIGITS = 24


def check_root(root: str) -> str:
    """Return ``root`` normalised to end in a dot; raise ValueError if unusable."""
    root = (root or UUID_ROOT).strip()
    if not root.endswith("."):
        root += "."
    if not _ROOT_RE.match(root):
        raise ValueError("uid_root must be dot-separated numbers without leading zeros")
    if root != UUID_ROOT and 64 - len(root) < MIN_HASH_DIGITS:
        raise ValueError(f"uid_root must leave at least {MIN_HASH_DIGITS} digits of a 64-character UID")
    return root


def is_well_known(uid: str) -> bool:
    """True for UIDs of standard classes, transfer syntaxes and the like."""
    return uid in UID_dictionary


@lru_cache(maxsize=1 << 16)
def map_uid(uid: str, secret: bytes, root: str = UUID_ROOT) -> str:
    """Map one UID to its replacement under ``root``; well-known UIDs pass through.

    Under ``2.25.`` the digest becomes a version-8 (custom) UUID written as a
    decimal integer, as PS3.5 B.2 describes. Under any other root the digest's
    decimal digits fill the UID up to 64 characters.
    """
    uid = uid.strip("\0 ")
    if not uid or uid in UID_dictionary:
        return uid
    digest = hmac.new(secret, uid.encode("ascii", "replace"), hashlib.sha256).digest()
    if root == UUID_ROOT:
        value = int.from_bytes(digest[:16], "big")
        value &= ~(0xF << 76)
        value |= 0x8 << 76  # version 8
        value &= ~(0x3 << 62)
        value |= 0x2 << 62  # RFC 4122 variant
        return UUID_ROOT + str(value)
    digits = str(int.from_bytes(digest, "big"))  # no leading zero: top digit of an int
    return root + digits[: 64 - len(root)]


def map_uids(value: str, secret: bytes, root: str) -> str:
    """Map a possibly multi-valued (backslash-separated) UID string."""
    if "\\" in value:
        return "\\".join(map_uid(v, secret, root) for v in value.split("\\"))
    return map_uid(value, secret, root)
