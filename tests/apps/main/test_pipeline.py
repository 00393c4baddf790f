"""The pipeline from a finished folder to Orthanc, with the original sendit's statuses, run eagerly."""

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from sendit.apps.main.models import Batch, BatchIdentifiers, Image
from sendit.apps.main.retry import retry_batch
from sendit.apps.main.tasks import import_dicomdir
from tests.services import make_ct_series

pytestmark = pytest.mark.django_db(transaction=True)

PATIENT = "MRN12345678"
NAME = "Doe^Jane"


def study(folder, n=3, name="ST-000001"):
    path = folder / name
    make_ct_series(path, n, patient_id=PATIENT, patient_name=NAME)
    return path


def orthanc_tags(orthanc):
    return [orthanc.get_json(f"/instances/{i}/simplified-tags") for i in orthanc.instances()]


def test_finished_folder_arrives_deidentified_and_is_cleaned_up(node, data_folder, settings):
    folder = study(data_folder)
    originals = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]

    import_dicomdir(str(folder))

    batch = Batch.objects.get(uid="ST-000001")
    assert batch.status == "DONE" and not batch.has_error, batch.errors
    assert not folder.exists()
    assert not Image.objects.filter(batch=batch).exists()
    assert not BatchIdentifiers.objects.filter(batch=batch).exists()
    assert set(batch.log["steps"]) == {"import", "identifiers", "deidentify", "send", "cleanup"}
    assert batch.log["images"] == 3
    tags = orthanc_tags(node)
    assert len(tags) == 3
    original_uids = {str(d.SOPInstanceUID) for d in originals}
    for t in tags:
        assert t["PatientID"] != PATIENT and t["PatientName"] != NAME
        assert t["PatientIdentityRemoved"] == "YES"
        assert t["SOPInstanceUID"] not in original_uids
        assert t["StudyDate"] != originals[0].StudyDate
    # Nothing identifying in the audit that outlives the data.
    assert PATIENT not in str(batch.log) and "Doe" not in str(batch.log)


def test_pixel_data_arrives_unchanged(node, data_folder):
    folder = study(data_folder, n=1)
    original = pydicom.dcmread(next(folder.iterdir()))
    import_dicomdir(str(folder))
    (instance,) = node.instances()
    received = pydicom.dcmread(__import__("io").BytesIO(node.get_bytes(f"/instances/{instance}/file")))
    assert received.PixelData == original.PixelData


def test_a_corrupt_file_sets_the_folder_aside_and_loses_nothing(node, data_folder):
    folder = study(data_folder, n=2, name="X")
    (folder / "notes.txt").write_text("this is not DICOM")
    truncated = folder / "truncated.dcm"
    truncated.write_bytes(open(get_testdata_file("MR_truncated.dcm"), "rb").read())

    import_dicomdir(str(folder))

    batch = Batch.objects.get(uid="X")
    assert batch.has_error
    messages = " ".join(e["message"] for e in batch.errors)
    assert "not a DICOM file" in messages and "truncated" in messages
    assert "notes.txt" not in messages  # file names may identify a patient
    err = data_folder / "X.err"
    assert sorted(p.name for p in err.iterdir()) == ["notes.txt", "truncated.dcm"]
    assert not folder.exists()
    # The good images were delivered, but a batch with errors keeps its files.
    assert len(node.instances()) == 2
    assert batch.status == "DONEPROCESSING"
    assert Image.objects.filter(batch=batch, status="SENT").count() == 2


def test_an_empty_folder_is_an_error(node, data_folder):
    (data_folder / "EMPTY").mkdir()
    import_dicomdir(str(data_folder / "EMPTY"))
    batch = Batch.objects.get(uid="EMPTY")
    assert batch.has_error and "holds no files" in batch.errors[0]["message"]
    assert (data_folder / "EMPTY.err").is_dir()


def test_the_same_study_dropped_twice_is_set_aside(node, data_folder):
    import_dicomdir(str(study(data_folder, n=1, name="DUP")))
    again = study(data_folder, n=1, name="DUP")
    import_dicomdir(str(again))
    batch = Batch.objects.get(uid="DUP")
    assert batch.has_error and "arrived again" in batch.errors[-1]["message"]
    assert len(list((data_folder / "DUP.err").iterdir())) == 1
    assert len(node.instances()) == 1


def test_running_a_step_twice_sends_nothing_twice(node, data_folder):
    folder = study(data_folder, n=2, name="TWICE")
    import_dicomdir(str(folder))
    import_dicomdir(str(folder))  # the folder is gone: nothing to do
    batch = Batch.objects.get(uid="TWICE")
    assert batch.status == "DONE" and len(node.instances()) == 2


def test_without_destinations_images_stay_in_media(node, data_folder, settings):
    settings.SEND_TO_ORTHANC = False
    import_dicomdir(str(study(data_folder, n=2, name="STATIC")))
    batch = Batch.objects.get(uid="STATIC")
    assert batch.status == "DONEPROCESSING" and not batch.has_error
    images = Image.objects.filter(batch=batch)
    assert [i.status for i in images] == ["DONEPROCESSING"] * 2
    for image in images:
        ds = pydicom.dcmread(f"{settings.MEDIA_ROOT}/{image.image}")
        assert ds.PatientID != PATIENT and image.uid == ds.SOPInstanceUID
    assert node.instances() == []


def test_originals_files_are_overwritten_by_later_outputs_and_nothing_of_them_remains(node, data_folder, settings):
    """De-identification writes most outputs into the files of originals already done with
    (sendit.deid.files._output): every output must still be whole and hold no original byte."""
    from sendit.apps.main.tasks.deidentify import CHUNK
    from sendit.deid.files import encoding, pixel_element_at

    settings.SEND_TO_ORTHANC = False
    n = 2 * CHUNK + 15
    folder = data_folder / "REUSE"
    make_ct_series(folder, n, rows=64, columns=64, patient_id=PATIENT, patient_name=NAME)
    pixels = {pydicom.dcmread(p).InstanceNumber: pydicom.dcmread(p).PixelData for p in folder.iterdir()}
    original_inodes = {p.stat().st_ino for p in folder.iterdir()}

    import_dicomdir(str(folder))

    batch = Batch.objects.get(uid="REUSE")
    assert batch.status == "DONEPROCESSING" and not batch.has_error, batch.errors
    media = Path(settings.MEDIA_ROOT) / "batches" / str(batch.id)
    assert not list((media / "raw").iterdir())  # every original deleted or taken over
    outputs = sorted((media / "deid").iterdir())
    assert len(outputs) == n and not [p for p in outputs if p.name.endswith(".part")]
    # All but the first chunk went into an original's file.
    assert len({p.stat().st_ino for p in outputs} & original_inodes) == n - CHUNK
    for path in outputs:
        raw = path.read_bytes()
        assert PATIENT.encode() not in raw and b"Doe" not in raw
        with open(path, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            start = fp.tell()
            header, length = pixel_element_at(fp, start, *encoding(ds))
            assert start + header + length == len(raw)  # the file ends with its pixels
        assert pydicom.dcmread(path).PixelData == pixels[ds.InstanceNumber]


def test_a_study_staged_with_hard_links_leaves_the_other_copies_untouched(node, data_folder, settings, tmp_path):
    """cp -al / rsync --link-dest staging: the files in the data folder share their bytes
    with copies outside it, which de-identification must never write into."""
    from sendit.apps.main.tasks.deidentify import CHUNK

    settings.SEND_TO_ORTHANC = False
    outside = tmp_path / "export"
    make_ct_series(outside, CHUNK + 10, rows=64, columns=64, patient_id=PATIENT, patient_name=NAME)
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    folder = data_folder / "LINKED"
    folder.mkdir()
    for path in outside.iterdir():
        (folder / path.name).hardlink_to(path)

    import_dicomdir(str(folder))

    batch = Batch.objects.get(uid="LINKED")
    assert batch.status == "DONEPROCESSING" and not batch.has_error, batch.errors
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    assert all(p.stat().st_nlink == 1 for p in outside.iterdir())  # sendit's names are gone
    for image in Image.objects.filter(batch=batch):
        assert pydicom.dcmread(Path(settings.MEDIA_ROOT) / image.image).PatientID != PATIENT


def test_deidentify_false_sends_as_it_arrived(node, data_folder, settings):
    settings.DEIDENTIFY = False
    import_dicomdir(str(study(data_folder, n=1, name="RAW")))
    assert Batch.objects.get(uid="RAW").log["deidentified"] is False
    (tags,) = orthanc_tags(node)
    assert tags["PatientID"] == PATIENT


def test_destination_down_then_retry_finishes_the_job(node, data_folder, settings):
    settings.ORTHANC_URL = "http://127.0.0.1:9"  # nothing listens there
    import_dicomdir(str(study(data_folder, n=2, name="DOWN")))
    batch = Batch.objects.get(uid="DOWN")
    assert batch.has_error and batch.status == "DONEPROCESSING"
    message = batch.errors[0]["message"]  # for people: the destination once, the cause, what to do
    assert message.startswith("Orthanc did not take 2 images: it is not answering") and "gave up at" in message
    assert f"retry_batch {batch.id}" in message
    assert Image.objects.filter(batch=batch, status="DONEPROCESSING").count() == 2

    settings.ORTHANC_URL = node.url
    retry_batch(batch)
    batch.refresh_from_db()
    assert batch.status == "DONE" and not batch.has_error
    assert len(batch.log["previous_errors"]) == 1
    assert len(node.instances()) == 2


def test_a_real_series_from_pydicom(node, data_folder):
    """Real MR files of one series shipped in pydicom's dicomdirtests."""
    import shutil
    from pathlib import Path

    source = Path(get_testdata_file("DICOMDIR")).parent / "77654033" / "CT2"
    folder = data_folder / "REAL"
    shutil.copytree(source, folder)
    n = len(list(folder.iterdir()))
    import_dicomdir(str(folder))
    batch = Batch.objects.get(uid="REAL")
    assert batch.status == "DONE", batch.errors
    assert len(node.instances()) == n


def test_a_lost_task_is_found_by_the_sweeper(node, data_folder, monkeypatch):
    """A broker restart can lose the queued next step; the sweeper queues it again."""
    from django.utils import timezone

    from sendit.apps.main import retry
    from sendit.apps.main.tasks import identifiers

    monkeypatch.setattr(identifiers.get_identifiers, "delay", lambda *a, **kw: None)  # lost
    import_dicomdir(str(study(data_folder, n=2, name="LOST")))
    batch = Batch.objects.get(uid="LOST")
    assert batch.status == "NEW" and node.instances() == []
    assert retry.sweep(older_than_seconds=600) == {}  # not stuck long enough yet
    monkeypatch.undo()
    # The lost step's hand-over has lapsed long since.
    hour_ago = timezone.now() - timezone.timedelta(hours=1)
    Batch.objects.filter(pk=batch.pk).update(modify_date=hour_ago, lease_until=hour_ago)

    assert retry.sweep(older_than_seconds=600) == {batch.id: "identifiers"}
    batch.refresh_from_db()
    assert batch.status == "DONE" and len(node.instances()) == 2


def test_static_storage_batches_are_not_swept(node, data_folder, settings):
    from django.utils import timezone

    from sendit.apps.main import retry

    settings.SEND_TO_ORTHANC = False
    import_dicomdir(str(study(data_folder, n=1, name="KEEP")))
    Batch.objects.filter(uid="KEEP").update(modify_date=timezone.now() - timezone.timedelta(hours=1))
    assert retry.sweep(older_than_seconds=600) == {}


def test_a_held_lease_keeps_a_second_worker_out(node, data_folder):
    from sendit.apps.main.tasks.common import BatchBusy, batch_lease

    batch = Batch.objects.create(uid="LEASED")
    with batch_lease(batch.id):
        with pytest.raises(BatchBusy):
            with batch_lease(batch.id):
                pass
    with batch_lease(batch.id):  # released: free again
        pass


def test_a_folder_of_several_patients_keeps_each_files_identity(data_folder):
    """Files of three patients, interleaved in nested folders: each Image points at its own
    patient's identity, each identity is recorded once, in the order first seen."""
    from sendit.apps.main.tasks.common import media_path
    from sendit.apps.main.tasks.import_dicom import _import_folder

    folder = data_folder / "MIXED"
    studies = {"PAT-A": "1.2.826.0.1.1", "PAT-B": "1.2.826.0.1.2", "PAT-C": "1.2.826.0.1.3"}
    for n, patient in enumerate(["PAT-A", "PAT-B", "PAT-C", "PAT-A", "PAT-B"]):
        make_ct_series(folder / f"part{n}", 2, patient_id=patient, study_uid=studies[patient], rows=8, columns=8)
    batch = Batch.objects.create(uid="MIXED")
    assert _import_folder(batch, folder) == 10
    identities = BatchIdentifiers.objects.get(batch=batch).identities
    assert [i["patient_id"] for i in identities] == ["PAT-A", "PAT-B", "PAT-C"]
    for image in Image.objects.filter(batch=batch):
        header = pydicom.dcmread(media_path(image.image), stop_before_pixels=True)
        assert identities[image.identity]["patient_id"] == header.PatientID
