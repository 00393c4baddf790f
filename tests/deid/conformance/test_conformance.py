"""Sendit's recipe engine against pydicom/deid, case by case (see harness.py for how).

The harness is tested too: deid standing in for Sendit must agree with itself on every case
(no randomness or normalisation slip), and a do-nothing stand-in must be caught with a diff.
"""

from __future__ import annotations

import os

import pytest

from conformance import harness
from conformance.cases import filter_cases, header_cases
from conformance.differences import DIFFERENCES

MIN_AGREEMENT = 0.95


@pytest.fixture(scope="module")
def cases() -> tuple[list, list]:
    return header_cases(), filter_cases()


@pytest.fixture(scope="module")
def run(cases) -> harness.Run:
    """Every case through deid and Sendit once for the module; skipped until Sendit has the interface."""
    result = harness.run_all(*cases)
    if result.missing:
        pytest.skip(f"sendit.deid.recipe is not ready for the conformance harness: {result.missing}")
    return result


def _report(results: list[harness.Result]) -> str:
    return "\n".join(f"{r.case.id}\n{r.diff}" for r in results)


def test_case_ids_are_unique_and_listed_ones_exist(cases):
    ids = [c.id for c in cases[0] + cases[1]]
    assert len(ids) == len(set(ids))
    unknown = sorted(set(DIFFERENCES) - set(ids))
    assert not unknown, f"allow-list entries for cases that no longer exist: {unknown}"
    assert all(reason.strip() for reason in DIFFERENCES.values()), "every allowed difference needs a reason"


def test_deid_agrees_with_itself(cases):
    """Every 7th case with deid on both sides: the comparison must find no difference."""
    header, filters = cases
    run = harness.run_all(header[::7], filters[::7], sendit=harness.oracle_as_sendit)
    disagreeing = [r for r in run.header + run.filters if not r.agree]
    if disagreeing:
        pytest.fail("deid disagrees with itself (randomness or a normalisation slip):\n" + _report(disagreeing))


def test_a_do_nothing_engine_is_caught(cases):
    """A stand-in that changes nothing and flags nothing must disagree, with a path in the diff."""
    header, filters = cases
    picked = [
        c
        for c in header
        if c.id in ("header/single/REPLACE_PatientName/ctbrain1", "header/nested/REMOVE_BeamSequence__BeamName/rtplan")
    ]
    flagged = [c for c in filters if c.id == "filter/shipped/deid.dicom.ultrasound/us_grey"]
    assert len(picked) == 2 and len(flagged) == 1

    def untouched(case, workdir):
        if isinstance(case, harness.HeaderCase):
            import pydicom

            return harness.Outcome("ok", harness.header_snapshot(pydicom.dcmread(harness.input_path(case.input))))
        return harness.Outcome("ok", [])

    run = harness.run_all(picked, flagged, sendit=untouched)
    assert [r.agree for r in run.header + run.filters] == [False, False, False]
    assert "(0010,0010): deid=PN Simpson^Homer | sendit=PN" in run.header[0].diff
    assert "(300A,00B0)/0/(300A,00C2): deid=<absent>" in run.header[1].diff
    assert "sendit: not flagged" in run.filters[0].diff


def test_runs_in_reasonable_time(run):
    assert run.seconds < float(os.environ.get("DEID_CONFORMANCE_MAX_SECONDS", "120")), run.seconds


@pytest.mark.parametrize("kind", ["header", "filters"])
def test_agreement_ratio(run, kind):
    results = getattr(run, kind)
    agreeing = sum(r.agree for r in results)
    if agreeing / len(results) < MIN_AGREEMENT:
        pytest.fail(f"below {MIN_AGREEMENT:.0%} agreement with deid:\n" + harness.format_table(kind, results))


@pytest.mark.parametrize("kind", ["header", "filters"])
def test_every_difference_is_allowed(run, kind):
    unexpected = [r for r in getattr(run, kind) if not r.agree and r.case.id not in DIFFERENCES]
    if unexpected:
        pytest.fail(f"{len(unexpected)} unexpected difference(s) from deid:\n" + _report(unexpected), pytrace=False)


def test_allowed_differences_still_differ(run):
    """An allow-list entry whose case now agrees is stale: remove it so the list stays true."""
    agreeing = {r.case.id for r in run.header + run.filters if r.agree}
    stale = sorted(set(DIFFERENCES) & agreeing)
    if stale:
        pytest.fail(f"these cases agree with deid now; remove them from differences.py: {stale}")
