"""Recipes in the pydicom/deid format: header actions and filters.

A recipe is a text file::

    FORMAT dicom

    %filter graylist
    LABEL ultrasound
    equals Modality US
      + notequals BurnedInAnnotation NO

    %header
    ADD PatientIdentityRemoved YES
    KEEP SeriesDescription
    JITTER StudyDate

Header actions (``%header``), applied to the top-level dataset after the
profile: ``ADD field value`` (set, creating it if absent), ``REPLACE field
value`` (set only if present), ``REMOVE field``, ``BLANK field`` (empty if
present), ``KEEP field`` (the profile leaves the original value alone, at every
depth) and ``JITTER field [days]`` (the profile leaves it, then the original
date is shifted by ``days``, default the patient's jitter). Values may be
``var:patient_suid``, ``var:study_suid`` or ``var:jitter``. Fields are keywords
or tags (``(0010,0010)``, ``0010,0010``, ``00100010``).

Filters (``%filter <name>``): ``LABEL text`` starts a rule; its criteria are
``contains F regex``, ``notcontains F regex``, ``equals F value``,
``notequals F value``, ``missing F``, ``present F``, ``empty F``, joined by
``+`` (and) or ``||`` (or), at the start of a line or inside it, evaluated left
to right. ``contains`` is a case-insensitive regular-expression search,
``equals`` a case-insensitive comparison with the whole value or any one of its
values. Filter names are ``blacklist``, ``whitelist`` and ``graylist``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.datadict import dictionary_VR, dictionary_has_tag, tag_for_keyword
from pydicom.dataelem import DataElement

from sendit.deid.dates import InvalidDate, shift_value
from sendit.deid.scrub import TEXT_VRS, as_text, empty_value

HEADER_ACTIONS = ("ADD", "REPLACE", "REMOVE", "BLANK", "KEEP", "JITTER")
CRITERIA = ("contains", "notcontains", "equals", "notequals", "missing", "present", "empty")
VALUELESS = ("missing", "present", "empty")
FILTER_NAMES = ("blacklist", "whitelist", "graylist")
_TAG_RE = re.compile(r"^\(?(?:0x)?([0-9A-Fa-f]{4}),?\s*([0-9A-Fa-f]{4})\)?$")
_INT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"FL", "FD"})


class RecipeError(ValueError):
    """A recipe that cannot be parsed; the message names the line number."""


def parse_field(name: str) -> int:
    """Tag of a field written as a keyword or as a tag."""
    match = _TAG_RE.match(name.strip())
    if match:
        return int(match.group(1) + match.group(2), 16)
    tag = tag_for_keyword(name.strip())
    if tag is None:
        raise RecipeError(f"unknown field {name!r}")
    return tag


def _text(ds, tag: int) -> str | None:
    """A field's value as text, or None when absent.

    A text element still as read, in ASCII, is its bytes: the burned-in filters test a
    handful of fields of every imported file, and converting each through pydicom (which
    reads the character set for text that needs none) cost more than the test itself.
    """
    elem = ds.get_item(tag)
    if elem is None:
        return None
    if elem.is_raw and elem.VR in TEXT_VRS and elem.value is not None and elem.value.isascii():
        return as_text(elem.value)
    return as_text(ds[tag].value)


@dataclass
class Criterion:
    """One test of a filter rule, e.g. ``equals Modality US``."""

    kind: str
    tag: int
    field_name: str
    value: str = ""

    def __call__(self, ds) -> bool:
        text = _text(ds, self.tag)
        kind = self.kind
        if kind == "missing":
            return text is None
        if kind == "present":
            return text is not None
        if kind == "empty":
            return text is not None and not text.strip()
        if kind in ("contains", "notcontains"):
            found = text is not None and re.search(self.value, text, re.IGNORECASE) is not None
            return found if kind == "contains" else not found
        wanted = self.value.strip().lower()
        values = [] if text is None else [text.strip().lower()] + [v.strip().lower() for v in text.split("\\")]
        found = wanted in values
        return found if kind == "equals" else not found


@dataclass
class Rule:
    """A LABELled rule: criteria joined by ``+`` / ``||`` left to right."""

    label: str
    terms: list = field(default_factory=list)  # [(operator, Criterion)]

    def matches(self, ds) -> bool:
        result = None
        for operator, criterion in self.terms:
            value = criterion(ds)
            if result is None:
                result = value
            elif operator == "+":
                result = result and value
            else:
                result = result or value
        return bool(result)


@dataclass
class HeaderAction:
    action: str
    tag: int
    field_name: str
    value: str = ""


class Recipe:
    """A parsed recipe: ``header`` actions and ``filters`` (name -> rules)."""

    def __init__(self, header=None, filters=None):
        self.header: list[HeaderAction] = header or []
        self.filters: dict[str, list[Rule]] = filters or {}

    @classmethod
    def from_file(cls, path) -> "Recipe":
        return cls.from_text(Path(path).read_text())

    @classmethod
    def from_text(cls, text: str) -> "Recipe":
        recipe = cls()
        section, rules = None, None
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            if not line:
                continue
            try:
                if line.upper().startswith("FORMAT"):
                    if line.split()[-1].lower() != "dicom":
                        raise RecipeError("only FORMAT dicom is supported")
                elif line.startswith("%"):
                    words = line[1:].split()
                    if words[0] == "header":
                        section = "header"
                    elif words[0] == "filter" and len(words) == 2:
                        section = "filter"
                        rules = recipe.filters.setdefault(words[1].lower(), [])
                    else:
                        raise RecipeError(f"unsupported section {line!r}")
                elif section == "header":
                    recipe.header.append(_parse_header_line(line))
                elif section == "filter":
                    if line.startswith("LABEL"):
                        rules.append(Rule(line[5:].strip()))
                    elif not rules:
                        raise RecipeError("criterion before any LABEL")
                    else:
                        rules[-1].terms.extend(_parse_criteria(line, first=not rules[-1].terms))
                else:
                    raise RecipeError("content outside a section")
            except RecipeError as exc:
                raise RecipeError(f"line {number}: {exc}") from None
        return recipe

    # -- header ----------------------------------------------------------
    def keep_tags(self) -> frozenset:
        """Tags the profile must leave untouched (KEEP, and JITTER which shifts the original)."""
        return frozenset(a.tag for a in self.header if a.action in ("KEEP", "JITTER"))

    def apply_header(self, ds, ids, options=None) -> None:
        """Apply the header actions to the top level of ``ds`` (after the profile)."""
        for item in self.header:
            tag, action = item.tag, item.action
            if action == "KEEP":
                continue
            if action == "REMOVE":
                if tag in ds:
                    del ds[tag]
            elif action == "BLANK":
                if tag in ds:
                    vr = ds[tag].VR
                    ds[tag] = DataElement(tag, vr, empty_value(vr))
            elif action in ("ADD", "REPLACE"):
                if action == "REPLACE" and tag not in ds:
                    continue
                vr = ds[tag].VR if tag in ds else (dictionary_VR(tag) if dictionary_has_tag(tag) else "LO")
                ds[tag] = DataElement(tag, vr, _typed(vr, _resolve(item.value, ids)))
            elif action == "JITTER":
                if tag not in ds:
                    continue
                vr = ds[tag].VR
                if vr not in ("DA", "DT"):
                    continue
                days = int(_resolve(item.value, ids)) if item.value else int(ids.jitter)
                try:
                    new = shift_value(vr, _text(ds, tag) or "", days)
                except InvalidDate:
                    new = ""
                ds[tag] = DataElement(tag, vr, new)

    def __repr__(self):
        return f"Recipe(header={len(self.header)} actions, filters={ {k: len(v) for k, v in self.filters.items()} })"


def _resolve(value: str, ids) -> str:
    if value.startswith("var:"):
        name = value[4:]
        if name not in ("patient_suid", "study_suid", "jitter"):
            raise RecipeError(f"unknown variable {name!r}")
        return str(getattr(ids, name))
    return value


def _typed(vr: str, value: str):
    if vr in _INT_VRS:
        return int(value)
    if vr in _FLOAT_VRS:
        return float(value)
    return value


def _parse_header_line(line: str) -> HeaderAction:
    words = line.split(None, 2)
    action = words[0].upper()
    if action not in HEADER_ACTIONS:
        raise RecipeError(f"unknown header action {words[0]!r}")
    if len(words) < 2:
        raise RecipeError(f"{action} needs a field")
    value = words[2].strip() if len(words) > 2 else ""
    if action in ("ADD", "REPLACE") and not value:
        raise RecipeError(f"{action} needs a value")
    if action == "JITTER" and value and not value.startswith("var:"):
        try:
            int(value)
        except ValueError:
            raise RecipeError("JITTER takes a whole number of days") from None
    return HeaderAction(action, parse_field(words[1]), words[1], value)


def _parse_criteria(line: str, first: bool) -> list:
    """Split a criteria line at ``+`` / ``||`` that precede a criterion keyword."""
    tokens = line.split()
    terms, operator, current = [], None, []
    if tokens[0] in ("+", "||"):
        operator, tokens = tokens[0], tokens[1:]
    elif not first:
        operator = "||"  # a bare new line inside a rule starts an alternative
    for i, token in enumerate(tokens):
        if token in ("+", "||") and i + 1 < len(tokens) and tokens[i + 1].lower() in CRITERIA:
            terms.append((operator, _criterion(current)))
            operator, current = token, []
        else:
            current.append(token)
    terms.append((operator, _criterion(current)))
    return terms


def _criterion(tokens: list) -> Criterion:
    if not tokens:
        raise RecipeError("empty criterion")
    kind = tokens[0].lower()
    if kind not in CRITERIA:
        raise RecipeError(f"unknown criterion {tokens[0]!r}")
    if len(tokens) < 2:
        raise RecipeError(f"{kind} needs a field")
    value = " ".join(tokens[2:])
    if kind not in VALUELESS and not value:
        raise RecipeError(f"{kind} needs a value")
    if kind in ("contains", "notcontains"):
        try:
            re.compile(value)
        except re.error:
            raise RecipeError("invalid regular expression") from None
    return Criterion(kind, parse_field(tokens[1]), tokens[1], value)
