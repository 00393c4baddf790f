"""The pipeline to Orthanc and Google Cloud (Storage and Datastore) at once, each verified."""

import uuid

import pytest

from sendit.apps.main.models import Batch, Image
from sendit.apps.main.retry import retry_batch
from sendit.apps.main.tasks import import_dicomdir
from tests.services import make_ct_series

pytestmark = pytest.mark.django_db(transaction=True)
PHI_ID, PHI_NAME = "PHI-GOOGLE-555", "Secret^Patient"


@pytest.fixture
def google(node, settings, fake_gcs, datastore_emulator):
    bucket = f"b{uuid.uuid4().hex[:10]}"
    fake_gcs.create_bucket(bucket)
    settings.SEND_TO_GOOGLE = True
    settings.GOOGLE_CLOUD_STORAGE = bucket
    settings.GOOGLE_PROJECT_NAME = "test"
    settings.GOOGLE_STORAGE_COLLECTION = "IRB42"
    settings.STORAGE_EMULATOR_HOST = fake_gcs.url
    settings.GOOGLE_DATASTORE = True
    settings.DATASTORE_EMULATOR_HOST = datastore_emulator.host_port
    settings.GOOGLE_DATASTORE_NAMESPACE = f"n{uuid.uuid4().hex[:10]}"
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import datastore, storage

    gcs = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": fake_gcs.url}
    )
    ds = datastore.Client(
        project="test",
        namespace=settings.GOOGLE_DATASTORE_NAMESPACE,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": datastore_emulator.url},
    )
    return gcs.bucket(bucket), ds


def blobs(bucket):
    return {b.name: b.generation for b in bucket.client.list_blobs(bucket)}


def test_a_study_reaches_orthanc_storage_and_datastore(node, data_folder, google):
    bucket, ds = google
    make_ct_series(data_folder / "G", 3, rows=64, columns=64, patient_id=PHI_ID, patient_name=PHI_NAME)
    import_dicomdir(str(data_folder / "G"))
    batch = Batch.objects.get(uid="G")
    assert batch.status == "DONE" and not batch.has_error, batch.errors
    assert batch.log["destinations"] == ["orthanc", "gcs"]
    assert len(node.instances()) == 3
    names = blobs(bucket)
    assert sum(n.endswith(".dcm") for n in names) == 3
    assert all(n.startswith("Collection/IRB42/Entity/") for n in names)
    entities = list(ds.query(kind="Study").fetch()) + list(ds.query(kind="Series").fetch())
    assert len(entities) == 2
    text = str([dict(e) for e in entities]) + str(names)
    assert PHI_ID not in text and "Secret" not in text


def test_one_destination_down_then_retry_sends_only_what_is_missing(node, data_folder, google, settings):
    bucket, _ = google
    good_url = settings.ORTHANC_URL
    settings.ORTHANC_URL = "http://127.0.0.1:9"
    make_ct_series(data_folder / "H", 2, rows=64, columns=64, patient_id=PHI_ID)
    import_dicomdir(str(data_folder / "H"))
    batch = Batch.objects.get(uid="H")
    assert batch.has_error and batch.status == "DONEPROCESSING"
    images = Image.objects.filter(batch=batch)
    assert all(set(i.destinations) == {"gcs"} and i.status == "DONEPROCESSING" for i in images)
    before = blobs(bucket)
    assert len(before) >= 2

    settings.ORTHANC_URL = good_url
    retry_batch(batch)
    batch.refresh_from_db()
    assert batch.status == "DONE" and len(node.instances()) == 2
    assert blobs(bucket) == before  # nothing sent twice to the destination that had it


def test_nifti_per_series_and_a_single_image_falls_back_with_a_note(node, data_folder, google, settings):
    bucket, _ = google
    settings.SEND_TO_ORTHANC = False
    settings.GOOGLE_STORAGE_FORMAT = "nifti"
    folder = data_folder / "N"
    make_ct_series(folder / "a", 5, rows=32, columns=32, patient_id=PHI_ID)
    study = __import__("pydicom").dcmread(next((folder / "a").iterdir())).StudyInstanceUID
    make_ct_series(folder / "b", 1, rows=32, columns=32, patient_id=PHI_ID, study_uid=study)
    import_dicomdir(str(folder))
    batch = Batch.objects.get(uid="N")
    assert batch.status == "DONE", batch.errors
    names = list(blobs(bucket))
    assert sum(n.endswith(".nii.gz") for n in names) == 1  # the 5-slice series
    assert sum(n.endswith(".dcm") for n in names) == 1  # the single image, as DICOM
    assert any("sent as DICOM" in note for note in batch.log["notes"])
