"""A file through deidentify_file with a recipe whose filter rules carry pixel regions: the
output's pixels are what deid's DicomCleaner gives for the same recipe, the header is
de-identified and proven, and the original is untouched."""

import contextlib
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from sendit.deid import DeidOptions, Recipe, deidentify_file
from sendit.deid.identifiers.request import StudyIdentifiers

deid_data = pytest.importorskip("deid_data")
DEID_DATA = Path(deid_data.__file__).parent / "data"
IDS = StudyIdentifiers(patient_suid="PSUID9", study_suid="SSUID9", jitter=-7)
SECRET = b"pixel-pipeline-secret"


def deid_cleaned(path: Path, recipe_name: str) -> np.ndarray:
    """deid's own DicomCleaner on the file (the oracle)."""
    from deid.config.utils import get_deid
    from deid.dicom import DicomCleaner

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cleaner = DicomCleaner(deid=get_deid(recipe_name.removeprefix("deid.")))
        cleaner.detect(str(path))
        return cleaner.clean()


@pytest.mark.parametrize(
    "name", ["ultrasounds/GREYSCALE_IMAGE.dcm", "ultrasounds/RGB_IMAGE.dcm", "ultrasounds/ultrasound-multiframe.dcm"]
)
def test_deid_ultrasound_recipe_cleans_like_deid(name, tmp_path):
    src = DEID_DATA / name
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "out.dcm"
    options = DeidOptions(uid_secret=SECRET, recipe=Recipe.load("deid.dicom.ultrasound"))
    result = deidentify_file(src, out, IDS, options, require_pixels=True)
    assert result["cleaned"] == "graylist: Blank Image; graylist: Clean Ultrasound Regions"
    ds = dcmread(out)
    assert ds.BurnedInAnnotation == "NO" and ds.PatientID == IDS.patient_suid
    assert np.array_equal(ds.pixel_array, deid_cleaned(src, "deid.dicom.ultrasound"))
    assert ds.pixel_array.any()  # the ultrasound region is kept, not blanked
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before


def test_a_rule_with_regions_cleans_every_frame_of_a_compressed_file(tmp_path):
    src = Path(get_testdata_file("emri_small_jpeg_2k_lossless.dcm"))
    recipe = Recipe.from_text("%filter graylist\nLABEL corner\n  present Rows\n  coordinates 0,0,20,10\n")
    out = tmp_path / "out.dcm"
    result = deidentify_file(src, out, IDS, DeidOptions(uid_secret=SECRET, recipe=recipe), require_pixels=True)
    assert result["cleaned"] == "graylist: corner"
    cleaned, original = dcmread(out).pixel_array, dcmread(src).pixel_array
    assert cleaned.shape == original.shape and original[:, :10, :20].any()
    assert not cleaned[:, :10, :20].any()
    assert np.array_equal(cleaned[:, 10:, :], original[:, 10:, :])
    assert not dcmread(out).file_meta.TransferSyntaxUID.is_compressed


def test_no_matching_rule_leaves_pixels_byte_identical(tmp_path):
    src = Path(get_testdata_file("CT_small.dcm"))
    recipe = Recipe.from_text("%filter graylist\nLABEL us\n  equals Modality US\n  coordinates 0,0,20,10\n")
    out = tmp_path / "out.dcm"
    result = deidentify_file(src, out, IDS, DeidOptions(uid_secret=SECRET, recipe=recipe), require_pixels=True)
    assert result["cleaned"] == ""
    assert dcmread(out).PixelData == dcmread(src).PixelData


def test_pixels_no_installed_decoder_reads_are_held_with_a_clear_reason(tmp_path):
    """12-bit JPEG Extended: no BSD-licensed decoder reads it (GDCM refuses it), so an image a
    rule wants cleaned is not proven: held, the reason naming the syntax, nothing written."""
    src = Path(get_testdata_file("JPGExtended.dcm"))
    recipe = Recipe.from_text("%filter graylist\nLABEL corner\n  present Rows\n  coordinates 0,0,20,10\n")
    out = tmp_path / "out.dcm"
    from sendit.deid import OutputNotProven

    with pytest.raises(OutputNotProven, match="cannot be decoded \\(JPEG Extended"):
        deidentify_file(src, out, IDS, DeidOptions(uid_secret=SECRET, recipe=recipe), require_pixels=True)
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "name,reason",
    [
        ("nested_priv_SQ.dcm", "coordinates 'all' need the image's Rows and Columns"),  # pixel data, no Rows
        ("badVR.dcm", "cannot be decoded"),  # NumberOfFrames '1A': the decoder fails with a TypeError
    ],
)
def test_a_file_whose_pixels_cannot_be_cleaned_is_held_not_crashed(name, reason, tmp_path):
    """deid's ultrasound recipe blanks every image: a file it cannot clean is held with a
    reason (never a bare exception from the decoder), and nothing is written."""
    from sendit.deid import OutputNotProven

    out = tmp_path / "out.dcm"
    options = DeidOptions(uid_secret=SECRET, recipe=Recipe.load("deid.dicom.ultrasound"))
    with pytest.raises(OutputNotProven, match=reason):
        deidentify_file(get_testdata_file(name), out, IDS, options, require_pixels=True)
    assert not list(tmp_path.iterdir())
