"""Google Cloud Storage destination against fake-gcs-server (tests/services.py)."""

import base64
import hashlib
import io
import json
import tarfile

from sendit.storage import get_destinations
from tests.services import make_ct_series
from tests.storage.helpers import items_for, sample_files


def gcs_config(fake_gcs, bucket, **overrides):
    cfg = {
        "SEND_TO_GOOGLE": True,
        "GOOGLE_CLOUD_STORAGE": bucket,
        "GOOGLE_PROJECT_NAME": "test",
        "GOOGLE_STORAGE_COLLECTION": "IRB1234",
        "STORAGE_EMULATOR_HOST": fake_gcs.url,
        "SEND_RETRIES": 2,
        "SEND_BACKOFF": 0.05,
        "SEND_BACKOFF_MAX": 0.1,
    }
    cfg.update(overrides)
    return cfg


def dest_for(cfg):
    [dest] = get_destinations(cfg)
    return dest


def test_objects_arrive_intact_and_resend_is_harmless(fake_gcs, bucket, client, tmp_path):
    paths = sample_files(tmp_path / "in", n_ct=3)
    items = items_for(paths)
    dest = dest_for(gcs_config(fake_gcs, bucket))
    assert dest.check()[0]
    results = dest.send_batch(items)
    assert [r.error for r in results if not r.ok] == []
    generations = {}
    for path, item, r in zip(paths, items, results):
        assert r.remote_id == (
            f"Collection/IRB1234/Entity/{item.patient_id}/{item.study_instance_uid}/"
            f"{item.series_instance_uid}/{item.sop_instance_uid}.dcm"
        )
        blob = client.bucket(bucket).get_blob(r.remote_id)
        with open(path, "rb") as f:
            local = f.read()
        assert blob.download_as_bytes() == local
        assert blob.md5_hash == base64.b64encode(hashlib.md5(local).digest()).decode()
        generations[r.remote_id] = blob.generation
    json_names = sorted(b.name for b in client.list_blobs(bucket) if b.name.endswith(".json"))
    assert len(json_names) == len({(i.patient_id, i.study_instance_uid) for i in items})
    json_gen = {n: client.bucket(bucket).get_blob(n).generation for n in json_names}

    again = dest.send_batch(items)
    assert all(r.ok and r.already_stored for r in again)
    for name, generation in generations.items():
        assert client.bucket(bucket).get_blob(name).generation == generation
    for name, generation in json_gen.items():
        assert client.bucket(bucket).get_blob(name).generation == generation
    assert len(list(client.list_blobs(bucket))) == len(items) + len(json_names)


def test_a_different_image_with_the_same_uids_is_not_overwritten(fake_gcs, bucket, client, tmp_path):
    """An image's object is named by its UIDs: another image with the same UIDs (another
    batch's, another version) fails instead of replacing the one delivered before."""
    import pydicom

    a, bystander = make_ct_series(tmp_path / "in", 2)
    ds = pydicom.dcmread(a)
    ds.SeriesDescription = "ANOTHER VERSION"
    b = str(tmp_path / "b.dcm")
    ds.save_as(b)
    dest = dest_for(gcs_config(fake_gcs, bucket))
    [first] = dest.send_batch(items_for([a]))
    assert first.ok and not first.already_stored, first.error
    generation = client.bucket(bucket).get_blob(first.remote_id).generation

    other, fine = dest.send_batch(items_for([b, bystander]))
    assert not other.ok and other.error == "gcs: a different instance with this UID is already stored"
    assert other.attempts == 1  # permanent: not retried
    assert fine.ok and not fine.already_stored, fine.error
    stored = client.bucket(bucket).get_blob(first.remote_id)
    assert stored.generation == generation
    with open(a, "rb") as f:
        assert stored.download_as_bytes() == f.read()
    name = first.remote_id.rsplit("/", 2)[0] + ".json"  # the study JSON lists one copy
    doc = json.loads(client.bucket(bucket).get_blob(name).download_as_bytes())
    assert doc["images"] == 2

    [again] = dest.send_batch(items_for([a]))  # the same file: delivered already
    assert again.ok and again.already_stored, again.error
    assert client.bucket(bucket).get_blob(first.remote_id).generation == generation


def test_an_object_changed_in_the_bucket_is_not_overwritten(fake_gcs, bucket, client, tmp_path):
    """Whatever now sits under an image's name is not ours to replace: the image fails, the
    object stays (someone must look at it)."""
    [path] = make_ct_series(tmp_path / "in", 1)
    items = items_for([path])
    dest = dest_for(gcs_config(fake_gcs, bucket))
    [first] = dest.send_batch(items)
    client.bucket(bucket).blob(first.remote_id).upload_from_string(b"changed")
    [second] = dest.send_batch(items)
    assert not second.ok and "a different instance with this UID is already stored" in second.error
    assert client.bucket(bucket).blob(first.remote_id).download_as_bytes() == b"changed"


def test_tar_gz_format_and_study_metadata(fake_gcs, bucket, client, tmp_path):
    paths = make_ct_series(tmp_path / "a", 4, patient_id="SUID9", study_uid="1.2.826.0.1.3680043.8.498.1")
    paths += make_ct_series(tmp_path / "b", 2, patient_id="SUID9", study_uid="1.2.826.0.1.3680043.8.498.1")
    items = items_for(paths)
    dest = dest_for(gcs_config(fake_gcs, bucket, GOOGLE_STORAGE_FORMAT="dicom.tar.gz"))
    results = dest.send_batch(items)
    assert [r.error for r in results if not r.ok] == []
    prefix = "Collection/IRB1234/Entity/SUID9/1.2.826.0.1.3680043.8.498.1"
    assert {r.remote_id for r in results} == {prefix + ".tar.gz"}
    assert sorted(b.name for b in client.list_blobs(bucket)) == [prefix + ".json", prefix + ".tar.gz"]

    archive = client.bucket(bucket).get_blob(prefix + ".tar.gz")
    with tarfile.open(fileobj=io.BytesIO(archive.download_as_bytes()), mode="r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert len(members) == 6
    for path, item in zip(paths, items):
        with open(path, "rb") as f:
            assert members[f"{item.series_instance_uid}/{item.sop_instance_uid}.dcm"] == f.read()

    doc = json.loads(client.bucket(bucket).get_blob(prefix + ".json").download_as_bytes())
    assert doc["StudyInstanceUID"] == "1.2.826.0.1.3680043.8.498.1"
    assert doc["images"] == 6 and doc["modalities"] == ["CT"] and doc["body_parts"] == ["CHEST"]
    assert sorted(s["images"] for s in doc["series"]) == [2, 4]
    assert doc["bytes"] == sum(len(v) for v in members.values())
    assert all(s["SeriesDescription"] == "AXIAL 1.0" for s in doc["series"])
    assert str(tmp_path) not in json.dumps(doc)  # no input paths in the metadata

    generation = archive.generation
    again = dest.send_batch(items)  # deterministic archive: no re-upload
    assert all(r.ok and r.already_stored for r in again)
    assert client.bucket(bucket).get_blob(prefix + ".tar.gz").generation == generation


def test_metadata_merges_studies_sent_in_parts(fake_gcs, bucket, client, tmp_path):
    paths = make_ct_series(tmp_path / "a", 5, patient_id="SUID7", study_uid="1.2.826.0.1.3680043.8.498.7")
    items = items_for(paths)
    dest = dest_for(gcs_config(fake_gcs, bucket))
    assert all(r.ok for r in dest.send_batch(items[:2]))
    assert all(r.ok for r in dest.send_batch(items[2:]))
    name = "Collection/IRB1234/Entity/SUID7/1.2.826.0.1.3680043.8.498.7.json"
    doc = json.loads(client.bucket(bucket).get_blob(name).download_as_bytes())
    assert doc["images"] == 5 and sorted(doc["instances"]) == sorted(i.sop_instance_uid for i in items)


def test_missing_bucket_fails_without_retries(fake_gcs, tmp_path):
    items = items_for(make_ct_series(tmp_path / "in", 3))
    dest = dest_for(gcs_config(fake_gcs, "no-such-bucket", SEND_BACKOFF=1.0))
    results = dest.send_batch(items)
    assert all(not r.ok and "bucket" in r.error and r.attempts == 1 for r in results)  # no retries
    assert dest.check() == (False, "gcs: bucket no-such-bucket not found")


def test_gcs_down_for_good(tmp_path):
    from tests.services import free_port

    items = items_for(make_ct_series(tmp_path / "in", 3))
    cfg = {
        "SEND_TO_GOOGLE": True,
        "GOOGLE_CLOUD_STORAGE": "b-gone",
        "GOOGLE_STORAGE_COLLECTION": "c",
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{free_port()}",
        "SEND_RETRIES": 2,
        "SEND_BACKOFF": 0.05,
        "SEND_BACKOFF_MAX": 0.1,
        "SEND_TIMEOUT": 5,
    }
    dest = dest_for(cfg)
    results = dest.send_batch(items)
    assert all(not r.ok and "gave up after 3 attempts" in r.error for r in results), [r.error for r in results]
    assert not dest.check()[0]
