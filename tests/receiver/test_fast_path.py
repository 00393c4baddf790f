"""The receiver's own handling of C-STORE requests (sendit.receiver: read off the wire) and
its pynetdicom subclasses, against pynetdicom itself as the sender and as the reference
encoder. In process: no Django, no storescu."""

from io import BytesIO
from pathlib import Path

import pynetdicom
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, encode_file_meta
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import Verification

from sendit.receiver import (
    _UNUSUAL,
    RECEIVING,
    SPARES,
    Receiver,
    ReceiverConfig,
    _FolderSync,
    _walk_to_study_uid,
    file_meta,
    instance_name,
    parse_command,
    store_response,
    study_uid_in,
)
from tests.services import free_port, make_ct_series, wait_for


def test_pynetdicom_is_the_version_the_receiver_subclasses_were_written_against():
    """_DUL.run_reactor, _Acceptor._run_reactor and _RequestHandler._create_association are
    pynetdicom 3.0.4's, changed: an upgrade must be looked at (and this test moved on)."""
    assert pynetdicom.__version__ == "3.0.4"


@pytest.mark.parametrize("instance", ["1.2.3.4", "1.2.3.45", "1.2.826.0.1.3680043.8.498.1"])
def test_file_meta_is_pynetdicoms(instance):
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        expected = (
            b"\0" * 128
            + b"DICM"
            + encode_file_meta(
                create_file_meta(sop_class_uid=CTImageStorage, sop_instance_uid=UID(instance), transfer_syntax=syntax)
            )
        )
        assert file_meta(CTImageStorage, instance, syntax) == expected


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC000, 0xC001])
def test_store_response_is_the_pdu_pynetdicom_sends(status):
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = CTImageStorage
    rsp.AffectedSOPInstanceUID = "1.2.3.45"
    rsp.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    [primitive] = list(message.encode_msg(3, 16382))
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    assert store_response(3, 7, CTImageStorage, "1.2.3.45", status) == pdu.encode()


def test_parse_command_reads_a_c_store_request():
    request = C_STORE()
    request.MessageID = 12
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = "1.2.3.4"
    request.Priority = 2
    request.DataSet = BytesIO(b"\x08\x00\x18\x00\x04\x00\x00\x001.2\x00")
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    command = parse_command(message.encode_msg(1, 16382).__next__().presentation_data_value_list[0][1][1:])
    assert int.from_bytes(command[0x0100], "little") == 0x0001
    assert int.from_bytes(command[0x0110], "little") == 12
    assert command[0x1000].rstrip(b"\0") == b"1.2.3.4"
    with pytest.raises(ValueError):
        parse_command(b"\x08\x00\x18\x00\x04\x00\x00\x00abcd")  # not group 0000


@pytest.fixture
def receiver(tmp_path):
    receiver = Receiver(ReceiverConfig(data_folder=tmp_path / "data", key=b"test-key", port=free_port(), settle=600))
    receiver.start()
    yield receiver
    receiver.stop()


def scu(receiver, max_pdu=16382, syntaxes=(ExplicitVRLittleEndian,)):
    ae = AE(ae_title="FASTTEST")
    ae.maximum_pdu_size = max_pdu
    ae.add_requested_context(CTImageStorage, list(syntaxes))
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", receiver.config.port, ae_title="SENDIT")
    assert assoc.is_established
    return assoc


def dataset_bytes(path) -> bytes:
    data = Path(path).read_bytes()
    return data[144 + int.from_bytes(data[140:144], "little") :]


def test_an_echo_and_stores_in_many_small_pdus_are_answered(receiver, tmp_path):
    """pynetdicom as the sender: C-ECHO goes pynetdicom's way; C-STOREs in 16 kB PDUs (about 32
    fragments each) are taken off the wire and stored as sent."""
    sent = make_ct_series(tmp_path / "study", 3, rows=128, columns=128)
    assoc = scu(receiver)
    try:
        assert assoc.send_c_echo().Status == 0x0000
        for path in sent:
            assert assoc.send_c_store(dcmread(path)).Status == 0x0000
    finally:
        assoc.release()
    [folder] = list(receiver.config.data_folder.glob("*" + RECEIVING))
    assert folder.name.startswith("FASTTEST-")
    for path in sent:
        stored = folder / instance_name(str(dcmread(path, stop_before_pixels=True).SOPInstanceUID))
        assert dataset_bytes(stored) == dataset_bytes(path)
        assert dcmread(stored).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert receiver.stats.images == 3


def test_an_implicit_vr_dataset_is_filed_under_its_study(receiver, tmp_path):
    [first] = make_ct_series(tmp_path / "a", 1, rows=16, columns=16, study_uid="1.2.3.100")
    [second] = make_ct_series(tmp_path / "b", 1, rows=16, columns=16, study_uid="1.2.3.200")
    assoc = scu(receiver, syntaxes=(ImplicitVRLittleEndian,))
    try:
        for path in (first, second):
            assert assoc.send_c_store(dcmread(path)).Status == 0x0000
    finally:
        assoc.release()
    folders = sorted(receiver.config.data_folder.glob("*" + RECEIVING))
    assert len(folders) == 2  # two studies, two folders
    for folder in folders:
        [stored] = folder.iterdir()
        assert dcmread(stored).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian


def test_an_association_aborted_in_the_middle_of_a_dataset_leaves_nothing_half_written(receiver, tmp_path):
    [path] = make_ct_series(tmp_path / "study", 1, rows=256, columns=256)
    ds = dcmread(path)
    assoc = scu(receiver)
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    request.DataSet = BytesIO(dataset_bytes(path))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    [context] = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage]
    primitives = list(message.encode_msg(context.context_id, 16382))
    assert len(primitives) > 4
    for primitive in primitives[:4]:  # the command and the first dataset fragments only
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        assoc.dul.socket.send(pdu.encode())
    assert wait_for(lambda: list(receiver.config.data_folder.rglob("*.part")), 10), "the .part file never opened"
    assoc.abort()
    assert wait_for(lambda: not list(receiver.config.data_folder.rglob("*.part")), 10)
    assert wait_for(lambda: all(s.writing == 0 for s in receiver.folders.open.values()), 10)
    assert receiver.stats.images == 0
    # The receiver goes on: the same instance, sent whole, is stored.
    assoc = scu(receiver)
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    assert receiver.stats.images == 1


def _encoded(ds, syntax) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = syntax.is_little_endian, syntax.is_implicit_VR
    write_dataset(fp, ds)
    return fp.getvalue()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_the_study_uid_is_read_from_the_first_bytes_as_pydicom_reads_it(tmp_path, syntax):
    """The tag walk (little endian) and pydicom (big endian) agree, and say "not yet" (None)
    on every prefix too short to tell, the value on every longer one."""
    [path] = make_ct_series(tmp_path, 1, rows=8, columns=8, study_uid="1.2.840.99.7")
    data = _encoded(dcmread(path), syntax)
    answers = [study_uid_in(data[:n], syntax) for n in range(0, 700)]
    first = next(n for n, answer in enumerate(answers) if answer is not None)
    assert set(answers[first:]) == {"1.2.840.99.7"} and first > 100


def test_the_study_uid_walk_leaves_undefined_lengths_to_pydicom_and_tells_a_missing_one():
    ds = Dataset()
    ds.ReferencedImageSequence = [Dataset()]
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3"
    ds.StudyInstanceUID = "1.2.840.5"
    ds.SeriesInstanceUID = "1.2.840.6"
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        data = _encoded(ds, syntax)
        assert study_uid_in(data, syntax) == "1.2.840.5"
    ds["ReferencedImageSequence"].is_undefined_length = True
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        data = _encoded(ds, syntax)
        assert b"\xff\xff\xff\xff" in data[:12]  # the sequence is of undefined length
        assert _walk_to_study_uid(data, syntax.is_implicit_VR) is _UNUSUAL
        assert study_uid_in(data, syntax) == "1.2.840.5"  # pydicom's answer
    no_study = Dataset()
    no_study.PatientID = "X"
    no_study.SeriesInstanceUID = "1.2"
    assert study_uid_in(_encoded(no_study, ExplicitVRLittleEndian), ExplicitVRLittleEndian) == ""


def test_a_folder_fsync_is_shared_only_by_renames_done_before_it_began(tmp_path, monkeypatch):
    """Group commit: every sync() returns after an fsync that began after it was called."""
    import threading
    import time

    import sendit.receiver as receiver_module

    log, lock = [], threading.Lock()  # ("begin"|"end", fsync number)
    counter = iter(range(1, 10_000))

    def slow_fsync(folder):
        with lock:
            number = next(counter)
            log.append(("begin", number))
        time.sleep(0.01)
        with lock:
            log.append(("end", number))

    monkeypatch.setattr(receiver_module, "_fsync_folder", slow_fsync)
    syncer = _FolderSync(tmp_path)
    results = []

    def caller():
        with lock:
            called = len([e for e in log if e[0] == "begin"])  # fsyncs begun before the call
        syncer.sync()
        with lock:
            ended = [n for kind, n in log if kind == "end"]
        results.append((called, ended))

    threads = [threading.Thread(target=caller) for _ in range(12)]
    for thread in threads:
        thread.start()
        time.sleep(0.003)
    for thread in threads:
        thread.join()
    for called, ended in results:
        assert any(number > called for number in ended)  # one begun after the call has ended
    assert len([e for e in log if e[0] == "begin"]) < 12  # and some were shared


def test_a_failed_folder_fsync_fails_every_store_it_covered(tmp_path, monkeypatch):
    import sendit.receiver as receiver_module

    def broken(folder):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(receiver_module, "_fsync_folder", broken)
    with pytest.raises(OSError):
        _FolderSync(tmp_path).sync()


def test_each_association_makes_the_file_of_its_next_image_ahead_and_removes_it_at_the_end(receiver, tmp_path):
    sent = make_ct_series(tmp_path / "study", 3, rows=32, columns=32)
    spares = receiver.config.data_folder / SPARES
    assoc = scu(receiver)
    try:
        for path in sent:
            assert assoc.send_c_store(dcmread(path)).Status == 0x0000
            assert wait_for(lambda: len(list(spares.glob("*.part"))) == 1, 5)
    finally:
        assoc.release()
    assert wait_for(lambda: not list(spares.glob("*.part")), 10)
    [folder] = list(receiver.config.data_folder.glob("*" + RECEIVING))
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        instance_name(str(dcmread(p).SOPInstanceUID)) for p in sent
    )
    # A receiver started after a crash removes the spare files it finds.
    (spares / "0123456789abcdef.part").write_bytes(b"")
    receiver.folders.adopt()
    assert not list(spares.iterdir())
