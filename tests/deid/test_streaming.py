"""deidentify_file copies pixel data as bytes: its output equals the read-everything path's."""

import io

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_files

from sendit.deid import DeidOptions, OutputNotProven, deidentify_dataset, deidentify_file
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
    try:
        deidentify_file(path, out, IDS, OPTIONS)
    except OutputNotProven:
        # Damaged files and data sets that are no instance (tests/deid/test_deid_files.py
        # lists them): nothing is written, whichever path it took.
        assert not list(tmp_path.iterdir())
        pytest.skip("no output of this file can be proven")
    assert out.read_bytes() == full_path_bytes(path)


def test_a_ct_image_is_streamed_not_parsed(tmp_path, monkeypatch):
    """The pixel bytes of an ordinary file never pass through pydicom's parser."""
    from tests.services import make_ct_series

    (path,) = make_ct_series(tmp_path / "in", 1)
    calls = []
    real = deid_files.dcmread
    monkeypatch.setattr(deid_files, "dcmread", lambda *a, **k: calls.append(k) or real(*a, **k))
    deidentify_file(path, tmp_path / "out.dcm", IDS, OPTIONS)
    assert calls == [{"stop_before_pixels": True, "force": True}]
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


def _header_bytes(path, writer, convert=()):
    """A file's header written by `writer`, as _write_header encodes it; the elements whose
    keywords are in `convert` are read through the dataset first (no longer raw)."""
    from pydicom.filebase import DicomBytesIO

    ds = dcmread(path, stop_before_pixels=True)
    for tag in list(ds.keys()):
        if convert == "all" or ds.get_item(tag).tag in convert:
            try:
                ds[tag]
            except Exception:
                return None  # a value pydicom cannot convert: nothing to compare
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


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.rsplit("/", 1)[-1])
def test_untouched_elements_are_written_as_pydicom_writes_them(path):
    """The raw-element fast path of the header writer encodes exactly as pydicom does."""
    from pydicom.filewriter import write_dataset as pydicom_write_dataset

    patient_name = {0x00100010}  # reading it converts it: one element through pydicom
    assert _header_bytes(path, deid_files._write_body, patient_name) == _header_bytes(
        path, pydicom_write_dataset, patient_name
    )


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.rsplit("/", 1)[-1])
def test_converted_elements_are_written_as_pydicom_writes_them(path):
    """Every element converted (strings, UIDs, numbers, bytes, sequences): the header
    writer's own encoding of one-value elements gives pydicom's bytes."""
    from pydicom.filewriter import write_dataset as pydicom_write_dataset

    ours = _header_bytes(path, deid_files._write_body, "all")
    if ours is None:
        pytest.skip("pydicom cannot convert every value of this file")
    assert ours == _header_bytes(path, pydicom_write_dataset, "all")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.rsplit("/", 1)[-1])
def test_the_file_meta_is_written_as_pydicom_writes_it(path):
    """_write_meta completes and encodes the meta as write_file_meta_info does, whether
    its elements are raw or converted."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    meta = dcmread(path, stop_before_pixels=True).file_meta
    if "TransferSyntaxUID" not in meta:
        pytest.skip("no file meta")
    for converted in (False, True):
        written = []
        for writer in (lambda fp, m: write_file_meta_info(fp, m, enforce_standard=True), deid_files._write_meta):
            copy = dcmread(path, stop_before_pixels=True).file_meta
            if converted:
                list(copy)
            out = DicomBytesIO()
            out.is_little_endian, out.is_implicit_VR = True, False
            try:
                writer(out, copy)
            except (AttributeError, ValueError) as exc:
                written.append(type(exc))
            else:
                written.append(out.getvalue())
        assert written[0] == written[1]


def test_a_missing_required_meta_element_is_refused_as_pydicom_refuses_it():
    from pydicom.filebase import DicomBytesIO

    meta = dcmread(FILES[0], stop_before_pixels=True).file_meta
    del meta[0x00020003]
    with pytest.raises(AttributeError, match="Media Storage SOP Instance UID"):
        deid_files._write_meta(DicomBytesIO(), meta)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.rsplit("/", 1)[-1])
def test_a_deidentified_header_is_written_as_save_as_writes_it(path):
    """The whole header writer (preamble, meta, body) against pydicom's save_as."""

    def deidentified():
        ds = dcmread(path, stop_before_pixels=True)
        deidentify_dataset(ds, IDS, OPTIONS)
        meta = getattr(ds, "file_meta", None)
        has_sop = "SOPClassUID" in ds and "SOPInstanceUID" in ds
        if not (has_sop and meta and "TransferSyntaxUID" in meta and deid_files._plain_header(ds, meta)):
            pytest.skip("not written by _write_header")  # the conditions of write_dataset
        if not meta.TransferSyntaxUID.is_implicit_VR and deid_files._read_as_implicit(ds):
            for _ in ds.iterall():  # as write_dataset does before either writer
                pass
        return ds

    ours, theirs = io.BytesIO(), io.BytesIO()
    ds = deidentified()
    deid_files._write_header(ds, ds.file_meta, ours)
    deidentified().save_as(theirs, enforce_file_format=True)
    assert ours.getvalue() == theirs.getvalue()


@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "MR_small.dcm", "MR_small_bigendian.dcm"])
def test_the_method_code_sequence_goes_in_encoded_as_the_file_is(tmp_path, name):
    """The code sequence is added already encoded: it must read back, item by item, in each
    encoding, both from the written file and from the dataset in memory."""
    from pydicom.data import get_testdata_file

    source = get_testdata_file(name)
    options = DeidOptions(uid_secret=b"streaming-test", retain_device_identity=True)
    deidentify_file(source, tmp_path / "out.dcm", IDS, options)
    in_memory = deidentify_dataset(dcmread(source), IDS, options)
    for ds in (dcmread(tmp_path / "out.dcm"), in_memory):
        codes = {c.CodeValue: (c.CodingSchemeDesignator, c.CodeMeaning) for c in ds.DeidentificationMethodCodeSequence}
        assert codes["113100"] == ("DCM", "Basic Application Confidentiality Profile")
        assert codes["113109"] == ("DCM", "Retain Device Identity Option")
        assert len(codes) == len(ds.DeidentificationMethod)


def test_a_text_value_too_long_for_its_length_field_is_written_as_pydicom_writes_it():
    """Over 64 kB in an explicit VR with a 16-bit length: pydicom writes UN; so does sendit."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset as pydicom_write_dataset

    def written(writer):
        ds = dcmread(get_testdata_files("CT_small.dcm")[0], stop_before_pixels=True)
        ds.StudyDescription = "X" * 70000
        out = DicomBytesIO()
        out.is_implicit_VR, out.is_little_endian = False, True
        with pytest.warns(UserWarning, match="64 kByte"):
            writer(out, ds)
        return out.getvalue()

    assert written(deid_files._write_body) == written(pydicom_write_dataset)
