"""The importer's checks of one file, without Django: what a later step would trip over."""

import struct

import pytest

from sendit.apps.main import importer
from tests.services import make_ct_series


def shorten_pixels(path, keep):
    """Rewrite a CT file so its pixel data element declares and holds only `keep` bytes."""
    data = open(path, "rb").read()
    at = data.rindex(b"\xe0\x7f\x10\x00OW")
    data = data[: at + 8] + struct.pack("<L", keep) + data[at + 12 : at + 12 + keep]
    open(path, "wb").write(data)


def test_pixel_data_shorter_than_its_geometry_is_refused(tmp_path):
    """Declared and available lengths agree, but Rows x Columns x Bits say more: refused,
    for every file of the series (the expected length is kept per geometry)."""
    paths = make_ct_series(tmp_path, 3, rows=16, columns=16)
    assert importer.read_header(paths[0]).sop_uid  # whole: 16 x 16 x 2 bytes
    for path in paths[1:]:
        shorten_pixels(path, 16 * 16 * 2 - 2)
        with pytest.raises(importer.NotImportable, match="pixel data is truncated"):
            importer.read_header(path)
    assert importer.read_header(paths[0]).sop_uid


def test_the_expected_length_follows_each_files_geometry(tmp_path):
    """Two series of different sizes in turn: neither is judged by the other's geometry."""
    small = make_ct_series(tmp_path / "small", 1, rows=8, columns=8)[0]
    large = make_ct_series(tmp_path / "large", 1, rows=16, columns=16)[0]
    shorten_pixels(large, 8 * 8 * 2)  # the small series' length: wrong for the large one
    assert importer.read_header(small).sop_uid
    with pytest.raises(importer.NotImportable, match="pixel data is truncated"):
        importer.read_header(large)
    assert importer.read_header(small).sop_uid


def test_an_instance_uid_longer_than_a_uid_may_be_is_refused(tmp_path):
    """It could not be recorded (the column holds 64 characters): refused with a reason,
    instead of failing the whole chunk's database write."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = "1." * 40 + "1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "long.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(importer.NotImportable, match="longer than the 64 characters"):
        importer.read_header(path)
