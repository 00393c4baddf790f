"""Run files through a real node and a real Orthanc, and account for every one of them.

    report = run(cases, workdir, orthanc, per_study=10)
    print(report.table()); report.ok; report.failures()

The node is tests/node.py's: `manage.py migrate`, a Celery worker and the watcher in
subprocesses, its own SQLite database (or a fresh PostgreSQL one) and data folder. The files
are dropped as study folders of `per_study` files each, written as NAME.tmp1 and renamed
NAME, as a sender would. When every batch has come to rest (DONE, or with errors and
nothing moving) or the time is up, each input file is one of:

* delivered: an instance in Orthanc is its de-identified copy (its SOPInstanceUID is the
  keyed hash of the file's own, as sendit.deid.uids maps it under the node's secret);
* held: its bytes are still on the node, byte for byte (in NAME.err* in the data folder, or
  in media), or its de-identified copy is in media as a recorded Image, and the batch has an
  error or the image a reason to be held;
* discarded: a CD index (DICOMDIR: its file meta says Media Storage Directory Storage),
  removed on import as documented (README: "recognised, not sent, and noted on the
  batch"), and the batch's log has that note;
* noreason: held so, but nothing on the batch or image says why;
* pending: still in the input folder, never imported (its batch is stuck);
* lost: none of these.

Every instance Orthanc holds is downloaded and its bytes searched, case-insensitively, for
identifying values: any fuzz marker ("FUZZPHI...") or fuzz UID anywhere, the names, ids,
UIDs and dates of the input file it came from (dates only there: another file's date may be
a shifted one), and, for an instance no input accounts for, every name, id and UID of every
input. The node shifts dates by 2001 to 3000 days (LOCAL_JITTER_MIN/MAX), so that a shifted
date is never taken for another date of the same file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz.mutate import FUZZ_UID_RE, KINDS, MARKER_RE, Case

SECRET = "fuzz-site-secret-0123456789abcdefghij"
UID_ROOT = "2.25."
NODE_SETTINGS = {
    "DEID_SECRET": SECRET,
    "DEID_UID_ROOT": UID_ROOT,
    "LOCAL_JITTER_MIN": -3000,
    "LOCAL_JITTER_MAX": -2001,
    "WATCHER_SETTLE_SECONDS": 0.5,
    "SEND_BACKOFF": 0.2,
    "SEND_BACKOFF_MAX": 2.0,
}
OUTCOMES = ("delivered", "held", "discarded", "noreason", "pending", "lost")
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


@dataclass
class Entry:
    """One input file: where it was dropped, and what became of it."""

    case: Case
    folder: str
    relpath: str
    candidates: set = field(default_factory=set)  # its SOPInstanceUID as a reader may see it
    mapped: set = field(default_factory=set)  # the de-identified ones
    outcome: str = ""
    where: str = ""
    reason: str = ""
    instances: list = field(default_factory=list)  # Orthanc ids of its de-identified copies
    leaks: list = field(default_factory=list)  # (label, value, Orthanc id, how found)
    dicomdir: bool = False  # its file meta names a DICOMDIR
    untraced: bool = False  # delivered by the batch's count, not by its UID

    @property
    def name(self) -> str:
        return f"{self.folder}/{self.relpath}"


@dataclass
class Report:
    entries: list
    stuck: list  # one line per batch or folder that did not come to rest
    orthanc_alive: bool
    worker_alive: bool
    instances: int
    unattributed: list  # Orthanc ids no input file accounts for
    seconds: float
    stray_leaks: list = field(default_factory=list)  # identifying bytes with no owner found

    def rows(self) -> list[tuple]:
        """(kind, files, delivered, held, discarded, noreason, pending, lost, leaked) per kind,
        then totals."""
        kinds = [k for k in KINDS if any(e.case.kind == k for e in self.entries)]
        kinds += sorted({e.case.kind for e in self.entries} - set(kinds))
        rows = []
        for kind in kinds + ["TOTAL"]:
            group = [e for e in self.entries if kind in ("TOTAL", e.case.kind)]
            rows.append(
                (
                    kind,
                    len(group),
                    *(sum(e.outcome == o for e in group) for o in OUTCOMES),
                    sum(bool(e.leaks) for e in group),
                )
            )
        return rows

    def table(self) -> str:
        head = ("kind", "files", "delivered", "held", "discarded", "noreason", "pending", "lost", "leaked")
        lines = [f"{head[0]:<18}" + "".join(f"{h:>10}" for h in head[1:])]
        for row in self.rows():
            if row[0] == "TOTAL":
                lines.append("-" * len(lines[0]))
            lines.append(f"{row[0]:<18}" + "".join(f"{v:>10}" for v in row[1:]))
        lines.append(
            f"Orthanc: {self.instances} instances ({len(self.unattributed)} not traced to an input), "
            f"{'alive' if self.orthanc_alive else 'NOT ANSWERING'}; worker "
            f"{'alive' if self.worker_alive else 'DEAD'}; stuck: {len(self.stuck)}; "
            f"{self.seconds:.0f} s"
        )
        return "\n".join(lines)

    @property
    def lost(self) -> int:
        return sum(e.outcome in ("lost", "noreason", "pending") for e in self.entries)

    @property
    def leaked(self) -> int:
        return sum(bool(e.leaks) for e in self.entries) + len(self.stray_leaks)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.leaked or self.stuck) and self.orthanc_alive and self.worker_alive

    def failures(self, command: str = ".venv/bin/python scripts/fuzz.py") -> list[str]:
        """One line per problem, each with what reproduces it."""
        lines = []
        for e in self.entries:
            problems = []
            if e.outcome in ("lost", "noreason", "pending"):
                problems.append(f"{e.outcome.upper()} ({e.where or 'nowhere'}{'; ' + e.reason if e.reason else ''})")
            if e.leaks:
                shown = sorted({f"{label}={value!r}" for label, value, *_ in e.leaks})
                problems.append(
                    f"LEAKED {len(shown)} value(s) to Orthanc: {', '.join(shown[:6])}"
                    + (" ..." if len(shown) > 6 else "")
                )
            if problems:
                lines.append(
                    f"{e.case.name} [{e.case.origin}] {json.dumps(e.case.details, default=str)} "
                    f"in {e.name}: {'; '.join(problems)}; reproduce: {self._repro(e, command)}"
                )
        lines += [f"STUCK {s}" for s in self.stuck]
        lines += [f"LEAKED (no owner found): {s}" for s in self.stray_leaks]
        if not self.orthanc_alive:
            lines.append("Orthanc no longer answers GET /system")
        if not self.worker_alive:
            lines.append("the Celery worker died")
        return lines

    def notes(self) -> list[str]:
        """What is no failure but worth a look: deliveries the accounting could only count."""
        return [
            f"{e.case.name} [{e.case.origin}] {json.dumps(e.case.details, default=str)} in {e.name}: {e.where}"
            for e in self.entries
            if e.untraced
        ] + (
            [f"Orthanc instances no input file's SOPInstanceUID maps to: {', '.join(self.unattributed[:10])}"]
            if self.unattributed
            else []
        )

    @staticmethod
    def _repro(e: Entry, command: str) -> str:
        if e.case.kind == "shipped":
            return f"{command} --shipped --count 0 --only-shipped {e.case.origin}"
        return f"{command} --seed {e.case.seed} --only {e.case.n}"


# -- input ---------------------------------------------------------------------------------


def input_sop_uids(case: Case) -> set:
    """The SOPInstanceUID(s) sendit may read from the file: the one it was given, and what
    pydicom reads from the bytes as they are (a flip may have changed it)."""
    import pydicom

    found = set(case.sop_uids)
    if case.sparse_size or len(case.data) > 64 << 20:
        return found
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for force in (False, True):
            try:
                ds = pydicom.dcmread(
                    io.BytesIO(case.data), stop_before_pixels=True, force=force, specific_tags=[0x00080018]
                )
                elem = ds.get_item(0x00080018)
                if elem is None:
                    continue
                value = elem.value
                text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
                if text.strip("\0 "):
                    found.add(text.strip("\0 "))
            except Exception:
                continue
    return found


def media_storage_class(case: Case) -> str:
    """The Media Storage SOP Class UID of the file meta as it is in the bytes ("" without)."""
    from tests.fuzz.mutate import walk

    layout = walk(case.data)
    for el in layout.meta():
        if el.tag == 0x00020002 and el.end > 0:
            return case.data[el.value_at : el.end].rstrip(b"\0 ").decode("ascii", "replace")
    return ""


def entries_for(cases, per_study: int, prefix: str) -> list[Entry]:
    """Input files grouped into study folders of `per_study` files: fuzzed ones in
    PREFIX0000..., shipped ones in PREFIXS0000..."""
    from sendit.deid.uids import map_uid

    entries = []
    fuzzed = [c for c in cases if c.kind != "shipped"]
    shipped = [c for c in cases if c.kind == "shipped"]
    placed = [(f"{prefix}{i // per_study:04d}", f"{c.n:05d}.dcm", c) for i, c in enumerate(fuzzed)]
    placed += [(f"{prefix}S{i // per_study:04d}", f"s{c.n:04d}.dcm", c) for i, c in enumerate(shipped)]
    for folder, relpath, case in placed:
        entry = Entry(case, folder, relpath)
        entry.candidates = input_sop_uids(case)
        entry.dicomdir = media_storage_class(case) == DICOMDIR_CLASS
        for uid in entry.candidates:
            try:
                entry.mapped.add(map_uid(uid, SECRET.encode(), UID_ROOT))
            except Exception:
                pass
        entries.append(entry)
    return entries


def stage(entries, data_folder: Path) -> None:
    """Write each study folder as NAME.tmp1, then rename it NAME (a finished drop)."""
    folders = defaultdict(list)
    for e in entries:
        folders[e.folder].append(e)
    for folder, group in folders.items():
        staging = data_folder / f"{folder}.tmp1"
        staging.mkdir()
        for e in group:
            e.case.write(staging / e.relpath)
        staging.rename(data_folder / folder)


# -- waiting -------------------------------------------------------------------------------


def _errors(value) -> list:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return [{"message": value}]
    return list(value or [])


def _snapshot(node, folders: set):
    batches = {
        uid: (bid, status, bool(err), owner or "", str(modified))
        for bid, uid, status, err, owner, modified in node.query(
            "SELECT id, uid, status, has_error, lease_owner, modify_date FROM main_batch"
        )
        if uid in folders
    }
    images = sorted(
        (bid, status, flagged, n, str(m))
        for bid, status, flagged, n, m in node.query(
            "SELECT batch_id, status, flagged, count(*), max(modify_date) FROM main_image "
            "GROUP BY batch_id, status, flagged"
        )
    )
    listing = sorted(os.listdir(node.data))
    return batches, images, listing


def _unsettled(snapshot, folders: set) -> list[str]:
    """Folders not yet at rest: still waiting in the data folder, without a batch, or with a
    batch neither DONE nor stopped with errors."""
    batches, _images, listing = snapshot
    waiting = {name.split(".tmp")[0] for name in listing}
    out = []
    for folder in sorted(folders):
        batch = batches.get(folder)
        if folder in waiting:
            out.append(f"{folder}: still in the data folder, not imported")
        elif batch is None:
            out.append(f"{folder}: no batch")
        elif batch[1] != "DONE" and not (batch[2] and not batch[3]):
            out.append(
                f"{folder}: batch {batch[0]} {batch[1]}{' with errors' if batch[2] else ''}"
                f"{', a worker holds it' if batch[3] else ''}"
            )
    return out


def wait_settled(node, folders: set, timeout: float, settle: float) -> list[str]:
    """Wait until every folder's batch is DONE, or has errors and nothing has changed for
    `settle` seconds; the folders still moving when `timeout` is up (empty: all at rest)."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while True:
        snap = _snapshot(node, folders)
        unsettled = _unsettled(snap, folders)
        if snap != last:
            last, since = snap, time.monotonic()
        if not unsettled:
            all_done = all(b[1] == "DONE" for b in snap[0].values())
            if all_done or time.monotonic() - since >= settle:
                return []
        if time.monotonic() >= deadline:
            if not unsettled:  # at rest as far as states go, but still changing
                return [f"batches still changing after {timeout:.0f} s"]
            return unsettled
        time.sleep(0.5)


# -- where is each file --------------------------------------------------------------------


class _Disk:
    """Files on the node by size, hashed on demand."""

    def __init__(self, roots):
        self.by_size = defaultdict(list)
        for root in roots:
            for folder, _dirs, names in os.walk(root):
                for name in names:
                    path = Path(folder) / name
                    try:
                        self.by_size[path.stat().st_size].append(path)
                    except OSError:
                        pass
        self._hashes = {}

    @staticmethod
    def fingerprint(case: Case) -> str:
        return hashlib.sha256(case.data).hexdigest()

    def matches(self, path: Path, case: Case) -> bool:
        """Is this file the case's bytes (a sparse case: its head, at its size)?"""
        try:
            if path.stat().st_size != case.size:
                return False
            if case.sparse_size:
                with open(path, "rb") as fp:
                    return fp.read(len(case.data)) == case.data
            key = path
            if key not in self._hashes:
                digest = hashlib.sha256()
                with open(path, "rb") as fp:
                    for block in iter(lambda: fp.read(1 << 20), b""):
                        digest.update(block)
                self._hashes[key] = digest.hexdigest()
            return self._hashes[key] == self.fingerprint(case)
        except OSError:
            return False

    def find(self, case: Case) -> list[Path]:
        return [p for p in self.by_size.get(case.size, []) if self.matches(p, case)]


def classify(node, entries: list[Entry]) -> None:
    """Set each entry's outcome, where and reason (delivered ones are set already)."""
    media = node.tmp / "media"
    batches, notes, recorded = {}, {}, {}
    for bid, uid, status, err, errors, log in node.query(
        "SELECT id, uid, status, has_error, errors, log FROM main_batch"
    ):
        batches[uid] = (bid, status, bool(err), _errors(errors))
        log = json.loads(log) if isinstance(log, str) else (log or {})
        notes[uid] = " ".join(str(n) for n in log.get("notes", []))
        counts = (log.get("deliveries") or {}).get("orthanc") or {}
        recorded[uid] = sum(v for v in counts.values() if isinstance(v, int))
    claims = defaultdict(list)
    for e in entries:
        for iid in e.instances:
            claims[iid].append(e)
    by_id = {b[0]: (uid, *b[1:]) for uid, b in batches.items()}
    images = defaultdict(list)
    for bid, uid, image, status, flagged in node.query("SELECT batch_id, uid, image, status, flagged FROM main_image"):
        images[bid].append((uid, image, status, flagged or ""))
    disk = _Disk([media])
    listing = os.listdir(node.data)

    def batch_reason(bid, step=None):
        """The batch's error messages (those of `step` first), if it has errors."""
        batch = by_id.get(bid)
        if batch and batch[2] and batch[3]:
            messages = sorted({(e.get("step") != step, e.get("message", "")[:120]) for e in batch[3]})
            return "; ".join(m for _, m in messages if m)[:300]
        return ""

    for e in entries:
        if e.instances and any(len(claims[iid]) == 1 for iid in e.instances):
            e.outcome, e.where = "delivered", f"Orthanc {', '.join(e.instances[:2])}"
            continue
        # An instance several inputs map to (shipped files that share a SOPInstanceUID):
        # an input still held on the node is held, the others delivered.
        _place(e, node, media, batches, notes, images, disk, listing, batch_reason)
        if e.instances and e.outcome in ("lost", "pending"):
            e.outcome, e.where, e.reason = "delivered", f"Orthanc {', '.join(e.instances[:2])} (shared)", ""
    # Recorded under a SOPInstanceUID the accounting cannot derive (a broken UID rewritten):
    # an image of the batch no input accounts for, its file in media, holds one of its
    # lost files; the batch's own count of deliveries says how many were delivered.
    for folder in {e.folder for e in entries}:
        group = [e for e in entries if e.folder == folder]
        batch = batches.get(folder)
        if batch:
            known = set().union(*(e.candidates | e.mapped for e in group))
            spare = [
                row
                for row in images.get(batch[0], [])
                if row[0] not in known and row[2] not in ("SENT", "DONE") and (media / row[1]).is_file()
            ]
            for e in [e for e in group if e.outcome == "lost"][: len(spare)]:
                row = spare.pop(0)
                e.reason = row[3] or batch_reason(batch[0])
                e.outcome, e.untraced = ("held" if e.reason else "noreason"), True
                e.where = (
                    f"{Path('media') / row[1]}, untraced: an image of batch {folder} that no "
                    f"input's SOPInstanceUID maps to (recorded as {row[0]!r})"
                )
        untraced = recorded.get(folder, 0) - sum(e.outcome == "delivered" for e in group)
        for e in [e for e in group if e.outcome == "lost"][: max(0, untraced)]:
            e.outcome, e.untraced = "delivered", True
            e.where = (
                f"Orthanc, untraced: batch {folder} records {recorded[folder]} deliveries and only "
                f"{recorded[folder] - untraced} instances map to its files"
            )
    for e in entries:
        if e.outcome != "delivered":  # what its SOPInstanceUID's instance holds is not its own
            e.leaks = [leak for leak in e.leaks if leak[3] != "own"]


def _place(e, node, media, batches, notes, images, disk, listing, batch_reason) -> None:
    """Outcome of an input no instance of its own accounts for: held, discarded, pending, lost."""
    batch = batches.get(e.folder)
    # 1. set aside in NAME.err*, byte for byte
    kept = [
        node.data / name / e.relpath
        for name in listing
        if name.startswith(e.folder + ".err") and (node.data / name / e.relpath).is_file()
    ]
    kept = [p for p in kept if disk.matches(p, e.case)]
    if kept:
        e.where = str(kept[0].relative_to(node.data))
        e.reason = batch_reason(batch[0], "import") if batch else ""
        e.outcome = "held" if e.reason else "noreason"
        return
    # 2. in media: the file as it arrived, or its recorded (de-identified) copy
    found = disk.find(e.case)
    rows = [row for row in images.get(batch[0], []) if row[0] in e.candidates | e.mapped] if batch else []
    rows = [row for row in rows if (media / row[1]).is_file()]
    if found or rows:
        path = found[0] if found else media / rows[0][1]
        e.where = str(path.relative_to(node.tmp))
        parts = path.relative_to(media).parts
        bid = int(parts[1]) if len(parts) > 2 and parts[0] == "batches" and parts[1].isdigit() else None
        flagged = [row[3] for row in rows if row[3]] or [
            row[3] for row in images.get(bid, []) if row[3] and (media / row[1]) == path
        ]
        e.reason = "; ".join(flagged) or batch_reason(bid)
        e.outcome = "held" if e.reason else "noreason"
        return
    # 3. a CD index, removed as documented, with its note
    if e.dicomdir and "DICOMDIR" in notes.get(e.folder, ""):
        e.outcome, e.where, e.reason = "discarded", "removed", notes[e.folder]
        return
    # 4. never imported
    waiting = [
        node.data / name / e.relpath for name in listing if name == e.folder or name.startswith(e.folder + ".tmp")
    ]
    if any(p.is_file() for p in waiting):
        e.outcome, e.where = "pending", f"{e.folder} in the data folder"
        return
    e.outcome = "lost"
    if batch:
        e.reason = f"batch {batch[1]}{' with errors: ' + batch_reason(batch[0]) if batch[2] else ''}"


# -- what Orthanc holds --------------------------------------------------------------------


def _instance_sop(blob: bytes, orthanc, iid: str) -> str:
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True, force=True, specific_tags=[0x00080018])
            return str(ds.SOPInstanceUID).strip("\0 ")
        except Exception:
            pass
    try:
        return orthanc.get_json(f"/instances/{iid}/simplified-tags").get("SOPInstanceUID", "")
    except Exception:
        return ""


def _needles(values: dict) -> list[tuple[bytes, str, str]]:
    out = []
    for value, label in values.items():
        for encoding in ("utf-8", "latin-1"):
            try:
                needle = value.encode(encoding).lower()
            except UnicodeEncodeError:
                continue
            if (needle, label, value) not in out:
                out.append((needle, label, value))
    return out


_NUMBERS = re.compile(rb"[0-9.]+")


def _found(needle: bytes, low: bytes) -> bool:
    """Is the value in the bytes? A UID or a date only as a whole: not the root of a longer
    UID (the ImplementationClassUID under a program's root) nor digits inside a number; a
    date may be followed by a time (DT)."""
    if needle not in low:
        return False
    if not _NUMBERS.fullmatch(needle):
        return True
    uid = b"." in needle
    after = rb"(?![0-9.])" if uid else b""
    return re.search(rb"(?<![0-9.])" + re.escape(needle) + after, low) is not None


def scan_orthanc(orthanc, entries: list[Entry]) -> tuple[int, list, list]:
    """Attribute every Orthanc instance to its input files and search it for identifying
    values; (instances, unattributed ids, leaks with no owner)."""
    by_uid = defaultdict(list)
    markers = defaultdict(list)
    fuzz_uids = defaultdict(list)
    everywhere = defaultdict(list)  # needle -> [(entry, label, value)] for untraced instances
    own = {}
    for e in entries:
        for uid in e.mapped:
            by_uid[uid].append(e)
        for value in e.case.texts:
            if MARKER_RE.fullmatch(value.encode()):
                markers[value.lower().encode()].append(e)
        for value in e.case.uids:
            if FUZZ_UID_RE.fullmatch(value.encode()):
                fuzz_uids[value.encode()].append(e)
        own[id(e)] = _needles({**e.case.texts, **e.case.uids, **e.case.dates})
        for needle, label, value in _needles({**e.case.texts, **e.case.uids}):
            everywhere[needle].append((e, label, value))
    ids = orthanc.instances()
    unattributed, stray = [], []
    for iid in ids:
        blob = orthanc.get_bytes(f"/instances/{iid}/file")
        low = blob.lower()
        owners = by_uid.get(_instance_sop(blob, orthanc, iid), [])
        for e in owners:
            e.instances.append(iid)
        if not owners:
            unattributed.append(iid)
        for found in set(MARKER_RE.findall(low)):
            whose = markers.get(found, [])
            for e in whose:
                e.leaks.append(("marker", found.decode().upper(), iid, "marker"))
            if not whose:
                stray.append(f"marker {found.decode().upper()} in Orthanc instance {iid}")
        for found in set(FUZZ_UID_RE.findall(blob)):
            whose = fuzz_uids.get(found.rstrip(b"."), [])
            for e in whose:
                e.leaks.append(("fuzz UID", found.decode(), iid, "marker"))
            if not whose:
                stray.append(f"fuzz UID {found.decode()} in Orthanc instance {iid}")
        for e in owners:
            for needle, label, value in own[id(e)]:
                if _found(needle, low):
                    e.leaks.append((label, value, iid, "own"))
        if not owners:
            for needle, holders in everywhere.items():
                if _found(needle, low):
                    for e, label, value in holders:
                        e.leaks.append((label, value, iid, "untraced instance"))
    for e in entries:  # one line per value and instance
        e.leaks = sorted(set(e.leaks))
    return len(ids), unattributed, stray


def orthanc_alive(orthanc) -> bool:
    if getattr(orthanc, "proc", None) is not None and orthanc.proc.poll() is not None:
        return False
    try:
        return bool(orthanc.get_json("/system"))
    except Exception:
        return False


# -- the whole run -------------------------------------------------------------------------


def run(
    cases,
    workdir,
    orthanc,
    per_study: int = 10,
    workers: int = 2,
    database: str = "sqlite",
    broker: str = "filesystem",
    timeout: float | None = None,
    settle: float = 15.0,
    prefix: str = "FZ",
    log=None,
    **settings,
) -> Report:
    """Drop `cases` into a fresh node sending to `orthanc` (emptied first) and account for
    each. `timeout` (default 120 s + 1 s a file) bounds the wait for batches to come to rest."""
    from tests.node import Node

    log = log or (lambda message: None)
    started = time.monotonic()
    workdir = Path(workdir)
    entries = entries_for(list(cases), max(1, per_study), prefix)
    folders = {e.folder for e in entries}
    timeout = timeout if timeout is not None else 120 + 1.0 * len(entries)
    orthanc.clear()
    node = Node(
        workdir / "node",
        database,
        broker,
        workers=workers,
        ORTHANC_URL=orthanc.url,
        ORTHANC_PORT=orthanc.dicom_port,
        **{**NODE_SETTINGS, **settings},
    )
    with node:
        log(
            f"node started ({database}, {broker}, {workers} worker processes); "
            f"dropping {len(entries)} files in {len(folders)} folders"
        )
        stage(entries, node.data)
        stuck = wait_settled(node, folders, timeout, settle)
        log(
            f"at rest after {time.monotonic() - started:.0f} s"
            if not stuck
            else f"{len(stuck)} folder(s) not at rest after {timeout:.0f} s"
        )
        worker = node.worker is not None and node.worker.poll() is None
        alive = orthanc_alive(orthanc)
        count, unattributed, stray = scan_orthanc(orthanc, entries) if alive else (0, [], [])
        classify(node, entries)
    return Report(entries, stuck, alive, worker, count, unattributed, time.monotonic() - started, stray)
