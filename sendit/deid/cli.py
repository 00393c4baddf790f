"""``python -m sendit.deid INPUT OUTPUT``: de-identify a folder of DICOM files, no node needed.

The same steps as a node's pipeline, without its database, broker or watcher: every file
under INPUT is checked as the import checks it (structure, SOP instance, burned-in
pixels by the recipe's filters), identifiers come from the local provider keyed by
``--secret`` and kept in memory, and each file is de-identified by
:func:`sendit.deid.files.deidentify_file`, which proves its output before writing it.
A file that fails any step is held: listed with its reason (never a header value) and not
written. INPUT is only read.

Outputs are named by their new UIDs, ``OUTPUT/STUDY/SERIES/INSTANCE.dcm``: input file
names are not carried over, since they may name a patient.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from sendit.config import Deid, build
from sendit.deid.burned_in import burned_in_reason
from sendit.deid.files import deidentify_file
from sendit.deid.identifiers import IdentifierError, LocalProvider, build_request, extract_identifiers
from sendit.deid.identifiers.request import entity_key, item_key
from sendit.deid.options import OPTION_COLUMNS, DeidOptions
from sendit.deid.proof import IdentifyingValueFound, OutputNotProven
from sendit.deid.recipe import Recipe, RecipeError
from sendit.deid.structure import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH

HELP = __doc__.split("\n\n", 1)[1]


@dataclass
class Held:
    path: str  # relative to INPUT
    reason: str


@dataclass
class Run:
    """What one run did, for its summary."""

    written: list[Path] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    skipped: list[Held] = field(default_factory=list)


def hold_reason(exc: BaseException) -> str:
    """Why de-identification failed, in words that hold no value (as the node says it)."""
    if isinstance(exc, OutputNotProven):
        return f"output not proven: {exc.reason}"
    if isinstance(exc, IdentifyingValueFound):
        return f"identifying value in the output: {exc}"
    if isinstance(exc, OSError):
        return f"could not be written ({type(exc).__name__})"
    return f"unexpected {type(exc).__name__}"  # the type only: the text may quote a value


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def deidentify_folder(
    src: Path,
    dst: Path,
    options: DeidOptions,
    provider: LocalProvider,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Run:
    """De-identify every DICOM file under ``src`` into ``dst``; ``src`` is only read."""
    from sendit.apps.main import importer  # plain functions (no Django): the import's own checks

    run = Run()
    files, links = importer.list_files(src)
    for link in links:
        run.held.append(Held(_shown(link, src), "a symbolic link, not followed"))
    accepted: list[tuple[Path, int]] = []  # (path, identity index)
    identities: list[dict[str, str]] = []
    positions: dict[tuple[tuple[str, str], tuple[str, str]], int] = {}  # (entity, item) -> identity index
    seen: set[str] = set()
    for path in files:
        try:
            header = importer.read_header(path, max_bytes=max_bytes, max_depth=max_depth)
        except importer.DicomDir:
            run.skipped.append(Held(_shown(path, src), "a CD's index (DICOMDIR): not an image, not written"))
            continue
        except importer.NotImportable as exc:
            run.held.append(Held(_shown(path, src), str(exc)))
            continue
        if header.sop_uid in seen:
            run.held.append(Held(_shown(path, src), "repeats an instance already read (same SOPInstanceUID)"))
            continue
        try:
            key = (entity_key(header.identity), item_key(header.identity))
        except IdentifierError:
            run.held.append(Held(_shown(path, src), "has neither PatientID nor StudyInstanceUID"))
            continue
        reason = burned_in_reason(header.dataset, options.recipe)
        if reason:
            run.held.append(Held(_shown(path, src), f"may show burned-in text: {reason}"))
            continue
        seen.add(header.sop_uid)
        if key not in positions:
            positions[key] = len(identities)
            identities.append(header.identity)
        accepted.append((path, positions[key]))
    if not accepted:
        return run
    response = provider.identify(build_request(identities))
    ids = [extract_identifiers(response, i["patient_id"], i["accession"], i["study_uid"]) for i in identities]
    dst.mkdir(parents=True, exist_ok=True)
    part = dst / f".sendit-deid-{os.getpid()}.dcm"
    for path, index in accepted:
        try:
            result = deidentify_file(path, part, ids[index], options, require_pixels=True)
            target = dst / result["study_uid"] / result["series_uid"] / f"{result['sop_uid']}.dcm"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
        except Exception as exc:
            part.unlink(missing_ok=True)
            run.held.append(Held(_shown(path, src), hold_reason(exc)))
            continue
        run.written.append(target)
    return run


def _shown(path: Path, src: Path) -> str:
    from sendit.redact import escape_controls

    return escape_controls(os.fsencode(path.relative_to(src)).decode("utf-8", "backslashreplace"))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sendit.deid",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 when every DICOM file was written, 1 when any file was held, "
        "2 when the command could not run (bad arguments, a broken recipe).",
    )
    p.add_argument("input", type=Path, metavar="INPUT_FOLDER", help="the files to de-identify (never changed)")
    p.add_argument("output", type=Path, metavar="OUTPUT_FOLDER", help="where the de-identified files go")
    p.add_argument(
        "--recipe",
        help="a recipe in deid's format: a file, or deid's deid.dicom, "
        "deid.dicom.ultrasound, deid.dicom.xray.chest (docs/deidentify.md)",
    )
    p.add_argument(
        "--secret",
        help="keys the pseudonyms, the date shifts and the new UIDs: the same secret "
        "gives the same output (default: DEID_SECRET, else a random one for "
        "this run only)",
    )
    p.add_argument("--uid-root", default="2.25.", help="root of the new UIDs (default 2.25.)")
    p.add_argument("--jitter-min", type=int, default=-30, help="smallest date shift in days (default -30)")
    p.add_argument("--jitter-max", type=int, default=-1, help="largest date shift in days (default -1)")
    p.add_argument(
        "--no-retain-long-modified-dates",
        action="store_true",
        help="PS3.15 option off: remove dates instead of shifting them",
    )
    for flag in OPTION_COLUMNS:
        if flag != "retain_long_modified_dates":
            p.add_argument(
                "--" + flag.replace("_", "-"), action="store_true", help=f"PS3.15 option: {flag.replace('_', ' ')}"
            )
    p.add_argument("--quiet", action="store_true", help="print only held files and the summary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # pydicom's warnings about a file may quote its values: held files are reported here instead.
    warnings.simplefilter("ignore")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    src, dst = args.input.resolve(), args.output.resolve()
    if not src.is_dir():
        print(f"error: {args.input} is not a folder", file=sys.stderr)
        return 2
    if _inside(dst, src) or _inside(src, dst):
        print(
            "error: OUTPUT_FOLDER and INPUT_FOLDER must not contain each other (INPUT is never changed)",
            file=sys.stderr,
        )
        return 2
    try:
        recipe = Recipe.load(args.recipe) if args.recipe else None
    except RecipeError as exc:
        print(f"error: the recipe cannot be used: {exc}", file=sys.stderr)
        return 2
    secret = args.secret or build(Deid).deid_secret
    if not secret:
        secret = secrets.token_urlsafe(32)
        print(
            "note: no --secret (or DEID_SECRET): a random one for this run, so its pseudonyms and "
            "UIDs match no other run",
            file=sys.stderr,
        )
    options = DeidOptions(
        uid_secret=secret.encode(),
        uid_root=args.uid_root,
        retain_long_modified_dates=not args.no_retain_long_modified_dates,
        recipe=recipe,
        **{flag: getattr(args, flag) for flag in OPTION_COLUMNS if flag != "retain_long_modified_dates"},
    )
    provider = LocalProvider(secret.encode(), store={}, jitter_min=args.jitter_min, jitter_max=args.jitter_max)
    run = deidentify_folder(src, dst, options, provider)
    for held in run.held:
        print(f"HELD {held.path}: {held.reason}")
    for skipped in run.skipped:
        print(f"SKIPPED {skipped.path}: {skipped.reason}")
    if not args.quiet:
        for path in run.written:
            print(f"WROTE {path.relative_to(dst)}")
    print(f"{len(run.written)} written, {len(run.held)} held, {len(run.skipped)} skipped (into {args.output})")
    return 1 if run.held else 0
