#!/usr/bin/env python
"""Fuzz the whole pipeline: broken files made from real ones, through a real worker and
Orthanc, and an account of every file.

    .venv/bin/python scripts/fuzz.py --seed 1 --count 300 --shipped [--studies 10]
        [--workers 2] [--database sqlite|postgres] [--kinds a,b] [--skip-kinds a,b]
        [--only N,M] [--only-shipped LABEL] [--huge-mb 1024] [--timeout S] [--dir D] [--keep] [-v]
    .venv/bin/python scripts/fuzz.py --seed 1 --only 42 --write /tmp/out   # just write the file(s)

Generates `--count` files (tests/fuzz/mutate.py: each a shipped DICOM file given known
identifying marker values, then broken by one named mutation, the kinds in turn; the
same seed gives the same bytes), adds every shipped file unmodified with `--shipped`,
drops them into a fresh node's data folder as study folders of `--studies` files (NAME.tmp1,
renamed), with its own Orthanc, and accounts for each (tests/fuzz/account.py): delivered
(de-identified in Orthanc), held (its bytes kept on the node, with a reason on the batch or
image), or lost; and whether any identifying value reached Orthanc. Prints the table per
mutation kind, then one line per problem with the command that reproduces it. The exit
status is 1 when a file is lost (or kept with no reason, or never imported), a value
leaked, a batch is stuck, Orthanc stopped answering or the worker died.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.fuzz import account, corpus, mutate  # noqa: E402
from tests.services import Orthanc  # noqa: E402


def build_cases(args) -> list:
    kinds = mutate.KINDS
    if args.kinds:
        kinds = tuple(k for k in args.kinds.split(",") if k)
    if args.skip_kinds:
        kinds = tuple(k for k in kinds if k not in args.skip_kinds.split(","))
    unknown = set(kinds) - set(mutate.KINDS)
    if unknown:
        raise SystemExit(f"unknown mutation kind(s): {', '.join(sorted(unknown))}; known: {', '.join(mutate.KINDS)}")
    bases = corpus.base_files(args.max_base_kb * 1024)
    huge = args.huge_mb << 20
    cases = []
    if args.only:
        for n in (int(x) for x in args.only.split(",") if x):
            cases.append(mutate.make_case(args.seed, n, bases=bases, huge_size=huge))
    else:
        n = 0
        while sum(c.kind != "shipped" for c in cases) < args.count:  # file n has kind KINDS[n % 20]
            if mutate.KINDS[n % len(mutate.KINDS)] in kinds:
                cases.append(mutate.make_case(args.seed, n, bases=bases, huge_size=huge))
            n += 1
    if args.shipped or args.only_shipped:
        for i, (label, path) in enumerate(corpus.shipped_files()):
            if args.only_shipped and label not in args.only_shipped.split(","):
                continue
            cases.append(mutate.shipped_case(label, path, n=i))
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=300, help="fuzzed files (default 300)")
    parser.add_argument("--shipped", action="store_true", help="also every shipped file, unmodified")
    parser.add_argument("--studies", type=int, default=10, help="files per study folder (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--kinds", default="", help="only these mutation kinds (comma-separated)")
    parser.add_argument("--skip-kinds", default="", help="not these mutation kinds")
    parser.add_argument("--only", default="", help="only these file numbers of the seed (N,M,...)")
    parser.add_argument("--only-shipped", default="", help="only these shipped files (labels, comma-separated)")
    parser.add_argument(
        "--huge-mb", type=int, default=1024, help="size of the zeros_huge files in MiB (sparse: no room on disk)"
    )
    parser.add_argument("--max-base-kb", type=int, default=512, help="largest shipped file to mutate")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds for every batch to come to rest (default 120 + 1 per file)"
    )
    parser.add_argument(
        "--settle", type=float, default=15.0, help="seconds with no change before a batch with errors counts as at rest"
    )
    parser.add_argument("--dir", default=None, help="where the node and Orthanc keep their files")
    parser.add_argument("--keep", action="store_true", help="keep that folder (printed) for a look")
    parser.add_argument("-v", "--verbose", action="store_true", help="print where every file ended, and why")
    parser.add_argument("--write", default="", help="only write the files into this folder, run nothing")
    args = parser.parse_args()

    cases = build_cases(args)
    if args.write:
        out = Path(args.write)
        out.mkdir(parents=True, exist_ok=True)
        for case in cases:
            name = f"{case.n:05d}-{case.kind}.dcm" if case.kind != "shipped" else f"shipped-{case.n:04d}.dcm"
            case.write(out / name)
            print(f"{out / name}: {case.name} from {case.origin} {case.details}")
        return 0

    generated = sum(c.kind != "shipped" for c in cases)
    print(
        f"seed {args.seed}: {generated} fuzzed files, {len(cases) - generated} shipped files, "
        f"{args.studies} per study folder; {os.cpu_count()} CPUs",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="sendit-fuzz-", dir=args.dir))
    started = time.monotonic()
    try:
        with Orthanc(tmp / "orthanc") as orthanc:
            report = account.run(
                cases,
                tmp,
                orthanc,
                per_study=args.studies,
                workers=args.workers,
                database=args.database,
                timeout=args.timeout,
                settle=args.settle,
                log=lambda m: print(m, flush=True),
            )
    finally:
        if args.keep:
            print(f"files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.verbose:
        for e in report.entries:
            print(
                f"  {e.name:18} {e.case.name:24} {e.case.origin:50} {e.outcome:9} {e.where} "
                f"{'| ' + e.reason[:160] if e.reason else ''}"
            )
    print()
    print(report.table())
    failures = report.failures()
    if failures:
        print(f"\n{len(failures)} problem(s):")
        for line in failures:
            print("  " + line)
    notes = report.notes()
    if notes:
        print(f"\n{len(notes)} note(s) (no failure):")
        for line in notes:
            print("  " + line)
    print(f"\n{'OK' if report.ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
