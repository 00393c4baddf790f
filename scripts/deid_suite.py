#!/usr/bin/env python
"""Run deid's own test suite with sendit's recipe engine in place of deid's.

deid's header tests call ``deid.dicom.replace_identifiers(dicom_files, deid=recipe, ids=...)``
and check the datasets it returns; its filter tests call ``has_burned_pixels``. This script
runs those test files twice under pytest: once as they are (deid's own engine, the
baseline) and once with both functions replaced by adapters onto
``sendit.deid.recipe.Recipe`` (``apply`` and ``detect``). It prints, per test file, how many
tests pass each way. Tests that exercise other parts of deid (its DicomParser class, the
CLI, the pixel cleaner) are run too and counted separately: sendit does not offer those
interfaces.

deid's tests are not on PyPI: point ``--tests`` at the ``deid/tests`` folder of a checkout
of https://github.com/pydicom/deid (the folder's parent must hold the ``deid`` package of
the same checkout, which the tests import). Nothing of deid is kept in this repository.

    .venv/bin/python scripts/deid_suite.py --tests /path/to/deid/deid/tests
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: test files that call replace_identifiers or has_burned_pixels
HEADER_FILES = (
    "test_action_interaction.py",
    "test_blank_action.py",
    "test_dicom_groups.py",
    "test_file_meta.py",
    "test_nested_dicom_fields.py",
    "test_remove_action.py",
    "test_replace_action.py",
    "test_replace_identifiers.py",
    "test_sequence_blank.py",
    "test_sequence_jitter.py",
    "test_sequence_remove.py",
    "test_sequence_replace.py",
    "test_dicom_funcs.py",
)
FILTER_FILES = ("test_filter_detect.py",)


# -- the adapters (loaded into the pytest process with -p) ------------------------------------
def recipe_text(deid_recipe) -> str:
    """A loaded DeidRecipe (deid's parsed dict) written back as recipe text."""
    config = deid_recipe.deid if hasattr(deid_recipe, "deid") else deid_recipe
    lines = ["FORMAT dicom"]
    for section in ("values", "fields"):
        for name, actions in (config.get(section) or {}).items():
            lines.append(f"%{section} {name}")
            for action in actions:
                value = action.get("value")
                lines.append(f"{action['action']} {action['field']}" + (f" {value}" if value else ""))
    for name, items in (config.get("filter") or {}).items():
        lines.append(f"%filter {name}")
        for item in items:
            lines.append(item.get("name") or "LABEL unnamed")
            for group in item.get("filters", []):
                parts = []
                for i, action in enumerate(group["action"]):
                    value = group["value"][i] if i < len(group["value"]) else ""
                    parts.append(f"{action} {group['field'][i]} {value}".strip())
                    if i < len(group["InnerOperators"]):
                        parts.append("+" if group["InnerOperators"][i] == "and" else "||")
                prefix = {"and": "+ ", "or": "|| "}.get(group.get("operator") or "", "")
                lines.append("  " + prefix + " ".join(parts))
            for mask, coordinate in item.get("coordinates", []):
                lines.append(f"  {'keepcoordinates' if mask else 'coordinates'} {coordinate}")
    header = config.get("header") or []
    if header:
        lines.append("%header")
        for action in header:
            value = action.get("value")
            lines.append(f"{action['action']} {action['field']}" + (f" {value}" if value else ""))
    return "\n".join(lines) + "\n"


def install_adapters() -> None:
    """Replace deid's replace_identifiers and has_burned_pixels with sendit's engine."""
    import deid.dicom
    import deid.dicom.header
    import deid.dicom.pixels
    import deid.dicom.pixels.detect
    from deid.config import DeidRecipe
    from deid.dicom import utils
    from pydicom.dataset import Dataset

    from sendit.deid.recipe import Recipe

    def as_recipe(deid, functions=None, variables=()) -> Recipe:
        if deid is None or isinstance(deid, str):
            deid = DeidRecipe(deid)
        return Recipe.from_text(recipe_text(deid), functions=functions, variables=variables)

    def replace_identifiers(
        dicom_files,
        ids=None,
        deid=None,
        save=False,
        overwrite=False,
        output_folder=None,
        force=True,
        config=None,
        strip_sequences=False,
        remove_private=False,
        disable_skip=False,
    ):
        if not isinstance(dicom_files, list):
            dicom_files = [dicom_files]
        ids = ids or {}
        done = []
        for dicom_file in dicom_files:
            ds = dicom_file if isinstance(dicom_file, Dataset) else utils.dcmread(dicom_file, force=force)
            key = os.path.abspath(dicom_file) if isinstance(dicom_file, str) else None
            item = dict(ids.get(key, ids.get(dicom_file, {})) if key else {})
            functions = {k: v for k, v in item.items() if callable(v)}
            if strip_sequences:
                from deid.dicom.tags import remove_sequences

                remove_sequences(ds)
            if remove_private:
                ds.remove_private_tags()
            variables = {k: v for k, v in item.items() if not callable(v)}
            as_recipe(deid, functions, tuple(variables)).apply(ds, variables, functions, protect=not disable_skip)
            if save:
                done.append(
                    utils.save_dicom(
                        dicom=ds, dicom_file=str(dicom_file), output_folder=output_folder, overwrite=overwrite
                    )
                )
            else:
                done.append(ds)
        return done

    def has_burned_pixels(dicom_files, force=True, deid=None):
        recipe = as_recipe(deid if deid is not None else "dicom")
        files = dicom_files if isinstance(dicom_files, list) else [dicom_files]
        decisions = {"clean": [], "flagged": {}}
        single = None
        for dicom_file in files:
            ds = utils.load_dicom(dicom_file, force=force)
            results = [{"reason": m.title, "group": m.group, "coordinates": m.coordinates} for m in recipe.detect(ds)]
            single = {"flagged": bool(results), "results": results}
            if results:
                decisions["flagged"][dicom_file] = single
            else:
                decisions["clean"].append(dicom_file)
        return decisions if isinstance(dicom_files, list) else single

    for module in (deid.dicom, deid.dicom.header):
        module.replace_identifiers = replace_identifiers
    for module in (deid.dicom, deid.dicom.pixels, deid.dicom.pixels.detect):
        module.has_burned_pixels = has_burned_pixels


def pytest_configure(config):  # the -p plugin hook: patch before the test modules import deid
    if os.environ.get("DEID_SUITE_ENGINE") == "sendit":
        install_adapters()


# -- the runner ---------------------------------------------------------------------------------
def run(tests: Path, files: tuple, engine: str) -> dict[str, tuple[int, int]]:
    env = dict(
        os.environ,
        DEID_SUITE_ENGINE=engine,
        PYTHONPATH=os.pathsep.join([str(tests.parent.parent), str(ROOT), str(ROOT / "scripts")]),
    )
    counts = {}
    for name in files:
        report = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "deid_suite",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:django",
                "--rootdir",
                str(tests),
                "-o",
                "addopts=",
                "-o",
                "DJANGO_SETTINGS_MODULE=",
                str(tests / name),
            ],
            cwd=tests,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        tail = report.stdout.strip().splitlines()[-1] if report.stdout.strip() else report.stderr[-300:]
        passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", tail)) else 0
        failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", tail)) else 0
        errors = int(m.group(1)) if (m := re.search(r"(\d+) error", tail)) else 0
        counts[name] = (passed, passed + failed + errors)
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=Path, required=True, help="deid/tests of a deid checkout")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args(argv)
    tests = args.tests.resolve()
    results = {}
    for kind, files in (("header", HEADER_FILES), ("filter", FILTER_FILES)):
        present = tuple(f for f in files if (tests / f).exists())
        results[kind] = {"deid": run(tests, present, "deid"), "sendit": run(tests, present, "sendit")}
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for kind, by_engine in results.items():
        print(f"{kind} tests{'':<28}deid   sendit")
        totals = [0, 0, 0]
        for name, (passed, total) in by_engine["deid"].items():
            ours = by_engine["sendit"][name][0]
            totals = [totals[0] + passed, totals[1] + ours, totals[2] + total]
            print(f"  {name:<34}{passed:>3}/{total:<3} {ours:>3}/{total}")
        share = totals[1] / totals[0] if totals[0] else 0
        print(
            f"  {'all':<34}{totals[0]:>3}/{totals[2]:<3} {totals[1]:>3}/{totals[2]}"
            f"   sendit passes {share:.1%} of what deid passes"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
