"""The receiver's own handling of C-STORE requests (sendit.receiver: read off the wire) and
its pynetdicom subclasses, against pynetdicom itself as the sender and as the reference
encoder. In process: no Django, no storescu."""
from io import BytesIO
from pathlib import Path

import pynetdicom
import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, encode_file_meta
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import Verification

from sendit.receiver import (RECEIVING, Receiver, ReceiverConfig, file_meta, instance_name, parse_command,
                             store_response)
from tests.services import free_port, make_ct_series, wait_for


def test_pynetdicom_is_the_version_the_receiver_subclasses_were_written_against():
    """_DUL.run_reactor, _Acceptor._run_reactor and _RequestHandler._create_association are
    pynetdicom 3.0.4's, changed: an upgrade must be looked at (and this test moved on)."""
    assert pynetdicom.__version__ == "3.0.4"


@pytest.mark.parametrize("instance", ["1.2.3.4", "1.2.3.45", "1.2.826.0.1.3680043.8.498.1"])
def test_file_meta_is_pynetdicoms(instance):
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        expected = b"\0" * 128 + b"DICM" + encode_file_meta(
            create_file_meta(sop_class_uid=CTImageStorage, sop_instance_uid=UID(instance), transfer_syntax=syntax))
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
    receiver = Receiver(ReceiverConfig(data_folder=tmp_path / "data", key=b"test-key", port=free_port(),
                                       settle=600))
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
    return data[144 + int.from_bytes(data[140:144], "little"):]


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
