"""Study/Series entities in gcloud's Datastore emulator, written after the GCS upload."""

import base64
import datetime
import uuid

import pydicom
import pytest

from sendit.deid import DeidOptions, deidentify_file
from sendit.deid.identifiers import StudyIdentifiers
from sendit.storage import DestinationError, get_destinations
from sendit.storage.datastore import DEFAULT_FIELDS
from tests.services import free_port, make_ct_series
from tests.storage.helpers import items_for

MARKER_NAME = "ZZMARKERNAME^ORIGINAL"
MARKER_ID = "ZZMARKERPID4711"


@pytest.fixture
def namespace():
    """A namespace per test: tests share the emulator and never see each other's entities."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ds_client(datastore_emulator, namespace):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import datastore

    return datastore.Client(
        project="test",
        namespace=namespace,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": datastore_emulator.url},
    )


def config(fake_gcs, bucket, emulator, namespace, **overrides):
    cfg = {
        "SEND_TO_GOOGLE": True,
        "GOOGLE_CLOUD_STORAGE": bucket,
        "GOOGLE_PROJECT_NAME": "test",
        "GOOGLE_STORAGE_COLLECTION": "IRB1234",
        "STORAGE_EMULATOR_HOST": fake_gcs.url,
        "GOOGLE_DATASTORE": "true",
        "DATASTORE_EMULATOR_HOST": emulator.host_port,
        "GOOGLE_DATASTORE_NAMESPACE": namespace,
        "SEND_RETRIES": 2,
        "SEND_BACKOFF": 0.05,
        "SEND_BACKOFF_MAX": 0.1,
    }
    cfg.update(overrides)
    return cfg


def deidentified_study(tmp_path):
    """Two series of one study with identifying markers, run through sendit.deid."""
    raw = make_ct_series(tmp_path / "raw1", 4, rows=32, columns=32, patient_id=MARKER_ID, patient_name=MARKER_NAME)
    study = pydicom.dcmread(raw[0]).StudyInstanceUID
    raw += make_ct_series(
        tmp_path / "raw2",
        3,
        rows=32,
        columns=32,
        patient_id=MARKER_ID,
        patient_name=MARKER_NAME,
        study_uid=study,
        seed=1,
    )
    originals = {study}
    for path in raw:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        originals |= {ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.AccessionNumber}
    ids = StudyIdentifiers(patient_suid="SUID42", study_suid="STUDY42", jitter=-17)
    options = DeidOptions(uid_secret=b"test-secret", clean_descriptors=True, retain_device_identity=True)
    out = []
    for k, path in enumerate(raw):
        dst = tmp_path / "deid" / f"{k}.dcm"
        deidentify_file(path, dst, ids, options)
        out.append(str(dst))
    return out, originals


def all_entities(ds_client):
    return list(ds_client.query(kind="Study").fetch()) + list(ds_client.query(kind="Series").fetch())


def test_entities_written_verified_and_updated_on_resend(
    fake_gcs, bucket, gcs_client, datastore_emulator, namespace, ds_client, tmp_path
):
    paths, originals = deidentified_study(tmp_path)
    items = items_for(paths)
    [dest] = get_destinations(config(fake_gcs, bucket, datastore_emulator, namespace, GOOGLE_STORAGE_FORMAT="nifti"))
    ok, status = dest.check()
    assert ok and "datastore: reachable" in status, status
    results = dest.send_batch(items)
    assert [r.error for r in results if not r.ok] == []

    study_uid = items[0].study_instance_uid
    assert study_uid not in originals
    study = ds_client.get(ds_client.key("Study", study_uid))
    assert study is not None
    assert study["entity"] == "SUID42" and study["collection"] == "IRB1234"
    assert study["images"] == 7 and study["series_count"] == 2
    assert study["modalities"] == ["CT"] and study["body_parts"] == ["CHEST"]
    assert study["StudyDate"] == "20240213"  # 2024-03-01 jittered by -17 days
    assert study["storage_format"] == "nifti" and study["storage_bucket"] == bucket
    assert study["objects"] == [f"Collection/IRB1234/Entity/SUID42/{study_uid}.json"]

    series = {e["SeriesInstanceUID"]: e for e in ds_client.query(kind="Series", ancestor=study.key).fetch()}
    assert sorted(series) == sorted({i.series_instance_uid for i in items})
    assert sorted(s["images"] for s in series.values()) == [3, 4]
    for uid, ent in series.items():
        assert ent.key.flat_path == ("Study", study_uid, "Series", uid)
        assert ent["Modality"] == "CT" and ent["BodyPartExamined"] == "CHEST"
        assert ent["SeriesDescription"] == "AXIAL 1.0"  # kept by the descriptor cleaning
        assert ent["Manufacturer"] == "SENDIT TEST"
        assert ent["SliceThickness"] == 1.0 and ent["PixelSpacing"] == [0.9765625, 0.9765625]
        assert ent["StudyDate"] == "20240213"
        assert ent["storage_format"] == "nifti" and ent["note"] is None
        assert sorted(o.rsplit("/", 1)[1].split(".", 1)[1] for o in ent["objects"]) == ["json", "nii.gz"]
        for name, size, md5 in zip(ent["objects"], ent["object_sizes"], ent["object_md5"]):
            blob = gcs_client.bucket(bucket).get_blob(name)
            assert blob.size == size
            assert base64.b64decode(blob.md5_hash).hex() == md5
        assert ent["bytes"] == sum(ent["object_sizes"])
        assert sorted(ent["sop_instance_uids"]) == sorted(
            i.sop_instance_uid for i in items if i.series_instance_uid == uid
        )
        assert isinstance(ent["sent"], datetime.datetime) and ent["first_sent"] == ent["sent"]

    # no original identifier anywhere (names, ids, UIDs, accession)
    text = repr([(e.key.flat_path, dict(e)) for e in all_entities(ds_client)])
    for marker in ("ZZMARKER", "Test Hospital", "Doctor^Referring", *sorted(originals)):
        assert marker not in text, marker

    # a re-send updates the same entities: same keys, same count, new `sent`, same `first_sent`
    before = {e.key.flat_path: dict(e) for e in all_entities(ds_client)}
    again = dest.send_batch(items)
    assert all(r.ok and r.already_stored for r in again)
    after = {e.key.flat_path: dict(e) for e in all_entities(ds_client)}
    assert sorted(after) == sorted(before) and len(after) == 3
    for key, ent in after.items():
        assert ent["first_sent"] == before[key]["first_sent"]
        assert ent["sent"] > before[key]["sent"]
        assert {k: v for k, v in ent.items() if k != "sent"} == {k: v for k, v in before[key].items() if k != "sent"}


def test_series_sent_in_parts_is_merged(fake_gcs, bucket, datastore_emulator, namespace, ds_client, tmp_path):
    paths = make_ct_series(tmp_path / "in", 5, rows=16, columns=16, patient_id="SUID7")
    items = items_for(paths)
    [dest] = get_destinations(
        config(
            fake_gcs,
            bucket,
            datastore_emulator,
            namespace,
            GOOGLE_DATASTORE_STUDY_KIND="ImagingStudy",
            GOOGLE_DATASTORE_SERIES_KIND="ImagingSeries",
            GOOGLE_DATASTORE_FIELDS="Modality, SeriesNumber, StudyDescription",
        )
    )
    assert all(r.ok for r in dest.send_batch(items[:2]))
    assert all(r.ok for r in dest.send_batch(items[2:]))
    item = items[0]
    study = ds_client.get(ds_client.key("ImagingStudy", item.study_instance_uid))
    series = ds_client.get(
        ds_client.key("ImagingStudy", item.study_instance_uid, "ImagingSeries", item.series_instance_uid)
    )
    assert study["images"] == 5 and study["StudyDescription"] == "CT CHEST W/O CONTRAST"
    assert "Modality" not in study and "BodyPartExamined" not in series
    assert series["images"] == 5 and series["Modality"] == "CT" and series["SeriesNumber"] == 2
    assert series["storage_format"] == "dicom" and len(series["objects"]) == 5
    assert series["objects"] == sorted(r.remote_id for r in dest.send_batch(items))
    assert len(list(ds_client.query(kind="ImagingSeries").fetch())) == 1


def test_fallback_series_is_described_with_its_note(
    fake_gcs, bucket, datastore_emulator, namespace, ds_client, tmp_path
):
    [path] = make_ct_series(tmp_path / "in", 1, rows=16, columns=16, patient_id="SUID8")
    [item] = items_for([path])
    [dest] = get_destinations(config(fake_gcs, bucket, datastore_emulator, namespace, GOOGLE_STORAGE_FORMAT="nifti"))
    [result] = dest.send_batch([item])
    assert result.ok and "sent as DICOM" in result.note
    series = ds_client.get(ds_client.key("Study", item.study_instance_uid, "Series", item.series_instance_uid))
    assert series["storage_format"] == "dicom" and series["objects"] == [result.remote_id]
    assert "single image" in series["note"]


@pytest.mark.parametrize(
    "fields, message",
    [
        ("Modality,PatientName", "PatientName identifies a person"),
        ("Modality,AccessionNumber", "AccessionNumber identifies a person"),
        ("Modality,NoSuchKeyword", "'NoSuchKeyword' is not a DICOM keyword"),
    ],
)
def test_identifying_or_unknown_fields_are_refused(fields, message):
    cfg = {
        "SEND_TO_GOOGLE": True,
        "GOOGLE_CLOUD_STORAGE": "b",
        "GOOGLE_STORAGE_COLLECTION": "c",
        "STORAGE_EMULATOR_HOST": "http://127.0.0.1:1",
        "GOOGLE_DATASTORE": True,
        "DATASTORE_EMULATOR_HOST": "127.0.0.1:1",
        "GOOGLE_DATASTORE_FIELDS": fields,
    }
    with pytest.raises(DestinationError, match=message):
        get_destinations(cfg)


def test_default_fields():
    assert DEFAULT_FIELDS == (
        "Modality",
        "BodyPartExamined",
        "SeriesDescription",
        "StudyDate",
        "Manufacturer",
        "ManufacturerModelName",
        "SliceThickness",
        "PixelSpacing",
    )


def test_datastore_down_fails_the_images_and_is_retried(fake_gcs, bucket, gcs_client, tmp_path):
    items = items_for(make_ct_series(tmp_path / "in", 2, rows=16, columns=16))
    cfg = {
        "SEND_TO_GOOGLE": True,
        "GOOGLE_CLOUD_STORAGE": bucket,
        "GOOGLE_STORAGE_COLLECTION": "c",
        "STORAGE_EMULATOR_HOST": fake_gcs.url,
        "GOOGLE_DATASTORE": True,
        "DATASTORE_EMULATOR_HOST": f"127.0.0.1:{free_port()}",
        "SEND_TIMEOUT": 3,
        "SEND_RETRIES": 1,
        "SEND_BACKOFF": 0.05,
        "SEND_BACKOFF_MAX": 0.1,
    }
    [dest] = get_destinations(cfg)
    results = dest.send_batch(items)
    assert all(not r.ok and "datastore: unavailable" in r.error for r in results), [r.error for r in results]
    assert all(r.attempts == 2 for r in results)
    ok, status = dest.check()
    assert not ok and "datastore" in status
    # the objects themselves are in the bucket: a later re-send uploads nothing
    assert len(list(gcs_client.list_blobs(bucket))) == 3
