"""Date shifting for the Retain Longitudinal Temporal Information with Modified
Dates option.

Every DA and DT moves by the same whole number of days (the patient's jitter),
so intervals inside and between a patient's studies survive. TM values do not
change with a whole-day shift but are still checked: a value that cannot be
parsed is reported as invalid so the caller empties it instead of keeping
something that might not be a time at all.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

_DA_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DA_OLD_RE = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})$")  # ACR-NEMA style
_DT_RE = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?([+-]\d{4})?$")
_TM_RE = re.compile(r"^([01]\d|2[0-3])(?:[0-5]\d(?:(?:[0-5]\d|60)(?:\.\d{1,6})?)?)?$")
_TM_OLD_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d(?::(?:[0-5]\d|60)(?:\.\d{1,6})?)?$")


class InvalidDate(ValueError):
    """A DA/DT/TM value that cannot be parsed (the message names no value)."""


def _shift(y: int, m: int, d: int, days: int) -> date:
    try:
        shifted = date(y, m, d) + timedelta(days=days)
    except (ValueError, OverflowError):
        raise InvalidDate("date out of range") from None
    return shifted


def shift_da(value: str, days: int) -> str:
    """Shift one DA value (YYYYMMDD, or old YYYY.MM.DD) by ``days``."""
    value = value.strip()
    if not value:
        return value
    match = _DA_RE.match(value) or _DA_OLD_RE.match(value)
    if not match:
        raise InvalidDate("not a DA value")
    y, m, d = (int(g) for g in match.groups())
    return _shift(y, m, d, days).strftime("%Y%m%d")


def shift_dt(value: str, days: int) -> str:
    """Shift one DT value by ``days``, keeping time, fraction and UTC offset.

    A DT of reduced precision (YYYY or YYYYMM) is shifted as if it were the
    first day of that period and written back with its original precision.
    """
    value = value.strip()
    if not value:
        return value
    match = _DT_RE.match(value)
    if not match:
        raise InvalidDate("not a DT value")
    year, month, day, rest, offset = match.groups()
    if day is None and rest:
        raise InvalidDate("not a DT value")
    shifted = _shift(int(year), int(month or 1), int(day or 1), days)
    out = f"{shifted.year:04d}"
    if month:
        out += f"{shifted.month:02d}"
    if day:
        out += f"{shifted.day:02d}"
    if rest:
        if not _TM_RE.match(rest):
            raise InvalidDate("not a DT value")
        out += rest
    return out + (offset or "")


def check_tm(value: str, days: int = 0) -> str:
    """Return a TM value unchanged if it is a valid time (whole-day shifts do not move it)."""
    stripped = value.strip()
    if stripped and not (_TM_RE.match(stripped) or _TM_OLD_RE.match(stripped)):
        raise InvalidDate("not a TM value")
    return stripped


SHIFTERS = {"DA": shift_da, "DT": shift_dt, "TM": check_tm}


def shift_value(vr: str, value: str, days: int) -> str:
    """Shift a possibly multi-valued DA/DT/TM string; InvalidDate if any part is bad."""
    shifter = SHIFTERS[vr]
    if "\\" in value:
        return "\\".join(shifter(v, days) for v in value.split("\\"))
    return shifter(value, days)
