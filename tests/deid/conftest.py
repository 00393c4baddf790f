"""Fixtures of the de-identification tests (no Django, no services)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # plain `pytest tests/deid` from anywhere
    sys.path.insert(0, str(ROOT))
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from sendit.deid import DeidOptions  # noqa: E402
from sendit.deid.identifiers import StudyIdentifiers  # noqa: E402

SECRET = b"test-site-secret"


@pytest.fixture
def ids():
    return StudyIdentifiers(patient_suid="PSUID01", study_suid="SSUID01", jitter=-12)


@pytest.fixture
def options():
    return DeidOptions(uid_secret=SECRET)


@pytest.fixture
def dasher():
    from dasher_server import DasherServer

    with DasherServer() as server:
        yield server
