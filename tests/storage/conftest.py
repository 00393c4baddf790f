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

from tests.services import Orthanc, orthanc_binary, start_or_skip  # noqa: E402


def _missing():
    return None if orthanc_binary() else "Orthanc is not installed (apt-get install orthanc, or set $ORTHANC_BINARY)"


@pytest.fixture(scope="session")
def orthanc(orthanc_server):
    """The session's Orthanc without authentication (tests/conftest.py). Do not stop it in a test."""
    return orthanc_server


@pytest.fixture(scope="session")
def orthanc_auth(tmp_path_factory):
    """An Orthanc that requires HTTP basic authentication (sendit / s3cret)."""
    server = start_or_skip(
        Orthanc(tmp_path_factory.mktemp("orthanc-auth"), username="sendit", password="s3cret"), _missing()
    )
    yield server
    server.stop()


@pytest.fixture
def orthanc_private(tmp_path):
    """A fresh Orthanc for one test, which the test may stop and restart."""
    server = start_or_skip(Orthanc(tmp_path / "orthanc"), _missing())
    yield server
    server.stop(kill=True)  # its storage is thrown away: no need for a graceful stop


# fake_gcs and datastore_emulator (session-scoped) live in tests/conftest.py.


@pytest.fixture
def bucket(fake_gcs):
    """A new, empty bucket on the session's fake-gcs-server."""
    import uuid

    name = f"sendit-{uuid.uuid4().hex[:12]}"
    fake_gcs.create_bucket(name)
    return name


@pytest.fixture
def gcs_client(fake_gcs):
    """The real google-cloud-storage client, pointed at fake-gcs-server."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": fake_gcs.url}
    )


@pytest.fixture
def client(gcs_client):
    return gcs_client
