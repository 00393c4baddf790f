"""Differential conformance: the same recipe cases through pydicom/deid (the oracle) and Sendit.

deid is run at test time, never replaced by recorded answers, so a deid upgrade or a change in
``sendit.deid.recipe`` shows up as a difference with a readable diff. Both sides start from the
same file read from disk (``pydicom.dcmread(path, force=True)``, as deid reads it).

Outcomes are compared as plain text: a header outcome is ``{path: "VR value"}`` over every
element at every depth (file meta under ``meta/``), a filter outcome is the ordered list of
matched rules ``(group, label, coordinates)``. An exception on either side is the outcome
``error`` (the exception's text is shown, not compared).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

# ----------------------------------------------------------------------------- inputs


def _deid_data(name: str) -> str:
    import deid_data

    return str(Path(deid_data.__file__).parent / "data" / name)


def _pydicom_data(name: str) -> str:
    from pydicom.data import get_testdata_file

    return str(get_testdata_file(name))


# Input files by short name; header cases use the small ones (deid rereads the file per case).
INPUTS: dict[str, Callable[[], str]] = {
    "ctbrain1": lambda: _deid_data("humans/ctbrain1.dcm"),  # private MITRA tags, sequences, dates
    "ctbrain2": lambda: _deid_data("humans/ctbrain2.dcm"),  # private sequences
    "ct_small": lambda: _pydicom_data("CT_small.dcm"),
    "mr_small": lambda: _pydicom_data("MR_small.dcm"),
    "rtplan": lambda: _pydicom_data("rtplan.dcm"),  # sequences three levels deep
    "rtstruct": lambda: _pydicom_data("rtstruct.dcm"),
    "us_grey": lambda: _deid_data("ultrasounds/GREYSCALE_IMAGE.dcm"),  # ultrasound regions
    "us_rgb": lambda: _deid_data("ultrasounds/RGB_IMAGE.dcm"),
    "us_multiframe": lambda: _deid_data("ultrasounds/ultrasound-multiframe.dcm"),
    "cat": lambda: _deid_data("animals/cat.dcm"),
    **{f"cookie{i}": (lambda i=i: _deid_data(f"dicom-cookies/image{i}.dcm")) for i in range(1, 8)},
    "jpeg2000": lambda: _pydicom_data("JPEG2000.dcm"),
    "priv_sq": lambda: _pydicom_data("priv_SQ.dcm"),
    "explvr_bigend": lambda: _pydicom_data("ExplVR_BigEnd.dcm"),
}


def input_path(name: str) -> str:
    return INPUTS[name]()


# ----------------------------------------------------------------------------- functions and variables
# One set of variables and functions for every case: deid gets them in its ``ids`` lookup (which is
# where deid resolves both var: and func:), Sendit gets ``variables=`` and ``functions=``. The
# variables are the ones Sendit's pipeline gives a recipe (the study's identifiers).

VARIABLES: dict[str, Any] = {
    "patient_suid": "PSUID01",
    "study_suid": "1.2.826.0.1.3680043.10.999.1",
    "jitter": -12,
}


def _is_true(dicom=None, value=None, field=None, item=None, **_: Any) -> bool:
    return True


def _is_false(dicom=None, value=None, field=None, item=None, **_: Any) -> bool:
    return False


def _modality_is_ct(dicom=None, value=None, field=None, item=None, **_: Any) -> bool:
    return str(dicom.get("Modality", "")).upper() == "CT"


def _constant_text(dicom=None, value=None, field=None, item=None, **_: Any) -> str:
    return "FROMFUNC"


def _patient_prefix(dicom=None, value=None, field=None, item=None, **_: Any) -> str:
    return "X-" + str(dicom.get("PatientID", ""))


def _returns_none(dicom=None, value=None, field=None, item=None, **_: Any) -> None:
    return None


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "is_true": _is_true,
    "is_false": _is_false,
    "modality_is_ct": _modality_is_ct,
    "constant_text": _constant_text,
    "patient_prefix": _patient_prefix,
    "returns_none": _returns_none,
}

# ----------------------------------------------------------------------------- cases and results


@dataclass(frozen=True)
class HeaderCase:
    """One recipe applied to one input file; ``shape_only`` for deid's random functions."""

    id: str
    category: str
    input: str
    recipe: str
    shape_only: bool = False


@dataclass(frozen=True)
class FilterCase:
    """One filter recipe (text, or a shipped recipe's name) tested on one input file."""

    id: str
    category: str
    input: str
    recipe: str = ""
    shipped: str = ""


@dataclass
class Outcome:
    kind: str  # "ok" or "error"
    data: Any = None  # header: {path: text}; filter: [(group, label, coordinates)]
    message: str = ""

    def key(self):
        return (self.kind, self.data if self.kind == "ok" else None)


@dataclass
class Result:
    case: Any
    agree: bool
    diff: str = ""
    missing_interface: bool = False
    oracle: Outcome | None = None
    sendit: Outcome | None = None


class InterfaceMissing(RuntimeError):
    """sendit.deid.recipe does not have the method the harness needs yet."""


# ----------------------------------------------------------------------------- normalisation

_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_BIGINT = re.compile(r"\d{12,}")


def value_text(elem) -> str:
    """An element's value as text, the same for equal values whatever their Python type."""
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        if not value:
            return ""
        return f"<{len(value)} bytes {hashlib.sha1(value).hexdigest()[:12]}>"
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(_scalar_text(v) for v in value)
    return _scalar_text(value)


def _scalar_text(value: Any) -> str:
    """Trailing spaces and NULs go: DICOM pads text with them, and they are not significant."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("latin-1")
    return str(value).rstrip(" \x00")


def flatten(ds: Dataset, prefix: str = "") -> dict[str, str]:
    """Every element at every depth as ``path -> "VR value"`` (sequences by item count)."""
    out: dict[str, str] = {}
    for elem in ds:
        path = f"{prefix}{elem.tag}"
        if elem.VR == "SQ":
            items = elem.value or []
            out[path] = f"SQ {len(items)} item(s)"
            for index, item in enumerate(items):
                if isinstance(item, Dataset):
                    out.update(flatten(item, f"{path}/{index}/"))
        else:
            out[path] = f"{elem.VR} {value_text(elem)}"
    return out


def header_snapshot(ds: Dataset) -> dict[str, str]:
    """The dataset and its file meta, flattened."""
    snapshot = flatten(ds)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        snapshot.update(flatten(meta, "meta/"))
    return snapshot


def shape(snapshot: dict[str, str]) -> dict[str, str]:
    """Random parts (uuid4, long integers) replaced by placeholders, for random functions."""
    return {k: _BIGINT.sub("<int>", _UUID4.sub("<uuid4>", v)) for k, v in snapshot.items()}


def header_diff(oracle: dict[str, str], sendit: dict[str, str]) -> str:
    lines = []
    for path in sorted(set(oracle) | set(sendit)):
        a, b = oracle.get(path), sendit.get(path)
        if a != b:
            lines.append(
                f"  {path}: deid={a if a is not None else '<absent>'!s} | sendit={b if b is not None else '<absent>'!s}"
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- silencing deid


@contextlib.contextmanager
def quiet():
    """deid's logger writes to the streams it captured at import, and deid_func prints."""
    from deid.logger import bot

    sink = io.StringIO()
    saved = bot.outputStream, bot.errorStream
    bot.outputStream = bot.errorStream = sink
    pydicom_logger = logging.getLogger("pydicom")
    level = pydicom_logger.level
    pydicom_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        bot.outputStream, bot.errorStream = saved
        pydicom_logger.setLevel(level)


def _error(exc: BaseException) -> Outcome:
    return Outcome("error", message=f"{type(exc).__name__}: {exc}")


# ----------------------------------------------------------------------------- header: both sides


def oracle_header(case: HeaderCase, workdir: str) -> Outcome:
    """deid's replace_identifiers on the file, with the recipe written to disk."""
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers

    recipe_path = os.path.join(workdir, "recipe.dicom")
    Path(recipe_path).write_text(case.recipe)
    path = os.path.abspath(input_path(case.input))
    lookup = {**VARIABLES, **FUNCTIONS}
    try:
        with quiet():
            result = replace_identifiers(
                dicom_files=[path], deid=DeidRecipe(recipe_path), save=False, ids={path: lookup}
            )
        return Outcome("ok", header_snapshot(result[0]))
    except BaseException as exc:  # deid reports recipe errors with sys.exit
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _error(exc)


def _sendit_recipe_class():
    try:
        from sendit.deid.recipe import Recipe
    except Exception as exc:  # noqa: BLE001 - a half-written module is a missing interface
        raise InterfaceMissing(f"sendit.deid.recipe does not import: {exc}") from exc
    return Recipe


def _functions_kwarg(method: Callable) -> dict:
    """``functions=`` for a parser that checks func: names up front, when it takes them."""
    try:
        accepts = "functions" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        accepts = False
    return {"functions": dict(FUNCTIONS)} if accepts else {}


def sendit_header(case: HeaderCase) -> Outcome:
    """Sendit's ``Recipe.from_text(text).apply(ds, variables, functions)`` on the same file."""
    recipe_class = _sendit_recipe_class()
    if not hasattr(recipe_class, "apply"):
        raise InterfaceMissing("Recipe.apply is not there yet")
    ds = pydicom.dcmread(input_path(case.input), force=True)
    try:
        with quiet():
            recipe = recipe_class.from_text(case.recipe, **_functions_kwarg(recipe_class.from_text))
            recipe.apply(ds, variables=dict(VARIABLES), functions=dict(FUNCTIONS))
        return Outcome("ok", header_snapshot(ds))
    except InterfaceMissing:
        raise
    except Exception as exc:  # noqa: BLE001 - an error is an outcome to compare
        return _error(exc)


def compare_header(case: HeaderCase, oracle: Outcome, sendit: Outcome) -> Result:
    if case.shape_only:
        for outcome in (oracle, sendit):
            if outcome.kind == "ok":
                outcome.data = shape(outcome.data)
    if oracle.kind != sendit.kind:
        diff = f"  deid: {oracle.kind} {oracle.message}\n  sendit: {sendit.kind} {sendit.message}"
        return Result(case, False, diff, oracle=oracle, sendit=sendit)
    if oracle.kind == "error":
        return Result(case, True, oracle=oracle, sendit=sendit)
    diff = header_diff(oracle.data, sendit.data)
    return Result(case, not diff, diff, oracle=oracle, sendit=sendit)


# ----------------------------------------------------------------------------- filters: both sides

SHIPPED = ("deid.dicom", "deid.dicom.ultrasound", "deid.dicom.xray.chest")


def shipped_recipe_path(name: str) -> str:
    import deid

    return str(Path(deid.__file__).parent / "data" / name)


def _label(name: str) -> str:
    """deid keeps ``LABEL`` in a rule's name (it strips a lowercase ``label``); its result
    carries no name at all, so the rule is found by identity and its name compared without it."""
    return re.sub(r"^label\b", "", (name or "").strip(), flags=re.IGNORECASE).strip()


def coordinates_text(coordinates: Iterable) -> tuple:
    """``[[mask, "x0,y0,x1,y1" | [..] ]]`` as a tuple of ``(mask, (coordinate, ...))``."""
    out = []
    for entry in coordinates or []:
        mask, value = entry[0], entry[1]
        values = tuple(str(v) for v in value) if isinstance(value, (list, tuple)) else (str(value),)
        out.append((int(mask), values))
    return tuple(out)


def oracle_detect(case: FilterCase, workdir: str) -> Outcome:
    from deid.config import DeidRecipe
    from deid.dicom.pixels import has_burned_pixels

    if case.shipped:
        recipe_path = shipped_recipe_path(case.shipped)
    else:
        recipe_path = os.path.join(workdir, "filter.dicom")
        Path(recipe_path).write_text(case.recipe)
    try:
        with quiet():
            recipe = DeidRecipe(recipe_path)
            names = {
                id(item["coordinates"]): (group, item.get("name", ""))
                for group, items in (recipe.get_filters() or {}).items()
                for item in items
            }
            result = has_burned_pixels(input_path(case.input), deid=recipe)
        matches = []
        for found in result["results"]:
            group, name = names[id(found["coordinates"])]
            matches.append((str(found["group"]), _label(name), coordinates_text(found["coordinates"])))
        return Outcome("ok", matches)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _error(exc)


def sendit_detect(case: FilterCase) -> Outcome:
    recipe_class = _sendit_recipe_class()
    if not hasattr(recipe_class, "detect"):
        raise InterfaceMissing("Recipe.detect is not there yet")
    if case.shipped and not hasattr(recipe_class, "load"):
        raise InterfaceMissing("Recipe.load is not there yet")
    ds = pydicom.dcmread(input_path(case.input), force=True)
    try:
        with quiet():
            if case.shipped:
                recipe = recipe_class.load(case.shipped, **_functions_kwarg(recipe_class.load))
            else:
                recipe = recipe_class.from_text(case.recipe, **_functions_kwarg(recipe_class.from_text))
            matches = recipe.detect(ds)
        data = [(str(m.group), _label(str(m.label)), coordinates_text(m.coordinates)) for m in matches]
        return Outcome("ok", data)
    except InterfaceMissing:
        raise
    except Exception as exc:  # noqa: BLE001
        return _error(exc)


def compare_filter(case: FilterCase, oracle: Outcome, sendit: Outcome) -> Result:
    if oracle.key() == sendit.key():
        return Result(case, True, oracle=oracle, sendit=sendit)

    def show(outcome: Outcome) -> str:
        if outcome.kind == "error":
            return f"error {outcome.message}"
        return "; ".join(f"{g}/{label!r} {list(c)}" for g, label, c in outcome.data) or "not flagged"

    diff = f"  deid:   {show(oracle)}\n  sendit: {show(sendit)}"
    return Result(case, False, diff, oracle=oracle, sendit=sendit)


# ----------------------------------------------------------------------------- running


@dataclass
class Run:
    header: list[Result] = field(default_factory=list)
    filters: list[Result] = field(default_factory=list)
    seconds: float = 0.0
    missing: str = ""  # why Sendit could not be asked, when it could not


def run_case(case, workdir: str, sendit: Callable | None = None) -> Result:
    """One case through deid and Sendit (or through ``sendit``, a stand-in used to test the harness)."""
    is_header = isinstance(case, HeaderCase)
    oracle = oracle_header(case, workdir) if is_header else oracle_detect(case, workdir)
    try:
        if sendit is not None:
            theirs = sendit(case, workdir)
        else:
            theirs = sendit_header(case) if is_header else sendit_detect(case)
    except InterfaceMissing as exc:
        return Result(case, False, str(exc), missing_interface=True, oracle=oracle)
    return compare_header(case, oracle, theirs) if is_header else compare_filter(case, oracle, theirs)


def run_all(header_cases: list[HeaderCase], filter_cases: list[FilterCase], sendit: Callable | None = None) -> Run:
    run = Run()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="deid-conformance-") as workdir:
        for case in header_cases:
            run.header.append(run_case(case, workdir, sendit))
        for case in filter_cases:
            run.filters.append(run_case(case, workdir, sendit))
    run.seconds = time.monotonic() - start
    missing = [r.diff for r in run.header + run.filters if r.missing_interface]
    run.missing = missing[0] if missing else ""
    return run


def oracle_as_sendit(case, workdir: str) -> Outcome:
    """deid standing in for Sendit: the harness must find every case agreeing (determinism check)."""
    if isinstance(case, HeaderCase):
        return oracle_header(case, workdir)
    return oracle_detect(case, workdir)


def table(results: list[Result]) -> list[tuple[str, int, int]]:
    """``(category, cases, agreeing)`` per category, then ``("all", ...)``."""
    rows: dict[str, list[int]] = {}
    for result in results:
        row = rows.setdefault(result.case.category, [0, 0])
        row[0] += 1
        row[1] += result.agree
    out = [(name, n, ok) for name, (n, ok) in sorted(rows.items())]
    out.append(("all", len(results), sum(r.agree for r in results)))
    return out


def format_table(title: str, results: list[Result]) -> str:
    lines = [f"{title:<22} {'cases':>6} {'agree':>6} {'ratio':>7}"]
    for name, n, ok in table(results):
        lines.append(f"  {name:<20} {n:>6} {ok:>6} {ok / n if n else 0:>7.1%}")
    return "\n".join(lines)
