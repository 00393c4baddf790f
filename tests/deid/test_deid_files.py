"""Whole files: every readable pydicom test file, identities, dciodvfy, speed."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from sendit.deid import OutputNotProven, deidentify_file, read_identity
from sendit.deid.proof import DICOMDIR_CLASS, PIXEL_TAGS, declares_pixels

PINNED = Path(__file__).resolve().parents[1] / "data" / "pydicom_files.txt"
SITE = Path(pydicom.__file__).resolve().parents[1]


def _pinned():
    """The real files this module runs: the list in tests/data/pydicom_files.txt (pydicom's and
    pydicom-data's files that pydicom reads), so that the run does not depend on downloads."""
    lines = PINNED.read_text().splitlines()
    return [str(SITE / line) for line in lines if line and not line.startswith("#")]


READABLE = _pinned()


def test_every_pinned_file_is_there():
    missing = [p for p in READABLE if not Path(p).is_file()]
    assert len(READABLE) > 200 and not missing, f"pinned files missing (reinstall pydicom-data?): {missing[:5]}"


#: pydicom's damaged test files: pydicom reads them, but no output of them can be proven
NOT_PROVEN = {
    "MR_truncated.dcm": "runs past the end of the input file",  # pixel data cut short
    "rtplan_truncated.dcm": "runs past the end of the input file",  # a sequence cut short
    "emri_small_jpeg_2k_lossless_too_short.dcm": "lost",  # the whole read loses the header
    "meta_missing_tsyntax.dcm": "no transfer syntax",
}


def expected_refusal(path, before):
    """Why the output of a pydicom test file is not proven, or None when it must be."""
    if Path(path).name in NOT_PROVEN:
        return NOT_PROVEN[Path(path).name]
    if "SOPInstanceUID" not in before and before.file_meta.get("MediaStorageSOPClassUID") != DICOMDIR_CLASS:
        return "no SOP Instance UID"  # not an instance: bare data sets
    if not any(tag in before for tag in PIXEL_TAGS) and declares_pixels(before):
        return "without pixel data"  # dicomdirtests' header-only CT images
    return None


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("path", READABLE, ids=[Path(p).name for p in READABLE])
def test_pydicom_file_roundtrip(path, tmp_path, ids, options):
    before = dcmread(path)
    out = tmp_path / "out.dcm"
    refusal = expected_refusal(path, before)
    if refusal:
        with pytest.raises(OutputNotProven, match=refusal):
            deidentify_file(path, out, ids, options, require_pixels=True)
        assert not list(tmp_path.iterdir())
        return
    result = deidentify_file(path, out, ids, options, require_pixels=True)
    after = dcmread(out)
    if "PixelData" in before:
        assert after.PixelData == before.PixelData
    meta_before = getattr(before, "file_meta", None)
    if meta_before is not None and "TransferSyntaxUID" in meta_before:
        assert after.file_meta.TransferSyntaxUID == meta_before.TransferSyntaxUID
    assert after.PatientID == ids.patient_suid
    assert after.PatientIdentityRemoved == "YES"
    if "SOPInstanceUID" not in before:  # a DICOMDIR names itself in its file meta only
        assert after.file_meta.MediaStorageSOPInstanceUID != before.file_meta.MediaStorageSOPInstanceUID
        return
    assert result["sop_uid"] == after.SOPInstanceUID != before.SOPInstanceUID
    assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID
    if "StudyInstanceUID" in before:
        assert result["study_uid"] == after.StudyInstanceUID
    if before.get("PatientName"):
        assert str(before.PatientName) not in out.read_bytes().decode("latin-1") or not str(before.PatientName)


def test_most_pydicom_files_are_proven(tmp_path, ids, options):
    """The refusals above are the damaged files and the non-instances, nothing else."""
    refused = [p for p in READABLE if expected_refusal(p, dcmread(p))]
    assert len(READABLE) - len(refused) > 150, len(refused)


def test_read_identity():
    path = get_testdata_file("CT_small.dcm")
    identity = read_identity(path)
    assert set(identity) == {
        "patient_id",
        "birth_date",
        "accession",
        "study_date",
        "study_time",
        "study_uid",
        "sop_uid",
        "burned_in",
    }
    ds = dcmread(path)
    assert identity["patient_id"] == ds.PatientID
    assert identity["study_uid"] == ds.StudyInstanceUID
    assert identity["study_date"] == ds.StudyDate
    assert identity["accession"] == ""
    assert all(isinstance(v, str) for v in identity.values())


# -- dciodvfy -----------------------------------------------------------------------
DCIODVFY = shutil.which("dciodvfy")


def _errors(path):
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return sum(1 for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error"))


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed")
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm"])
def test_dciodvfy_no_new_errors(name, tmp_path, ids, options):
    src = get_testdata_file(name)
    out = tmp_path / name
    deidentify_file(src, out, ids, options)
    assert _errors(out) <= _errors(src)


# -- speed --------------------------------------------------------------------------
def _ct(path):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5.6"
    ds.StudyInstanceUID = "1.2.3.4.5"
    ds.SeriesInstanceUID = "1.2.3.4.5.1"
    ds.FrameOfReferenceUID = "1.2.3.4.5.2"
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "DOE^J", "MRN", "ACC"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20200101"
    ds.InstitutionName, ds.StationName, ds.Modality = "HOSP", "ST", "CT"
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.zeros((512, 512), dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


# -- reusing a file no longer needed ------------------------------------------------
@pytest.mark.parametrize("name", ["CT_small.dcm", "JPEG2000.dcm", "rtplan.dcm"])
@pytest.mark.parametrize("kernel_copy", [True, False], ids=["copy_file_range", "python-copy"])
def test_a_reused_file_holds_the_same_bytes_as_a_new_one(name, kernel_copy, tmp_path, ids, options, monkeypatch):
    if not kernel_copy:

        def refuse(*args):
            raise OSError("copy_file_range refused")

        monkeypatch.setattr("sendit.deid.files.os.copy_file_range", refuse)
    src = get_testdata_file(name)
    fresh = tmp_path / "fresh.dcm"
    deidentify_file(src, fresh, ids, options)
    # A longer file full of an original's identifying bytes: none may survive.
    spare = tmp_path / "spare.dcm"
    spare.write_bytes(b"DOE^JANE MRN12345678 " * 100_000)
    out = tmp_path / "out.dcm"
    deidentify_file(src, out, ids, options, reuse=spare)
    assert out.read_bytes() == fresh.read_bytes()
    assert not spare.exists() and not (tmp_path / "out.dcm.part").exists()


def test_a_file_with_another_name_is_never_overwritten(tmp_path, ids, options):
    """An original staged as a hard link (cp -al, rsync --link-dest) shares its bytes with a
    file outside sendit: only sendit's name for it goes."""
    outside = tmp_path / "pacs-export.dcm"
    outside.write_bytes(b"the hospital's own copy " * 1000)
    spare = tmp_path / "spare.dcm"
    spare.hardlink_to(outside)
    out = tmp_path / "out.dcm"
    deidentify_file(get_testdata_file("CT_small.dcm"), out, ids, options, reuse=spare)
    assert outside.read_bytes() == b"the hospital's own copy " * 1000
    assert not spare.exists() and dcmread(out).PatientID == ids.patient_suid
    assert out.stat().st_ino != outside.stat().st_ino


def test_a_reused_file_that_is_gone_is_replaced_by_a_new_one(tmp_path, ids, options):
    out = tmp_path / "out.dcm"
    deidentify_file(get_testdata_file("CT_small.dcm"), out, ids, options, reuse=tmp_path / "missing")
    assert dcmread(out).PatientID == ids.patient_suid


def test_a_failed_write_into_a_reused_file_leaves_nothing_half_written(tmp_path, ids, options, monkeypatch):
    def fail(ds, fp):
        fp.write(b"\0" * 200)
        raise ValueError("cannot encode")

    monkeypatch.setattr("sendit.deid.files.write_dataset", fail)
    spare = tmp_path / "spare.dcm"
    spare.write_bytes(b"DOE^JANE " * 10_000)
    with pytest.raises(ValueError):
        deidentify_file(get_testdata_file("CT_small.dcm"), tmp_path / "out.dcm", ids, options, reuse=spare)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
