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
  ``D`` keeps the items and replaces what they hold (see ``sendit.deid.scrub``:
  every code, name, text, number and date at any depth becomes a dummy), except
  ``X/Z/D`` sequences, which are emptied (an empty sequence is valid where Z is
  allowed).
* ``X/Z/U*`` (Referenced/Source Image Sequence) -> ``U``: items are kept and
  the UIDs inside them mapped.
* Reference sequences whose items hold only SOP class and instance UIDs
  (:data:`REFERENCE_SEQUENCES`: Referenced Study Sequence ``X/Z``, Referenced
  Performed Procedure Step Sequence ``X/Z/D``) -> ``U`` as well: some IODs require
  an item, and the mapped UIDs in it identify nothing (they are mapped like every
  other UID, so the references stay consistent).

Two rules go beyond single rows:

* Overlays: when the profile removes Overlay Data (60xx,3000), every element of
  that overlay group is removed (even groups 6000-601E), so that no overlay is
  left without its Type 1 data. A recipe ``KEEP`` of (60xx,3000) keeps its group.
* Animals: Responsible Person (0010,2297) and Responsible Organization
  (0010,2299) are Type 2C when the patient is an animal; ``profile_for(...,
  animal=True)`` empties them (Z) instead of removing them (X).
* DICOMDIR (never sent by the node, but de-identified like any file): in the items
  of Directory Record Sequence (0004,1220), ``profile_for(..., records=True)`` gives
  the keys a record requires a dummy (Type 1: Patient ID, Study Date/Time/ID, Content
  and Presentation Creation Date/Time) or an empty value (Type 2: Patient's Name,
  Accession Number, Study Description, Content Description, Content Creator's Name)
  where the profile would empty or remove them.

Options: every enabled option contributes the action of its column. A ``K``
wins over a ``C``, which wins over the Basic Profile action. For DA/DT/TM
attributes only the dates option decides (``C``: shift), so that no other
option brings back an unshifted date.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import NotRequired, TypedDict

from pydicom.datadict import dictionary_has_tag, dictionary_VR

from sendit.deid.options import OPTION_COLUMNS

TABLE_PATH = Path(__file__).parent / "data" / "profile_table.json"
DATE_VRS = frozenset({"DA", "DT", "TM"})
#: sequences whose items only reference other instances (class and instance UIDs):
#: kept with the UIDs mapped where the table says X/Z or X/Z/D
REFERENCE_SEQUENCES = frozenset({0x00081110, 0x00081111})  # Referenced Study / Performed Procedure Step
#: emptied rather than removed when the patient is an animal (Type 2C there)
ANIMAL_ZEROED = (0x00102297, 0x00102299)  # Responsible Person, Responsible Organization
#: keys that a DICOMDIR's directory records (PS3.3 F.5) require: Type 1 (a dummy where
#: the profile would empty or remove them) and Type 2 (emptied where it would remove them)
RECORD_TYPE1_KEYS = frozenset(
    {0x00100020, 0x00080020, 0x00080030, 0x00200010, 0x00080023, 0x00080033, 0x00700082, 0x00700083}
)
RECORD_TYPE2_KEYS = frozenset({0x00100010, 0x00080050, 0x00081030, 0x00700081, 0x00700084})
#: the repeating overlay groups (PS3.5 7.6): even groups 6000-601E
OVERLAY_GROUPS = range(0x6000, 0x601F, 2)


class ProfileRow(TypedDict):
    """One attribute of ``profile_table.json``."""

    tag: str  # 8 hex digits (``x`` for a repeating group's wildcards), or ``private``
    name: str
    basic: str  # the Basic Profile code (``X``, ``X/Z/D``...)
    options: NotRequired[dict[str, str]]  # option column -> code, for the columns that name one


@lru_cache(maxsize=1)
def load_table() -> tuple[ProfileRow, ...]:
    """The table rows as loaded from the package data, sorted by tag."""
    return tuple(json.loads(TABLE_PATH.read_text()))


def resolve_basic(code: str, vr: str | None, tag: int | None = None) -> str:
    """One concrete action for a Basic Profile code (see module docstring)."""
    if len(code) == 1:
        return code
    if code == "X/Z/U*" or tag in REFERENCE_SEQUENCES:
        return "U"
    if "D" in code:
        if vr == "SQ" and code == "X/Z/D":
            return "Z"
        return "D"
    if code == "X/Z":
        return "Z"
    raise ValueError(f"unknown profile code {code!r}")


def _tag_int(tag: str) -> int | None:
    return None if "x" in tag or tag == "private" else int(tag, 16)


def _table_vr(tag: str) -> str | None:
    if "x" in tag:
        return None
    value = int(tag, 16)
    if not dictionary_has_tag(value):
        return None
    return dictionary_VR(value)


def resolve_row(row: ProfileRow, enabled_columns: frozenset[str]) -> str:
    """The action for one table row under the enabled option columns."""
    vr = _table_vr(row["tag"]) if row["tag"] != "private" else None
    tag = _tag_int(row["tag"])
    options = row.get("options", {})
    if vr in DATE_VRS:
        if "rtnLongModifDatesOpt" in enabled_columns and "rtnLongModifDatesOpt" in options:
            return "C"
        return resolve_basic(row["basic"], vr, tag)
    chosen = {options[c] for c in enabled_columns if c in options}
    if "K" in chosen:
        return "K"
    if "C" in chosen:
        return "C"
    return resolve_basic(row["basic"], vr, tag)


class Profile:
    """Resolved actions for one set of options: ``action(tag)`` in O(1)."""

    def __init__(
        self,
        enabled_columns: frozenset[str] = frozenset(),
        overrides: dict[int, str] | None = None,
        animal: bool = False,
        records: bool = False,
    ) -> None:
        self.actions: dict[int, str] = {}
        self.curve_action = "X"  # (50xx,xxxx)
        self.overlay_actions: dict[int, str] = {}  # element -> action in 60xx groups
        #: overlay groups removed whole (their Overlay Data is removed): group -> "X"
        self.overlay_groups: dict[int, str] = {}
        self.animal = animal
        self.private_action = "X"
        self.names: dict[int, str] = {}
        for row in load_table():
            action = resolve_row(row, enabled_columns)
            key = row["tag"]
            if key == "private":
                self.private_action = action
            elif key == "50xxxxxx":
                self.curve_action = action
            elif key.startswith("60xx"):
                self.overlay_actions[int(key[4:], 16)] = action
            else:
                self.actions[int(key, 16)] = action
                self.names[int(key, 16)] = row["name"]
        if animal:
            for tag in ANIMAL_ZEROED:
                if self.actions.get(tag) == "X":
                    self.actions[tag] = "Z"
        if records:
            for tag in RECORD_TYPE1_KEYS:
                if self.actions.get(tag) in ("X", "Z"):
                    self.actions[tag] = "D"
            for tag in RECORD_TYPE2_KEYS:
                if self.actions.get(tag) == "X":
                    self.actions[tag] = "Z"
        for tag, action in (overrides or {}).items():
            self.actions[tag] = action
        if self.overlay_actions.get(0x3000) == "X":
            kept = {tag >> 16 for tag, action in (overrides or {}).items() if tag & 0xFFFF == 0x3000 and action != "X"}
            self.overlay_groups = {group: "X" for group in OVERLAY_GROUPS if group not in kept}

    def action(self, tag: int) -> str | None:
        """The action for ``tag`` (a public tag), or None when the table does not list it."""
        action = self.actions.get(tag)
        if action is not None:
            return action
        group = tag >> 16
        if 0x5000 <= group <= 0x50FF:
            return self.curve_action
        if 0x6000 <= group <= 0x60FF:
            return self.overlay_groups.get(group) or self.overlay_actions.get(tag & 0xFFFF)
        return None


@lru_cache(maxsize=64)
def profile_for(
    enabled_flags: tuple[str, ...], keep_tags: frozenset[int] = frozenset(), animal: bool = False, records: bool = False
) -> Profile:
    """The cached :class:`Profile` for option flags (names as in DeidOptions); ``animal``
    for a patient that is an animal (Responsible Person/Organization emptied, not removed);
    ``records`` for the items of a DICOMDIR's Directory Record Sequence (their required
    keys kept present)."""
    columns = frozenset(OPTION_COLUMNS[f] for f in enabled_flags)
    return Profile(columns, {t: "K" for t in keep_tags}, animal, records)
