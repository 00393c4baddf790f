"""De-identification holds what it cannot prove, keeps its original, and never sticks a batch.

Run eagerly against the session's Orthanc, with pydicom's own files cut or edited as the
outside review did (and a few made by tests.services.make_ct_series).
"""

import shutil
import types
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from sendit.apps.main import importer
from sendit.apps.main.models import Batch, Image
from sendit.apps.main.retry import retry_batch
from sendit.apps.main.tasks import deidentify, import_dicomdir
from sendit.apps.main.tasks.common import media_path
from sendit.deid.structure import BadStructure
from tests.services import make_ct_series

pytestmark = pytest.mark.django_db(transaction=True)

MRN = "12345678"
TINY = Path(get_testdata_file("DICOMDIR")).parent / "TINY_ALPHA" / "PT000000" / "ST000000" / "SE000000"


def held(batch):
    return list(Image.objects.filter(batch=batch).exclude(flagged="").order_by("id"))


def everything_said(batch):
    """All the batch shows: errors, log, image flags."""
    batch.refresh_from_db()
    return str(batch.errors) + str(batch.log) + " ".join(i.flagged for i in Image.objects.filter(batch=batch))


def originals_in_media(batch):
    return {image.id: media_path(image.image).read_bytes() for image in held(batch)}


@pytest.fixture
def lenient_import(monkeypatch):
    """The import as it was when the review found the problem: the structure walk lets
    through what pydicom reads (the import's own tests cover its refusals)."""
    real = importer.check_structure

    def check(path, **kwargs):
        try:
            return real(path, **kwargs)
        except BadStructure:
            # No pixel data element found: the lengths the walk would give are not known.
            return types.SimpleNamespace(
                is_dicomdir=False, preamble=True, pixel_offset=None, pixel_value=None, pixel_length=None
            )

    monkeypatch.setattr(importer, "check_structure", check)


def cut_in_half(path, target, sop_digit=None):
    """A copy of an encapsulated file cut in half; with ``sop_digit`` its SOP Instance UID
    (file meta and data set) has its last digit replaced, so that two copies are two
    instances, as two files of the same series would be."""
    data = bytearray(Path(path).read_bytes())
    if sop_digit is not None:
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID.encode()
        new = uid[:-1] + sop_digit.encode()
        data = bytearray(bytes(data).replace(uid, new))
    target.write_bytes(bytes(data[: len(data) // 2]))
    return target


def test_two_stub_producing_files_are_held_and_the_batch_is_delivered(node, data_folder, lenient_import):
    """The review's case: two JPEG files cut in half read as almost empty datasets, whose
    outputs had the same empty SOP Instance UID (IntegrityError, the batch stuck in
    PROCESSING, the originals deleted). Now each is held, its original kept byte for byte,
    and the good images are delivered."""
    folder = data_folder / "CUT"
    make_ct_series(folder, 3, patient_id=MRN, patient_name="Doe^Jane", rows=32, columns=32)
    source = get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")
    halves = [cut_in_half(source, folder / f"half{i}.dcm", sop_digit=str(i)) for i in (1, 2)]
    cut = {p.name: p.read_bytes() for p in halves}

    import_dicomdir(str(folder))

    batch = Batch.objects.get(uid="CUT")
    assert batch.status == "DONEPROCESSING", batch.errors  # not stuck in PROCESSING
    assert len(node.instances()) == 3
    holds = held(batch)
    assert len(holds) == 2
    for image in holds:
        assert image.flagged.startswith("de-identification failed: output not proven: ")
        assert image.status == "PROCESSING" and "/raw/" in image.image
        assert media_path(image.image).read_bytes() in cut.values()  # the original, whole
    messages = " ".join(e["message"] for e in batch.errors)
    assert "IntegrityError" not in messages and "unexpected" not in messages
    assert "2 image(s) held back, originals kept: de-identification failed: output not proven" in messages
    record = batch.log["deid_record"]
    assert record["images_checked"] == 5 and record["proofs_passed"] == 3
    assert sum(record["holds"].values()) == 2

    # A retry tries them again: they fail again and stay held, the rest stays delivered.
    retry_batch(batch)
    batch.refresh_from_db()
    assert batch.status == "DONEPROCESSING" and len(held(batch)) == 2
    assert {media_path(i.image).read_bytes() for i in held(batch)} == set(cut.values())
    assert batch.log["deid_record"]["runs"] == 2 and batch.log["deid_record"]["images_checked"] == 7
    assert len(node.instances()) == 3


def test_a_record_the_database_refuses_holds_that_image_only(node, data_folder, monkeypatch):
    """Should an output ever be recorded with a UID another image has (the stub's empty UID),
    the chunk's single UPDATE fails on the (batch, uid) key: the images are then recorded
    one by one and the one refused is held, its original kept; retry_batch finishes it."""
    folder = data_folder / "DUPUID"
    make_ct_series(folder, 4, patient_id=MRN, rows=32, columns=32)
    real = deidentify.deidentify_file
    calls = []

    def same_uid_for_two(src, dst, *args, **kwargs):
        result = real(src, dst, *args, **kwargs)
        calls.append(src)
        if len(calls) in (2, 3):
            result["sop_uid"] = ""  # what the stubs had
        return result

    monkeypatch.setattr(deidentify, "deidentify_file", same_uid_for_two)

    import_dicomdir(str(folder))

    batch = Batch.objects.get(uid="DUPUID")
    assert batch.status == "DONEPROCESSING", batch.errors
    (refused,) = held(batch)
    assert refused.flagged == "de-identification failed: could not be recorded (IntegrityError)"
    assert refused.status == "PROCESSING" and "/raw/" in refused.image and media_path(refused.image).exists()
    assert not (media_path(refused.image).parent.parent / "deid" / Path(refused.image).name).exists()
    assert len(node.instances()) == 3
    assert not [e for e in batch.errors if "unexpected" in e["message"]]

    monkeypatch.undo()
    retry_batch(batch)
    batch.refresh_from_db()
    assert batch.status == "DONE" and not batch.has_error, batch.errors
    assert len(node.instances()) == 4


def test_an_identifying_value_in_the_output_holds_the_image_without_saying_it(node, data_folder, settings, tmp_path):
    """A scanner that writes the patient's id into SliceLocation (kept by the profile): that
    image is held, the value appears nowhere sendit shows, nothing of it reaches Orthanc; once
    the site's recipe says SliceLocation is to be kept, a retry delivers it."""
    folder = data_folder / "LEAK"
    paths = make_ct_series(folder, 3, patient_id=MRN, patient_name="Doe^Jane", rows=32, columns=32)
    ds = pydicom.dcmread(paths[1])
    ds.SliceLocation = MRN
    ds.save_as(paths[1])
    leaking = Path(paths[1]).read_bytes()

    import_dicomdir(str(folder))

    batch = Batch.objects.get(uid="LEAK")
    (image,) = held(batch)
    assert image.flagged == (
        "de-identification failed: identifying value in the output: the patient's id found in (0020,1041) SliceLocation"
    )
    assert media_path(image.image).read_bytes() == leaking
    assert MRN not in everything_said(batch) and "Doe" not in everything_said(batch)
    assert len(node.instances()) == 2
    for instance in node.instances():
        assert MRN.encode() not in node.get_bytes(f"/instances/{instance}/file")
    record = batch.log["deid_record"]
    assert record["profile"] == "Basic Application Confidentiality Profile" and record["recipe"] is None
    assert record["holds"] == {
        "identifying value in the output: the patient's id found in (0020,1041) SliceLocation": 1
    }

    # Retried as it is: held again, the batch not stuck.
    retry_batch(batch)
    batch.refresh_from_db()
    assert len(held(batch)) == 1 and batch.status == "DONEPROCESSING"
    # The site decides SliceLocation is to be sent as it is: the retry delivers the image.
    recipe = tmp_path / "keep-slice-location.dicom"
    recipe.write_text("FORMAT dicom\n%header\nKEEP SliceLocation\n")
    settings.STUDY_DEID = str(recipe)
    retry_batch(batch)
    batch.refresh_from_db()
    assert batch.status == "DONE" and not batch.has_error, batch.errors
    assert len(node.instances()) == 3
    assert batch.log["deid_record"]["recipe"] == "keep-slice-location.dicom"
    assert batch.log["deid_record"]["holds"] == {}


def test_an_image_without_pixel_data_is_held_not_sent_as_a_stub(node, data_folder):
    """pydicom ships 740-byte CT images with no pixel data (like the review's 738-byte stub):
    they are held, their originals kept, the real images delivered."""
    folder = data_folder / "STUBS"
    make_ct_series(folder, 2, patient_id=MRN, rows=32, columns=32)
    for name in ("IM000001", "IM000002"):
        shutil.copy(TINY / name, folder / name)

    import_dicomdir(str(folder))

    batch = Batch.objects.get(uid="STUBS")
    holds = held(batch)
    assert [i.flagged for i in holds] == [
        "de-identification failed: output not proven: the input is an image "
        "(by its SOP class, or rows and columns) without pixel data: the "
        "file is cut short or damaged"
    ] * 2
    assert sorted(media_path(i.image).read_bytes() for i in holds) == sorted(
        (TINY / name).read_bytes() for name in ("IM000001", "IM000002")
    )
    assert len(node.instances()) == 2
    assert batch.status == "DONEPROCESSING" and batch.has_error


def test_a_burned_in_image_held_by_de_identification_stays_held_back_after_a_retry(node, data_folder, monkeypatch):
    """A de-identification hold replaces an image's flag; retry_batch checks the burned-in
    rules on the original again, so a secondary capture never leaves by way of a retry."""
    folder = data_folder / "SC"
    make_ct_series(folder, 1, patient_id=MRN, rows=32, columns=32)
    shutil.copy(get_testdata_file("SC_rgb.dcm"), folder / "sc.dcm")
    real = deidentify.deidentify_file

    def fail_secondary_captures(src, dst, *args, **kwargs):
        if pydicom.dcmread(src, stop_before_pixels=True).Modality != "CT":
            from sendit.deid import OutputNotProven

            raise OutputNotProven("a test's refusal")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(deidentify, "deidentify_file", fail_secondary_captures)

    import_dicomdir(str(folder))
    batch = Batch.objects.get(uid="SC")
    (image,) = held(batch)
    assert image.flagged.startswith(
        "de-identification failed: output not proven: a test's refusal; also held back: matched filter rule"
    )
    monkeypatch.undo()
    retry_batch(batch)
    batch.refresh_from_db()
    (image,) = held(batch)
    assert image.flagged.startswith("matched filter rule") and image.status == "DONEPROCESSING"
    assert len(node.instances()) == 1  # the CT image only


def test_deid_ultrasound_recipe_delivers_cleaned_ultrasounds_instead_of_holding_them(node, data_folder, settings):
    """deid's own ultrasound recipe on deid-data's ultrasounds: without it they are held for
    burned-in text; with it their pixels are cleaned as deid's DicomCleaner cleans them, they
    are delivered, and the batch says which rules cleaned each one."""
    deid_data = pytest.importorskip("deid_data")
    from tests.deid.test_pixel_pipeline import deid_cleaned

    sources = [
        Path(deid_data.__file__).parent / "data" / "ultrasounds" / name
        for name in ("GREYSCALE_IMAGE.dcm", "RGB_IMAGE.dcm")
    ]
    settings.STUDY_DEID = "deid.dicom.ultrasound"
    folder = data_folder / "US"
    folder.mkdir()
    for source in sources:
        shutil.copy(source, folder / source.name)

    import_dicomdir(str(folder))

    batch = Batch.objects.get(uid="US")
    assert batch.status == "DONE" and not batch.has_error, batch.errors
    assert batch.log["deid_record"]["pixels_cleaned"] == {
        "graylist: Blank Image; graylist: Clean Ultrasound Regions": 2
    }
    assert batch.log["deid_record"]["recipe"] == "deid.dicom.ultrasound"
    delivered = []
    for instance in node.instances():
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(node.get_bytes(f"/instances/{instance}/file")))
        assert ds.BurnedInAnnotation == "NO"
        delivered.append(ds.pixel_array)
    for source in sources:
        expected = deid_cleaned(source, "deid.dicom.ultrasound")
        assert any(expected.shape == got.shape and (expected == got).all() for got in delivered)


@pytest.mark.parametrize("release,held", [(None, False), (False, True), (True, False)])
def test_ocr_releases_held_images_unless_the_site_says_not(node, data_folder, settings, release, held):
    """DEID_OCR alone (DEID_OCR_RELEASE's default, true) reads and sends, once scrubbed, an
    image a filter rule other than a blacklist one holds for suspected text; a site that
    sets DEID_OCR_RELEASE=false keeps it held for review."""
    from dataclasses import fields

    from sendit.config import Deid

    pytest.importorskip("tesserocr")
    deid_data = pytest.importorskip("deid_data")
    source = Path(deid_data.__file__).parent / "data" / "ultrasounds" / "RGB_IMAGE.dcm"  # graylist: ultrasound
    settings.DEID_OCR = True
    if release is None:  # the default, as the node's settings carry it
        assert next(f.default for f in fields(Deid) if f.name == "deid_ocr_release") is True
        assert settings.DEID_OCR_RELEASE is True
    else:
        settings.DEID_OCR_RELEASE = release
    folder = data_folder / "OCRUS"
    folder.mkdir()
    shutil.copy(source, folder / source.name)

    import_dicomdir(str(folder))

    batch = Batch.objects.get(uid="OCRUS")
    rule = "matched filter rule 'graylist: ultrasound without BurnedInAnnotation NO'"
    if held:  # held by the rule, never read by the OCR, never sent
        [flag] = [i.flagged for i in Image.objects.filter(batch=batch)]
        assert rule in flag
        assert node.instances() == []
        return
    # Released: the OCR reads it. It either holds it for review (text it cannot decide
    # about) or blanks the text that matches the image's own values and sends it.
    images = list(Image.objects.filter(batch=batch))
    if images:
        [image] = images
        assert rule not in image.flagged
        assert image.flagged.startswith("de-identification failed: held for review: OCR")
        assert node.instances() == []
    else:
        [record] = batch.log["deid_record"]["ocr"]
        assert record["found"] >= 1 and record["blanked"] >= 1 and not record["held"]
        assert len(node.instances()) == 1
