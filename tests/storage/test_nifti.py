"""DICOM series -> NIfTI: geometry, values, header hygiene, fall-backs, and the GCS round trip."""

import gzip
import hashlib
import json
import random

import nibabel as nib
import numpy as np
import pydicom
import pytest

from sendit.storage import get_destinations
from sendit.storage.nifti import HEADER_TEXT, NotConvertible, build_volume, write_nifti
from tests.services import make_ct_series
from tests.storage.helpers import items_for

MARKER_NAME = "ZZMARKERNAME^ORIGINAL"
MARKER_ID = "ZZMARKERPID4711"


def _edit(paths, fn):
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        fn(k, ds)
        ds.save_as(path)
    return paths


def _oblique(paths, slope="2", intercept="-1000.5"):
    """Rotate the series 30 degrees about x, anisotropic pixels, 2.5 mm steps, float rescale."""
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, c, s])
    normal = np.cross(row, col)
    origin = np.array([-120.0, -80.5, 33.25])

    def fn(k, ds):
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row, *col)]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in origin + k * 2.5 * normal]
        ds.PixelSpacing = ["0.8", "0.6"]  # between rows, between columns
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept

    return _edit(paths, fn), row, col, normal, origin


def _expected_ras(ipp, row, col, dr, dc, i, j):
    lps = np.asarray(ipp, float) + i * dc * np.asarray(row) + j * dr * np.asarray(col)
    return np.array([-lps[0], -lps[1], lps[2]])


def test_ct_series_affine_and_values_match_dicom(tmp_path):
    paths = make_ct_series(tmp_path / "in", 6, rows=40, columns=32, patient_name=MARKER_NAME, patient_id=MARKER_ID)
    shuffled = paths[:]
    random.Random(3).shuffle(shuffled)
    vol = build_volume(shuffled)
    assert vol.data.shape == (32, 40, 6) and vol.data.dtype == np.int16
    out = tmp_path / "ct.nii.gz"
    write_nifti(vol, str(out))
    img = nib.load(str(out))
    data = np.asarray(img.dataobj)
    assert img.header.get_sform(coded=True)[1] == 1 and img.header.get_qform(coded=True)[1] == 1
    # slices sorted by position along the normal (z here): k=0 is the lowest slice
    by_z = sorted(paths, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    for k, path in enumerate(by_z):
        ds = pydicom.dcmread(path)
        expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.array_equal(data[:, :, k].T, expected)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        iop = [float(v) for v in ds.ImageOrientationPatient]
        for i, j in ((0, 0), (31, 0), (0, 39), (31, 39), (7, 11)):
            got = img.affine @ np.array([i, j, k, 1.0])
            assert np.allclose(
                got[:3], _expected_ras(ds.ImagePositionPatient, iop[:3], iop[3:], dr, dc, i, j), atol=1e-4
            )
    assert vol.sop_instance_uids == [str(pydicom.dcmread(p).SOPInstanceUID) for p in by_z]


def test_oblique_series_with_float_rescale(tmp_path):
    paths = make_ct_series(tmp_path / "in", 5, rows=24, columns=20)
    paths, row, col, normal, origin = _oblique(paths)
    vol = build_volume(list(reversed(paths)))
    assert vol.data.dtype == np.float32
    assert vol.slice_step == pytest.approx(2.5)
    out = tmp_path / "ob.nii.gz"
    write_nifti(vol, str(out))
    img = nib.load(str(out))
    data = np.asarray(img.dataobj)
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert np.allclose(data[:, :, k].T, ds.pixel_array * 2.0 - 1000.5)
        ipp = origin + k * 2.5 * normal
        for i, j in ((0, 0), (19, 0), (0, 23), (19, 23)):
            got = img.affine @ np.array([i, j, k, 1.0])
            assert np.allclose(got[:3], _expected_ras(ipp, row, col, 0.8, 0.6, i, j), atol=1e-4)
    assert np.allclose(nib.affines.voxel_sizes(img.affine), [0.6, 0.8, 2.5])


def test_header_has_no_identifying_text_and_bytes_are_deterministic(tmp_path):
    paths = make_ct_series(tmp_path / "in", 3, rows=16, columns=16, patient_name=MARKER_NAME, patient_id=MARKER_ID)
    vol = build_volume(paths)
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    write_nifti(vol, str(a))
    write_nifti(build_volume(paths[::-1]), str(b))
    assert a.read_bytes() == b.read_bytes()
    raw = gzip.decompress(a.read_bytes())
    assert b"ZZMARKER" not in raw and b"Test Hospital" not in raw
    header = nib.load(str(a)).header
    for key, value in HEADER_TEXT.items():
        assert header[key].item() == value
    assert len(header.extensions) == 0
    assert a.read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime 0


EXPECTED_REASON = {
    "single": "single image",
    "mixed_orientation": "different orientations",
    "mixed_size": "different sizes",
    "gap": "non-uniform slice spacing",
    "duplicate": "same position",
    "multiframe": "multi-frame",
    "undecodable": "pixel data cannot be decoded (JPEG 2000",
}


@pytest.mark.parametrize(
    "case", ["single", "mixed_orientation", "mixed_size", "gap", "duplicate", "multiframe", "undecodable"]
)
def test_series_that_cannot_be_converted(tmp_path, case):
    paths = make_ct_series(tmp_path / "in", 4, rows=16, columns=16)
    if case == "single":
        paths = paths[:1]
    elif case == "mixed_orientation":
        _edit(paths[:1], lambda k, ds: setattr(ds, "ImageOrientationPatient", ["0", "1", "0", "0", "0", "-1"]))
    elif case == "mixed_size":

        def fn(k, ds):
            ds.Rows, ds.Columns = 8, 32

        _edit(paths[:1], fn)
    elif case == "gap":
        paths = paths[:1] + paths[2:]
    elif case == "duplicate":
        _edit(paths[1:2], lambda k, ds: setattr(ds, "ImagePositionPatient", ["-250.0", "-250.0", "0.0"]))
    elif case == "multiframe":
        _edit(paths, lambda k, ds: setattr(ds, "NumberOfFrames", "2"))
    elif case == "undecodable":
        from pydicom.encaps import encapsulate
        from pydicom.uid import JPEG2000Lossless

        def fn(k, ds):
            ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
            ds.PixelData = encapsulate([b"\xff\x4f\xff\x51not-a-codestream" * 4])
            ds["PixelData"].VR = "OB"

        _edit(paths, fn)
    with pytest.raises(NotConvertible) as info:
        build_volume(paths)
    assert EXPECTED_REASON[case] in str(info.value)
    assert "ZZMARKER" not in str(info.value) and str(tmp_path) not in str(info.value)


# -- through fake-gcs-server --------------------------------------------------------------


def nifti_config(fake_gcs, bucket, **overrides):
    cfg = {
        "SEND_TO_GOOGLE": True,
        "GOOGLE_CLOUD_STORAGE": bucket,
        "GOOGLE_PROJECT_NAME": "test",
        "GOOGLE_STORAGE_COLLECTION": "IRB1234",
        "STORAGE_EMULATOR_HOST": fake_gcs.url,
        "GOOGLE_STORAGE_FORMAT": "nifti",
        "SEND_RETRIES": 2,
        "SEND_BACKOFF": 0.05,
        "SEND_BACKOFF_MAX": 0.1,
    }
    cfg.update(overrides)
    return cfg


def test_nifti_round_trip_through_gcs_keeps_the_bytes(fake_gcs, bucket, client, tmp_path):
    paths = make_ct_series(tmp_path / "ct", 5, rows=48, columns=40, patient_id="SUID5")
    [single] = make_ct_series(
        tmp_path / "one",
        1,
        rows=16,
        columns=16,
        patient_id="SUID5",
        study_uid=pydicom.dcmread(paths[0]).StudyInstanceUID,
    )
    items = items_for(paths + [single])
    [dest] = get_destinations(nifti_config(fake_gcs, bucket))
    results = dest.send_batch(items)
    assert [r.error for r in results if not r.ok] == []

    # the 3D series: one volume for all its images, no note
    names = {r.remote_id for r in results[:5]}
    assert len(names) == 1
    [nii_name] = names
    item = items[0]
    assert nii_name == (
        f"Collection/IRB1234/Entity/SUID5/{item.study_instance_uid}/"
        f"{item.series_instance_uid}/sub-SUID5_ses-"
        f"{hashlib.sha1(item.study_instance_uid.encode()).hexdigest()[:10]}"
        f"_acq-AXIAL10_run-2_CT.nii.gz"
    )
    assert all(r.note is None for r in results[:5])
    local = tmp_path / "local.nii.gz"
    write_nifti(build_volume(paths), str(local))
    blob = client.bucket(bucket).get_blob(nii_name)
    remote = blob.download_as_bytes()
    assert remote == local.read_bytes()
    img = nib.Nifti1Image.from_bytes(gzip.decompress(remote))
    assert np.array_equal(np.asarray(img.dataobj), np.asarray(nib.load(str(local)).dataobj))
    sidecar = json.loads(client.bucket(bucket).get_blob(nii_name[:-7] + ".json").download_as_bytes())
    assert sidecar["Modality"] == "CT" and sidecar["PixelSpacing"] == [0.9765625, 0.9765625]
    assert sidecar["SliceThickness"] == 1.0 and sidecar["SeriesDescription"] == "AXIAL 1.0"
    assert sorted(sidecar["SourceSOPInstanceUIDs"]) == sorted(i.sop_instance_uid for i in items[:5])

    # the single 2D image: sent as DICOM, with a note that says why
    last = results[5]
    assert last.remote_id.endswith(f"/{items[5].sop_instance_uid}.dcm")
    assert "not converted (single image" in last.note and "sent as DICOM" in last.note
    with open(single, "rb") as f:
        assert client.bucket(bucket).get_blob(last.remote_id).download_as_bytes() == f.read()

    study_json = json.loads(
        client.bucket(bucket)
        .get_blob(f"Collection/IRB1234/Entity/SUID5/{item.study_instance_uid}.json")
        .download_as_bytes()
    )
    assert study_json["format"] == "nifti" and study_json["images"] == 6
    assert study_json["instances"][item.sop_instance_uid]["object"] == nii_name

    generation = blob.generation
    again = dest.send_batch(items)
    assert all(r.ok and r.already_stored for r in again)
    assert client.bucket(bucket).get_blob(nii_name).generation == generation
    assert len(list(client.list_blobs(bucket))) == 4  # nii, sidecar, 1 dcm, study json


def test_series_split_across_calls_is_never_a_partial_volume(fake_gcs, bucket, client, tmp_path):
    paths = make_ct_series(tmp_path / "ct", 6, rows=16, columns=16, patient_id="SUID6")
    items = items_for(paths)
    [dest] = get_destinations(nifti_config(fake_gcs, bucket))
    # the caller says the series has 6 images; a call with 4 of them sends DICOM
    for it in items:
        it.metadata["SeriesImageCount"] = 6
    part = dest.send_batch(items[:4])
    assert all(r.ok and r.remote_id.endswith(".dcm") and "split across send calls" in r.note for r in part)
    whole = dest.send_batch(items)
    assert all(r.ok and r.remote_id.endswith(".nii.gz") for r in whole)
    # without the count: a later call holding other images of a stored volume sends DICOM
    plain = items_for(paths)
    rest = dest.send_batch(plain[:3])
    assert all(r.ok and r.remote_id.endswith(".dcm") and "stored volume holds other images" in r.note for r in rest)
