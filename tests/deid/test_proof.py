"""An output is proven before it takes its name, and nothing identifying is in it.

Inputs are pydicom's own test files, cut or edited byte by byte as a broken sender or a
hostile one would: a JPEG file cut in half, an element whose length runs past the end of
the file (or over the elements after it) in front of RequestingPhysician and AdmissionID.
"""

import io
import struct
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from sendit.deid import DeidOptions, IdentifyingValueFound, OutputNotProven, Recipe, deidentify_file, proof
from sendit.deid import files as deid_files
from sendit.deid.identifiers import StudyIdentifiers

IDS = StudyIdentifiers(patient_suid="PSUID01", study_suid="SSUID01", jitter=-12)
OPTIONS = DeidOptions(uid_secret=b"proof-test")
PHYSICIAN = "Smith^Johnathan"
ADMISSION = "ADM778899"


def nothing_beside(out: Path):
    return not out.exists() and not Path(f"{out}.part").exists()


def save(ds, path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def edited(name, tmp_path, **values) -> Path:
    """A pydicom test file with some attributes set, written as a sender would."""
    ds = dcmread(get_testdata_file(name))
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return save(ds, tmp_path / f"edited-{name}")


# -- the outside review's cases --------------------------------------------------------
@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm"])
@pytest.mark.parametrize("with_spare", [False, True], ids=["new-file", "reused-file"])
def test_a_jpeg_file_cut_in_half_is_not_proven_and_its_original_stays(name, with_spare, tmp_path):
    """pydicom reads what is left of an encapsulated file cut in half without complaint
    (an almost empty dataset, or one without its pixel data): writing that out was a stub
    with an empty SOP Instance UID, and the original was then deleted."""
    whole = open(get_testdata_file(name), "rb").read()
    src = tmp_path / "half.dcm"
    src.write_bytes(whole[: len(whole) // 2])
    spare = None
    if with_spare:
        spare = tmp_path / "spare.dcm"
        spare.write_bytes(b"an original already de-identified and recorded " * 100)
    out = tmp_path / "out.dcm"
    with pytest.raises(OutputNotProven) as caught:
        deidentify_file(src, out, IDS, OPTIONS, reuse=spare, require_pixels=True)
    assert src.read_bytes() == whole[: len(whole) // 2]  # the original, byte for byte
    assert nothing_beside(out)
    original = dcmread(get_testdata_file(name), stop_before_pixels=True)
    message = str(caught.value)
    for value in (str(original.get("PatientName", "")), original.get("PatientID", ""), original.SOPInstanceUID):
        assert not value or value not in message
    assert "pixel data" in message or "lost" in message


def hostile(tmp_path, past_the_end: bool) -> Path:
    """MR_small.dcm with RequestingPhysician and AdmissionID added before the pixel data and
    the element in front of them, WindowWidth, given a length that runs past the end of the
    file, or just over the two added elements: a reader then takes them (and whatever
    follows) as WindowWidth's value, where the scrub never sees them. The physician is also
    the referring physician, a value the scrub removes where it sees it."""
    src = edited("MR_small.dcm", tmp_path, ReferringPhysicianName=PHYSICIAN)
    data = bytearray(src.read_bytes())
    fp = io.BytesIO(bytes(data))
    dcmread(fp, stop_before_pixels=True)
    pixels = fp.tell()

    def element(group, number, vr, value):
        value += b" " * (len(value) % 2)
        return struct.pack("<HH2sH", group, number, vr, len(value)) + value

    added = element(0x0032, 0x1032, b"PN", PHYSICIAN.encode()) + element(0x0038, 0x0010, b"LO", ADMISSION.encode())
    data[pixels:pixels] = added
    window = dcmread(io.BytesIO(bytes(data)), stop_before_pixels=True).get_item(0x00281051)
    head = window.value_tell - 8
    assert struct.unpack_from("<HH2s", data, head) == (0x0028, 0x1051, b"DS")
    length = 0xFFF0 if past_the_end else window.length + len(added)
    struct.pack_into("<H", data, head + 6, length)
    src.write_bytes(bytes(data))
    return src


def test_an_element_running_past_the_end_of_the_file_is_not_proven(tmp_path):
    src = hostile(tmp_path, past_the_end=True)
    before = src.read_bytes()
    # pydicom reads it without a word: the two elements and the pixels are WindowWidth's value.
    ds = dcmread(src, stop_before_pixels=True)
    assert "RequestingPhysician" not in ds and "PixelData" not in dcmread(src)
    out = tmp_path / "out.dcm"
    with pytest.raises(OutputNotProven) as caught:
        deidentify_file(src, out, IDS, OPTIONS)
    assert "(0028,1051) WindowWidth" in str(caught.value) and "runs past the end" in str(caught.value)
    assert PHYSICIAN.split("^")[0] not in str(caught.value)
    assert src.read_bytes() == before and nothing_beside(out)


def test_elements_swallowed_into_a_value_are_found_by_the_scan(tmp_path):
    """The length ends inside the file, so the file reads and streams as usual: the scan of
    the output finds the physician's name in WindowWidth's value."""
    src = hostile(tmp_path, past_the_end=False)
    before = src.read_bytes()
    out = tmp_path / "out.dcm"
    with pytest.raises(IdentifyingValueFound) as caught:
        deidentify_file(src, out, IDS, OPTIONS)
    assert str(caught.value) == "a physician's or operator's name found in (0028,1051) WindowWidth"
    assert caught.value.kind == "a physician's or operator's name"
    assert src.read_bytes() == before and nothing_beside(out)


# -- the scan --------------------------------------------------------------------------
def test_the_patients_id_in_a_kept_attribute_is_found_and_not_shown(tmp_path):
    src = edited("CT_small.dcm", tmp_path, PatientID="12345678", SliceLocation="12345678")
    out = tmp_path / "out.dcm"
    with pytest.raises(IdentifyingValueFound) as caught:
        deidentify_file(src, out, IDS, OPTIONS)
    assert str(caught.value) == "the patient's id found in (0020,1041) SliceLocation"
    assert "12345678" not in str(caught.value)
    assert nothing_beside(out)


@pytest.mark.parametrize(
    "value, kind",
    [
        ("Johnathan", "a physician's or operator's name"),
        ("ACC778899", "the accession number"),
        ("19600512", "the patient's birth date"),
        ("SINAI WEST HOSPITAL ID", "the issuer of the patient's id"),
        ("555-0134", "a telephone number"),
        ("1 Main Street Springfield", "the patient's address"),
    ],
)
def test_each_kind_of_value_is_looked_for(tmp_path, value, kind):
    """A value of the input's header, carried in an attribute the profile keeps
    (WindowCenterWidthExplanation, outside the table), is found and named by its kind."""
    src = edited(
        "CT_small.dcm",
        tmp_path,
        OperatorsName="Rivers^Johnathan",
        AccessionNumber="ACC778899",
        PatientBirthDate="19600512",
        IssuerOfPatientID="SINAI WEST HOSPITAL ID",
        PatientTelephoneNumbers="555-0134",
        PatientAddress="1 Main Street Springfield",
        WindowCenterWidthExplanation=f"window {value.lower()}",
    )
    with pytest.raises(IdentifyingValueFound) as caught:
        deidentify_file(src, tmp_path / "out.dcm", IDS, OPTIONS)
    assert str(caught.value) == f"{kind} found in (0028,1055) WindowCenterWidthExplanation"
    assert value.lower() not in str(caught.value).lower()


def test_an_original_uid_and_an_original_date_are_found(tmp_path):
    original = dcmread(get_testdata_file("CT_small.dcm"))
    src = edited("CT_small.dcm", tmp_path, WindowCenterWidthExplanation=original.FrameOfReferenceUID)
    with pytest.raises(IdentifyingValueFound, match=r"^an original UID found in \(0028,1055\)"):
        deidentify_file(src, tmp_path / "out.dcm", IDS, OPTIONS)
    src = edited("CT_small.dcm", tmp_path, WindowCenterWidthExplanation=f"{original.StudyDate} scan")
    with pytest.raises(IdentifyingValueFound, match=r"^an original date found in \(0028,1055\)"):
        deidentify_file(src, tmp_path / "out.dcm", IDS, OPTIONS)
    # Without a shift the dates are the input's: they are not looked for.
    deidentify_file(src, tmp_path / "out.dcm", StudyIdentifiers("P", "S", 0), OPTIONS)


def test_a_value_nested_in_a_kept_sequence_is_found(tmp_path):
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "Ravensworth^Elspeth"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "T-D0050", "SRT"
    code.CodeMeaning = "Ravensworth tissue"
    ds.AnatomicRegionSequence = Sequence([code])
    src = save(ds, tmp_path / "nested.dcm")
    with pytest.raises(IdentifyingValueFound) as caught:
        deidentify_file(src, tmp_path / "out.dcm", IDS, OPTIONS)
    assert str(caught.value) == (
        "the patient's name found in (0008,0104) CodeMeaning in (0008,2218) AnatomicRegionSequence"
    )


def test_a_value_in_private_data_kept_as_safe_is_found(tmp_path):
    """Under Retain Safe Private a vendor's attribute is written as read: its bytes are
    scanned like any other value."""
    ds = dcmread(get_testdata_file("MR_small.dcm"))
    ds.AccessionNumber = "ACC778899"
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "UN", b"ACC778899 ")  # B_value, on the safe list
    src = save(ds, tmp_path / "private.dcm")
    with pytest.raises(IdentifyingValueFound) as caught:
        deidentify_file(src, tmp_path / "out.dcm", IDS, DeidOptions(uid_secret=b"k", retain_safe_private=True))
    assert str(caught.value) == "the accession number found in (0019,100C) (private)"
    deidentify_file(src, tmp_path / "out.dcm", IDS, OPTIONS)  # removed without the option


def test_what_the_options_and_the_recipe_keep_is_not_a_finding(tmp_path):
    src = edited("CT_small.dcm", tmp_path, PatientID="12345678", SliceLocation="12345678")
    with pytest.raises(IdentifyingValueFound):
        deidentify_file(src, tmp_path / "out.dcm", IDS, OPTIONS)
    recipe = Recipe.from_text("FORMAT dicom\n%header\nKEEP PatientID\n")
    deidentify_file(src, tmp_path / "out.dcm", IDS, DeidOptions(uid_secret=b"k", recipe=recipe))
    assert dcmread(tmp_path / "out.dcm").PatientID == "12345678"
    # Retain UIDs: the input's UIDs stay, SOP Instance UID included.
    original = dcmread(src)
    result = deidentify_file(
        get_testdata_file("CT_small.dcm"), tmp_path / "uids.dcm", IDS, DeidOptions(uid_secret=b"k", retain_uids=True)
    )
    assert result["sop_uid"] == original.SOPInstanceUID


def test_common_words_and_defined_terms_are_not_findings(tmp_path):
    """A name part that is a defined term elsewhere (ImageType PERFUSION), a placeholder
    name (Test^Patient beside a manufacturer "... TEST") and a fragment of a longer word
    ("Ann" in "Channel") hold nothing."""
    deidentify_file(get_testdata_file("eCT_Supplemental.dcm"), tmp_path / "a.dcm", IDS, OPTIONS)
    src = edited("CT_small.dcm", tmp_path, PatientName="Ann^Test", Manufacturer="CHANNEL TEST", PatientID="P12345")
    deidentify_file(src, tmp_path / "b.dcm", IDS, OPTIONS)
    # ...while the same name as a word of its own is found.
    src = edited("CT_small.dcm", tmp_path, PatientName="Ann^Test", Manufacturer="ANN TEST")
    with pytest.raises(IdentifyingValueFound, match=r"the patient's name found in \(0008,0070\) Manufacturer"):
        deidentify_file(src, tmp_path / "d.dcm", IDS, OPTIONS)
    # A number inside a longer number or a UID is not the patient's id.
    src = edited("CT_small.dcm", tmp_path, PatientID="48828", PixelSpacing=["0.48828125", "0.48828125"])
    deidentify_file(src, tmp_path / "c.dcm", IDS, OPTIONS)


# -- the proof -------------------------------------------------------------------------
def test_a_short_copy_of_the_pixels_is_not_proven(tmp_path, monkeypatch):
    real = deid_files._copy_tail
    monkeypatch.setattr(deid_files, "_copy_tail", lambda src, dst, start, size: real(src, dst, start, size - 2))
    src = get_testdata_file("emri_small.dcm")  # its pixel data ends the file: streamed
    out = tmp_path / "out.dcm"
    with pytest.raises(OutputNotProven, match="pixel data is not whole"):
        deidentify_file(src, out, IDS, OPTIONS)
    assert nothing_beside(out)


def test_pixels_copied_from_the_wrong_place_are_not_proven(tmp_path, monkeypatch):
    real = deid_files._copy_tail
    monkeypatch.setattr(
        deid_files,
        "_copy_tail",
        lambda src, dst, start, size: (real(src, dst, start, start + 12), dst.write(b"\0" * (size - start - 12))),
    )
    out = tmp_path / "out.dcm"
    with pytest.raises(OutputNotProven, match="pixel data differs"):
        deidentify_file(get_testdata_file("emri_small.dcm"), out, IDS, OPTIONS)
    assert nothing_beside(out)


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda ds: ds.__delitem__("PixelData"), "the input has pixel data and the output has none"),
        (lambda ds: setattr(ds, "PixelData", ds.PixelData[:-2] + b"\0\0"), "pixel data differs"),
    ],
)
def test_a_file_read_whole_must_keep_its_pixels_byte_for_byte(tmp_path, monkeypatch, change, reason):
    """A deflated file is read whole and written back whole: its pixels are compared whole."""
    real = deid_files.deidentify_dataset

    def scrub_and_break(ds, ids, options, notes=None):
        real(ds, ids, options, notes)
        change(ds)
        return ds

    monkeypatch.setattr(deid_files, "deidentify_dataset", scrub_and_break)
    out = tmp_path / "out.dcm"
    with pytest.raises(OutputNotProven, match=reason):
        deidentify_file(get_testdata_file("image_dfl.dcm"), out, IDS, OPTIONS)
    assert nothing_beside(out)


MR_SOP = dcmread(get_testdata_file("MR_small.dcm"), stop_before_pixels=True).SOPInstanceUID


@pytest.mark.parametrize(
    "header, reason",
    [
        ("BLANK SOPInstanceUID", "has no SOP Instance UID"),
        (f"ADD SOPInstanceUID {MR_SOP}", "kept the input's SOP Instance UID"),
    ],
)
def test_the_output_must_name_a_new_instance(tmp_path, header, reason):
    recipe = Recipe.from_text(f"FORMAT dicom\n%header\n{header}\n")
    out = tmp_path / "out.dcm"
    with pytest.raises(OutputNotProven, match=reason):
        deidentify_file(get_testdata_file("MR_small.dcm"), out, IDS, DeidOptions(uid_secret=b"k", recipe=recipe))
    assert nothing_beside(out)


def test_a_written_header_that_does_not_read_back_is_not_proven(tmp_path, monkeypatch):
    real = deid_files.write_dataset

    def write_damaged(ds, out):
        buffer = io.BytesIO()
        real(ds, buffer)
        data = bytearray(buffer.getvalue())
        last = data.rindex(b"\x28\x00\x51\x10DS")  # WindowWidth, the header's last element
        struct.pack_into("<H", data, last + 6, 0xFF00)  # a length past the header's end
        out.write(bytes(data))

    monkeypatch.setattr(deid_files, "write_dataset", write_damaged)
    out = tmp_path / "out.dcm"
    with pytest.raises(
        OutputNotProven,
        match="does not read back as DICOM: the length of "
        r"\(0028,1051\) runs past the end of its data set",
    ):
        deidentify_file(get_testdata_file("MR_small.dcm"), out, IDS, OPTIONS)
    assert nothing_beside(out)


def test_an_image_without_its_pixel_data_is_not_proven(tmp_path):
    """A file cut right after an element reads as a whole, smaller dataset; pydicom ships
    header-only CT images (740 bytes) like the stub of the review."""
    stub = Path(get_testdata_file("DICOMDIR")).parent / "TINY_ALPHA/PT000000/ST000000/SE000000/IM000001"
    out = tmp_path / "out.dcm"
    with pytest.raises(OutputNotProven, match="an image .* without pixel data"):
        deidentify_file(stub, out, IDS, OPTIONS, require_pixels=True)
    assert nothing_beside(out)
    deidentify_file(stub, out, IDS, OPTIONS)  # a header-only data set, when the caller says so


def test_read_layout_names_every_value_at_every_depth(tmp_path):
    out = tmp_path / "out.dcm"
    deidentify_file(get_testdata_file("rtplan.dcm"), out, IDS, OPTIONS)
    layout = proof.read_layout(out.read_bytes())
    paths = {path for _, _, path, _ in layout.spans}
    assert (0x00080018,) in paths and (0x00020010,) in paths
    assert any(len(path) >= 3 for path in paths)  # inside items of nested sequences
    assert layout.sop_uid == layout.meta_sop_uid == dcmread(out).SOPInstanceUID
    # Big endian and implicit VR files are walked in their own encoding.
    for name in ("MR_small_bigendian.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm"):
        deidentify_file(get_testdata_file(name), out, IDS, OPTIONS)
        layout = proof.read_layout(out.read_bytes())
        assert 0x7FE00010 in layout.pixels and layout.sop_uid == dcmread(out).SOPInstanceUID


def test_pixels_read_whole_are_compared_a_chunk_at_a_time():
    data = b"head" + bytes(range(256)) * 40 + b"tail"
    pixels = bytes(range(256)) * 40
    assert proof._equal(data, 4, 4 + len(pixels), pixels, chunk=1000)
    assert not proof._equal(data, 4, 4 + len(pixels), pixels[:-1] + b"\0", chunk=1000)
    assert not proof._equal(data, 4, 5 + len(pixels), pixels, chunk=1000)
