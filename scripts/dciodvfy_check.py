#!/usr/bin/env python
"""dciodvfy before and after de-identification, for every DICOM file the test-data
packages ship (pydicom's test files, pydicom-data, deid-data).

For each file that pydicom reads, ``sendit.deid.deidentify_file`` writes a
de-identified copy (default options: the Basic Profile with Retain Longitudinal
Temporal Information Modified Dates), then dciodvfy (Debian's dicom3tools) checks the
input and the output. Error lines are normalised so that values do not matter (quoted
and bracketed values, numbers and UIDs, tags of private elements become placeholders;
attribute, module and IOD names stay), and an error of the output that the input does
not have (as a multiset) is NEW.

    .venv/bin/python scripts/dciodvfy_check.py [-v] [--no-zip] [--only SUBSTRING] [--option FLAG ...]

Prints one line per file with new errors and each new error (``-v``: every file), then
the table: files, de-identified, errors in input, errors in output, new errors, for the
inputs dciodvfy reads whole and for the damaged ones (dciodvfy reports a read failure
on the input: it checked only part of it, so its errors do not compare with those of
the output, which it reads whole). Files that ``deidentify_file`` refuses are listed with
the exception's type and counted in "files" but not in "de-identified". The exit status
is 1 when an input read whole gets a new error, 2 when dciodvfy is missing.
Zipped files (deid-data's cine loops) are extracted into a temporary folder unless
``--no-zip``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections import Counter
from pathlib import Path

from pydicom import dcmread

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sendit.deid import DeidOptions, deidentify_file  # noqa: E402
from sendit.deid.identifiers import StudyIdentifiers  # noqa: E402

SECRET = b"dciodvfy-check-secret"


def data_roots() -> list[tuple[str, Path]]:
    """(package, folder) of every installed test-data package."""
    roots = []
    try:
        import pydicom

        roots.append(("pydicom", Path(pydicom.__file__).parent / "data" / "test_files"))
    except ImportError:  # pragma: no cover
        pass
    for package, sub in (("data_store", "data"), ("deid_data", "data")):  # pydicom-data, deid-data
        try:
            module = __import__(package)
        except ImportError:
            continue
        roots.append((package, Path(module.__file__).parent / sub))
    return roots


def candidate_files(extract_zips: bool, scratch: Path) -> list[tuple[str, Path]]:
    """(label, path) of every file pydicom reads as DICOM, zips extracted when asked."""
    found = []
    for package, root in data_roots():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.suffix in (".py", ".pyc", ".md", ".txt", ".json", ".dump", ".gz", ".bz2") or path.name == "README":
                continue
            label = f"{package}/{path.relative_to(root)}"
            if path.suffix == ".zip":
                if not extract_zips:
                    continue
                with zipfile.ZipFile(path) as archive:
                    for name in archive.namelist():
                        if name.endswith("/"):
                            continue
                        target = scratch / "unzipped" / path.stem / name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with archive.open(name) as src, open(target, "wb") as dst:
                            shutil.copyfileobj(src, dst)
                        found.append((f"{label}:{name}", target))
                continue
            found.append((label, path))
    readable = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, path in found:
            try:
                dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            readable.append((label, path))
    return readable


_CHARACTER = re.compile(r"= '.*?' \(0?x?[0-9a-fA-F]*\)")
_QUOTED = re.compile(r'"[^"]*"')
_PRIVATE_TAG = re.compile(r"\(0x[0-9a-f]{3}[13579bdf],0x[0-9a-f]{4}\)")
_HEX = re.compile(r"(?<![(,])0x[0-9a-fA-F]+")
_NUMBER = re.compile(r"(?<![\w.])(?<!Type )[-+]?\d+(\.\d+)*(e[-+]?\d+)?(?![\w.])")
_ANGLE = re.compile(r"<[^<>]*>")
#: what precedes a name (attribute, module, VR) in angle brackets; anything else there is a value
_NAMED = re.compile(r"(Element=|Module=|attribute |Explicit |Dictionary |Overriding VR with )$")


def normalise(line: str) -> str:
    """An error line with its values taken out: what the error is about, not what it saw.

    Attribute, module and VR names in angle brackets stay, as do tags of public
    elements and attribute types; values (in angle brackets after ``=`` or ``value``,
    quoted, characters, numbers, hexadecimal lengths) and private tags become
    placeholders.
    """
    line = _CHARACTER.sub("= '…'", line)
    line = _QUOTED.sub('"…"', line)
    line = _PRIVATE_TAG.sub("(private)", line)
    out, last = [], 0
    for match in _ANGLE.finditer(line):
        out.append(line[last : match.start()])
        out.append(match.group(0) if _NAMED.search(line[: match.start()]) else "<…>")
        last = match.end()
    out.append(line[last:])
    line = _HEX.sub("0x#", "".join(out))
    return _NUMBER.sub("#", line)


def dciodvfy_errors(dciodvfy: str, path: Path) -> list[str] | None:
    """Error lines of dciodvfy for one file (None when dciodvfy aborted on it)."""
    run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, errors="replace", timeout=600)
    lines = (run.stdout + run.stderr).splitlines()
    if any(line.startswith("Abort") for line in lines):
        return None
    return [line for line in lines if _is_error(line)]


def _is_error(line: str) -> bool:
    return line.startswith("Error") or " - Error - " in line


#: dciodvfy could not read the file whole: it checked only what it read before that
_READ_FAILED = ("Dicom dataset read failed", "Seek failed", "Tags out of order", "Tag read failed")


def is_damaged(errors: list[str]) -> bool:
    """True when dciodvfy's errors say it could not read the file to its end."""
    return any(marker in line for line in errors for marker in _READ_FAILED)


def new_errors(before: list[str], after: list[str]) -> Counter:
    """Normalised error lines of ``after`` that ``before`` does not have (as a multiset)."""
    return Counter(normalise(line) for line in after) - Counter(normalise(line) for line in before)


def compare(dciodvfy: str, src: Path, out: Path, ids, options) -> tuple[list[str], list[str], Counter] | None:
    """De-identify ``src`` into ``out`` and compare dciodvfy's errors: (input errors,
    output errors, new errors), or None when dciodvfy aborted on one of them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deidentify_file(src, out, ids, options)
    before = dciodvfy_errors(dciodvfy, src)
    after = dciodvfy_errors(dciodvfy, out)
    if before is None or after is None:
        return None
    return before, after, new_errors(before, after)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="every file, and each new error line")
    parser.add_argument("--no-zip", action="store_true", help="skip zipped files")
    parser.add_argument("--only", default="", help="only files whose label contains this")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="FLAG",
        help="a DeidOptions flag to switch on (repeatable), e.g. retain_device_identity; "
        "--option no-dates switches off retain_long_modified_dates",
    )
    args = parser.parse_args(argv)
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        print("dciodvfy (Debian package dicom3tools) is not installed", file=sys.stderr)
        return 2
    ids = StudyIdentifiers(patient_suid="PSUIDCHECK", study_suid="SSUIDCHECK", jitter=-12)
    flags = {name: True for name in args.option if name != "no-dates"}
    if "no-dates" in args.option:
        flags["retain_long_modified_dates"] = False
    options = DeidOptions(uid_secret=SECRET, **flags)
    rows = {kind: Counter() for kind in ("read whole", "damaged", "all")}
    failures, aborted = [], []
    with tempfile.TemporaryDirectory(prefix="dciodvfy-check-") as tmp:
        scratch = Path(tmp)
        files = [(label, path) for label, path in candidate_files(not args.no_zip, scratch) if args.only in label]
        width = max((len(label) for label, _ in files), default=10)
        for index, (label, path) in enumerate(files):
            out = scratch / f"out{index}.dcm"
            try:
                result = compare(dciodvfy, path, out, ids, options)
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                failures.append((label, type(exc).__name__))
                result = False
            out.unlink(missing_ok=True)
            if result is None:
                aborted.append(label)
            if not result:
                for kind in ("all",):
                    rows[kind]["files"] += 1
                    rows[kind]["de-identified"] += result is None
                continue
            before, after, new = result
            count = sum(new.values())
            damaged = is_damaged(before)
            for kind in ("damaged" if damaged else "read whole", "all"):
                row = rows[kind]
                row["files"] += 1
                row["de-identified"] += 1
                row["errors in input"] += len(before)
                row["errors in output"] += len(after)
                row["NEW errors"] += count
                row["files with NEW errors"] += bool(count)
            if count or args.verbose:
                note = "  (damaged input: dciodvfy could not read it whole)" if damaged else ""
                print(f"{label:<{width}}  input {len(before):3d}  output {len(after):3d}  new {count:3d}{note}")
                for line, times in sorted(new.items()):
                    print(f"    NEW{'' if times == 1 else f' x{times}'}: {line}")
    for label, kind in failures:
        print(f"{label:<{width}}  not de-identified: {kind}")
    for label in aborted:
        print(f"{label:<{width}}  dciodvfy aborted on the input or the output: not compared")
    columns = ("files", "de-identified", "errors in input", "errors in output", "NEW errors", "files with NEW errors")
    print()
    print("| inputs | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    labels = {
        "read whole": "dciodvfy reads the input whole",
        "damaged": "damaged input (dciodvfy stops reading it)",
        "all": "all",
    }
    for kind, row in rows.items():
        print(f"| {labels[kind]} | " + " | ".join(str(row[c]) for c in columns) + " |")
    return 1 if rows["read whole"]["NEW errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
