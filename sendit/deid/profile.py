"""The Basic Application Confidentiality Profile as a lookup table.

``profile_table.json`` (generated from PS3.15 Table E.1-1) lists every attribute
with its Basic Profile action and its action under each option. This module
resolves, once per combination of options, one concrete action per tag:

* ``K`` keep, ``X`` remove, ``Z`` empty, ``D`` dummy, ``U`` map UID,
  ``C`` clean (dates: shift; descriptors: keep only if safe; sequences: recurse).

Combined Basic Profile codes are resolved without knowing the IOD, by the
strictest action that still keeps the file valid for any attribute type:

* ``X/Z`` -> ``Z``: an empty value is valid for Type 2 and Type 3 attributes.
* any code with ``D`` (``X/D``, ``Z/D``, ``X/Z/D``) -> ``D``: some IOD makes the
  attribute Type 1, and a dummy value is valid for every type. For a sequence,
  ``D`` keeps the items and scrubs them by the same table, except ``X/Z/D``
  sequences, which are emptied (an empty sequence is valid where Z is allowed).
* ``X/Z/U*`` (Referenced/Source Image Sequence) -> ``U``: items are kept and
  the UIDs inside them mapped.

Options: every enabled option contributes the action of its column. A ``K``
wins over a ``C``, which wins over the Basic Profile action. For DA/DT/TM
attributes only the dates option decides (``C``: shift), so that no other
option brings back an unshifted date.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from pydicom.datadict import dictionary_VR, dictionary_has_tag

from sendit.deid.options import OPTION_COLUMNS

TABLE_PATH = Path(__file__).parent / "data" / "profile_table.json"
DATE_VRS = frozenset({"DA", "DT", "TM"})


@lru_cache(maxsize=1)
def load_table() -> tuple:
    """The table rows as loaded from the package data, sorted by tag."""
    return tuple(json.loads(TABLE_PATH.read_text()))


def resolve_basic(code: str, vr: str | None) -> str:
    """One concrete action for a Basic Profile code (see module docstring)."""
    if len(code) == 1:
        return code
    if code == "X/Z/U*":
        return "U"
    if "D" in code:
        if vr == "SQ" and code == "X/Z/D":
            return "Z"
        return "D"
    if code == "X/Z":
        return "Z"
    raise ValueError(f"unknown profile code {code!r}")


def _table_vr(tag: str) -> str | None:
    if "x" in tag:
        return None
    value = int(tag, 16)
    if not dictionary_has_tag(value):
        return None
    return dictionary_VR(value)


def resolve_row(row: dict, enabled_columns: frozenset) -> str:
    """The action for one table row under the enabled option columns."""
    vr = _table_vr(row["tag"]) if row["tag"] != "private" else None
    options = row.get("options", {})
    if vr in DATE_VRS:
        if "rtnLongModifDatesOpt" in enabled_columns and "rtnLongModifDatesOpt" in options:
            return "C"
        return resolve_basic(row["basic"], vr)
    chosen = {options[c] for c in enabled_columns if c in options}
    if "K" in chosen:
        return "K"
    if "C" in chosen:
        return "C"
    return resolve_basic(row["basic"], vr)


class Profile:
    """Resolved actions for one set of options: ``action(tag)`` in O(1)."""

    def __init__(self, enabled_columns=frozenset(), overrides=None):
        self.actions: dict[int, str] = {}
        self.curve_action = "X"  # (50xx,xxxx)
        self.overlay_actions: dict[int, str] = {}  # element -> action in 60xx groups
        self.private_action = "X"
        self.names: dict[int, str] = {}
        for row in load_table():
            action = resolve_row(row, enabled_columns)
            tag = row["tag"]
            if tag == "private":
                self.private_action = action
            elif tag == "50xxxxxx":
                self.curve_action = action
            elif tag.startswith("60xx"):
                self.overlay_actions[int(tag[4:], 16)] = action
            else:
                self.actions[int(tag, 16)] = action
                self.names[int(tag, 16)] = row["name"]
        for tag, action in (overrides or {}).items():
            self.actions[tag] = action

    def action(self, tag: int) -> str | None:
        """The action for ``tag`` (a public tag), or None when the table does not list it."""
        action = self.actions.get(tag)
        if action is not None:
            return action
        group = tag >> 16
        if 0x5000 <= group <= 0x50FF:
            return self.curve_action
        if 0x6000 <= group <= 0x60FF:
            return self.overlay_actions.get(tag & 0xFFFF)
        return None


@lru_cache(maxsize=64)
def profile_for(enabled_flags: tuple, keep_tags: frozenset = frozenset()) -> Profile:
    """The cached :class:`Profile` for option flags (names as in DeidOptions)."""
    columns = frozenset(OPTION_COLUMNS[f] for f in enabled_flags)
    return Profile(columns, {t: "K" for t in keep_tags})
