"""The pipeline with DASHER (a DASHER-compatible server) and with images held for burned-in text."""

import shutil
from pathlib import Path

import pytest

from sendit.apps.main.models import Batch, BatchIdentifiers, Image
from sendit.apps.main.retry import retry_batch
from sendit.apps.main.tasks import import_dicomdir
from tests.deid.dasher_server import DasherServer
from tests.services import make_ct_series

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def dasher(settings, tmp_path, monkeypatch):
    with DasherServer() as server:
        settings.DEIDENTIFY_RESTFUL = True
        settings.DASHER_URL = server.base_url
        settings.SOM_STUDY = "test"
        settings.DASHER_RETRIES = 1
        settings.DASHER_BACKOFF = 0.05
        settings.STANFORD_CLIENT_SECRETS = str(server.write_secrets(tmp_path / "secrets.json"))
        yield server


def test_identifiers_come_from_dasher(node, data_folder, dasher):
    make_ct_series(data_folder / "D", 2, patient_id="MRN-DASH-1")
    import_dicomdir(str(data_folder / "D"))
    batch = Batch.objects.get(uid="D")
    assert batch.status == "DONE", batch.errors
    uid_requests = [r for r in dasher.requests if "/v1/uid/test" in r[1]]
    assert len(uid_requests) == 1  # once per batch
    expected = dasher.saved[("test", "Stanford MRN", "MRN-DASH-1")]["suid"]
    for i in node.instances():
        tags = node.get_json(f"/instances/{i}/simplified-tags")
        assert tags["PatientID"] == expected and tags["PatientName"] == expected


def test_an_expired_token_is_refreshed(node, data_folder, dasher):
    dasher.expire_token()
    make_ct_series(data_folder / "E", 1, patient_id="MRN-DASH-2")
    import_dicomdir(str(data_folder / "E"))
    assert Batch.objects.get(uid="E").status == "DONE"
    assert dasher.refreshes == 1


def test_dasher_down_sends_nothing_then_retry_finishes(node, data_folder, dasher, settings):
    dasher.fail_next(2, status=503)  # the first try and its one retry
    make_ct_series(data_folder / "F", 2, patient_id="MRN-DASH-3")
    import_dicomdir(str(data_folder / "F"))
    batch = Batch.objects.get(uid="F")
    assert batch.has_error and batch.errors[0]["step"] == "identifiers"
    assert "nothing was sent" in batch.errors[0]["message"]
    assert "MRN-DASH-3" not in str(batch.errors)
    assert node.instances() == []
    assert Image.objects.filter(batch=batch, status="NEW").count() == 2  # kept, not de-identified

    retry_batch(batch)
    batch.refresh_from_db()
    assert batch.status == "DONE" and len(node.instances()) == 2
    assert not BatchIdentifiers.objects.filter(batch=batch).exists()


def test_burned_in_images_are_held_and_the_rest_proceeds(node, data_folder, settings):
    import deid_data

    folder = data_folder / "US"
    make_ct_series(folder, 2, patient_id="MRN-US-1")
    ultrasound = Path(deid_data.__file__).parent / "data" / "ultrasounds" / "RGB_IMAGE.dcm"
    shutil.copy(ultrasound, folder / "us.dcm")
    import_dicomdir(str(folder))
    batch = Batch.objects.get(uid="US")
    assert len(node.instances()) == 2
    held = Image.objects.filter(batch=batch).exclude(flagged="")
    assert held.count() == 1 and held[0].status == "DONEPROCESSING"
    assert Path(settings.MEDIA_ROOT, held[0].image).exists()  # kept for review
    assert batch.has_error and "held back" in batch.errors[-1]["message"]
    assert batch.status == "DONEPROCESSING"
