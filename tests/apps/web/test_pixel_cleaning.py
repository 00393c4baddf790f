"""Pixel cleaning shown to the operator: the image page's cleaned, outlined preview and the
batch page's rule names and counts, on deid-data's ultrasounds with deid's ultrasound recipe."""

import io
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage

from sendit.apps.main.models import Batch, Image
from sendit.apps.main.preview import BLANKED_COLOUR, KEPT_COLOUR, render_png
from sendit.deid.pixels import clean_pixels, keep_mask, resolve_regions
from sendit.deid.recipe import Recipe

deid_data = pytest.importorskip("deid_data")
ULTRASOUNDS = Path(deid_data.__file__).parent / "data" / "ultrasounds"
RECIPE = "deid.dicom.ultrasound"
RULES = "graylist: Blank Image; graylist: Clean Ultrasound Regions"
HOLD = "de-identification failed: output not proven: a test's refusal"


def png(data: bytes) -> np.ndarray:
    picture = PILImage.open(io.BytesIO(data))
    picture.load()
    return np.asarray(picture.convert("RGB"))


def regions_of(path: Path):
    """The boxes deid's ultrasound recipe names for the file, as the pipeline resolves them."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    matches = [m for m in Recipe.load(RECIPE).detect(ds) if m.group == "graylist"]
    return ds, resolve_regions(ds, [entry for m in matches for entry in m.coordinates])


def cleaned_render(path: Path, tmp_path: Path) -> np.ndarray:
    """The preview of the file that clean_pixels writes (no outline): the reference."""
    ds = pydicom.dcmread(path)
    _, regions = regions_of(path)
    clean_pixels(ds, regions)
    out = tmp_path / "cleaned.dcm"
    ds.save_as(out, enforce_file_format=True)
    return png(render_png(out))


def outlined(preview: np.ndarray) -> np.ndarray:
    """Where the preview is one of the two outline colours."""
    return (preview == BLANKED_COLOUR).all(axis=2) | (preview == KEPT_COLOUR).all(axis=2)


def assert_cleaned_and_outlined(preview: np.ndarray, reference: np.ndarray, keep: np.ndarray):
    """Inside a blanked box: black except the outline; elsewhere: what clean_pixels gives."""
    assert preview.shape == reference.shape
    line = outlined(preview)
    assert line.any() and line.mean() < 0.05  # thin rectangles, not a fill
    blanked = ~keep & ~line
    assert blanked.any() and not preview[blanked].any()
    assert (preview[~line] == reference[~line]).all()
    # the outlines sit on the edges of the boxes: the whole image's blank box (where the kept
    # region, drawn after it, does not share its edge), and the kept region
    assert (preview[0, :] == BLANKED_COLOUR).all() and line[:, 0].all() and line[:, -1].all()
    ys, xs = np.nonzero(keep)
    assert (preview[ys.min(), xs.min() + 5] == KEPT_COLOUR).all()


@pytest.fixture
def us_recipe(settings):
    settings.STUDY_DEID = RECIPE
    return settings


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["GREYSCALE_IMAGE.dcm", "RGB_IMAGE.dcm", "ultrasound-multiframe.dcm"])
@pytest.mark.parametrize("status, flagged", [("NEW", ""), ("PROCESSING", HOLD)])
def test_before_deidentification_the_preview_is_the_cleaned_one(
    client, make_batch, us_recipe, tmp_path, name, status, flagged
):
    """Not yet de-identified, or held by de-identification: the recipe's rules will clean the
    image, so the page may show its pixels, cleaned, with the boxes outlined; never the header."""
    source = ULTRASOUNDS / name
    batch = make_batch("US", status="PROCESSING", images=[(status, str(source), {}, flagged)])
    image = Image.objects.get(batch=batch)
    original, _ = regions_of(source)

    html = client.get(f"/images/{image.id}/").content.decode()
    assert "Not yet de-identified" in html and 'id="header"' not in html
    assert 'id="preview" src="data:image/png;base64,' in html
    assert "Pixels to be cleaned" in html and f'id="cleaning-rules">{RULES}<' in html
    assert "blanked (red): x 0 to" in html and "kept (green): x" in html
    for value in (original.get("PatientName"), original.get("PatientID"), image.uid):
        assert len(str(value or "")) < 4 or str(value) not in html  # ("1" is in any page)

    response = client.get(f"/images/{image.id}/preview.png")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    ds, regions = regions_of(source)
    keep = keep_mask(int(ds.Rows), int(ds.Columns), regions)
    assert_cleaned_and_outlined(png(response.content), cleaned_render(source, tmp_path), keep)


@pytest.mark.django_db
def test_sent_without_deidentification_the_page_says_the_pixels_are_not_cleaned(
    client, make_batch, us_recipe, tmp_path
):
    """DEIDENTIFY=false sends the pixels as they arrived: the page says so, and still shows
    the preview cleaned."""
    us_recipe.DEIDENTIFY = False
    source = ULTRASOUNDS / "RGB_IMAGE.dcm"
    batch = make_batch(
        "RAW", status="DONEPROCESSING", log={"deidentified": False}, images=[("DONEPROCESSING", str(source))]
    )
    image = Image.objects.get(batch=batch)
    html = client.get(f"/images/{image.id}/").content.decode()
    assert 'id="warning"' in html and "Pixels not cleaned" in html and "sent as they arrived" in html
    assert "Pixels to be cleaned" not in html and f'id="cleaning-rules">{RULES}<' in html
    ds, regions = regions_of(source)
    keep = keep_mask(int(ds.Rows), int(ds.Columns), regions)
    preview = png(client.get(f"/images/{image.id}/preview.png").content)
    assert_cleaned_and_outlined(preview, cleaned_render(source, tmp_path), keep)


@pytest.mark.django_db
def test_without_regions_the_rule_holds_the_image_and_no_pixels_are_shown(client, make_batch, settings):
    """sendit's own filters hold an ultrasound (no regions): the page names the rule, shows no pixels."""
    settings.STUDY_DEID = ""
    flag = "matched filter rule 'blacklist: BurnedInAnnotation is YES'"
    batch = make_batch(
        "HELD", status="DONEPROCESSING", images=[("DONEPROCESSING", str(ULTRASOUNDS / "GREYSCALE_IMAGE.dcm"), {}, flag)]
    )
    image = Image.objects.get(batch=batch)
    html = client.get(f"/images/{image.id}/").content.decode()
    assert 'id="preview"' not in html and 'id="cleaning"' not in html
    assert "held: matched filter rule &#x27;blacklist: BurnedInAnnotation is YES&#x27;" in html
    assert "nobody knows where its text is" in html
    assert client.get(f"/images/{image.id}/preview.png").status_code == 404
    batch_html = client.get(f"/batches/{batch.id}/").content.decode()
    assert '<td class="held">matched filter rule &#x27;blacklist: BurnedInAnnotation is YES&#x27;</td>' in batch_html


@pytest.mark.django_db
def test_a_rule_name_is_shown_as_written_other_text_is_scrubbed(client, make_batch, settings):
    """Rule names are the site recipe's text: "Canon CR/DR" stays, a path next to it does not."""
    settings.STUDY_DEID = "deid.dicom"
    names = [f"{group}: {rule.title}" for group, rules in Recipe.load("deid.dicom").filters.items() for rule in rules]
    name = next(n for n in names if "CR/DR" in n)
    flag = f"{HOLD} /data/Doe^Jane/IM1; also held back: matched filter rule '{name}'"
    batch = make_batch("CR", status="PROCESSING", images=[("PROCESSING", None, {}, flag)])
    html = client.get(f"/batches/{batch.id}/").content.decode()
    assert f"matched filter rule &#x27;{name}&#x27;" in html
    assert "Doe^Jane" not in html and "[path]" in html


@pytest.mark.django_db
def test_the_batch_page_says_the_deid_record_counts_in_words(client, make_batch, us_recipe):
    log = {
        "deid_record": {
            "pixels_cleaned": {RULES: 3, "graylist: Blank Image": 1},
            "recipe_notes": {
                "line 12: JITTER StudyDate: not a date: removed": 2,
                "line 20: REPLACE in /home/x/names.txt: removed": 1,
            },
        }
    }
    batch = make_batch("REC", status="DONEPROCESSING", log=log)
    html = client.get(f"/batches/{batch.id}/").content.decode()
    assert "<h2>De-identification</h2>" in html
    assert f"<li>3 images cleaned by {RULES}</li>" in html
    assert "<li>1 image cleaned by graylist: Blank Image</li>" in html
    assert "<li>2 images: line 12: JITTER StudyDate: not a date: removed</li>" in html
    assert "<li>1 image: line 20: REPLACE in [path]: removed</li>" in html  # scrubbed like every note
    quiet = make_batch("QUIET", status="DONEPROCESSING", log={"deid_record": {"pixels_cleaned": {}}})
    assert "<h2>De-identification</h2>" not in client.get(f"/batches/{quiet.id}/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_pipeline_cleaned_ultrasounds_on_the_batch_and_image_pages(client, data_folder, eager, us_recipe, tmp_path):
    """deid's ultrasound recipe cleans deid-data's ultrasounds in the real pipeline: the batch
    page names the rules per image and counts them; the image page shows the stored, cleaned
    pixels with the boxes outlined, and the boxes are those of the rules it recorded."""
    us_recipe.SEND_TO_ORTHANC = False  # the original sendit's static storage: the de-identified files stay in media
    us_recipe.SEND_TO_GOOGLE = False
    names = ("GREYSCALE_IMAGE.dcm", "RGB_IMAGE.dcm")
    folder = data_folder / "USP"
    folder.mkdir()
    for name in names:
        shutil.copy(ULTRASOUNDS / name, folder / name)
    from sendit.apps.main.tasks import import_dicomdir

    import_dicomdir(str(folder))
    batch = Batch.objects.get(uid="USP")
    assert batch.status == "DONEPROCESSING" and not batch.has_error, batch.errors
    secrets = [
        str(v)
        for name in names
        for v in (
            pydicom.dcmread(ULTRASOUNDS / name).get("PatientName"),
            pydicom.dcmread(ULTRASOUNDS / name).get("PatientID"),
        )
        if len(str(v or "")) >= 4
    ]

    batch_html = client.get(f"/batches/{batch.id}/").content.decode()
    assert batch_html.count(f'<td class="cleaned">{RULES}</td>') == 2
    assert f"<li>2 images cleaned by {RULES}</li>" in batch_html
    sources = {
        str(pydicom.dcmread(ULTRASOUNDS / name, stop_before_pixels=True).PhotometricInterpretation): ULTRASOUNDS / name
        for name in names
    }
    for image in Image.objects.filter(batch=batch):
        assert image.header["cleaned"] == RULES
        html = client.get(f"/images/{image.id}/").content.decode()
        assert 'id="header"' in html and "Pixels cleaned" in html and f'id="cleaning-rules">{RULES}<' in html
        assert "kept (green)" in html and "blanked (red): x 0 to" in html
        for text in (html, batch_html):
            assert not any(secret in text for secret in secrets)
        stored = Path(us_recipe.MEDIA_ROOT) / image.image
        preview = png(client.get(f"/images/{image.id}/preview.png").content)
        source = sources[str(pydicom.dcmread(stored, stop_before_pixels=True).PhotometricInterpretation)]
        src_ds, regions = regions_of(source)
        keep = keep_mask(int(src_ds.Rows), int(src_ds.Columns), regions)
        assert_cleaned_and_outlined(preview, png(render_png(stored)), keep)  # the stored file, cleaned
        assert_cleaned_and_outlined(preview, cleaned_render(source, tmp_path), keep)
