"""The DICOM receiver, run as `manage.py dicom_receiver` and fed by DCMTK's storescu."""

import os
import re
import shutil
import signal
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from sendit.receiver import RECEIVING, instance_name
from tests.node import Node
from tests.services import free_port, make_ct_series, reachable, stop_process, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.skipif(not shutil.which("storescu"), reason="DCMTK's storescu is not installed")


class Receiver:
    """`manage.py dicom_receiver` in a process of its own, on a free loopback port."""

    def __init__(self, tmp: Path, data: Path | None = None, **settings):
        self.tmp = Path(tmp)
        self.data = data or self.tmp / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = self.tmp / "receiver.log"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "sendit.settings",
            "LOCKDOWN_ENABLED": "false",
            "SECRET_KEY": "receiver-test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
            "DEID_SECRET": "receiver-test-site-secret-0123456789abc",
            "DATABASE_URL": f"sqlite:///{self.tmp}/sendit.sqlite3",
            "VAR_DIR": str(self.tmp / "var"),
            "DATA_FOLDER": str(self.data),
            "RECEIVER_PORT": str(self.port),
            "RECEIVER_STUDY_SETTLE_SECONDS": "1",
            **{k: str(v) for k, v in settings.items()},
        }
        self.proc = None

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "dicom_receiver"], cwd=ROOT, env=self.env, stdout=log, stderr=log
            )
        assert wait_for(lambda: reachable(self.port) or self.proc.poll() is not None, 60), self.logs()
        assert self.proc.poll() is None, self.logs()
        return self

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        stop_process(self.proc)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def finished(self) -> list[Path]:
        # (not the receiver's own SPARES folder: a dot folder, which the watcher leaves alone)
        return sorted(
            p
            for p in self.data.iterdir()
            if p.is_dir() and not p.name.endswith(RECEIVING) and not p.name.startswith(".")
        )

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def storescu(port, files, aet="STORESCU", *options, timeout=300):
    return subprocess.run(
        ["storescu", "-v", "-aet", aet, "-aec", "SENDIT", *options, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TCP_NODELAY": "1"},
    )


def dataset_bytes(path) -> bytes:
    """A DICOM file's dataset as encoded, after its preamble and file meta group."""
    data = Path(path).read_bytes()
    assert data[128:132] == b"DICM"
    group_length = int.from_bytes(data[140:144], "little")  # (0002,0000) UL, explicit VR LE
    return data[144 + group_length :]


def received(folder: Path, sent: Path) -> Path:
    return folder / instance_name(str(dcmread(sent, stop_before_pixels=True).SOPInstanceUID))


def test_a_study_arrives_whole_under_its_final_name(tmp_path):
    sent = make_ct_series(tmp_path / "study", 12, patient_id="PHI-RECV-1", rows=64, columns=64)
    with Receiver(tmp_path) as receiver:
        result = storescu(receiver.port, sent)
        assert result.returncode == 0, result.stdout + result.stderr
        assert wait_for(lambda: len(receiver.finished()) == 1, 30), receiver.logs()
        [folder] = receiver.finished()
        assert not list(receiver.data.glob("*" + RECEIVING))
        assert re.fullmatch(r"STORESCU-[0-9a-f]{12}-\d{8}T\d{6}-[0-9a-f]{4}", folder.name)
        assert len(list(folder.iterdir())) == 12
        for path in sent:
            assert dataset_bytes(received(folder, Path(path))) == dataset_bytes(path)
        logs = receiver.logs()
        assert "HANDED OVER " + folder.name in logs and "PHI-RECV" not in logs


#: pydicom's test files, one per transfer syntax, and the storescu option that proposes it
#: (storescu offers only uncompressed syntaxes unless told otherwise).
SYNTAXES = {
    "MR_small_RLE.dcm": "--propose-rle",
    "693_J2KI.dcm": "--propose-j2k-lossy",
    "GDCMJ2K_TextGBR.dcm": "--propose-j2k-lossless",
    "JPEG-lossy.dcm": "--propose-jpeg12",
    "SC_jpeg_no_color_transform.dcm": "--propose-jpeg8",
    "SC_rgb_jpeg_gdcm.dcm": "--propose-lossless",
    "MR_small_jpeg_ls_lossless.dcm": "--propose-jls-lossless",
    "image_dfl.dcm": "--propose-deflated",
    "CT_small.dcm": "--propose-little",
    "MR_small_implicit.dcm": "--propose-implicit",
}


def test_every_transfer_syntax_is_stored_as_received(tmp_path):
    """Each transfer syntax offered is accepted and kept: nothing is decoded or re-encoded.
    Some of these files are one image in several syntaxes (one SOP instance UID): each is sent
    under a calling AE title of its own, so each lands in a folder of its own."""
    with Receiver(tmp_path) as receiver:
        for index, (name, option) in enumerate(SYNTAXES.items()):
            result = storescu(receiver.port, [get_testdata_file(name)], f"SYNTAX{index}", option)
            assert result.returncode == 0, result.stdout + result.stderr
        assert wait_for(
            lambda: not list(receiver.data.glob("*" + RECEIVING)) and len(receiver.finished()) == len(SYNTAXES), 30
        ), receiver.logs()
        for index, name in enumerate(SYNTAXES):
            path = Path(get_testdata_file(name))
            [folder] = [f for f in receiver.finished() if f.name.startswith(f"SYNTAX{index}-")]
            stored = received(folder, path)
            assert (
                dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID
                == dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
            ), name
            # storescu re-encodes the header it reads (it drops trailing padding, pads odd
            # lengths): the pixel data's bytes, compressed as they were, are what it sent.
            assert dcmread(stored).PixelData == dcmread(path).PixelData, name


def test_a_calling_ae_not_allowed_is_rejected(tmp_path):
    sent = make_ct_series(tmp_path / "study", 2, rows=16, columns=16)
    with Receiver(tmp_path, RECEIVER_ALLOWED_AETS="MODALITY1,MODALITY2") as receiver:
        result = storescu(receiver.port, sent, "INTRUDER")
        assert result.returncode != 0
        assert "Association Rejected" in result.stdout + result.stderr
        assert storescu(receiver.port, sent, "MODALITY2").returncode == 0
        assert wait_for(lambda: len(receiver.finished()) == 1, 30)
        assert receiver.finished()[0].name.startswith("MODALITY2-")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_answers_out_of_resources_and_keeps_what_was_acknowledged(tmp_path):
    data = tmp_path / "small"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(data)], check=True)
    try:
        sent = make_ct_series(tmp_path / "study", 12, rows=128, columns=128)  # 32 kB each
        with Receiver(tmp_path, data=data) as receiver:
            result = storescu(receiver.port, sent)
            out = result.stdout + result.stderr
            assert re.search(r"Store Response \(A700|Refused: OutOfResources|0xa700", out, re.I), out
            acknowledged = acknowledged_files(out)
            assert 0 < len(acknowledged) < 12
            assert wait_for(lambda: len(receiver.finished()) == 1, 30), receiver.logs()
            [folder] = receiver.finished()
            stored = sorted(p.name for p in folder.iterdir())
            assert sorted(received(folder, p).name for p in acknowledged) == stored
            assert not list(folder.glob("*.part"))
            assert "the disk is full" in receiver.logs()
    finally:
        subprocess.run(["umount", str(data)], check=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_an_unwritable_folder_answers_a_failure(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sent = make_ct_series(tmp_path / "study", 2, rows=16, columns=16)
    with Receiver(tmp_path) as receiver:
        data.chmod(0o555)
        try:
            result = storescu(receiver.port, sent)
        finally:
            data.chmod(0o755)
        assert not acknowledged_files(result.stdout + result.stderr)


def acknowledged_files(storescu_output: str) -> list[Path]:
    """The files storescu was told were stored (-v: 'Sending file' then its response)."""
    done, current = [], None
    for line in storescu_output.splitlines():
        sending = re.search(r"Sending file: (.+)$", line)
        if sending:
            current = Path(sending.group(1).strip())
        elif "Received Store Response (Success)" in line and current is not None:
            done.append(current)
            current = None
    return done


def test_a_killed_receiver_loses_no_acknowledged_image_and_hands_the_study_over(tmp_path):
    sent = make_ct_series(tmp_path / "study", 300, rows=128, columns=128)
    data = tmp_path / "data"
    receiver = Receiver(tmp_path, data=data, RECEIVER_STUDY_SETTLE_SECONDS="2").start()
    sender = subprocess.Popen(
        ["storescu", "-v", "-aet", "STORESCU", "-aec", "SENDIT", "127.0.0.1", str(receiver.port), *map(str, sent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Kill it mid-study: once some images are in its folder.
    assert wait_for(lambda: any(len(list(f.iterdir())) > 40 for f in data.glob("*" + RECEIVING)), 60)
    receiver.kill()
    out, _ = sender.communicate(timeout=60)
    acknowledged = acknowledged_files(out)
    assert 0 < len(acknowledged) < 300, out[-2000:]
    [folder] = list(data.glob("*" + RECEIVING))  # not handed over: the receiver died first
    for path in acknowledged:
        assert dataset_bytes(received(folder, path)) == dataset_bytes(path)

    restarted = Receiver(tmp_path, data=data, RECEIVER_STUDY_SETTLE_SECONDS="2")
    restarted.port = receiver.port
    restarted.env["RECEIVER_PORT"] = str(receiver.port)
    with restarted:
        assert wait_for(lambda: len(restarted.finished()) == 1, 30), restarted.logs()
        [final] = restarted.finished()
        assert final.name == folder.name[: -len(RECEIVING)]
        assert not list(final.glob("*.part"))
        for path in acknowledged:
            assert dataset_bytes(received(final, path)) == dataset_bytes(path)
        # Every file is a whole instance (an unacknowledged one may be there, whole, too).
        for path in final.iterdir():
            dcmread(path)
        assert "RESUMED " + folder.name in restarted.logs()


@pytest.mark.e2e
def send_and_wait(tmp_path, node, files):
    """DCMTK's storescu sends ``files`` to a receiver feeding ``node``; returns the (stopped)
    receiver once the node's only batch is DONE."""
    with Receiver(tmp_path, data=node.data, DEID_SECRET=node.env["DEID_SECRET"]) as receiver:
        result = storescu(receiver.port, files)
        assert result.returncode == 0, result.stdout
        done = node.wait(lambda: [s for s, _ in node.batches().values()] == ["DONE"], timeout=120)
        assert done, (node.batches(), node.logs()[-3000:], receiver.logs())
    return receiver


def test_a_study_sent_over_dicom_reaches_orthanc_deidentified(tmp_path, orthanc_server):
    orthanc_server.clear()
    sent = make_ct_series(
        tmp_path / "study", 4, patient_id="PHI-RECV-77", patient_name="Secret^Sender", rows=64, columns=64
    )
    with Node(tmp_path / "node", ORTHANC_URL=orthanc_server.url, ORTHANC_PORT=orthanc_server.dicom_port) as node:
        receiver = send_and_wait(tmp_path, node, sent)
        [uid] = node.batches()
        assert uid.startswith("STORESCU-")
        ids = orthanc_server.instances()
        assert len(ids) == 4
        for i in ids:
            tags = orthanc_server.get_json(f"/instances/{i}/simplified-tags")
            assert not tags["PatientID"].startswith("PHI-RECV")
            assert "Secret" not in tags.get("PatientName", "")
        assert "PHI-RECV" not in node.logs() + receiver.logs()


@pytest.mark.e2e
def test_a_study_sent_over_dicom_reaches_a_dicomweb_server_deidentified(tmp_path, dicomweb_server):
    """storescu -> the receiver -> the watcher -> de-identification -> STOW-RS to Orthanc's
    DICOMweb plugin (SEND_TO_DICOMWEB on, SEND_TO_ORTHANC off)."""
    sent = make_ct_series(
        tmp_path / "study", 5, patient_id="PHI-RECV-DW", patient_name="Secret^Webrecv", rows=64, columns=64
    )
    sent_uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in sent}
    with Node(
        tmp_path / "node", SEND_TO_ORTHANC="false", SEND_TO_DICOMWEB="true", DICOMWEB_URL=dicomweb_server.dicomweb_url
    ) as node:
        receiver = send_and_wait(tmp_path, node, sent)
        [uid] = node.batches()
        assert uid.startswith("STORESCU-")
        ids = dicomweb_server.instances()
        assert len(ids) == 5
        for i in ids:
            ds = dcmread(BytesIO(dicomweb_server.get_bytes(f"/instances/{i}/file")))
            assert not str(ds.PatientID).startswith("PHI-RECV")
            assert "Secret" not in str(ds.PatientName) and "Webrecv" not in str(ds.PatientName)
            assert str(ds.SOPInstanceUID) not in sent_uids
        assert "PHI-RECV" not in node.logs() + receiver.logs()
