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

import ctypes
import errno
import hashlib
import hmac
import logging
import os
import queue
import re
import secrets
import select
import socket
import ssl
import struct
import threading
import time
import weakref
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import datetime
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    AllStoragePresentationContexts,
    evt,
)
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

from sendit.deid.values import LONG_VR_CODES

logger = logging.getLogger("sendit.receiver")

#: The extension of a study folder still receiving (is_finished_name: "tmp...").
RECEIVING = ".tmprecv"
#: A folder of the data folder (its leading dot keeps the watcher away) where each
#: association keeps an empty file made ahead of its next image (see StudyFolders.spare).
SPARES = ".sendit-receiver"

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


def write_instance(path: Path, *chunks, sync_folder=_fsync_folder) -> None:
    """Write ``chunks`` (bytes-like, one after the other) at ``path`` durably: a ``.part``
    file, fdatasynced (its data and what reading it needs: size, blocks), renamed, then
    ``sync_folder(folder)`` (an fsync of the folder). On any error nothing is left under
    either name and the error is raised."""
    part = path.with_name(path.name + ".part")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            for chunk in chunks:
                with memoryview(chunk) as view:
                    written = 0
                    while written < len(view):
                        written += os.write(fd, view[written:])
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(part, path)
        sync_folder(path.parent)
    except BaseException:
        part.unlink(missing_ok=True)
        path.unlink(missing_ok=True)  # renamed, but not known to be durable: not stored
        raise


class _FolderSync:
    """The fsync of one folder, shared by the threads renaming into it (group commit).

    sync() returns once an fsync of the folder that *began after sync() was called* has
    ended, so a rename done before the call is on disk whichever thread's fsync covered it.
    One fsync runs at a time; those who call while it runs wait for it to end, then one of
    them runs the next one for all of them. Over 4 associations this is one fsync (and one
    cache flush) for about every 2-4 images instead of one each; alone, a caller runs its own.
    An error of the fsync that covered a caller is raised to it."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.cond = threading.Condition()
        self.started = 0  # fsyncs begun (numbered from 1; they run one after the other)
        self.finished = 0  # the number of the last one ended
        self.running = False
        self.errors: dict[int, OSError] = {}  # number -> what that fsync raised (recent ones)

    def sync(self) -> None:
        with self.cond:
            wanted = self.started + 1  # the first fsync to begin after this call
            while self.finished < wanted:
                if not self.running:
                    self.running = True
                    self.started += 1
                    number = self.started  # == wanted: none began since the call
                    break
                self.cond.wait()
            else:
                error = self.errors.get(wanted)
                if error is not None:
                    raise OSError(error.errno, error.strerror)
                return
        error = None
        try:
            _fsync_folder(self.folder)
        except OSError as exc:
            error = exc
        with self.cond:
            self.running = False
            self.finished = number
            if error is not None:
                self.errors[number] = error
                for old in [n for n in self.errors if n < number - 64]:
                    del self.errors[old]
            self.cond.notify_all()
        if error is not None:
            raise error


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
        self.syncs: dict[Path, _FolderSync] = {}

    def sync(self, folder: Path) -> None:
        """Make the renames done in ``folder`` so far durable (see _FolderSync)."""
        with self.lock:
            syncer = self.syncs.get(folder)
            if syncer is None:
                syncer = self.syncs[folder] = _FolderSync(folder)
        syncer.sync()

    def spare(self) -> tuple[int, Path] | None:
        """An empty file, open for writing, made now for an image still to come: creating a
        file waits on the filesystem's journal (0.2-1 ms while the disk is busy), so each
        association makes the file of its next image after answering the last one, while the
        sender gets the next one ready. The image's data goes into it, then it is renamed into
        its study folder. None when it cannot be made (the image makes its own)."""
        folder = self.root / SPARES
        path = folder / f"{secrets.token_hex(8)}.part"
        try:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            except FileNotFoundError:
                folder.mkdir(exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except OSError:
            return None
        return fd, path

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
        for part in (self.root / SPARES).glob("*.part"):
            part.unlink(missing_ok=True)
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
                self.syncs.pop(folder, None)
                final = folder.with_name(folder.name[: -len(RECEIVING)])
                try:
                    if not any(folder.iterdir()):
                        folder.rmdir()  # nothing was stored: no batch to make
                        continue
                    os.rename(folder, final)
                    _fsync_folder(self.root)
                except OSError as exc:
                    logger.error(
                        "receiver: could not hand over %s (%s); it stays as it is",
                        folder.name,
                        errno.errorcode.get(exc.errno or 0, type(exc).__name__),
                    )
                    continue
                done.append(final.name)
        return done


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One data element, explicit VR little endian (the file meta group's encoding)."""
    if vr == b"OB":
        return struct.pack("<HH2sxxI", group, element, vr, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    value = text.encode("ascii", "replace")
    return value + pad if len(value) % 2 else value


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """The 128-byte preamble, "DICM" and the File Meta Information group of a received
    instance: the bytes pynetdicom's ``event.encoded_dataset(include_meta=True)`` puts before the
    dataset (its ``create_file_meta``), written here by hand because pydicom's encoder took
    about 1 ms of each C-STORE."""
    body = b"".join(
        (
            _element(2, 0x0001, b"OB", b"\x00\x01"),
            _element(2, 0x0002, b"UI", _padded(sop_class, b"\0")),
            _element(2, 0x0003, b"UI", _padded(sop_instance, b"\0")),
            _element(2, 0x0010, b"UI", _padded(transfer_syntax, b"\0")),
            _element(2, 0x0012, b"UI", _padded(PYNETDICOM_IMPLEMENTATION_UID, b"\0")),
            _element(2, 0x0013, b"SH", _padded(PYNETDICOM_IMPLEMENTATION_VERSION, b" ")),
        )
    )
    return b"\0" * 128 + b"DICM" + _element(2, 0x0000, b"UL", struct.pack("<I", len(body))) + body


_LONG_VRS = LONG_VR_CODES  # explicit VRs whose length is 4 bytes after 2 reserved ones
_UNDEFINED = 0xFFFFFFFF
_UNUSUAL = object()  # the tag walk below met something it leaves to pydicom


def _walk_to_study_uid(data, implicit: bool):
    """The StudyInstanceUID of a little endian dataset by walking its top-level elements:
    bytes of its value, b"" when an element past it comes first, None when ``data`` ends
    first, _UNUSUAL for what pydicom should read (an undefined length, a VR that is not two
    capital letters)."""
    offset, end = 0, len(data)
    unpack = struct.unpack_from
    while True:
        if offset + 8 > end:
            return None
        group, element = unpack("<HH", data, offset)
        tag = group << 16 | element
        if implicit:
            length = unpack("<I", data, offset + 4)[0]
            offset += 8
        else:
            vr = bytes(data[offset + 4 : offset + 6])
            if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                return _UNUSUAL
            if vr in _LONG_VRS:
                if offset + 12 > end:
                    return None
                length = unpack("<I", data, offset + 8)[0]
                offset += 12
            else:
                length = unpack("<H", data, offset + 6)[0]
                offset += 8
        if tag > _STUDY_UID:
            return b""
        if length == _UNDEFINED:
            return _UNUSUAL
        if tag == _STUDY_UID:
            if offset + length > end:
                return None
            return bytes(data[offset : offset + length])
        offset += length


def study_uid_in(data, syntax) -> str | None:
    """The StudyInstanceUID of an encoded dataset (or of its first bytes), read without
    decoding the rest; None when ``data`` ends before it can be told (read more and ask
    again). "" when the dataset has none. A walk over the element headers of a little endian
    dataset (pydicom's read_dataset took 0.2-0.4 ms of each image); pydicom for the rest."""
    if syntax.is_little_endian:
        found = _walk_to_study_uid(data, syntax.is_implicit_VR)
        if found is None:
            return None
        if found is not _UNUSUAL:
            return found.decode("ascii", "replace").strip(" \0")
    stopped = []

    def stop(tag, vr, length) -> bool:
        if tag > _STUDY_UID:
            stopped.append(True)
            return True
        return False

    ds = read_dataset(BytesIO(data), syntax.is_implicit_VR, syntax.is_little_endian, stop_when=stop)
    if not stopped:
        return None  # the element, if any, may be cut short: not yet
    return _study_uid_text(ds)


def _study_uid_text(ds: Dataset) -> str:
    """The StudyInstanceUID of a partly read dataset as text ("" when it has none)."""
    elem = ds.get_item(_STUDY_UID)
    if elem is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value or "").strip(" \0")


def study_uid_of(event) -> str:
    """The StudyInstanceUID of a C-STORE's dataset, read without decoding the rest."""
    syntax = event.context.transfer_syntax
    if syntax == DeflatedExplicitVRLittleEndian:
        return str(event.dataset.get("StudyInstanceUID", "") or "")
    stream = event.request.DataSet
    stream.seek(0)
    ds = read_dataset(
        stream, syntax.is_implicit_VR, syntax.is_little_endian, stop_when=lambda tag, vr, length: tag > _STUDY_UID
    )
    stream.seek(0)
    return _study_uid_text(ds)


# -- pynetdicom, woken instead of polling ---------------------------------------------------
# pynetdicom (3.0) runs two loops per association that poll: the DUL thread sleeps 1 ms
# whenever it finds nothing to do (so an arriving image and our answer to it each wait up
# to a millisecond, several under load), and the association thread sleeps 1 ms before each
# look for a decoded message. A CT image took ~2 ms of such waits on top of its work. These
# subclasses, used only by the receiver's own server, make both wait on what they wait
# for: the DUL blocks in select() on its socket and on a pipe written when there is
# something to send; the association blocks on its message queue. Nothing else of
# pynetdicom's behaviour changes (state machine, PDU and DIMSE decoding, handlers).
# Written against pynetdicom 3.0.4; tests/receiver checks the version so an upgrade is
# looked at again.

#: The longest the DUL waits in select() when idle: its timers (ARTIM) are checked this often.
_DUL_IDLE_WAIT = 0.05
#: The longest the association waits for a message before checking for release, abort,
#: a dead DUL and the network timeout (pynetdicom checks every ~1 ms).
_REACTOR_WAIT = 0.005


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


# -- C-STORE requests read off the wire ------------------------------------------------------
# Even woken promptly, pynetdicom spent ~2.5 ms of CPU on each CT image (decoding each PDU
# into objects, events, its state machine, a pydicom Dataset for the command, another one
# encoded for the answer, copies of the dataset from PDU to message to BytesIO): more than
# DCMTK's storescp takes for the whole image. So, on an established association, the DUL
# below reads each P-DATA-TF PDU itself, and when one opens a C-STORE request (a whole
# command set, then dataset fragments) on an accepted context, it takes that message:
# the fragments go straight to the instance's .part file as they arrive, and the answer is
# sent once the file is fsynced and renamed. Everything else (association negotiation,
# release, abort, C-ECHO, deflated datasets, a command split over PDUs) is handed, bytes
# unchanged, to pynetdicom's own path, and on_store below answers those C-STOREs.

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
_NO_DATASET = 0x0101
#: The bytes of a dataset read before its StudyInstanceUID is looked for (storescu's first
#: fragment is a whole PDU, 16 kB to 128 kB); then each time as much again has arrived.
_HEADER_BYTES = 16384


def parse_command(data) -> dict[int, bytes]:
    """A DIMSE command set (group 0000, implicit VR little endian) as {element: value}.
    ValueError if it is not one."""
    elements, offset, end = {}, 0, len(data)
    while offset < end:
        if offset + 8 > end:
            raise ValueError("command set cut short")
        group, element, length = struct.unpack_from("<HHI", data, offset)
        offset += 8
        if group != 0 or offset + length > end:
            raise ValueError("not a command set")
        elements[element] = bytes(data[offset : offset + length])
        offset += length
    return elements


def _us(value: bytes) -> int:
    if len(value) != 2:
        raise ValueError("US of the wrong length")
    return struct.unpack("<H", value)[0]


def _uid(value: bytes) -> str:
    return value.rstrip(b"\0 ").decode("ascii")


def _command_element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0, element, len(value)) + value


def store_response(context_id: int, message_id: int, sop_class: str, sop_instance: str, status: int) -> bytes:
    """A P-DATA-TF PDU carrying the C-STORE-RSP (the whole command set, in one fragment) that
    pynetdicom's storage SCP would send."""
    elements = b"".join(
        (
            _command_element(0x0002, _padded(sop_class, b"\0")),
            _command_element(0x0100, struct.pack("<H", C_STORE_RSP)),
            _command_element(0x0120, struct.pack("<H", message_id)),
            _command_element(0x0800, struct.pack("<H", _NO_DATASET)),
            _command_element(0x0900, struct.pack("<H", status)),
            _command_element(0x1000, _padded(sop_instance, b"\0")),
        )
    )
    command = _command_element(0x0000, struct.pack("<I", len(elements))) + elements
    pdv = struct.pack(">IBB", len(command) + 2, context_id, 0x03) + command
    return struct.pack(">BxI", 0x04, len(pdv)) + pdv


def _write_all(fd: int, chunks) -> int:
    """Write ``chunks`` (bytes-like) at the end of ``fd`` in one writev() when the kernel
    takes them all (it does for a regular file, short of an error); their total length."""
    total = sum(len(chunk) for chunk in chunks)
    written = os.writev(fd, chunks) if len(chunks) > 1 else os.write(fd, chunks[0])
    if written < total:  # a short write: the rest, one chunk at a time
        skip = written
        for chunk in chunks:
            with memoryview(chunk) as view:
                if skip >= len(view):
                    skip -= len(view)
                    continue
                done, skip = skip, 0
                while done < len(view):
                    done += os.write(fd, view[done:])
    return total


#: Start the write-back of a .part file's pages once this much has been written since the
#: last start: the disk writes them while the rest of the image arrives.
_WRITEBACK_BYTES = 65536
START_WRITEBACK = True


def _sync_file_range():
    """libc's sync_file_range (Linux), or None."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing these bytes to disk, without waiting (only a head
    start for the fdatasync that makes them durable: an error here changes nothing)."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _drop_spare(spare: tuple[int, Path]) -> None:
    _close_fds(spare[0])
    spare[1].unlink(missing_ok=True)


class _IncomingStore:
    """One C-STORE request read off the wire: its dataset's fragments, written to the
    instance's .part file as they come (write-back started as they are written, so that the
    final fdatasync has little left to wait for); finish() makes it durable and says the
    status."""

    def __init__(
        self,
        receiver: Receiver,
        calling: str,
        context_id: int,
        syntax,
        message_id: int,
        sop_class: str,
        sop_instance: str,
        spare: tuple[int, Path] | None = None,
    ):
        self.receiver, self.calling, self.context_id, self.syntax = receiver, calling, context_id, syntax
        self.message_id, self.sop_class, self.sop_instance = message_id, sop_class, sop_instance
        self.spare = spare  # StudyFolders.spare(), until the data goes into it
        self.pending: list | None = []  # fragments, until the study (and so the folder) is known
        self.pending_bytes = 0
        self.next_look = 0  # the first fragment is looked at whole
        self.fd: int | None = None
        self.written = 0  # bytes written to fd
        self.flushed = 0  # bytes of it whose write-back was started
        self.prefix: str | None = None  # once folders.begin() was called for it
        self.part: Path | None = None  # the file being written
        self.path: Path | None = None  # its name once stored
        self.status: int | None = None  # set once it failed (the rest is read and dropped)

    def add(self, fragment) -> None:
        """A fragment of the dataset (a view of a PDU read for it alone, kept until written)."""
        if self.status is not None:
            return
        if self.fd is not None:
            self._write((fragment,))
            return
        assert self.pending is not None
        self.pending.append(fragment)
        self.pending_bytes += len(fragment)
        if self.pending_bytes >= self.next_look:
            self.next_look = max(_HEADER_BYTES, 2 * self.pending_bytes)
            self._open(final=False)

    def finish(self) -> int:
        """Called with the last fragment: Success once the instance is on disk (its data
        fdatasynced, then renamed, then an fsync of its folder begun after the rename)."""
        if self.status is None and self.fd is None:
            self._open(final=True)
        if self.status is None:
            assert self.fd is not None and self.part is not None and self.path is not None
            try:
                os.fdatasync(self.fd)
                os.close(self.fd)
                self.fd = None
                os.replace(self.part, self.path)
                self.part = None
                self.receiver.folders.sync(self.path.parent)
            except OSError as exc:
                self._fail(exc)
            else:
                self.status = SUCCESS
                self.receiver.stats.stored()
        self._end()
        assert self.status is not None
        return self.status

    def discard(self) -> None:
        """The association ended in the middle of the dataset: nothing was stored."""
        self._drop()
        self._end()

    def _open(self, final: bool) -> None:
        assert self.pending is not None
        data = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)
        try:
            study_uid = study_uid_in(data, self.syntax)
        except Exception as exc:  # pydicom raises many kinds on a broken dataset
            study_uid = None
            if final:
                self.status = CANNOT_UNDERSTAND
                self.receiver.stats.refused += 1
                logger.warning(
                    "receiver: C-STORE from %s refused: dataset unreadable (%s)",
                    safe_ae(self.calling),
                    type(exc).__name__,
                )
                return
        if study_uid is None:
            if not final:
                return
            study_uid = ""  # it ends before any element past StudyInstanceUID: it has none
        prefix = study_prefix(self.receiver.config.key, self.calling, study_uid)
        try:
            folder = self.receiver.folders.begin(prefix)
        except OSError as exc:
            self.status = self.receiver._refuse(self.calling, exc)
            return
        self.prefix = prefix
        self.path = folder / instance_name(self.sop_instance)
        pending, self.pending = self.pending, None
        if self.spare is not None:
            (self.fd, self.part), self.spare = self.spare, None
        else:
            self.part = self.path.with_name(self.path.name + ".part")
            try:
                self.fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
            except OSError as exc:
                self._fail(exc)
                return
        self._write([file_meta(self.sop_class, self.sop_instance, str(self.syntax)), *pending])

    def _write(self, chunks) -> None:
        fd = self.fd
        assert fd is not None
        try:
            self.written += _write_all(fd, chunks)
            if START_WRITEBACK and self.written - self.flushed >= _WRITEBACK_BYTES:
                _start_writeback(fd, self.flushed, self.written - self.flushed)
                self.flushed = self.written
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self._drop()
        self.status = self.receiver._refuse(self.calling, exc)

    def _drop(self) -> None:
        self.pending = None
        if self.spare is not None:
            _drop_spare(self.spare)
            self.spare = None
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
        if self.part is not None:
            self.part.unlink(missing_ok=True)
        elif self.path is not None and self.status is None:
            # renamed, then the folder fsync failed: not known to be on disk, so not stored
            self.path.unlink(missing_ok=True)

    def _end(self) -> None:
        if self.prefix is not None:
            self.receiver.folders.end(self.prefix, self.status == SUCCESS)
            self.prefix = None


class _DUL(DULServiceProvider):
    """pynetdicom's DUL service provider, blocked in select() when idle instead of sleeping."""

    def __init__(self, assoc):
        super().__init__(assoc)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        weakref.finalize(self, _close_fds, self._wake_r, self._wake_w)

    # -- C-STORE requests read off the wire (see above) --
    _store: _IncomingStore | None = None
    _spare: tuple[int, Path] | None = None  # the file of the next C-STORE (StudyFolders.spare)

    def run_reactor(self) -> None:
        """pynetdicom 3.0.4's DULServiceProvider.run_reactor without its sleep between
        passes (even time.sleep(0) gives the CPU away: ~0.1 ms a PDU, several under load):
        it waits in _is_transport_event instead. A C-STORE cut short is dropped at the end."""
        self._idle_timer.start()
        try:
            while not self._kill_thread:
                if not self.assoc._dul_ready.is_set():
                    self.assoc._dul_ready.set()
                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")
                try:
                    if self._process_recv_primitive():
                        pass
                    elif self._is_transport_event():
                        self._idle_timer.restart()
                except Exception as exc:
                    # pynetdicom's own answer: an A-ABORT, bypassing the state machine.
                    logger.error(
                        "receiver: error in the DICOM upper layer, association aborted (%s)", type(exc).__name__
                    )
                    abort_pdu = A_ABORT_RQ()
                    abort_pdu.source = 0x02
                    abort_pdu.reason_diagnostic = 0x00
                    try:
                        self._wire().send(abort_pdu.encode())
                    finally:
                        self.assoc.is_aborted = True
                        self.assoc.is_established = False
                        self.assoc._kill = True
                        self._kill_thread = True
                    return
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    continue
                self.state_machine.do_action(event)
        finally:
            if self._store is not None:
                self._store.discard()
                self._store = None
            if self._spare is not None:
                _drop_spare(self._spare)
                self._spare = None

    def _read_pdu_data(self) -> None:
        receiver = getattr(self.assoc._server, "receiver", None)
        if receiver is None or self.state_machine.current_state != "Sta6":
            return super()._read_pdu_data()
        wire = self._wire()
        head = wire.recv(6)
        if len(head) == 6 and head[0] == 0x04:  # P-DATA-TF
            body = wire.recv(int.from_bytes(head[2:6], "big"))
            if self._take(receiver, body):
                return None
            head += body
        wire.unread(head)  # pynetdicom reads it again, as sent
        return super()._read_pdu_data()

    def _take(self, receiver: Receiver, body: bytearray) -> bool:
        """Process a P-DATA-TF PDU's value here when it belongs to a C-STORE request we take."""
        pdvs, offset, view = [], 0, memoryview(body)
        while offset < len(body):
            if offset + 6 > len(body):
                return False
            length, context_id, control = struct.unpack_from(">IBB", body, offset)
            if length < 2 or offset + 4 + length > len(body):
                return False
            pdvs.append((context_id, control, view[offset + 6 : offset + 4 + length]))
            offset += 4 + length
        store, rest = self._store, pdvs
        if store is None:
            if not pdvs or self.assoc.dimse.message is not None:
                return False  # pynetdicom has a message of its own under way
            store, rest = self._begin(receiver, *pdvs[0]), pdvs[1:]
            if store is None:
                return False
        for index, (context_id, control, _) in enumerate(rest):
            if control & 1 or context_id != store.context_id or (control & 2 and index != len(rest) - 1):
                # a command in the middle of a dataset, or after its end: let pynetdicom say
                if self._store is not None:
                    self._store.discard()
                    self._store = None
                return False
        self._store = store
        for _, control, fragment in rest:
            store.add(fragment)
            if control & 2:  # its last fragment
                self._store = None
                status = store.finish()
                self._wire().send(
                    store_response(store.context_id, store.message_id, store.sop_class, store.sop_instance, status)
                )
                if self._spare is None:
                    self._spare = receiver.folders.spare()  # while the sender readies the next
        return True

    def _begin(self, receiver: Receiver, context_id: int, control: int, data) -> _IncomingStore | None:
        """A C-STORE request to take, when ``data`` is the whole command set of one, with a
        dataset, on an accepted context whose transfer syntax we can read undecoded."""
        if control & 3 != 3:
            return None
        try:
            command = parse_command(data)
            if _us(command[0x0100]) != C_STORE_RQ or _us(command[0x0800]) == _NO_DATASET:
                return None
            context = self.assoc._accepted_cx.get(context_id)
            sop_class, sop_instance = _uid(command[0x0002]), _uid(command[0x1000])
            message_id = _us(command[0x0110])
        except (KeyError, ValueError):
            return None
        if context is None or context.abstract_syntax != sop_class:
            return None
        syntax = context.transfer_syntax[0]
        if syntax == DeflatedExplicitVRLittleEndian:
            return None
        spare, self._spare = self._spare, None
        return _IncomingStore(
            receiver, self.assoc.requestor.ae_title, context_id, syntax, message_id, sop_class, sop_instance, spare
        )

    def _wire(self) -> _Socket:
        """Our socket (_RequestHandler gives every _DUL a _Socket)."""
        wire = self.socket
        assert isinstance(wire, _Socket)
        return wire

    # -- woken instead of polling --
    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:  # the pipe is full (it is awake already) or closed
            pass

    def send_pdu(self, primitive) -> None:
        super().send_pdu(primitive)
        self.wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self.wake()
        return super().stop_dul()

    def _is_transport_event(self) -> bool:
        """Wait until the peer sends, the user has a primitive for the peer or the DUL is told
        to stop (at most _DUL_IDLE_WAIT), then let pynetdicom look as it does. With its socket
        closed it waits on the wake pipe alone (until stop_dul), never spinning."""
        if (
            not self._kill_thread
            and self.event_queue.empty()
            and not self.to_provider_queue.queue
            and self.state_machine.current_state != "Sta13"
        ):
            sock = self.socket.socket if self.socket is not None else None
            waits = [self._wake_r]
            if sock is not None and sock.fileno() >= 0:
                if self._wire()._pending or (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    waits = []  # already readable
                else:
                    waits.append(sock)
            if waits:
                try:
                    ready, _, _ = select.select(waits, [], [], _DUL_IDLE_WAIT)
                except (OSError, ValueError):  # closed under us: pynetdicom's own check says so
                    ready = select.select([self._wake_r], [], [], _DUL_IDLE_WAIT)[0]
                if self._wake_r in ready:
                    try:
                        os.read(self._wake_r, 4096)
                    except OSError:
                        pass
        return super()._is_transport_event()


class _Socket(AssociationSocket):
    """pynetdicom's socket, reading a PDU with as few recv() calls as the kernel allows
    (pynetdicom's reads 4 kB at a time: ~130 calls for a 512x512 CT image)."""

    _pending = b""  # bytes read, handed back to be read again (see _DUL._read_pdu_data)

    def unread(self, data) -> None:
        self._pending = bytes(data) + self._pending

    @property
    def ready(self) -> bool:
        return bool(self._pending) or super().ready

    def recv(self, nr_bytes: int) -> bytearray:
        buffer = bytearray(nr_bytes)
        got = 0
        if self._pending:
            got = min(nr_bytes, len(self._pending))
            buffer[:got] = self._pending[:got]
            self._pending = self._pending[got:]
        sock = self.socket
        assert sock is not None
        with memoryview(buffer) as view:
            while got < nr_bytes:
                count = sock.recv_into(view[got:], nr_bytes - got)
                if not count:  # the connection is broken: what was read, as pynetdicom does
                    break
                got += count
        if got < nr_bytes:
            del buffer[got:]
        return buffer


class _Acceptor(Association):
    """pynetdicom's acceptor association with the _DUL above and a reactor that waits on its
    message queue; without pynetdicom's standard log handlers, which decode and format every
    PDU and DIMSE message for DEBUG lines that our log level never shows."""

    def __init__(self, ae, mode):
        super().__init__(ae, mode)
        self.dul = _DUL(self)
        # pynetdicom gave these to the DUL it made; give them to ours.
        self.acse_timeout = self.acse_timeout
        self.network_timeout = self.network_timeout

    def _bind_defaults(self) -> None:
        for event in evt._INTERVENTION_EVENTS:
            self.bind(event, evt.get_default_handler(event))

    def _run_reactor(self) -> None:
        """pynetdicom 3.0.4's Association._run_reactor, its ``time.sleep(0.001)`` and
        non-blocking ``get_msg`` replaced by a wait on the message queue."""
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            try:
                context_id, msg = self.dimse.msg_queue.get(timeout=_REACTOR_WAIT)
            except queue.Empty:
                context_id, msg = None, None
            if msg and context_id is not None:
                self._serve_request(msg, context_id)

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)  # EVT_ACSE_RECV, as pynetdicom does
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                logger.warning("receiver: network timeout, association aborted")
                self.abort()
                self.kill()
                return


class _RequestHandler(RequestHandler):
    """pynetdicom's request handler, making an _Acceptor on a _Socket."""

    def _create_association(self):
        # pynetdicom 3.0.4's RequestHandler._create_association with our two classes.
        assoc = _Acceptor(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(_Socket(assoc, client_socket=self.request))
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(self.server.contexts)
        assoc.requestor.address_info = self.remote
        for event, handlers in self.server._handlers.items():
            if event.is_intervention and handlers:
                assoc.bind(event, *handlers)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in handlers:
                    assoc.bind(event, handler, args)
        return assoc


def start_server(
    ae: AE, address: tuple[str, int], handlers: list, receiver: Receiver | None = None
) -> ThreadedAssociationServer:
    """``ae.start_server(address, block=False, evt_handlers=handlers)``, its associations
    made by _RequestHandler; C-STORE requests taken off the wire for ``receiver``, if given."""
    server = ae.make_server(
        address, evt_handlers=handlers, server_class=ThreadedAssociationServer, request_handler=_RequestHandler
    )
    server.receiver = receiver  # type: ignore[attr-defined]  # read by _DUL._read_pdu_data
    thread = threading.Thread(
        target=make_target(server.serve_forever), daemon=True, name=f"AcceptorServer@{address[1]}"
    )
    thread.start()
    ae._servers.append(server)
    return server


class Receiver:
    """The C-STORE SCP: an AE, its study folders and its counters."""

    def __init__(self, config: ReceiverConfig):
        self.config = config
        self.folders = StudyFolders(config.data_folder, config.settle)
        self.stats = Stats()
        self.server: ThreadedAssociationServer | None = None
        self.ae = make_ae(config)

    # -- handlers (each association runs in its own thread) ---------------------
    def on_store(self, event) -> int:
        """Write the instance as received; Success only once it is on disk."""
        calling = event.assoc.requestor.ae_title
        try:
            study_uid = study_uid_of(event)
            request = event.request
            sop_uid = str(request.AffectedSOPInstanceUID or "")
            meta = file_meta(str(request.AffectedSOPClassUID or ""), sop_uid, str(event.context.transfer_syntax))
            dataset = request.DataSet  # a BytesIO: written from its buffer, not copied
        except Exception as exc:  # pydicom raises many kinds on a broken dataset
            self.stats.refused += 1
            logger.warning(
                "receiver: C-STORE from %s refused: dataset unreadable (%s)", safe_ae(calling), type(exc).__name__
            )
            return CANNOT_UNDERSTAND
        prefix = study_prefix(self.config.key, calling, study_uid)
        stored = False
        try:
            folder = self.folders.begin(prefix)
        except OSError as exc:
            return self._refuse(calling, exc)
        try:
            with dataset.getbuffer() as data:
                write_instance(folder / instance_name(sop_uid), meta, data, sync_folder=self.folders.sync)
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
        logger.error(
            "receiver: C-STORE from %s refused, not written: %s",
            safe_ae(calling),
            "the disk is full" if full else errno.errorcode.get(exc.errno or 0, type(exc).__name__),
        )
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
        handlers = [
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_ACCEPTED, self.on_open),
            (evt.EVT_CONN_OPEN, self.on_connect),
        ]
        self.server = start_server(self.ae, (self.config.bind, self.config.port), handlers, self)
        logger.info(
            "receiver: listening on %s:%s as %s%s",
            self.config.bind,
            self.config.port,
            self.config.ae_title,
            f" for {', '.join(self.config.allowed_aets)}" if self.config.allowed_aets else "",
        )

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
        return {
            "listening": self.server is not None,
            "ae_title": self.config.ae_title,
            "port": self.config.port,
            "bind": self.config.bind,
            "associations": len(self.server.active_associations) if self.server else 0,
            "images_today": self.stats.images_today,
        }


def make_ae(config: ReceiverConfig) -> AE:
    """An AE accepting C-ECHO and every storage SOP class in every transfer syntax pynetdicom
    knows (uncompressed, deflated, JPEG, JPEG-LS, JPEG 2000, RLE...), from the allowed callers."""
    ae = AE(ae_title=config.ae_title)
    ae.maximum_associations = config.max_associations
    ae.maximum_pdu_size = 0  # no limit: the sender's own largest PDU, fewer reads per image
    ae.require_calling_aet = list(config.allowed_aets)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax:
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
        logger.info(
            "receiver: stopped (%s images stored, %s refused, %s studies handed over)",
            receiver.stats.images,
            receiver.stats.refused,
            receiver.stats.handed_over,
        )
    return receiver
