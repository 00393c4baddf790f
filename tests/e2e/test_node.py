"""A study folder dropped into a running node's data folder arrives de-identified in Orthanc."""

import shutil

import pytest

from tests.node import Node
from tests.services import make_ct_series, reachable

pytestmark = pytest.mark.e2e


BACKENDS = [
    pytest.param("sqlite", "filesystem", id="sqlite-filesystem"),
    pytest.param(
        "postgres",
        "redis",
        id="postgres-redis",
        marks=pytest.mark.skipif(
            not (reachable(5432) and reachable(6379)), reason="PostgreSQL or Redis is not running"
        ),
    ),
]


@pytest.mark.parametrize("database,broker", BACKENDS)
def test_a_dropped_study_reaches_orthanc(tmp_path, orthanc_server, database, broker):
    orthanc_server.clear()
    with Node(
        tmp_path, database, broker, workers=2, ORTHANC_URL=orthanc_server.url, ORTHANC_PORT=orthanc_server.dicom_port
    ) as node:
        # An atomic drop: written as NAME.tmpXXXX, renamed when complete.
        make_ct_series(node.data / "X.tmp1", 3, patient_id="PHI-PATIENT-77", patient_name="Secret^Name")
        make_ct_series(node.data / "Y.tmp1", 2, patient_id="PHI-PATIENT-78")
        (node.data / "Y.tmp1" / "broken.dcm").write_bytes(b"DICM but not really")
        (node.data / "X.tmp1").rename(node.data / "X")
        (node.data / "Y.tmp1").rename(node.data / "Y")

        done = node.wait(
            lambda: (
                node.batches().get("X", ("",))[0] == "DONE" and node.batches().get("Y", ("",))[0] == "DONEPROCESSING"
            ),
            timeout=120,
        )
        assert done, (node.batches(), node.logs()[-3000:])
        assert node.batches() == {"X": ("DONE", False), "Y": ("DONEPROCESSING", True)}
        ids = orthanc_server.instances()
        assert len(ids) == 5
        for i in ids:
            tags = orthanc_server.get_json(f"/instances/{i}/simplified-tags")
            assert not tags["PatientID"].startswith("PHI-PATIENT")
        assert not (node.data / "X").exists()
        assert [p.name for p in (node.data / "Y.err").iterdir()] == ["broken.dcm"]
        assert "FINISHED X queued" in (tmp_path / "watcher.out").read_text()
        logs = node.logs()
        assert "PHI-PATIENT" not in logs and "Secret" not in logs
    shutil.rmtree(tmp_path, ignore_errors=True)
