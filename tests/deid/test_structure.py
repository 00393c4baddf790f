"""Structural validation (sendit.deid.structure) on real files and on real files broken
the way an outside review broke them."""

import os
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from sendit.deid.structure import BadStructure, check_bytes, check_structure

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent


def _real(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def _with_marker_elements(tmp_path, name: str, implicit: bool) -> bytes:
    """A real file re-encoded with a physician's name and an admission id after SliceLocation."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.SliceLocation = "12.5"
    ds.RequestingPhysician = "MARKER^PHYSICIAN"
    ds.AdmissionID = "ADMIT998877"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1"
    out = tmp_path / "marked.dcm"
    ds.save_as(out, enforce_file_format=True)
    return out.read_bytes()


def _set_length(data: bytes, tag_bytes: bytes, implicit: bool, length: int) -> bytes:
    at = data.index(tag_bytes)
    if implicit:
        return data[: at + 4] + struct.pack("<L", length) + data[at + 8 :]
    return data[: at + 6] + struct.pack("<H", length) + data[at + 8 :]


SLICE_LOCATION = b"\x20\x00\x41\x10"


def test_a_length_past_the_end_in_implicit_vr_is_refused_with_the_tag_and_sizes(tmp_path):
    data = _set_length(_with_marker_elements(tmp_path, "CT_small.dcm", True), SLICE_LOCATION, True, 0xFFFFFFF0)
    # pydicom reads the rest of the file as SliceLocation's value: the names inside it
    # would be invisible to any scrub.
    with pytest.raises(BadStructure, match=r"element \(0020,1041\) claims 4\.0 GB in a") as err:
        check_bytes(data)
    assert "MARKER" not in str(err.value)


def test_a_short_length_swallowing_elements_in_explicit_vr_is_refused(tmp_path):
    data = _with_marker_elements(tmp_path, "CT_small.dcm", False)
    # 0xFFF0 fits in this file (padded below) but makes SliceLocation's DS value hold headers.
    data = data + b"\0" * 0x10000
    with pytest.raises(BadStructure, match=r"\(0020,1041\) holds a value that is not a valid DS"):
        check_bytes(_set_length(data, SLICE_LOCATION, False, 0xFFF0))


def test_the_same_files_unbroken_pass(tmp_path):
    for implicit in (True, False):
        layout = check_bytes(_with_marker_elements(tmp_path, "CT_small.dcm", implicit))
        assert layout.pixel_length == 128 * 128 * 2


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_RLE.dcm"])
def test_compressed_pixel_data_cut_anywhere_is_refused(name):
    data = _real(name)
    layout = check_bytes(data)
    assert layout.pixel_length == 0xFFFFFFFF
    delimiter = data.rindex(b"\xfe\xff\xdd\xe0")  # the end of the pixel data
    middle = (layout.pixel_offset + delimiter) // 2
    for cut in (middle, delimiter, delimiter + 4, layout.pixel_offset + 20):
        with pytest.raises(BadStructure, match="compressed pixel data"):
            check_bytes(data[:cut])


def _nested(depth: int) -> Dataset:
    ds = Dataset()
    ds.CodeMeaning = "leaf"
    for _ in range(depth):
        outer = Dataset()
        outer.ContentSequence = Sequence([ds])
        ds = outer
    return ds


def _with_depth(tmp_path, depth: int) -> Path:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.ContentSequence = _nested(depth).ContentSequence
    path = tmp_path / f"depth{depth}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_deep_nesting_is_refused_above_the_limit(tmp_path):
    assert check_structure(_with_depth(tmp_path, 16), max_depth=16).max_depth == 16
    with pytest.raises(BadStructure, match="nested more than 16 deep"):
        check_structure(_with_depth(tmp_path, 17), max_depth=16)
    with pytest.raises(BadStructure, match="MAX_SEQUENCE_DEPTH"):
        check_structure(_with_depth(tmp_path, 120))


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "zeros.dcm"
    with open(path, "wb") as fp:
        fp.write(b"\0" * 128 + b"DICM")
        fp.truncate(300 * 1024 * 1024)  # sparse: 300 MB of zeros after the preamble
    with pytest.raises(BadStructure, match="MAX_FILE_BYTES"):
        check_structure(path, max_bytes=100 * 1024 * 1024)
    # Under the cap, the zeros are no file meta: refused at the first element, not parsed.
    with pytest.raises(BadStructure, match="no file meta"):
        check_structure(path)


def test_a_repeated_element_is_refused_unless_it_is_the_same_bytes():
    data = _real("CT_small.dcm")
    at = data.index(b"\x08\x00\x18\x00UI")  # SOPInstanceUID
    length = struct.unpack_from("<H", data, at + 6)[0]
    element = data[at : at + 8 + length]
    check_bytes(data[: at + len(element)] + element + data[at + len(element) :])
    other = element[:-2] + b"9\0"
    with pytest.raises(BadStructure, match=r"\(0008,0018\) is repeated"):
        check_bytes(data[: at + len(element)] + other + data[at + len(element) :])


def test_out_of_order_elements_are_refused():
    data = _real("CT_small.dcm")
    a = data.index(b"\x08\x00\x16\x00UI")
    b = data.index(b"\x08\x00\x18\x00UI")
    c = data.index(b"\x08\x00\x20\x00DA")
    swapped = data[:a] + data[b:c] + data[a:b] + data[c:]
    with pytest.raises(BadStructure, match="out of order"):
        check_bytes(swapped)


def test_control_bytes_in_text_are_refused_but_real_carriage_returns_pass():
    data = _real("CT_small.dcm")
    at = data.index(b"\x10\x00\x10\x00PN")
    length = struct.unpack_from("<H", data, at + 6)[0]
    bad = data[: at + 8] + b"\x08\x00" + data[at + 10 :]
    with pytest.raises(BadStructure, match=r"\(0010,0010\) \(PN\) holds control bytes"):
        check_bytes(bad)
    assert length > 2
    # deid-data's ultrasound files carry a CR inside a LO value: accepted, as pydicom does.
    deid_data = pytest.importorskip("deid_data")
    us = Path(deid_data.__file__).parent / "data" / "ultrasounds" / "GREYSCALE_IMAGE.dcm"
    if us.exists():
        check_structure(us)


def test_a_data_set_without_preamble_or_meta_is_read_as_it_is_encoded():
    layout = check_structure(get_testdata_file("rtstruct.dcm"))
    assert not layout.preamble and not layout.meta
    assert check_structure(TEST_FILES / "ExplVR_BigEndNoMeta.dcm").transfer_syntax == "1.2.840.10008.1.2.2"


def test_a_dicomdir_is_recognised_by_its_media_storage_class():
    assert check_structure(get_testdata_file("DICOMDIR")).is_dicomdir
    assert not check_structure(get_testdata_file("CT_small.dcm")).is_dicomdir


def test_not_dicom_and_empty(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(BadStructure, match="empty"):
        check_structure(empty)
    with pytest.raises(BadStructure, match="not a DICOM file"):
        check_bytes(b"%PDF-1.4 this is a report, not an image")


def test_every_shipped_file_pydicom_reads_whole_passes():
    """Every file pydicom ships that pydicom itself reads without a warning passes the walk,
    but for the two that pydicom ships as truncated (and reads without a word)."""
    import warnings

    refused = []
    for path in sorted(p for p in TEST_FILES.rglob("*") if p.is_file() and p.suffix in ("", ".dcm")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                ds = pydicom.dcmread(path)
                ds.walk(lambda d, e: e.value)
                if "PixelData" in ds:
                    ds.PixelData  # noqa: B018 - reads it whole
            except Exception:
                continue
        try:
            check_structure(path)
        except BadStructure as exc:
            refused.append((path.name, str(exc)))
    assert sorted(name for name, _ in refused) == ["MR_truncated.dcm", "rtplan_truncated.dcm"], refused
    assert os.path.getsize(get_testdata_file("CT_small.dcm")) > 0


def test_a_single_valued_number_grown_to_swallow_what_follows_is_refused(tmp_path):
    """Fuzzing's find: BitsAllocated (US, one value) made long enough to swallow the
    elements after it, every length still adding up."""
    data = _with_marker_elements(tmp_path, "CT_small.dcm", False)
    at = data.index(b"\x28\x00\x00\x01US")  # BitsAllocated
    swallowed = 40
    grown = data[: at + 6] + struct.pack("<H", 2 + swallowed) + data[at + 8 :]
    # Remove the 40 bytes' worth of elements from the stream's point of view: they are now
    # inside the value, so the walk must refuse the value itself.
    with pytest.raises(BadStructure, match=r"\(0028,0100\) \(US\) holds 21 values where the standard allows one"):
        check_bytes(grown)


def test_the_pixel_data_found_is_the_top_level_one_not_an_icons(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    icon = Dataset()
    icon.Rows, icon.Columns, icon.BitsAllocated = 2, 2, 8
    icon.PixelData = b"\1\2\3\4"
    ds.IconImageSequence = Sequence([icon])
    path = tmp_path / "icon.dcm"
    ds.save_as(path, enforce_file_format=True)
    layout = check_structure(path)
    assert layout.pixel_length == 128 * 128 * 2
    assert path.read_bytes()[layout.pixel_offset : layout.pixel_offset + 4] == b"\xe0\x7f\x10\x00"
    assert layout.pixel_value == layout.pixel_offset + 12
