"""The image page: the de-identified header and a preview, never the original identifiers."""

import io

import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

from sendit.apps.main.models import Image
from sendit.apps.main.preview import PreviewError, header_rows, render_png

pytestmark = pytest.mark.django_db


def png(data):
    picture = PILImage.open(io.BytesIO(data))
    picture.load()
    return picture


def test_a_deidentified_image_shows_header_and_preview(client, make_batch):
    batch = make_batch("I", status="DONEPROCESSING", images=[("DONEPROCESSING", "CT_small.dcm")])
    image = Image.objects.get(batch=batch)
    response = client.get(f"/images/{image.id}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="header"' in html and "(0010,0020)" in html and "PatientID" in html
    assert 'id="preview" src="data:image/png;base64,' in html
    assert image.uid in html
    preview = client.get(f"/images/{image.id}/preview.png")
    assert preview.status_code == 200 and preview["Content-Type"] == "image/png"
    assert "no-store" in preview["Cache-Control"]
    assert png(preview.content).size == (128, 128)


@pytest.mark.parametrize("status", ["NEW", "PROCESSING"])
def test_before_deidentification_nothing_is_shown(client, make_batch, status):
    batch = make_batch("N", status="PROCESSING", images=[(status, "CT_small.dcm")])
    image = Image.objects.get(batch=batch)
    original = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    html = client.get(f"/images/{image.id}/").content.decode()
    assert "Not yet de-identified" in html
    assert str(original.PatientName) not in html and str(original.PatientID) not in html
    assert image.uid not in html  # the input SOPInstanceUID
    assert 'id="preview"' not in html
    assert client.get(f"/images/{image.id}/preview.png").status_code == 404


def test_deidentify_off_shows_the_header_with_a_warning(client, make_batch, settings):
    settings.DEIDENTIFY = False
    batch = make_batch(
        "RAW", status="DONEPROCESSING", log={"deidentified": False}, images=[("DONEPROCESSING", "CT_small.dcm")]
    )
    image = Image.objects.get(batch=batch)
    html = client.get(f"/images/{image.id}/").content.decode()
    assert 'id="warning"' in html and "DEIDENTIFY=false" in html and 'id="header"' in html


def test_a_raw_batch_stays_hidden_once_deidentify_is_back_on(client, make_batch, settings):
    batch = make_batch(
        "RAW", status="DONEPROCESSING", log={"deidentified": False}, images=[("DONEPROCESSING", "CT_small.dcm")]
    )
    image = Image.objects.get(batch=batch)
    html = client.get(f"/images/{image.id}/").content.decode()
    assert "sent without de-identification" in html and 'id="header"' not in html
    assert client.get(f"/images/{image.id}/preview.png").status_code == 404


def test_a_held_image_shows_no_pixels(client, make_batch):
    batch = make_batch("H", images=[("DONEPROCESSING", "CT_small.dcm", {}, "burned-in annotation")])
    image = Image.objects.get(batch=batch)
    html = client.get(f"/images/{image.id}/").content.decode()
    assert "burned-in" in html and 'id="preview"' not in html and 'id="header"' in html
    assert client.get(f"/images/{image.id}/preview.png").status_code == 404


def test_an_undecodable_image_says_no_preview(client, make_batch, tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000Lossless
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51 not a codestream"])
    path = tmp_path / "broken_j2k.dcm"
    ds.save_as(path, enforce_file_format=True)
    batch = make_batch("J", images=[("SENT", str(path))])
    image = Image.objects.get(batch=batch)
    response = client.get(f"/images/{image.id}/")
    assert response.status_code == 200
    assert 'id="no-preview"' in response.content.decode()
    assert client.get(f"/images/{image.id}/preview.png").status_code == 404


def test_a_missing_file_says_so(client, make_batch):
    batch = make_batch("M", images=[("SENT", None)])
    image = Image.objects.get(batch=batch)
    html = client.get(f"/images/{image.id}/").content.decode()
    assert "no longer in media" in html


def test_a_path_outside_media_is_refused(client, make_batch):
    batch = make_batch("O", images=[("SENT", None)])
    Image.objects.filter(batch=batch).update(image="../../../../etc/passwd")
    image = Image.objects.get(batch=batch)
    assert client.get(f"/images/{image.id}/preview.png").status_code == 404


# render_png on its own.


def test_window_center_and_width_are_used():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert "WindowCenter" not in ds or True
    picture = png(render_png(get_testdata_file("CT_small.dcm")))
    assert picture.mode == "L"
    values = np.asarray(picture)
    assert values.min() == 0 and values.max() == 255  # percentiles stretch the range


def test_window_from_the_header(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.WindowCenter, ds.WindowWidth = 40, 400  # soft tissue window in HU
    path = tmp_path / "windowed.dcm"
    ds.save_as(path)
    values = np.asarray(png(render_png(path)))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected_black = (hu <= -160).mean()
    assert abs((values == 0).mean() - expected_black) < 0.02


def test_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    normal = np.asarray(png(render_png(get_testdata_file("CT_small.dcm")))).astype(int)
    ds.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "m1.dcm"
    ds.save_as(path)
    inverted = np.asarray(png(render_png(path))).astype(int)
    assert np.array_equal(inverted, 255 - normal)


def test_rgb_multiframe_and_rle():
    assert png(render_png(get_testdata_file("SC_rgb.dcm"))).mode == "RGB"
    assert png(render_png(get_testdata_file("SC_rgb_rle_2frame.dcm"))).mode == "RGB"
    emri = png(render_png(get_testdata_file("emri_small.dcm")))  # 10 frames: the first
    assert emri.mode == "L" and emri.size == (64, 64)


def test_palette_color():
    assert png(render_png(get_testdata_file("OBXXXX1A.dcm"))).mode == "RGB"


def test_large_images_are_scaled_down(tmp_path):
    from tests.services import make_ct_series

    (path,) = make_ct_series(tmp_path, 1, rows=512, columns=512)
    assert png(render_png(path, max_side=256)).size == (256, 256)


def test_no_pixel_data_is_a_preview_error(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    path = tmp_path / "nopixels.dcm"
    ds.save_as(path)
    with pytest.raises(PreviewError):
        render_png(path)
    with pytest.raises(PreviewError):
        render_png(tmp_path / "absent.dcm")


def test_header_rows_skip_pixels_and_summarise_sequences():
    rows = header_rows(get_testdata_file("CT_small.dcm"))
    tags = [r[0] for r in rows]
    assert "(7FE0,0010)" not in tags and "(0002,0010)" in tags
    assert all(len(r[3]) <= 201 for r in rows)
