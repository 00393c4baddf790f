"""deidentify_file copies pixel data as bytes: its output equals the read-everything path's."""
import io

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_files

from sendit.deid import DeidOptions, deidentify_dataset, deidentify_file
from sendit.deid import files as deid_files
from sendit.deid.files import write_dataset
from sendit.deid.identifiers import StudyIdentifiers

IDS = StudyIdentifiers(patient_suid="p1", study_suid="s1", jitter=-11)
OPTIONS = DeidOptions(uid_secret=b"streaming-test")


def readable(paths):
    good = []
    for path in paths:
        try:
            dcmread(path)
        except Exception:
            continue
        good.append(path)
    return good


FILES = readable(p for p in get_testdata_files("*.dcm"))


def full_path_bytes(path):
    ds = dcmread(path)
    deidentify_dataset(ds, IDS, OPTIONS)
    buffer = io.BytesIO()
    write_dataset(ds, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.rsplit("/", 1)[-1])
def test_streamed_output_is_byte_identical_to_the_full_read(path, tmp_path):
    out = tmp_path / "out.dcm"
    deidentify_file(path, out, IDS, OPTIONS)
    assert out.read_bytes() == full_path_bytes(path)


def test_a_ct_image_is_streamed_not_parsed(tmp_path, monkeypatch):
    """The pixel bytes of an ordinary file never pass through pydicom's parser."""
    from tests.services import make_ct_series

    (path,) = make_ct_series(tmp_path / "in", 1)
    calls = []
    real = deid_files.dcmread
    monkeypatch.setattr(deid_files, "dcmread", lambda *a, **k: calls.append(k) or real(*a, **k))
    deidentify_file(path, tmp_path / "out.dcm", IDS, OPTIONS)
    assert calls == [{"stop_before_pixels": True}]
    assert dcmread(tmp_path / "out.dcm").PixelData == dcmread(path).PixelData


def test_the_preamble_is_zeroed(tmp_path):
    """The 128 bytes before DICM can carry anything (a TIFF header, vendor data)."""
    from tests.services import make_ct_series

    (path,) = make_ct_series(tmp_path / "in", 1)
    data = bytearray(open(path, "rb").read())
    data[:16] = b"PATIENT-DOE-JANE"
    (tmp_path / "marked.dcm").write_bytes(bytes(data))
    deidentify_file(tmp_path / "marked.dcm", tmp_path / "out.dcm", IDS, OPTIONS)
    out = (tmp_path / "out.dcm").read_bytes()
    assert out[:128] == b"\0" * 128 and out[128:132] == b"DICM"
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.rsplit("/", 1)[-1])
def test_untouched_elements_are_written_as_pydicom_writes_them(path):
    """The raw-element fast path of the header writer encodes exactly as pydicom does."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset as pydicom_write_dataset

    def written(writer):
        ds = dcmread(path, stop_before_pixels=True)
        if "PatientName" in ds:
            ds["PatientName"]  # reading it through the dataset converts it: no longer raw
        out = DicomBytesIO()
        out.is_implicit_VR, out.is_little_endian = deid_files.encoding(ds)
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if syntax and syntax.is_transfer_syntax:  # written as its syntax says, as _write_header does
            out.is_implicit_VR, out.is_little_endian = syntax.is_implicit_VR, syntax.is_little_endian
            if not syntax.is_implicit_VR and deid_files._read_as_implicit(ds):
                for _ in ds.iterall():  # as write_dataset does: dictionary VRs for every element
                    pass
        writer(out, ds)
        return out.getvalue()

    assert written(deid_files._write_body) == written(pydicom_write_dataset)
