#!/usr/bin/env python
"""How closely Sendit's recipe engine follows pydicom/deid: the conformance table, for the docs.

Runs every case of tests/deid/conformance through deid (the oracle, run now) and through
``sendit.deid.recipe``, prints cases / agreeing / ratio per category, then each difference with
the reason given in tests/deid/conformance/differences.py (or UNLISTED).

    .venv/bin/python scripts/deid_conformance.py            # table and differences
    .venv/bin/python scripts/deid_conformance.py --diff     # with each difference's diff
    .venv/bin/python scripts/deid_conformance.py --unlisted # only differences without a reason
    .venv/bin/python scripts/deid_conformance.py --case header/single/REMOVE_PatientName/ctbrain1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests" / "deid"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from conformance import harness  # noqa: E402
from conformance.cases import filter_cases, header_cases  # noqa: E402
from conformance.differences import DIFFERENCES  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diff", action="store_true", help="show the diff of every difference")
    parser.add_argument("--unlisted", action="store_true", help="only differences missing from differences.py")
    parser.add_argument("--case", action="append", default=[], help="run only this case id (repeatable)")
    args = parser.parse_args()

    header, filters = header_cases(), filter_cases()
    if args.case:
        header = [c for c in header if c.id in args.case]
        filters = [c for c in filters if c.id in args.case]
    run = harness.run_all(header, filters)
    if run.missing:
        print(f"Sendit cannot be asked yet: {run.missing}")
        return 2

    print(harness.format_table("header cases", run.header))
    print(harness.format_table("filter cases", run.filters))
    print(f"({run.seconds:.1f} s)\n")

    differing = [r for r in run.header + run.filters if not r.agree]
    unlisted = 0
    for result in differing:
        reason = DIFFERENCES.get(result.case.id)
        unlisted += reason is None
        if args.unlisted and reason is not None:
            continue
        print(f"- {result.case.id}: {reason or 'UNLISTED'}")
        if args.diff or args.case or reason is None:
            if args.case:
                print(
                    "  recipe:\n    "
                    + (getattr(result.case, "recipe", "") or result.case.shipped).replace("\n", "\n    ")
                )
            print(result.diff)
    agreeing = {r.case.id for r in run.header + run.filters if r.agree}
    stale = sorted(set(DIFFERENCES) & agreeing)
    for case_id in stale:
        print(f"- {case_id}: STALE (agrees now; remove it from differences.py)")
    return 1 if unlisted or stale else 0


if __name__ == "__main__":
    sys.exit(main())
