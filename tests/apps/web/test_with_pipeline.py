"""The pages over batches the real pipeline made (run eagerly, as in tests/apps/main)."""

import re

import pytest

from sendit.apps.main.models import Batch, Image
from sendit.apps.main.tasks import import_dicomdir
from tests.services import make_ct_series

pytestmark = pytest.mark.django_db(transaction=True)

PATIENT, NAME = "MRN-WEB-4242", "Webpage^Patient"


def test_pages_of_a_kept_batch_show_nothing_identifying(client, data_folder, eager, settings):
    settings.SEND_TO_ORTHANC = False  # the original sendit's static storage: de-identified images stay in media
    settings.SEND_TO_GOOGLE = False
    make_ct_series(data_folder / "KEPT", 2, patient_id=PATIENT, patient_name=NAME)
    import_dicomdir(str(data_folder / "KEPT"))
    batch = Batch.objects.get(uid="KEPT")
    assert batch.status == "DONEPROCESSING", batch.errors
    pages = [
        client.get("/"),
        client.get("/partials/dashboard/"),
        client.get(f"/batches/{batch.id}/"),
        client.get("/api/batches"),
        client.get("/api/images"),
    ]
    for image in Image.objects.filter(batch=batch):
        page = client.get(f"/images/{image.id}/")
        html = page.content.decode()
        assert 'id="header"' in html and 'id="preview"' in html and "PatientIdentityRemoved" in html
        assert client.get(f"/images/{image.id}/preview.png").status_code == 200
        pages.append(page)
    for page in pages:
        assert page.status_code == 200
        text = page.content.decode()
        assert PATIENT not in text and "Webpage" not in text
    batch_html = pages[2].content.decode()
    for step in ("import", "identifiers", "deidentify"):
        assert f'data-step="{step}"' in batch_html


def test_retry_button_finishes_a_batch_once_the_destination_is_back(client, node, data_folder, settings):
    settings.ORTHANC_URL = "http://127.0.0.1:9"  # nothing listens there
    make_ct_series(data_folder / "DOWN", 2, patient_id=PATIENT, patient_name=NAME)
    import_dicomdir(str(data_folder / "DOWN"))
    batch = Batch.objects.get(uid="DOWN")
    html = client.get(f"/batches/{batch.id}/").content.decode()
    assert batch.has_error and 'id="retry"' in html and "Orthanc did not take 2 images: it is not answering" in html
    assert "Stopped: Orthanc is not answering; 2 images wait on this node" in html and "[path]" not in html
    assert re.search(r"<th>orthanc</th>", html) and html.count('<span class="pill">–</span>') == 2

    settings.ORTHANC_URL = node.url
    response = client.post(f"/batches/{batch.id}/retry/", follow=True)
    assert "Retry queued" in response.content.decode()
    batch.refresh_from_db()
    assert batch.status == "DONE" and not batch.has_error and len(node.instances()) == 2
    html = client.get(f"/batches/{batch.id}/").content.decode()
    assert "1 error(s) before the last retry" in html and 'data-step="cleanup"' in html


def test_resend_button_sends_again_after_the_destination_lost_the_data(client, node, data_folder, settings):
    settings.SEND_TO_GOOGLE = False
    make_ct_series(data_folder / "AGAIN", 2, patient_id=PATIENT, patient_name=NAME)
    (data_folder / "AGAIN" / "junk.txt").write_text("not DICOM")  # an error keeps the files
    import_dicomdir(str(data_folder / "AGAIN"))
    batch = Batch.objects.get(uid="AGAIN")
    assert Image.objects.filter(batch=batch, status="SENT").count() == 2
    node.clear()
    response = client.post(f"/batches/{batch.id}/resend/", follow=True)
    assert "Re-send queued for 2 image(s)." in response.content.decode()
    assert len(node.instances()) == 2
    assert Image.objects.filter(batch=batch, status="SENT").count() == 2
