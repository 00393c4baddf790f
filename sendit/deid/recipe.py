"""Recipes in the pydicom/deid format, applied with deid's own semantics.

A recipe is a text file in deid's format (https://pydicom.github.io/deid/)::

    FORMAT dicom

    %filter graylist
    LABEL Clean Ultrasound Regions
      equals Modality US + present SequenceOfUltrasoundRegions
      keepcoordinates from:SequenceOfUltrasoundRegions

    %values cookie_names
    SPLIT PatientName by="^";minlength=4

    %header
    ADD PatientIdentityRemoved YES
    REPLACE PatientID var:patient_suid
    REMOVE endswith:Date
    REMOVE values:cookie_names
    JITTER StudyDate 10
    KEEP SeriesDescription

The header actions (``ADD``, ``REPLACE``, ``JITTER``, ``REMOVE``, ``BLANK``,
``KEEP``) run in the order written, each on every element its field expression
matches at any depth, with deid's rules of interaction: an element a ``KEEP``
names is out of reach of every other action, and ``REMOVE`` spares an element that a
``REPLACE`` or ``JITTER`` names. Field expressions are keywords, tags
(``(0010,0010)``, ``00100010``), private-creator tags
(``(0033,"CREATOR",1E)``), nested paths (``(0008,1115)__0__(0008,1155)``),
``ALL``, the expanders ``contains:``, ``startswith:``, ``endswith:``, ``except:``
(regular expressions on the name, keyword and tag), ``select:VR:PN`` /
``select:group:0010``, and ``fields:NAME`` / ``values:NAME`` for the lists of
``%fields`` / ``%values`` sections. Values are text, ``var:NAME`` (sendit gives
``patient_suid``, ``study_suid`` and ``jitter``), ``func:NAME`` (a function the
site registers with :func:`register_function`, or one of sendit's:
``hashuid``, ``is_true``, ``is_false``) or ``deid_func:NAME [key=value ...]``
(deid's built-in ``jitter``, ``pydicom_uuid``, ``dicom_uuid``, ``basic_uuid``,
``suffix_uuid``).

``%filter`` rules (``LABEL`` blocks) are deid's: criteria ``contains``,
``notcontains``, ``equals``, ``notequals``, ``missing``, ``present``, ``empty``
on top-level fields, joined by ``+`` / ``||`` inside a line; the lines of a rule
must all hold; ``coordinates``, ``keepcoordinates``, ``ctpcoordinates`` and
``ctpkeepcoordinates`` give the pixel regions a match cleans or keeps.

Where sendit refuses what deid would ignore (a misspelt action or criterion, an
action in lower case, an unknown variable or function, a value the named
attribute cannot hold) the recipe does not load, and the error names the line.
Where deid would leave a value as it was because an action cannot be carried out
(``JITTER`` on a value that is not a date, ``REPLACE`` with a value the element
cannot hold), sendit removes the element and records a note: a recipe never makes an
identifying value survive by accident. docs/deidentify.md lists each difference.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from sendit.deid.values import as_text

SECTIONS = ("header", "labels", "filter", "values", "fields")
NAMED_SECTIONS = ("filter", "values", "fields")
HEADER_ACTIONS = ("ADD", "BLANK", "JITTER", "KEEP", "REPLACE", "REMOVE")
VALUED_ACTIONS = ("ADD", "REPLACE", "JITTER")
CRITERIA = ("contains", "notcontains", "equals", "notequals", "missing", "present", "empty")
VALUELESS = ("missing", "present", "empty")
COORDINATE_WORDS = ("ctpcoordinates", "ctpkeepcoordinates", "coordinates", "keepcoordinates")
EXPANDERS = ("contains", "startswith", "endswith", "except", "select")
#: variables sendit gives every image (from its identifiers): the pseudonyms and jitter, and
#: the names deid's shipped recipes use for them (entity = patient, item = study; the
#: timestamps are the birth date and study date shifted by the jitter)
VARIABLES = ("patient_suid", "study_suid", "jitter", "entity_id", "item_id", "entity_timestamp", "item_timestamp")
#: elements deid never offers to a header action (pixel and look-up data, the transfer syntax)
SKIPPED_KEYWORDS = frozenset(
    {
        "PixelData",
        "RedPaletteColorLookupTableData",
        "GreenPaletteColorLookupTableData",
        "BluePaletteColorLookupTableData",
        "VOILUTSequence",
        "FileMetaInformationGroupLength",
        "FileMetaInformationVersion",
        "TransferSyntaxUID",
        "ImplementationClassUID",
    }
)
_WORDS_RE = re.compile(r"""(?:[^\s"']+|"(?:\\.|[^"])*"|'(?:\\.|[^'])*')+""")
_EXPANDER_RE = re.compile(r'^([^:"]*(?:"[^"]*"[^:"]*)*):(.*)$')
_PAREN_TAG_RE = re.compile(r"^\(([0-9A-Fa-f]{4}),\s*([0-9A-Fa-f]{4})\)$")
_BARE_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
_INT_VRS = frozenset({"SL", "SS", "SV", "UL", "US", "UV"})
_FLOAT_VRS = frozenset({"FL", "FD"})
_BYTE_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


class RecipeError(ValueError):
    """A recipe that cannot be loaded or applied; the message names the line."""


# -- the parsed recipe -----------------------------------------------------------------
@dataclass(frozen=True)
class Action:
    """One header line, e.g. ``REPLACE PatientID var:patient_suid`` (line ``line``)."""

    action: str
    field: str
    value: str | None = None
    line: int = 0


def label_title(label: str) -> str:
    """A rule's label as a person reads it: deid keeps the word LABEL in the name it stores."""
    return re.sub(r"^LABEL\s*", "", label, flags=re.I)


@dataclass
class FilterLine:
    """One line of a rule: criteria joined by ``and`` / ``or`` (deid's inner operators)."""

    operator: str | None  # the + or || that started the line (deid ignores it)
    criteria: list[tuple[str, str, str | None]]  # [(kind, field, value)]
    inner: list[str]  # operators between the criteria


#: a rule's pixel region as written: [0 blank | 1 keep, "x0,y0,x1,y1" | "all" | "from:Keyword"]
RuleRegion = list[int | str]
#: a matched rule's pixel region: as written, a ``from:`` read from the image (a list of boxes)
MatchRegion = list[int | str | list[str]]


@dataclass
class Rule:
    """A ``LABEL`` block: its lines and the pixel regions a match names."""

    label: str
    lines: list[FilterLine] = field(default_factory=list)
    coordinates: list[RuleRegion] = field(
        default_factory=list
    )  # [[0 blank | 1 keep, "x0,y0,x1,y1" | "all" | "from:..."]]

    @property
    def title(self) -> str:
        return label_title(self.label)

    def matches(self, ds: Dataset) -> bool:
        if not self.lines:
            return bool(self.coordinates)
        return all(_line_holds(line, ds) for line in self.lines)


@dataclass
class Match:
    """A rule that matched an image: filter name, label and pixel regions."""

    group: str
    label: str
    coordinates: list[MatchRegion]

    @property
    def title(self) -> str:
        return label_title(self.label)


@dataclass
class Applied:
    """What :meth:`Recipe.apply` did to one dataset.

    ``named`` holds the elements the recipe decided (kept, replaced, jittered, blanked,
    added), by identity: the profile leaves them as the recipe left them. ``notes``
    say where sendit went beyond deid to keep a value from surviving.
    """

    named: dict[int, DataElement] = field(default_factory=dict)  # id(element) -> element
    kept_tags: set[int] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


# -- functions -------------------------------------------------------------------------
#: a ``func:`` / ``deid_func:`` function: keyword arguments in, an element value (any) out
Function = Callable[..., Any]
_SITE_FUNCTIONS: dict[str, Function] = {}


def register_function(name: str, function: Function) -> None:
    """Make ``func:NAME`` available to recipes. ``function(dicom=, value=, field=, item=)``
    returns the new value (``ADD``/``REPLACE``/``JITTER``) or whether to act (``REMOVE``)."""
    _SITE_FUNCTIONS[name] = function


def _keyvalues(extras: str) -> dict[str, Any]:
    """``key=value`` pairs after a deid_func name, as deid reads them (text, True, False or None)."""
    values: dict[str, Any] = {}
    for pair in extras.split(" "):
        if "=" in pair:
            key, value = pair.split("=", 1)
            value = value.strip()
            values[key.strip()] = {"true": True, "false": False, "none": None, "null": None}.get(value, value)
    return values


def _deid_jitter(field: Field, extras: str, **_: object) -> str | bytes | None:
    opts = _keyvalues(extras)
    days = int(opts.get("days", 1)) + 365 * int(opts.get("years", 0))
    return jitter_value(field.element, days)


def _pydicom_uuid(field: Field, extras: str, **_: object) -> str:
    opts = _keyvalues(extras)
    prefix = opts.get("prefix", "2.25.")
    entropy = [str(field.element.value)] if opts.get("stable_remapping", True) is True and prefix else []
    return generate_uid(prefix=prefix, entropy_srcs=entropy or None)


def _dicom_uuid(field: Field, extras: str, **_: object) -> str:
    root = _keyvalues(extras).get("org_root", "anonymous-organization")
    return (f"{root}.{uuid.uuid4().int}")[:64]


def _suffix_uuid(field: Field, **_: object) -> str:
    return f"{field.name.lower()}-{uuid.uuid4()}"


DEID_FUNCTIONS: dict[str, Function] = {
    "jitter": _deid_jitter,
    "pydicom_uuid": _pydicom_uuid,
    "dicom_uuid": _dicom_uuid,
    "basic_uuid": lambda **_: str(uuid.uuid4()),
    "suffix_uuid": _suffix_uuid,
}


def builtin_functions(uid_secret: bytes | None = None, uid_root: str = "2.25.") -> dict[str, Function]:
    """The ``func:`` functions sendit gives every recipe: ``hashuid`` maps a UID the way the
    profile does (so references stay consistent), ``is_true`` / ``is_false`` for conditions."""

    def hashuid(field: Field | None = None, **_: object) -> str:
        if not uid_secret:
            raise RecipeError("func:hashuid needs the node's DEID_SECRET")
        from sendit.deid.uids import map_uids

        value = "" if field is None else as_text(field.element.value)
        return map_uids(value, uid_secret, uid_root) if value else value

    return {"is_true": lambda **_: True, "is_false": lambda **_: False, "hashuid": hashuid}


# -- dates -----------------------------------------------------------------------------
_DA_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DT_RE = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")


class CannotJitter(ValueError):
    """A value JITTER cannot shift (not a DA/DT date)."""


def jitter_value(element: DataElement, days: int) -> str | bytes | None:
    """The element's date(s) shifted by ``days``, written as deid writes them
    (``YYYYMMDD``; DT as ``YYYYMMDDHHMMSS.ffffff`` with its offset), bytes when the value was
    bytes; None when empty."""
    value = element.value
    if not value:
        return None
    many = isinstance(value, (list, tuple, MultiValue))
    out: list[str] = []
    for text in list(value) if many else [value]:
        text = as_text(text).strip()
        vr = element.VR
        if vr not in ("DA", "DT"):
            # deid shifts any value that reads as a date (a private date kept as LO or UN);
            # sendit only the strict DICOM forms, never a guess from a free text
            vr = "DA" if _DA_RE.match(text) else "DT" if re.match(r"\d{14}", text) and _DT_RE.match(text) else vr
        if vr == "DA":
            match = _DA_RE.match(text)
            if not match:
                raise CannotJitter("not a date")
            try:
                year, month, day = map(int, match.groups())
                moved = datetime(year, month, day) + timedelta(days=days)
            except ValueError:
                raise CannotJitter("not a date") from None
            out.append(moved.strftime("%Y%m%d"))
        elif vr == "DT":
            match = _DT_RE.match(text)
            if not match:
                raise CannotJitter("not a date-time")
            y, mo, d, h, mi, s, frac, zone = match.groups()
            try:
                moved = datetime(
                    int(y),
                    int(mo or 1),
                    int(d or 1),
                    int(h or 0),
                    int(mi or 0),
                    int(s or 0),
                    int(((frac or ".0")[1:] + "000000")[:6]),
                ) + timedelta(days=days)
            except ValueError:
                raise CannotJitter("not a date-time") from None
            out.append(moved.strftime("%Y%m%d%H%M%S.%f") + (zone or ""))
        else:
            raise CannotJitter(f"{element.VR} is not a date")
    if isinstance(value, bytes):
        return "\\".join(out).encode("ascii")
    return "\\".join(out)


# -- fields ----------------------------------------------------------------------------
class Field:
    """An element of the dataset as deid sees it: its nested name and its unique path."""

    __slots__ = ("element", "parent", "name", "uid", "is_meta", "removed", "_keys")

    def __init__(self, element: DataElement, parent: Dataset, name: str, uid: str, is_meta: bool) -> None:
        self.element, self.parent, self.name, self.uid, self.is_meta = element, parent, name, uid, is_meta
        self.removed = False
        self._keys: list[str] | None = None

    @property
    def stripped_tag(self) -> str:
        return f"{self.element.tag:08X}"

    def keys(self) -> list[str]:
        """The lower-case names an exact field expression can give for this element."""
        if self._keys is None:
            elem = self.element
            tag = elem.tag
            name, keyword = _names(elem)
            keys = [
                self.name.lower(),
                f"({tag.group:04x},{tag.element:04x})",
                self.stripped_tag.lower(),
                name.lower(),
                keyword.lower(),
                self.uid.lower(),
            ]
            creator = _creator(elem)
            if creator is not None:
                private = f'{tag.group:04X},"{creator}",{tag.element & 0xFF:02X}'.lower()
                keys += [f"({private})", private]
            self._keys = keys
        return self._keys

    def name_matches(self, pattern: re.Pattern[str]) -> bool:
        """Whether ``pattern`` finds the nested name, tag, name or keyword (deid's
        name_contains). It depends on nothing but those, so the answer is kept across images."""
        elem = self.element
        creator = _creator(elem)
        key = (pattern.pattern, self.name, elem.tag, creator)
        found = _MATCHES.get(key)
        if found is None:
            tag = elem.tag
            name, keyword = _names(elem)
            found = bool(
                pattern.search(self.name.lower())
                or pattern.search(f"({tag.group:04x},{tag.element:04x})")
                or pattern.search(self.stripped_tag)
                or pattern.search(name)
                or pattern.search(keyword)
            )
            if not found and creator is not None:
                private = f'{tag.group:04X},"{creator}",{tag.element & 0xFF:02X}'
                found = bool(pattern.search(private) or pattern.search(f"({private})"))
            if len(_MATCHES) > 500_000:
                _MATCHES.clear()
            _MATCHES[key] = found
        return found


_MATCHES: dict[tuple[str, str, int, str | None], bool] = {}  # (pattern, name, tag, creator)
_NAMES: dict[int, tuple[str, str]] = {}


def _names(elem: DataElement) -> tuple[str, str]:
    """(name, keyword) of an element; a public tag's are looked up in the dictionary once."""
    tag = elem.tag
    if tag.is_private:
        return elem.name, elem.keyword
    names = _NAMES.get(tag)
    if names is None:
        names = _NAMES[tag] = (elem.name, elem.keyword)
    return names


def _creator(elem: DataElement) -> str | None:
    return elem.private_creator if elem.tag.is_private else None


class Fields:
    """Every element of a dataset (file meta included) at every depth, with deid's names,
    and an index from each exact name to the fields it gives."""

    def __init__(self, ds: Dataset, skip_tags: frozenset[int] = frozenset(), protect: bool = True) -> None:
        self.by_uid: dict[str, Field] = {}
        skipped: frozenset[str] = SKIPPED_KEYWORDS if protect else frozenset()
        self.index: dict[str, list[Field]] = {}
        # (dataset, its nested name, its unique path, whether it is the file meta)
        pending: list[tuple[Dataset, str | None, str | None, bool]] = [(ds, None, None, False)]
        meta = getattr(ds, "file_meta", None)
        if meta:
            pending.append((meta, None, None, True))
        while pending:
            dataset, prefix, parent_uid, is_meta = pending.pop(0)
            for elem in dataset:
                keyword = elem.keyword
                if keyword in skipped or elem.tag in skip_tags:
                    continue
                name = keyword if prefix is None else f"{prefix}__{keyword}"
                uid = str(elem.tag) if parent_uid is None else f"{parent_uid}__{elem.tag}"
                self.add(Field(elem, dataset, name, uid, is_meta))
                if elem.VR == "SQ" and isinstance(elem.value, Sequence):
                    for number, item in enumerate(elem.value):
                        pending.append((item, name, f"{uid}__{number}", is_meta))

    def add(self, f: Field) -> None:
        old = self.by_uid.get(f.uid)
        if old is not None:
            self.drop(old)
        self.by_uid[f.uid] = f
        for key in f.keys():
            self.index.setdefault(key, []).append(f)

    def drop(self, f: Field) -> None:
        """Forget ``f`` and, when it is a sequence, everything inside it."""
        prefix = f.uid + "__"
        for other in [f, *[o for uid, o in self.by_uid.items() if uid.startswith(prefix)]]:
            other.removed = True
            self.by_uid.pop(other.uid, None)
            for key in other.keys():
                listed = self.index.get(key)
                if listed and other in listed:
                    listed.remove(other)

    def drop_children(self, f: Field) -> None:
        prefix = f.uid + "__"
        for other in [o for uid, o in self.by_uid.items() if uid.startswith(prefix)]:
            self.drop(other)

    def live(self) -> list[Field]:
        return list(self.by_uid.values())


def expand(expression: str, fields: Fields) -> list[Field]:
    """The fields a field expression names, in dataset order (deid's expand_field_expression)."""
    if expression.lower() == "all":
        return fields.live()
    split = _EXPANDER_RE.match(expression)
    if split is None:
        seen: set[str] = set()
        found: list[Field] = []
        for f in fields.index.get(expression.lower(), ()):
            if f.uid not in seen:
                seen.add(f.uid)
                found.append(f)
        return found
    expander, pattern = split.group(1).lower(), split.group(2).lower()
    if expander == "select":
        attribute, _, wanted = pattern.partition(":")
        if attribute == "vr":
            return [f for f in fields.live() if f.element.VR == wanted[:2].upper()]
        if attribute == "group":
            group = int(wanted, 16)
            return [f for f in fields.live() if f.element.tag.group == group]
        return []
    if expander == "endswith":
        pattern = f"({pattern})$"
    elif expander == "startswith":
        pattern = f"^({pattern})"
    if expander not in EXPANDERS:
        return []
    compiled = re.compile(pattern, re.IGNORECASE)
    if expander == "except":
        return [f for f in fields.live() if not f.name_matches(compiled)]
    return [f for f in fields.live() if f.name_matches(compiled)]


# -- the recipe ------------------------------------------------------------------------
class Recipe:
    """A parsed recipe: header actions, filters, and the %values / %fields lists."""

    def __init__(self, source: str = "<recipe>") -> None:
        self.source = source
        self.header: list[Action] = []
        self.filters: dict[str, list[Rule]] = {}
        self.values_lists: dict[str, list[tuple[str, str, str | None]]] = {}
        self.fields_lists: dict[str, list[tuple[str, str, str | None]]] = {}
        self.warnings: list[str] = []
        self.functions: dict[str, Function] = {}
        self.variables: tuple[str, ...] = VARIABLES
        self._keep_tags: frozenset[int] | None = None

    # loading --------------------------------------------------------------------------
    @classmethod
    def load(
        cls, name_or_path: str, functions: Mapping[str, Function] | None = None, variables: Iterable[str] = VARIABLES
    ) -> Recipe:
        """A recipe file, or one of deid's shipped recipes by name (``deid.dicom``,
        ``deid.dicom.ultrasound``, ``deid.dicom.xray.chest``)."""
        path = Path(name_or_path)
        if not path.exists():
            path = shipped_recipe(str(name_or_path))
        return cls.from_file(path, functions=functions, variables=variables)

    @classmethod
    def from_file(
        cls, path: str | Path, functions: Mapping[str, Function] | None = None, variables: Iterable[str] = VARIABLES
    ) -> Recipe:
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecipeError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise RecipeError(f"{path}: {exc.strerror}") from None
        return cls.from_text(text, source=str(path), functions=functions, variables=variables)

    @classmethod
    def from_text(
        cls,
        text: str,
        source: str = "<recipe>",
        functions: Mapping[str, Function] | None = None,
        variables: Iterable[str] = VARIABLES,
    ) -> Recipe:
        """Parse ``text``; ``functions`` and ``variables`` name what ``func:`` and ``var:``
        may use (a name the recipe uses that is not among them is an error)."""
        recipe = cls(source)
        recipe.functions = {**builtin_functions(), **_SITE_FUNCTIONS, **(functions or {})}
        recipe.variables = tuple(variables)
        _Parser(recipe).parse(text)
        if not (recipe.header or recipe.filters):
            raise RecipeError(f"{source}: the recipe has no %header actions and no %filter rules")
        return recipe

    # header ---------------------------------------------------------------------------
    def keep_tags(self) -> frozenset[int]:
        """Top-level tags a plain ``KEEP keyword`` / ``KEEP tag`` names (for code that must
        know before a dataset is seen, such as the profile's overlay rule); worked out once,
        as the recipe does not change once read."""
        if self._keep_tags is None:
            keeps = (plain_tag(a.field) for a in self.header if a.action == "KEEP")
            self._keep_tags = frozenset(tag for tag in keeps if tag is not None)
        return self._keep_tags

    def kept_tags(self, ds: Dataset) -> set[int]:
        """Tags of the elements of ``ds`` that the recipe's KEEP lines name (at any depth)."""
        keeps = [a for a in self.header if a.action == "KEEP"]
        if not keeps:
            return set()
        fields = Fields(ds)
        return {f.element.tag for a in keeps for f in expand(a.field, fields)}

    def apply(
        self,
        ds: Dataset,
        variables: Mapping[str, object] | None = None,
        functions: Mapping[str, Function] | None = None,
        spare: Callable[[int, str], str | None] | None = None,
        protect: bool = True,
    ) -> Applied:
        """Apply the header actions to ``ds`` in place, as deid's DicomParser would.

        ``spare(tag, expression)`` lets the caller keep an element a ``REMOVE`` names
        present (``expression`` is the field expression that matched it): ``"empty"``
        empties it (and the recipe names it), ``"profile"`` leaves it to the caller's
        profile; None removes it as deid does. ``protect=False`` offers pixel data, look-up
        tables and the transfer syntax to the actions too (deid's ``disable_skip``).
        """
        functions = {**self.functions, **(functions or {})}
        return _Apply(self, ds, variables or {}, functions, spare, protect).run()

    # filters --------------------------------------------------------------------------
    def detect(self, ds: Dataset) -> list[Match]:
        """Every rule that matches ``ds``, in recipe order (deid's has_burned_pixels)."""
        found: list[Match] = []
        for group, rules in self.filters.items():
            for rule in rules:
                if rule.matches(ds):
                    found.append(
                        Match(
                            group,
                            rule.label,
                            [[mask, _regions_from(ds, str(coordinate))] for mask, coordinate in rule.coordinates],
                        )
                    )
        return found

    def __repr__(self) -> str:
        return f"Recipe({self.source!r}: {len(self.header)} actions, filters {list(self.filters)})"


_REGION_KEYWORDS = ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1")


def region_locations(ds: Dataset, keyword: str) -> list[str]:
    """The ``x0,y0,x1,y1`` Region Location boxes of the items of ``keyword`` in ``ds`` (or
    of the one dataset it holds) that carry all four values, as deid reads ``from:``;
    none when ``keyword`` is absent."""
    if keyword not in ds:
        return []
    value = ds[keyword].value
    items = list(value) if isinstance(value, Sequence) else [value]
    return [
        ",".join(str(item[k].value) for k in _REGION_KEYWORDS)
        for item in items
        if isinstance(item, Dataset) and all(k in item for k in _REGION_KEYWORDS)
    ]


def _regions_from(ds: Dataset, coordinate: str) -> str | list[str]:
    """A rule's coordinate with ``from:Keyword`` read from ``ds``; other coordinates as written."""
    return region_locations(ds, coordinate[5:]) if coordinate.startswith("from:") else coordinate


def shipped_recipe(name: str) -> Path:
    """The file of one of the recipes deid ships (``deid.dicom`` or ``dicom``, ...), read from
    the installed deid package (a dependency for these files alone: it is never imported)."""
    from importlib.util import find_spec

    spec = find_spec("deid")
    if spec is None or not spec.submodule_search_locations:
        raise RecipeError(f"{name}: no such recipe file, and the deid package is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    path = folder / (name if name.startswith("deid.") else f"deid.{name}")
    if "/" in name or not path.is_file():
        shipped = sorted(p.name for p in folder.glob("deid.*"))
        raise RecipeError(f"{name}: no such recipe file nor shipped recipe ({', '.join(shipped)})")
    return path


def plain_tag(expression: str) -> int | None:
    """The tag of a keyword or ``(gggg,eeee)`` / ``ggggeeee`` expression; None for others."""
    match = _PAREN_TAG_RE.match(expression)
    if match:
        return int(match.group(1) + match.group(2), 16)
    if _BARE_TAG_RE.match(expression):
        return int(expression, 16)
    return tag_for_keyword(expression)


def _line_holds(line: FilterLine, ds: Dataset) -> bool:
    flags = [_criterion(kind, name, value, ds) for kind, name, value in line.criteria]
    result = flags[0]
    for operator, flag in zip(line.inner, flags[1:]):
        result = (flag and result) if operator == "and" else (flag or result)
    return result


def _peek(ds: Dataset, key: str | int) -> Any:
    """What ``ds.get(key)`` gives (a keyword: the value; a tag: the element) without
    converting a raw element in ``ds``: a filter only reads, and the file is written from
    the same dataset."""
    if isinstance(key, str):
        tag = tag_for_keyword(key)
        if tag is None:
            return ds.get(key)
    else:
        tag = key
    elem = ds.get_item(tag)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement):
        elem = convert_raw_data_element(elem, encoding=getattr(ds, "_character_set", None), ds=ds)
    return elem.value if isinstance(key, str) else elem


def _criterion(kind: str, name: str, value: str | None, ds: Dataset) -> bool:
    """One criterion, on the top-level value as pydicom's ``Dataset.get`` gives it."""
    key = int(name, 0) if "0x" in name else name
    try:
        content = _peek(ds, key)
    except Exception:  # a value pydicom cannot convert counts as absent
        content = None
    if kind == "missing":
        return content is None
    if kind == "present":
        return content is not None
    if kind == "empty":
        if key not in ds:
            return False
        if isinstance(content, DataElement):
            content = content.value
        return not content or content == ""
    if content is None:
        found = False
    else:
        text, term = str(content).lower().strip(), str(value).lower().strip()
        found = text == term if kind in ("equals", "notequals") else re.search(term, text) is not None
    return not found if kind.startswith("not") else found


# -- parsing -----------------------------------------------------------------------------
class _Parser:
    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.section: str | None = None
        self.name: str | None = None

    def error(self, number: int, message: str) -> RecipeError:
        return RecipeError(f"{self.recipe.source}, line {number}: {message}")

    def parse(self, text: str) -> None:
        lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        i = 0
        while i < len(lines):
            number, line = lines[i]
            i += 1
            if line.startswith("#"):
                continue
            if re.match("^format", line, re.I):
                fmt = re.sub(r"FORMAT|\s+", "", line.split("#")[0]).lower()
                if fmt != "dicom":
                    raise self.error(number, f"format {fmt!r}: only FORMAT dicom is supported")
            elif line.startswith("%"):
                self.start_section(number, line)
            elif self.section in ("values", "fields") and line.upper().startswith(("FIELD", "SPLIT")):
                self.group_line(number, line)
            elif line.upper().startswith("LABEL") and self.section == "filter":
                members = []
                while i < len(lines) and not lines[i][1].upper().startswith(("LABEL", "%")):
                    members.append(lines[i])
                    i += 1
                self.label(number, line, members)
            elif line.upper().startswith(HEADER_ACTIONS):
                self.header_line(number, line)
            else:
                raise self.error(
                    number, f"not a recipe line: {line.split()[0]!r} (expected an action, a section or a filter LABEL)"
                )

    def start_section(self, number: int, line: str) -> None:
        line = line.split("#", 1)[0].strip()
        parts = line.split(" ")
        section = re.sub(r"[%]|\s+", "", parts[0]).lower()
        name = " ".join(parts[1:]) or None
        if section not in SECTIONS:
            raise self.error(number, f"unknown section %{section} (sections: {', '.join(SECTIONS)})")
        if section in NAMED_SECTIONS and name is None:
            raise self.error(number, f"%{section} needs a name")
        self.section, self.name = section, name
        if name is None:  # a named section has its name (checked above)
            return
        if section == "filter":
            self.recipe.filters.setdefault(name, [])
        elif section == "values":
            self.recipe.values_lists.setdefault(name, [])
        elif section == "fields":
            self.recipe.fields_lists.setdefault(name, [])

    def section_name(self, number: int) -> str:
        """The name of the %filter, %values or %fields section being read (each has one)."""
        if self.name is None:
            raise self.error(number, f"%{self.section} needs a name")
        return self.name

    def group_line(self, number: int, line: str) -> None:
        words = _WORDS_RE.findall(line)
        action = words[0]
        if action not in ("FIELD", "SPLIT"):
            raise self.error(number, f"write {action.upper()} in capitals")
        if action == "SPLIT" and self.section == "fields":
            raise self.error(number, "%fields takes FIELD lines only")
        if len(words) < 2:
            raise self.error(number, f"{action} needs a field")
        value = " ".join(words[2:]).split("#")[0].strip() or None if len(words) > 2 else None
        if action == "SPLIT" and value:
            for param in value.split(";"):
                key, sep, setting = param.partition("=")
                if not sep or key.strip() not in ("by", "minlength"):
                    raise self.error(number, f"SPLIT takes by=... and minlength=N, not {param!r}")
                if key.strip() == "minlength" and not setting.strip().isdigit():
                    raise self.error(number, "minlength takes a whole number")
        self.check_field(number, words[1])
        target = self.recipe.values_lists if self.section == "values" else self.recipe.fields_lists
        target[self.section_name(number)].append((action, words[1], value))

    def header_line(self, number: int, line: str) -> None:
        if self.section != "header":
            raise self.error(number, "a header action outside %header")
        words = _WORDS_RE.findall(line)
        action = words[0]
        if action not in HEADER_ACTIONS:
            raise self.error(
                number,
                f"{action!r}: actions are written in capitals ({', '.join(HEADER_ACTIONS)}); deid would skip this line",
            )
        if len(words) < 2:
            raise self.error(number, f"{action} needs a field")
        value = " ".join(words[2:]).split("#")[0].strip() if len(words) > 2 else None
        if action in VALUED_ACTIONS and not value:
            raise self.error(number, f"{action} needs a value")
        if action in ("BLANK", "KEEP"):
            value = None
        field_name = words[1]
        self.check_field(number, field_name, action)
        if value:
            self.check_value(number, action, field_name, value)
        self.recipe.header.append(Action(action, field_name, value or None, number))

    def check_field(self, number: int, expression: str, action: str | None = None) -> None:
        if expression.lower() == "all" or expression.startswith(("values:", "fields:")):
            if expression.startswith("values:") and expression[7:] not in self.recipe.values_lists:
                raise self.error(number, f"no %values section named {expression[7:]!r} before this line")
            if expression.startswith("fields:") and expression[7:] not in self.recipe.fields_lists:
                raise self.error(number, f"no %fields section named {expression[7:]!r} before this line")
            if action == "ADD":
                raise self.error(number, "ADD takes one attribute, not a list")
            return
        split = _EXPANDER_RE.match(expression)
        if split is not None:
            expander, pattern = split.group(1).lower(), split.group(2)
            if expander not in EXPANDERS:
                raise self.error(number, f"unknown field expander {split.group(1)!r}: ({', '.join(EXPANDERS)})")
            if action == "ADD":
                raise self.error(number, "ADD takes one attribute, not an expander")
            if expander == "select":
                attribute, _, wanted = pattern.lower().partition(":")
                if attribute not in ("vr", "group") or not wanted:
                    raise self.error(number, "select takes VR:xx or group:gggg")
                if attribute == "group" and not re.fullmatch("[0-9a-f]{1,4}", wanted):
                    raise self.error(number, "select:group takes a hexadecimal group")
                return
            try:
                re.compile(pattern)
            except re.error as exc:
                raise self.error(number, f"invalid regular expression: {exc}") from None
            return
        if action == "ADD" and plain_tag(expression) is None:
            raise self.error(number, f"ADD takes a keyword or a tag, not {expression!r}")
        if "__" in expression or expression.startswith("(") or _BARE_TAG_RE.match(expression):
            return
        if tag_for_keyword(expression) is None:
            self.recipe.warnings.append(
                f"{self.recipe.source}, line {number}: {expression!r} is no DICOM keyword; it matches only "
                "an element whose name is written that way"
            )

    def check_value(self, number: int, action: str, field_name: str, value: str) -> None:
        kind, _, option = value.partition(":")
        if kind.lower() == "var":
            if option not in self.recipe.variables:
                raise self.error(
                    number, f"unknown variable {option!r} (sendit gives {', '.join(self.recipe.variables)})"
                )
            return
        if kind.lower() == "func":
            if option not in self.recipe.functions:
                raise self.error(
                    number,
                    f"unknown function {option!r}: register it with "
                    "sendit.deid.recipe.register_function or DEID_FUNCTIONS",
                )
            return
        if kind.lower() == "deid_func":
            name = option.split(" ", 1)[0]
            if name not in DEID_FUNCTIONS:
                raise self.error(number, f"unknown deid function {name!r} ({', '.join(DEID_FUNCTIONS)})")
            return
        if action == "JITTER":
            try:
                int(float(value))
            except ValueError:
                raise self.error(number, "JITTER takes a number of days, var:, func: or deid_func:") from None
            return
        if action in ("ADD", "REPLACE"):
            tag = plain_tag(field_name)
            if tag is not None and dictionary_has_tag(tag):
                try:
                    _typed(dictionary_VR(tag), value)
                except ValueError:
                    raise self.error(
                        number,
                        f"{value!r} is not a valid {dictionary_VR(tag)} value for {keyword_for_tag(tag) or field_name}",
                    ) from None

    def label(self, number: int, line: str, members: list[tuple[int, str]]) -> None:
        rule = Rule(line.replace("label", "", 1).split("#")[0].strip())
        for member_number, member in members:
            low = member.lower()
            word = next((w for w in COORDINATE_WORDS if low.startswith(w)), None)
            if word is not None:
                raw = member[len(word) :].strip()
                try:
                    coordinate = _coordinate(raw, ctp=word.startswith("ctp"))
                except ValueError as exc:
                    raise self.error(member_number, str(exc)) from None
                rule.coordinates.append([1 if "keep" in word else 0, coordinate])
                continue
            operator = None
            if member.startswith("+"):
                operator, member = "and", member[1:].strip()
            elif member.startswith("||"):
                operator, member = "or", member[2:].strip()
            if member.startswith("#"):
                continue
            if not member.lower().startswith(CRITERIA):
                raise self.error(
                    member_number,
                    f"unknown filter criterion {member.split()[0]!r} ({', '.join(CRITERIA)}, or coordinates)",
                )
            try:
                rule.lines.append(_filter_line(member, operator))
            except ValueError as exc:
                raise self.error(member_number, str(exc)) from None
        self.recipe.filters[self.section_name(number)].append(rule)


def _coordinate(raw: str, ctp: bool) -> str:
    """A region as deid keeps it: ``x0,y0,x1,y1``, ``all`` or ``from:Keyword``."""
    if raw == "all" or raw.startswith("from:"):
        if raw.startswith("from:") and tag_for_keyword(raw[5:]) is None:
            raise ValueError(f"from: takes a keyword, not {raw[5:]!r}")
        return raw
    try:
        numbers = [int(x) for x in raw.split(",") if x]
    except ValueError:
        raise ValueError(f"coordinates are four whole numbers, all or from:Keyword, not {raw!r}") from None
    if len(numbers) != 4:
        raise ValueError(f"coordinates are four numbers, not {raw!r}")
    if ctp:
        x, y, width, height = numbers
        return f"{x},{y},{x + width},{y + height}"
    return raw


def _filter_line(member: str, operator: str | None) -> FilterLine:
    """Split a criteria line at the first ``+`` or ``||`` followed by another criterion."""
    criteria: list[tuple[str, str, str | None]] = []
    inner: list[str] = []
    pending = [member]
    while pending:
        part = pending.pop(0).strip()
        found = [(part.find(op), op) for op in ("||", "+") if op in part]
        if found:
            _, op = min(found)
            head, rest = part.split(op, 1)
            if any(word in rest for word in CRITERIA):
                pending.append(rest.strip())
                inner.append("or" if op == "||" else "and")
                part = head.strip()
        kind, _, rest = part.partition(" ")
        kind = kind.lower().strip()
        if kind not in CRITERIA:
            raise ValueError(f"unknown filter criterion {kind!r}")
        if kind in VALUELESS:
            name, value = rest.strip(), None
        else:
            name, _, value = rest.partition(" ")
            if not name or not value.strip():
                raise ValueError(f"{kind} needs a field and a value")
            value = value.strip()
            if kind in ("contains", "notcontains"):
                try:
                    re.compile(value.lower())
                except re.error as exc:
                    raise ValueError(f"invalid regular expression: {exc}") from None
        if not name:
            raise ValueError(f"{kind} needs a field")
        criteria.append((kind, name.strip(), value))
    return FilterLine(operator, criteria, inner)


# -- applying the header --------------------------------------------------------------------
def _typed(vr: str, value: object) -> object:
    """``value`` as pydicom wants it for ``vr`` (deid's conversion); ValueError if it cannot."""
    if not isinstance(value, str):
        return value
    if vr in _FLOAT_VRS:
        return float(value)
    if vr in _INT_VRS:
        return int(value)
    if vr in _BYTE_VRS:
        return value.encode("utf-8")
    if vr in ("DS", "IS"):
        for part in value.split("\\"):
            float(part) if vr == "DS" else int(part)
    return value


class _Apply:
    """One dataset under one recipe."""

    def __init__(
        self,
        recipe: Recipe,
        ds: Dataset,
        variables: Mapping[str, object],
        functions: Mapping[str, Function],
        spare: Callable[[int, str], str | None] | None = None,
        protect: bool = True,
    ) -> None:
        self.recipe, self.ds, self.variables, self.functions = recipe, ds, variables, functions
        self.spare = spare
        self.result = Applied()
        fields = Fields(ds, protect=protect)
        kept = {f.uid: f for a in recipe.header if a.action == "KEEP" for f in expand(a.field, fields)}
        # deid keeps by tag text: a kept top-level tag is out of reach at every depth
        self.skip = frozenset(f.element.tag for uid, f in kept.items() if "__" not in uid)
        for uid, f in kept.items():
            self.result.kept_tags.add(f.element.tag)
            if "__" not in uid:
                self.name(f.element)
        if self.skip:
            for f in fields.live():
                if not f.removed and f.element.tag in self.skip:
                    fields.drop(f)
        self.fields = fields
        self.values_lists: dict[str, list[object]] = {}  # "values:NAME" -> its values
        self.fields_lists: dict[str, list[Field]] = {}  # "fields:NAME" -> its fields

    def name(self, element: DataElement) -> None:
        self.result.named[id(element)] = element

    def error(self, action: Action, message: str) -> RecipeError:
        return RecipeError(f"{self.recipe.source}, line {action.line}: {message}")

    def run(self) -> Applied:
        for list_name, lines in self.recipe.values_lists.items():
            self.values_lists["values:" + list_name] = self.values_list(lines)
        for list_name, lines in self.recipe.fields_lists.items():
            self.fields_lists["fields:" + list_name] = self.fields_list(lines)
        for action in self.recipe.header:
            self.perform(action)
        return self.result

    # lists ------------------------------------------------------------------------------
    def values_list(self, lines: list[tuple[str, str, str | None]]) -> list[object]:
        values: list[object] = []
        for action, expression, setting in lines:
            for f in expand(expression, self.fields):
                value = f.element.value
                if action == "FIELD":
                    if value in ("", None):
                        continue
                    for item in value if isinstance(value, MultiValue) else [value]:
                        if item not in values:
                            values.append(item)
                else:
                    by, minimum = " ", 1
                    for param in (setting or "").split(";"):
                        key, _, val = param.partition("=")
                        if key.strip() == "minlength":
                            minimum = int(val)
                        elif key.strip() == "by":
                            by = val.strip().strip("'").strip('"')
                    for part in (str(value) or "").split(by):
                        if len(part) >= minimum and part not in values:
                            values.append(part)
        return values

    def fields_list(self, lines: list[tuple[str, str, str | None]]) -> list[Field]:
        found: dict[str, Field] = {}
        for _, expression, _ in lines:
            for f in expand(expression, self.fields):
                found[f.uid] = f
        return list(found.values())

    def targets(self, expression: str) -> list[Field]:
        if expression.startswith("values:"):
            values = [str(v) for v in self.values_lists.get(expression, [])]
            if not values:
                return []
            pattern = re.compile("(%s)" % "|".join(values), re.IGNORECASE)
            return [f for f in self.fields.live() if _value_matches(f.element.value, pattern)]
        if expression.startswith("fields:"):
            found: dict[str, Field] = {}
            for listed in self.fields_lists.get(expression, []):
                for f in expand(listed.stripped_tag, self.fields):
                    found[f.uid] = f
            return list(found.values())
        return expand(expression, self.fields)

    # actions ----------------------------------------------------------------------------
    def perform(self, action: Action) -> None:
        if action.action == "ADD":
            self.add(action)
            return
        if action.action == "KEEP":
            return
        for f in self.targets(action.field):
            if f.removed:
                continue
            if action.action == "REPLACE":
                self.replace(action, f)
            elif action.action == "JITTER":
                self.jitter(action, f)
            elif action.action == "REMOVE":
                self.remove(action, f)
            elif action.action == "BLANK":
                self.blank(f)

    def resolve(self, action: Action, f: Field | None) -> Any:
        """The value of ``action`` for field ``f`` (deid's parse_value); None for none."""
        value = action.value
        if value is None:  # the parser gives every action that is resolved a value
            raise self.error(action, f"{action.action} needs a value")
        kind, _, option = value.partition(":")
        kind = kind.lower()
        if kind == "var":
            return self.variables.get(option)
        if kind == "func":
            function = self.functions.get(option)
            if function is None:
                raise self.error(action, f"unknown function {option!r}")
            return function(dicom=self.ds, value=value, field=f, item=self.variables)
        if kind == "deid_func":
            name, _, extras = option.partition(" ")
            return DEID_FUNCTIONS[name](dicom=self.ds, value=value, field=f, item=self.variables, extras=extras)
        return value

    def add(self, action: Action) -> None:
        tag = plain_tag(action.field)
        existing = self.ds.get(tag) if tag is not None else None
        value = self.resolve(action, None)
        if value is None:
            self.result.notes.append(f"line {action.line}: ADD {action.value} gave no value: nothing added")
            return
        if tag is None:  # the parser refuses such a line
            raise self.error(action, f"ADD takes a keyword or a tag, not {action.field!r}")
        uid = str(Tag(tag))
        if uid in self.fields.by_uid:
            f = self.fields.by_uid[uid]
            self.set_value(action, f, value)
            return
        vr = dictionary_VR(tag) if dictionary_has_tag(tag) else (existing.VR if existing is not None else "ST")
        try:
            element = DataElement(tag, vr, _typed(vr, value) if isinstance(value, str) else value)
        except ValueError:
            raise self.error(action, f"the value is not a valid {vr} value") from None
        target = self.ds.file_meta if tag >> 16 == 2 and hasattr(self.ds, "file_meta") else self.ds
        target[tag] = element
        element = target[tag]
        self.name(element)
        name = element.keyword or f"{tag:08X}"
        self.fields.add(Field(element, target, name, str(element.tag), target is not self.ds))

    def set_value(self, action: Action, f: Field, value: object) -> None:
        element = f.element
        try:
            element.value = _typed(element.VR, value) if isinstance(value, str) else value
        except (ValueError, TypeError):
            self.drop(f, f"line {action.line}: {action.action} gave a value {element.VR} cannot hold: removed")
            return
        self.name(element)

    def replace(self, action: Action, f: Field) -> None:
        value = self.resolve(action, f)
        if value is None:
            self.drop(f, f"line {action.line}: REPLACE {action.value} gave no value: removed")
            return
        self.set_value(action, f, value)

    def jitter(self, action: Action, f: Field) -> None:
        if not f.element.value:
            return
        value = self.resolve(action, f)
        kind = (action.value or "").partition(":")[0].lower()
        if kind == "deid_func":
            new = value  # deid's jitter function shifts the field itself
        else:
            try:
                new = jitter_value(f.element, int(float(value)))
            except (CannotJitter, TypeError, ValueError):
                new = None
        if new in (None, ""):
            self.drop(
                f,
                f"line {action.line}: JITTER cannot shift {f.element.keyword or f.stripped_tag} "
                f"({f.element.VR}): removed",
            )
            return
        self.set_value(action, f, new)

    def remove(self, action: Action, f: Field) -> None:
        if action.value is not None:
            condition = self.resolve(action, f)
            if isinstance(condition, str) and action.value.partition(":")[0].lower() not in ("func", "deid_func"):
                try:
                    condition = _typed(f.element.VR, condition)
                except ValueError:
                    condition = None
            if not condition:
                return
        for other in self.recipe.header:
            if other.action in ("JITTER", "REPLACE"):
                if f.uid in self.excluded(other.field):
                    return
        how = self.spare(f.element.tag, action.field) if self.spare is not None and not f.is_meta else None
        if how == "empty":
            self.blank(f)
        elif how is None:
            self.delete(f)

    def excluded(self, expression: str) -> set[str]:
        return {x.uid for x in expand(expression, self.fields)}

    def blank(self, f: Field) -> None:
        element = f.element
        element.value = None if element.VR != "SQ" else Sequence()
        self.fields.drop_children(f)
        self.name(element)

    def delete(self, f: Field) -> None:
        if f.element.tag in f.parent:
            del f.parent[f.element.tag]
        self.fields.drop(f)

    def drop(self, f: Field, note: str) -> None:
        """Where deid would leave the original value: remove it (or, for an element the
        caller spares, empty it or leave it to the caller's profile), and say so."""
        how = self.spare(f.element.tag, "") if self.spare is not None and not f.is_meta else None
        if how == "empty":
            self.blank(f)
            note = note.replace(": removed", ": emptied")
        elif how == "profile":
            self.result.named.pop(id(f.element), None)
            note = note.replace(": removed", ": left to the profile")
        else:
            self.delete(f)
        self.result.notes.append(note)


def _value_matches(value: object, pattern: re.Pattern[str]) -> bool:
    values = value if isinstance(value, (list, MultiValue)) else [value]
    return any(pattern.search(str(v)) for v in values)
