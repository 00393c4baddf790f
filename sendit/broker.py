"""The embedded broker (CELERY_BROKER_URL=filesystem://): kombu's filesystem transport, made
safe for several processes that write and read one folder at the same time.

kombu's own transport (kombu/transport/filesystem.py, 5.7) creates a message file in place,
`open(name, 'wb')` and only then locks and writes it, and its consumer never looks at that
lock: it moves the first file of its queue away, reads it and parses it. A worker that lists
the folder between the producer's open() and write() (a window of microseconds, of
milliseconds when the producer is preempted on a busy machine) takes an empty file: the
message is lost (the file is moved and deleted; the producer goes on writing into a deleted
inode) and `json.loads('')` raises JSONDecodeError out of the worker's event loop, which
Celery treats as unrecoverable: the worker exits. Nothing is queued again until a worker
starts or the sweeper runs (SWEEP_AFTER_SECONDS): a batch waits, or sits, unseen.
The exchange table (control/<exchange>.exchange) is created the same way, and a second
process that reads or binds in that window fails the same way.

This transport keeps kombu's folder layout, file names and message format (processes of
both kinds can share a folder during an upgrade) and changes three things:

- a message is written under a name no queue reads ('.<name>.part') and renamed to its
  final name when complete: a consumer sees a whole message or none;
- the consumer reads a message under a shared lock (kombu writes under an exclusive one),
  leaves an empty file younger than PARTIAL_SECONDS for a later poll (a plain kombu producer
  may still be writing it), claims the file by an atomic unlink or rename in the same folder
  (one consumer wins, another skips it; kombu's move to tempfile.gettempdir() copies when
  that is on another file system), and sets a file it cannot parse aside in `bad_folder`
  with an error in the log instead of dying on it;
- an exchange table is created complete (written aside, then linked into place) and an
  empty one is read again for a moment instead of failing.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import uuid
from pathlib import Path
from queue import Empty

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

logger = logging.getLogger("sendit.broker")
_SEQUENCE = itertools.count()

#: the suffix of a message file being written: no queue's name pattern matches it
PART = ".part"
#: an empty message file this young may still be being written by a plain kombu producer
PARTIAL_SECONDS = 30.0
#: how long an empty exchange table (being created by a plain kombu process) is read again
TABLE_WAIT_SECONDS = 2.0


def _write_aside(folder: str | os.PathLike, name: str, data: bytes) -> str:
    """Write `data` to a new hidden file of `folder` that no reader looks at; its path."""
    part = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}{PART}")
    with open(part, "xb") as f:
        f.write(data)
    return part


class Channel(filesystem.Channel):
    """kombu's filesystem channel with atomic writes and a consumer that survives a bad file."""

    @cached_property
    def bad_folder(self) -> str:
        return self.transport_options.get("bad_folder") or os.path.join(self.data_folder_in, "bad")

    # -- messages -----------------------------------------------------------
    def _put(self, queue, payload, **kwargs):
        """Put a message on `queue`: written aside, renamed into place when complete."""
        # Consumers take files in name order: nanoseconds, zero-padded, then this process's
        # count, so two messages of one producer keep their order (kombu's milliseconds did
        # not, within a millisecond).
        name = f"{time.monotonic_ns():020d}{next(_SEQUENCE):06d}_{uuid.uuid4()}.{queue}.msg"
        part = None
        try:
            part = _write_aside(self.data_folder_out, name, str_to_bytes(dumps(payload)))
            os.rename(part, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            if part:
                try:
                    os.unlink(part)
                except OSError:
                    pass
            raise ChannelError(f"Cannot add file {name!r} to directory") from exc

    def _get(self, queue):
        """The next message of `queue`; files being written, taken by another consumer or
        unreadable are passed over (the last set aside), never raised."""
        suffix = f"{queue}.msg"
        for filename in sorted(os.listdir(self.data_folder_in)):
            if filename.partition(".")[2] != suffix:
                continue
            payload = self._take(os.path.join(self.data_folder_in, filename), filename)
            if payload is not None:
                return payload
        raise Empty()

    def _take(self, path: str, filename: str):
        """Read, claim and parse one message file; None when it is not (yet) ours."""
        try:
            with open(path, "rb") as f:
                try:
                    # kombu writes under an exclusive lock: never read a file mid-write
                    filesystem.lock(f, filesystem.LOCK_SH | filesystem.fcntl.LOCK_NB)
                except OSError:
                    return None
                try:
                    data = f.read()
                    age = time.time() - os.fstat(f.fileno()).st_mtime
                finally:
                    filesystem.unlock(f)
        except FileNotFoundError:
            return None  # another consumer took it
        except OSError as exc:
            logger.warning("broker: cannot read %s (%s), passed over", filename, type(exc).__name__)
            return None
        if not data and age < PARTIAL_SECONDS:
            return None  # created, not yet written (a plain kombu producer): look again later
        try:
            message = loads(bytes_to_str(data)) if data else None
        except ValueError:
            message = None
        if message is None:
            self._set_aside(path, filename, "empty" if not data else "not JSON")
            return None
        if not self._claim(path, filename):
            return None
        return message

    def _claim(self, path: str, filename: str) -> bool:
        """Take the file out of the queue: one consumer's unlink (or rename) succeeds."""
        try:
            if self.store_processed:
                os.makedirs(self.processed_folder, exist_ok=True)
                os.rename(path, os.path.join(self.processed_folder, filename))
            else:
                os.unlink(path)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            logger.warning("broker: cannot take %s (%s), passed over", filename, type(exc).__name__)
            return False

    def _set_aside(self, path: str, filename: str, why: str) -> None:
        try:
            os.makedirs(self.bad_folder, exist_ok=True)
            os.rename(path, os.path.join(self.bad_folder, filename))
        except FileNotFoundError:
            return  # another consumer dealt with it
        except OSError as exc:
            logger.error("broker: message %s is %s and cannot be set aside (%s)", filename, why, type(exc).__name__)
            return
        logger.error("broker: message %s is %s: set aside in %s", filename, why, self.bad_folder)

    # -- exchange tables ----------------------------------------------------
    def get_table(self, exchange):
        deadline = time.monotonic() + TABLE_WAIT_SECONDS
        while True:
            file = self._exchange_file(exchange)
            try:
                with file.open("rb") as f:
                    filesystem.lock(f, filesystem.LOCK_SH)
                    try:
                        data = f.read()
                    finally:
                        filesystem.unlock(f)
            except FileNotFoundError:
                return []
            except OSError as exc:
                raise ChannelError(f"Cannot open {file}") from exc
            if data:
                return [filesystem.exchange_queue_t(*q) for q in loads(bytes_to_str(data))]
            if time.monotonic() >= deadline:
                raise ChannelError(f"{file} is empty")
            time.sleep(0.01)  # being created by a plain kombu process

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(parents=True, exist_ok=True)
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        try:
            if not file.exists():
                part = _write_aside(self.control_folder, file.name, str_to_bytes(dumps([entry])))
                try:
                    os.link(part, file)  # created complete, or not at all when another was first
                    return
                except FileExistsError:
                    pass
                finally:
                    os.unlink(part)
            self._add_to_table(file, entry)
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc

    def _add_to_table(self, file: Path, entry) -> None:
        deadline = time.monotonic() + TABLE_WAIT_SECONDS
        while True:
            with file.open("rb+", buffering=0) as f:
                filesystem.lock(f, filesystem.LOCK_EX)
                try:
                    data = f.read()
                    if data or time.monotonic() >= deadline:
                        queues = [filesystem.exchange_queue_t(*q) for q in loads(bytes_to_str(data or b"[]"))]
                        if entry not in queues:
                            queues.insert(0, entry)
                            f.seek(0)
                            f.write(str_to_bytes(dumps(queues)))
                            f.truncate()
                        return
                finally:
                    filesystem.unlock(f)
            time.sleep(0.01)  # being created by a plain kombu process


class Transport(filesystem.Transport):
    """The embedded broker's transport (CELERY_BROKER_TRANSPORT in sendit/settings/main.py)."""

    Channel = Channel
    # one state for every connection of the process, as kombu's (not shared with it)
    global_state = filesystem.virtual.BrokerState()
