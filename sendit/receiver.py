"""A DICOM receiver (C-STORE SCP) that drops each arriving study into the data folder.

Plain Python on pynetdicom, no Django: ``manage.py dicom_receiver`` reads the settings and
calls :func:`serve`.

Each instance is written as it was received (the encoded dataset with its file meta, never
decoded) into a folder per calling AE title and study, ``NAME.tmprecv`` in the data folder,
and fsynced before the sender hears Success. A folder that has received nothing for
``settle`` seconds is renamed to ``NAME``, which the watcher takes like any other drop.
``NAME`` is the calling AE title, a keyed hash of the StudyInstanceUID and the time the
folder was opened: never a patient value, and never the name of an earlier batch.
A receiver restarted after a crash takes back the ``.tmprecv`` folders it finds and hands
them over in turn; a half-written file (``.part``) was never acknowledged and is removed.
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

logger = logging.getLogger("sendit.receiver")

#: The extension of a study folder still receiving (is_finished_name: "tmp...").
RECEIVING = ".tmprecv"

# C-STORE statuses (PS3.4 Annex B.2.3 and pynetdicom's own).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # the disk is full: the sender keeps the image and may retry
CANNOT_UNDERSTAND = 0xC000  # the dataset cannot be read
CANNOT_WRITE = 0xC001  # any other write failure (read-only, permissions, I/O error)

_STUDY_UID = 0x0020000D


@dataclass
class ReceiverConfig:
    """What the receiver needs; ``key`` keys the hash of StudyInstanceUIDs in folder names."""

    data_folder: Path
    key: bytes
    ae_title: str = "SENDIT"
    port: int = 11112
    bind: str = "127.0.0.1"
    allowed_aets: tuple[str, ...] = ()
    settle: float = 10.0
    max_associations: int = 10


@dataclass
class Stats:
    """What the receiver has done since it started, for its log and status."""

    images: int = 0
    refused: int = 0
    associations: int = 0
    handed_over: int = 0
    day: str = field(default_factory=lambda: time.strftime("%Y-%m-%d"))
    images_today: int = 0

    def stored(self) -> None:
        today = time.strftime("%Y-%m-%d")
        if today != self.day:
            self.day, self.images_today = today, 0
        self.images += 1
        self.images_today += 1


def safe_ae(ae_title: str) -> str:
    """An AE title as it may appear in a folder name: letters, digits, '_' and '-' only."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", ae_title.strip())[:16]
    return cleaned or "AE"


def study_prefix(key: bytes, calling_ae: str, study_uid: str) -> str:
    """The stem of a study's folder names: its calling AE title and a keyed hash of the
    study UID, so that a folder name says which study it is to the node alone."""
    digest = hmac.new(key, study_uid.encode("ascii", "replace"), hashlib.sha256).hexdigest()
    return f"{safe_ae(calling_ae)}-{digest[:12]}"


def instance_name(sop_uid: str) -> str:
    """A file name for an instance: the same instance sent twice replaces itself."""
    return hashlib.sha256(sop_uid.encode("ascii", "replace")).hexdigest()[:32] + ".dcm"


def _fsync_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_instance(path: Path, data: bytes) -> None:
    """Write ``data`` at ``path`` durably: a ``.part`` file, fsynced, renamed, its folder
    fsynced. On any error nothing is left under either name and the error is raised."""
    part = path.with_name(path.name + ".part")
    try:
        with open(part, "wb") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(part, path)
        _fsync_folder(path.parent)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


@dataclass
class _Study:
    folder: Path  # NAME.tmprecv
    last: float  # monotonic time of the last image
    writing: int = 0  # C-STOREs of this study being written now
    images: int = 0


class StudyFolders:
    """The study folders still receiving, and when each is handed over. Thread-safe: every
    association is a thread of its own."""

    def __init__(self, root: Path, settle: float, clock=time.monotonic):
        self.root = Path(root)
        self.settle = settle
        self.clock = clock
        self.lock = threading.Lock()
        self.open: dict[str, _Study] = {}

    def begin(self, prefix: str) -> Path:
        """The folder for the next image of study ``prefix``, made when new. Pair with end()."""
        with self.lock:
            study = self.open.get(prefix)
            if study is None:
                stamp = time.strftime("%Y%m%dT%H%M%S")
                folder = self.root / f"{prefix}-{stamp}-{secrets.token_hex(2)}{RECEIVING}"
                folder.mkdir()  # an OSError (read-only, full) leaves nothing registered
                study = self.open[prefix] = _Study(folder, self.clock())
            study.writing += 1
            study.last = self.clock()
            return study.folder

    def end(self, prefix: str, stored: bool) -> None:
        with self.lock:
            study = self.open[prefix]
            study.writing -= 1
            study.last = self.clock()
            study.images += int(stored)

    def adopt(self) -> list[str]:
        """Take back the folders a previous receiver left receiving (killed): remove the
        files it never acknowledged (.part) and hand each folder over ``settle`` seconds from
        now, unless more of its study arrives first."""
        adopted = []
        with self.lock:
            for folder in sorted(self.root.glob("*" + RECEIVING)):
                if not folder.is_dir() or folder.is_symlink():
                    continue
                for part in folder.glob("*.part"):
                    part.unlink(missing_ok=True)
                prefix = folder.name[: -len(RECEIVING)].rsplit("-", 2)[0]
                if prefix in self.open:
                    continue  # two folders of one study: the other is handed over when it settles
                self.open[prefix] = _Study(folder, self.clock(), images=sum(1 for _ in folder.iterdir()))
                adopted.append(folder.name)
        return adopted

    def hand_over(self, everything: bool = False) -> list[str]:
        """Rename the folders that have been quiet for ``settle`` seconds (all idle ones when
        ``everything``) to their final names; return those names."""
        now = self.clock()
        done = []
        with self.lock:
            for prefix, study in list(self.open.items()):
                if study.writing or (not everything and now - study.last < self.settle):
                    continue
                del self.open[prefix]
                folder = study.folder
                final = folder.with_name(folder.name[: -len(RECEIVING)])
                try:
                    if not any(folder.iterdir()):
                        folder.rmdir()  # nothing was stored: no batch to make
                        continue
                    os.rename(folder, final)
                    _fsync_folder(self.root)
                except OSError as exc:
                    logger.error("receiver: could not hand over %s (%s); it stays as it is",
                                 folder.name, errno.errorcode.get(exc.errno, type(exc).__name__))
                    continue
                done.append(final.name)
        return done


def study_uid_of(event) -> str:
    """The StudyInstanceUID of a C-STORE's dataset, read without decoding the rest."""
    syntax = event.context.transfer_syntax
    if syntax == DeflatedExplicitVRLittleEndian:
        return str(event.dataset.get("StudyInstanceUID", "") or "")
    stream = event.request.DataSet
    stream.seek(0)
    ds = read_dataset(stream, syntax.is_implicit_VR, syntax.is_little_endian,
                      stop_when=lambda tag, vr, length: tag > _STUDY_UID)
    stream.seek(0)
    elem = ds.get_item(_STUDY_UID)
    if elem is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value or "").strip(" \0")


class Receiver:
    """The C-STORE SCP: an AE, its study folders and its counters."""

    def __init__(self, config: ReceiverConfig):
        self.config = config
        self.folders = StudyFolders(config.data_folder, config.settle)
        self.stats = Stats()
        self.server = None
        self.ae = make_ae(config)

    # -- handlers (each association runs in its own thread) ---------------------
    def on_store(self, event) -> int:
        """Write the instance as received; Success only once it is on disk."""
        calling = event.assoc.requestor.ae_title
        try:
            study_uid = study_uid_of(event)
            sop_uid = str(event.request.AffectedSOPInstanceUID or "")
            data = event.encoded_dataset(include_meta=True)
        except Exception as exc:  # pydicom raises many kinds on a broken dataset
            self.stats.refused += 1
            logger.warning("receiver: C-STORE from %s refused: dataset unreadable (%s)",
                           safe_ae(calling), type(exc).__name__)
            return CANNOT_UNDERSTAND
        prefix = study_prefix(self.config.key, calling, study_uid)
        stored = False
        try:
            folder = self.folders.begin(prefix)
        except OSError as exc:
            return self._refuse(calling, exc)
        try:
            write_instance(folder / instance_name(sop_uid), data)
            stored = True
        except OSError as exc:
            return self._refuse(calling, exc)
        finally:
            self.folders.end(prefix, stored)
        self.stats.stored()
        return SUCCESS

    def _refuse(self, calling: str, exc: OSError) -> int:
        self.stats.refused += 1
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        logger.error("receiver: C-STORE from %s refused, not written: %s", safe_ae(calling),
                     "the disk is full" if full else errno.errorcode.get(exc.errno, type(exc).__name__))
        return OUT_OF_RESOURCES if full else CANNOT_WRITE

    def on_echo(self, event) -> int:
        return SUCCESS

    def on_open(self, event) -> None:
        self.stats.associations += 1

    def on_connect(self, event) -> None:
        """No Nagle delay on our short C-STORE answers (a CT study waits on each one)."""
        try:
            event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (AttributeError, OSError):
            pass

    # -- running ------------------------------------------------------------
    def start(self) -> None:
        """Take back what a killed receiver left, then listen (in background threads)."""
        self.config.data_folder.mkdir(parents=True, exist_ok=True)
        for name in self.folders.adopt():
            logger.info("receiver: RESUMED %s (left receiving by an earlier receiver)", name)
        handlers = [(evt.EVT_C_STORE, self.on_store), (evt.EVT_C_ECHO, self.on_echo),
                    (evt.EVT_ACCEPTED, self.on_open), (evt.EVT_CONN_OPEN, self.on_connect)]
        self.server = self.ae.start_server((self.config.bind, self.config.port), block=False,
                                           evt_handlers=handlers)
        logger.info("receiver: listening on %s:%s as %s%s", self.config.bind, self.config.port,
                    self.config.ae_title,
                    f" for {', '.join(self.config.allowed_aets)}" if self.config.allowed_aets else "")

    def tick(self, everything: bool = False) -> None:
        for name in self.folders.hand_over(everything):
            self.stats.handed_over += 1
            logger.info("receiver: HANDED OVER %s", name)

    def stop(self) -> None:
        """Stop listening (open associations are ended), then hand over every study folder."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        self.tick(everything=True)

    def status(self) -> dict:
        return {"listening": self.server is not None, "ae_title": self.config.ae_title,
                "port": self.config.port, "bind": self.config.bind, "associations": len(self.server.active_associations) if self.server else 0,
                "images_today": self.stats.images_today}


def make_ae(config: ReceiverConfig) -> AE:
    """An AE accepting C-ECHO and every storage SOP class in every transfer syntax pynetdicom
    knows (uncompressed, deflated, JPEG, JPEG-LS, JPEG 2000, RLE...), from the allowed callers."""
    ae = AE(ae_title=config.ae_title)
    ae.maximum_associations = config.max_associations
    ae.maximum_pdu_size = 0  # no limit: the sender's own largest PDU, fewer reads per image
    ae.require_calling_aet = list(config.allowed_aets)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    return ae


def serve(config: ReceiverConfig, stop: threading.Event, report=None, report_every: float = 5.0) -> Receiver:
    """Run a receiver until ``stop`` is set; hand studies over as they settle.

    ``report(status)``, when given, is called with :meth:`Receiver.status` every
    ``report_every`` seconds and once stopped, so a status page in another process can show it."""
    receiver = Receiver(config)
    receiver.start()
    interval = min(1.0, max(0.1, config.settle / 4))
    reported = 0.0

    def publish() -> None:
        try:
            report(receiver.status())
        except Exception as exc:  # a status page that cannot be told must not stop the receiver
            logger.warning("receiver: status not published (%s)", type(exc).__name__)

    try:
        while not stop.wait(interval):
            receiver.tick()
            if report is not None and time.monotonic() - reported >= report_every:
                reported = time.monotonic()
                publish()
    finally:
        receiver.stop()
        if report is not None:
            publish()
        logger.info("receiver: stopped (%s images stored, %s refused, %s studies handed over)",
                    receiver.stats.images, receiver.stats.refused, receiver.stats.handed_over)
    return receiver
