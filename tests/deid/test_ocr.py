"""Burned-in text found by OCR (sendit/deid/ocr.py): a handful of images, so it stays quick.

The measured corpus is scripts/bench_ocr.py's; these tests check behaviour end to end:
a burned name is blanked in the delivered file, a clean image is unchanged, undecided
text holds the image, and with OCR off nothing of it is imported.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread

from sendit.deid import DeidOptions, OutputNotProven, deidentify_file
from sendit.deid.identifiers.request import StudyIdentifiers
from tests.ocr.corpus import FONT_FILES, _dataset, _store, real, real_files, synthetic

tesserocr = pytest.importorskip("tesserocr")
from sendit.deid import ocr  # noqa: E402

IDS = StudyIdentifiers(patient_suid="OCRPATIENT", study_suid="OCRSTUDY", jitter=-7)
OPTIONS = DeidOptions(uid_secret=b"ocr-test-secret", retain_long_modified_dates=False)
ROOT = Path(__file__).resolve().parents[2]


def needle(value, kind="the patient's id", date=False, name=False):
    return (value, kind, False, False, date, name)


def us_with_name(tmp_path, text="GARCIA^PIETRO", at=(40, 200)):
    """A 256x256 ultrasound-like image with ``text`` burned in white, 24 px DejaVu (or Pillow's)."""
    import random

    ds = _dataset("1.2.840.10008.5.1.4.1.1.6.1", "US", 256, 256, random.Random(3))
    ds.PatientName = "GARCIA^PIETRO"
    canvas = Image.new("L", (256, 256), 0)
    font = ImageFont.truetype(FONT_FILES[0], 24) if Path(FONT_FILES[0]).is_file() else ImageFont.load_default(24)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((20, 20, 236, 150), fill=70)  # something that is not text
    draw.text(at, text, fill=235, font=font)
    box = draw.textbbox(at, text, font=font)
    _store(ds, np.asarray(canvas).copy(), "MONOCHROME2", 8)
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    return src, box


def test_a_burned_name_is_blanked_in_the_delivered_file(tmp_path):
    src, (x0, y0, x1, y1) = us_with_name(tmp_path)
    out = tmp_path / "out.dcm"
    result = deidentify_file(src, out, IDS, OPTIONS, require_pixels=True, ocr=ocr.OcrOptions())
    before, after = dcmread(src).pixel_array, dcmread(out).pixel_array
    text = before[y0:y1, x0:x1] > 128
    assert text.sum() > 100 and not after[y0:y1, x0:x1][text].any()  # every text pixel is 0
    assert np.array_equal(after[20:150, 20:236], before[20:150, 20:236])  # the rest is as it was
    assert result["ocr"]["blanked"] >= 1 and result["ocr"]["held"] is False
    assert "GARCIA" not in str(result["ocr"])  # counts and boxes, never the text
    assert dcmread(out).BurnedInAnnotation == "NO"


def test_a_clean_image_is_byte_identical(tmp_path):
    sample = synthetic("US", 7, with_text=False, size=256)
    src, out = tmp_path / "in.dcm", tmp_path / "out.dcm"
    sample.ds.save_as(src, enforce_file_format=True)
    result = deidentify_file(src, out, IDS, OPTIONS, require_pixels=True, ocr=ocr.OcrOptions())
    assert result["ocr"]["blanked"] == 0
    assert dcmread(out).PixelData == dcmread(src).PixelData


def test_text_that_is_not_identifying_stays_unless_scrub_all(tmp_path):
    src, (x0, y0, x1, y1) = us_with_name(tmp_path, text="LIVER TRANS")
    out = tmp_path / "out.dcm"
    deidentify_file(src, out, IDS, OPTIONS, require_pixels=True, ocr=ocr.OcrOptions())
    assert dcmread(out).PixelData == dcmread(src).PixelData
    deidentify_file(src, out, IDS, OPTIONS, require_pixels=True, ocr=ocr.OcrOptions(scrub="all"))
    assert not dcmread(out).pixel_array[y0:y1, x0:x1].any()


def test_names_and_dates_match_in_the_forms_screens_use():
    forms = ocr.patterns(
        [
            needle(b"doe^john", "the patient's name", name=True),
            needle(b"19600102", "the patient's birth date", date=True),
            needle(b"1.2.3.4.5.6.7", "an original UID"),
        ]
    )
    for text in ("DOE^JOHN", "Doe, John", "01/02/1960", "1960-01-02", "02.01.1960", "02-Jan-1960"):
        words = [ocr.TextBox(0, (0, 0, 10, 10), part, 95.0, (0, 0, 1, 1, 1)) for part in text.split()]
        assert ocr.decide(words, forms).blank, text
    assert not any("1234567" in form.text for form in forms)  # original UIDs are not values to match
    words = [
        ocr.TextBox(0, (0, 0, 10, 10), "LIVER", 95.0, (0, 0, 1, 1, 1)),
        ocr.TextBox(0, (0, 20, 10, 30), "1.2.3", 95.0, (0, 0, 1, 2, 2)),
    ]
    assert not ocr.decide(words, forms).blank
    # (a long number on the screen, a UID's digits too, is blanked as one: test_lines.py)


def test_a_near_match_is_blanked_and_a_tall_doubtful_reading_like_a_value_holds():
    forms = ocr.patterns([needle(b"A2345678")])
    sure = ocr.decide([ocr.TextBox(0, (0, 0, 9, 9), "A2345670", 90.0)], forms)
    assert sure.blank and sure.hold is None  # one OCR error: still the id
    near = ocr.decide([ocr.TextBox(0, (0, 0, 9, 9), "A2395679", 30.0)], forms)
    assert near.blank and near.hold is None  # three: the id misread, blanked rather than held
    tall = ocr.decide([ocr.TextBox(0, (0, 0, 90, 24), "AZ3q", 30.0)], forms)
    assert not tall.blank and tall.hold is not None and tall.record()["held"]


def test_every_encoding_is_prepared_as_8_bit_frames():
    from pydicom.data import get_testdata_file

    for name in ("US1_J2KR.dcm", "OBXXXX1A.dcm", "emri_small.dcm", "CT_small.dcm", "SC_rgb.dcm"):
        ds = dcmread(get_testdata_file(name))
        frames = list(ocr.frames(ds))
        assert len(frames) == int(ds.get("NumberOfFrames", 1) or 1), name
        assert all(f.dtype == np.uint8 and f.shape == (ds.Rows, ds.Columns) for f in frames), name
        assert frames[0].max() > frames[0].min(), name


def test_with_ocr_off_nothing_of_it_is_imported(tmp_path):
    src, _ = us_with_name(tmp_path)
    code = (
        "import sys\n"
        "from sendit.deid import DeidOptions, deidentify_file\n"
        "from sendit.deid.identifiers.request import StudyIdentifiers\n"
        f"deidentify_file({str(src)!r}, {str(tmp_path / 'out.dcm')!r}, StudyIdentifiers('P', 'S', -3),"
        " DeidOptions(uid_secret=b'x'), require_pixels=True)\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('tesserocr', 'pytesseract') or m == 'sendit.deid.ocr']\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize("seed", [10097, 30098])
def test_large_text_read_only_in_part_is_not_sent(tmp_path, seed):
    # the corpus's ctbrain1 of seeds 1 and 3: a 22 px accession number read as "81!", a
    # 31 px name as "Homi" and "fson"; the lines found that their readings do not account
    # for are blanked, and no identifying text above 16 px is sent
    path = next((p for p in real_files() if p.stem == "ctbrain1"), None)
    if path is None:
        pytest.skip("deid-data's ctbrain1 is not installed")
    sample = real(path, seed)
    src, out = tmp_path / "in.dcm", tmp_path / "out.dcm"
    sample.ds.save_as(src, enforce_file_format=True)
    deidentify_file(src, out, IDS, OPTIONS, require_pixels=True, ocr=ocr.OcrOptions(modalities=("CT",)))
    after = dcmread(out).pixel_array
    large = [b for b in sample.burned if b.identifying and b.size > 16]
    assert large
    for burned in large:
        x0, y0, x1, y1 = burned.box
        region = after[y0:y1, x0:x1]
        region = region.max(axis=2) if region.ndim == 3 else region  # (ctbrain1 is RGB)
        left = (region[burned.mask] != 0).sum() / burned.mask.sum()
        assert left <= 0.10, (burned.size, left)


def test_the_models_folder_comes_from_the_tessdata_setting(tmp_path):
    """TESSDATA_PREFIX (OcrOptions.tessdata) is the folder Tesseract loads; a folder without
    the English model holds the image (its text was not read) instead of falling back."""
    assert ocr.tessdata(str(tmp_path)) == str(tmp_path)
    assert (Path(ocr.tessdata()) / "eng.traineddata").is_file()
    src, _ = us_with_name(tmp_path)
    out = tmp_path / "out.dcm"
    empty = tmp_path / "no-models"
    empty.mkdir()
    with pytest.raises(OutputNotProven):
        deidentify_file(src, out, IDS, OPTIONS, require_pixels=True, ocr=ocr.OcrOptions(tessdata=str(empty)))
    result = deidentify_file(src, out, IDS, OPTIONS, require_pixels=True, ocr=ocr.OcrOptions(tessdata=ocr.tessdata()))
    assert result["ocr"]["blanked"] >= 1
