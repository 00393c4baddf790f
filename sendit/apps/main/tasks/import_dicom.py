"""Step 1: turn a finished study folder into a Batch of Images in media."""

import errno
import filecmp
import hashlib
import os
import re
import shutil
from pathlib import Path

from celery import shared_task
from django.conf import settings
from django.db import IntegrityError, transaction

from sendit.apps.main import importer
from sendit.apps.main.deidconfig import site_recipe
from sendit.apps.main.models import Batch, BatchIdentifiers, Hold, Image
from sendit.apps.main.tasks.common import (
    crash_point,
    keep_lease,
    logger,
    media_dir,
    relative_media,
    run_step,
    timed_step,
)
from sendit.deid.burned_in import pixel_decision
from sendit.deid.identifiers import IdentifierError, build_request
from sendit.deid.identifiers.request import entity_key, item_key

CHUNK = 500


class MediaFull(Exception):
    """The media disk is full: the file stays where it was."""


def _move(src, dst):
    """Move a file into media; on another file system copy, then remove the original."""
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, dst)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise
            part = dst.with_name(dst.name + ".part")
            try:
                shutil.copyfile(str(src), str(part))
                os.replace(part, dst)
            finally:
                part.unlink(missing_ok=True)
            os.unlink(src)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise MediaFull() from None  # the original is untouched
        raise


def _media_name(folder, path):
    """A stable media name for an input file that does not carry its (maybe identifying) name."""
    digest = hashlib.sha1(str(path.relative_to(folder)).encode("utf-8", "surrogateescape")).hexdigest()
    return f"{digest[:24]}.dcm"


_SET_ASIDE = re.compile(r"(\.err\d*)+$")


def _batch_name(folder):
    """The batch uid of a folder: its name, without the .err / .err2 suffixes sendit added."""
    return _SET_ASIDE.sub("", folder.name)


@shared_task(bind=True, acks_late=True, max_retries=None)
def import_dicomdir(self, folder, lease=None):
    """Import every DICOM file of a finished folder; leave the rest for a person.

    Safe to run twice: files already moved are adopted from media, and a folder
    that is gone has nothing left to import. `lease`: the hand-over token when recovery
    queued this step (sendit.apps.main.recovery).
    """
    folder = Path(folder)
    data_root = Path(settings.DATA_FOLDER).resolve()
    if folder.is_symlink() and folder.parent.resolve() == data_root:
        # Never followed (it may point anywhere), and recorded so a person sees it.
        return _set_aside_unread(
            folder,
            importer.shown_name(folder.name),
            "the study folder is a symbolic link, which is not followed "
            "(it could point outside the data folder): copy the study in instead",
        )
    if not folder.is_dir():
        logger.info("import: folder no longer there, nothing to do")
        return None
    if folder.is_symlink() or data_root not in folder.resolve().parents:
        logger.warning("import: refused a folder outside the data folder")
        return None
    if not importer.is_utf8(folder.name):
        # Such a name cannot be stored or shown as it is: the batch is named by its escaped form.
        return _set_aside_unread(
            folder,
            importer.shown_name(folder.name),
            "the folder name is not UTF-8 (shown here with its other bytes as \\xNN): "
            "rename it to a UTF-8 name to import it",
        )
    uid = _batch_name(folder)
    batch, created = _batch_named(uid)
    resuming = folder.name != uid
    if not created and batch.log.get("imported") and not resuming:
        # The same name arrived again after its batch was imported: keep it for a person.
        return _set_aside_unread(folder, uid, "a folder with this batch's name arrived again")
    run_step(
        self,
        batch.id,
        lambda batch: _import_folder(batch, folder),
        handed=lease,
        then=lambda count: "identifiers" if count else None,
    )
    return batch.id


def _batch_named(uid: str) -> tuple[Batch, bool]:
    try:
        return Batch.objects.get_or_create(uid=uid)
    except IntegrityError:
        return Batch.objects.get(uid=uid), False


def _set_aside_unread(folder: Path, uid: str, why: str) -> int:
    """Rename `folder` to NAME.err without reading it, and say why on the batch `uid`."""
    target = importer.set_aside_name(folder)
    folder.rename(target)
    batch, _ = _batch_named(uid)
    batch.add_error("import", f"{why}; it was set aside as {_set_aside_text(folder, target)} and not imported")
    logger.warning("import: batch=%s folder set aside unread", batch.id)
    return batch.id


def _set_aside_text(folder: Path, target: Path) -> str:
    """The set-aside name as recorded, saying so when it had to be shortened."""
    shown = importer.shown_name(target.name)
    if not target.name.startswith(folder.name):
        shown += (
            " (the name was shortened to fit the file system, so retry_batch does not find it: "
            "import it with manage.py import_folder)"
        )
    return shown


def _import_folder(batch, folder):
    if not folder.is_dir():
        # A duplicate delivery of this task already imported the folder while we waited.
        return 0
    before = Image.objects.filter(batch=batch).count()
    with timed_step(batch, "import") as figures:
        existing = dict(Image.objects.filter(batch=batch).values_list("image", "uid"))
        identities = _load_identities(batch)
        pending, problems, seen = [], [], set(existing.values())
        # De-identification keeps a file's media name (raw/NAME -> deid/NAME): a raw file
        # whose name is recorded was imported already, whatever step it has reached since.
        known_names = {Path(name).name for name in existing}

        # Files a crashed earlier run moved into media but did not record.
        raw = media_dir(batch.id) / "raw"
        if raw.is_dir():
            for path in sorted(raw.iterdir()):
                if path.name.endswith(".part"):
                    path.unlink(missing_ok=True)  # a copy a crash interrupted; the original is still there
                elif path.name not in known_names:
                    _register(batch, path, path, identities, pending, problems, seen, known_names, adopt=True)

        files, links = importer.list_files(folder)
        problems.extend("a symbolic link was refused (it may point outside the data folder)" for _ in links)
        for path in files:
            try:
                _register(batch, folder, path, identities, pending, problems, seen, known_names)
            except MediaFull:
                problems.append(
                    "the media disk is full: the files not yet imported were left "
                    "in the folder; free space, then retry the batch"
                )
                figures["stopped"] = "media disk full"
                break
            if len(pending) >= CHUNK:
                crash_point("import")  # files moved into media, not yet recorded
                _flush(batch, pending, identities)
                keep_lease(batch)
        crash_point("import")
        _flush(batch, pending, identities)

        total = Image.objects.filter(batch=batch).count()
        resuming = folder.name != batch.uid
        if not files and not links and not total and not resuming:
            problems.append("the folder holds no files")
        figures.update(files=len(files), images=total, problems=len(problems))

        for message in _summarise(problems):
            batch.add_error("import", message)
        if problems or not importer.remove_empty_tree(folder):
            if folder.exists():
                target = folder if _SET_ASIDE.search(folder.name) else importer.set_aside_name(folder)
                if target != folder:
                    folder.rename(target)
                batch.add_error(
                    "import", f"files that could not be imported were left in {_set_aside_text(folder, target)}"
                )
        batch.update_log(imported=True, images=total)
        if total > before and batch.status == "DONE":
            # Set-aside files of a finished batch were imported on retry: it has work again.
            batch.set_status("NEW")
        if not total and not problems and (resuming or files):
            # Nothing to send and nothing wrong: a person emptied the set-aside folder, or
            # the folder held only a CD's index (DICOMDIR).
            batch.set_status("DONE")
    return total


def _register(batch, folder, path, identities, pending, problems, seen, known_names, adopt=False):
    """Read one file; a good one is moved into media and queued for recording."""
    target = path if adopt else media_dir(batch.id) / "raw" / _media_name(folder, path)
    if not adopt and target.name in known_names:
        # A crash between the copy into media and the removal of the original (another
        # file system): the copy is recorded already, the original is a leftover.
        if target.is_file() and filecmp.cmp(target, path, shallow=False):
            path.unlink()
            return
    try:
        header = importer.read_header(path, max_bytes=settings.MAX_FILE_BYTES, max_depth=settings.MAX_SEQUENCE_DEPTH)
    except importer.DicomDir:
        # A CD's index names patients and files; it is no instance to send, and every
        # file it lists is imported on its own. Removed, so the folder can finish DONE.
        if not adopt:
            path.unlink()
        batch.add_note("DICOMDIR (CD index) not sent")
        return
    except importer.NotImportable as exc:
        problems.append(f"a file could not be imported: {exc}")
        return
    if header.sop_uid in seen:
        problems.append("a file repeats an instance already in this batch (same SOPInstanceUID)")
        return
    try:
        key = identity_key(header.identity)
    except IdentifierError:
        problems.append("a file has neither PatientID nor StudyInstanceUID")
        return
    decision = pixel_decision(header.dataset, site_recipe())
    reason = decision.hold or ""
    if reason and settings.DEID_OCR and settings.DEID_OCR_RELEASE and decision.held_by != "blacklist":
        # The site chose to let the OCR (sendit.deid.ocr) read and scrub suspected text, and
        # hold what it cannot decide; a blacklist rule holds whatever the OCR would say.
        reason = ""
    if not adopt:
        _move(path, target)  # MediaFull leaves the file where it was, nothing recorded
    seen.add(header.sop_uid)
    known_names.add(target.name)
    pending.append(
        Image(
            batch=batch,
            uid=header.sop_uid,
            image=relative_media(target),
            identity=identities.index_of(header.identity, key),
            hold=Hold.BURNED_IN if reason else Hold.NONE,
            flagged=reason[:255],
        )
    )


def identity_key(identity):
    """Which patient and study a file belongs to, as the identifier request groups them."""
    return entity_key(identity), item_key(identity)


class Identities(list):
    """A batch's identities in the order first seen (as stored in BatchIdentifiers), with
    the position of each patient and study, so that a batch of many patients costs one
    lookup per file, not a scan of every identity seen so far."""

    def __init__(self, identities=()):
        super().__init__(identities)
        self._positions = {}
        for position, identity in enumerate(self):
            self._positions.setdefault(identity_key(identity), position)

    def index_of(self, identity, key):
        """The position of the identity with this key, added at the end when new."""
        position = self._positions.get(key)
        if position is None:
            self.append(identity)
            position = self._positions[key] = len(self) - 1
        return position


def _flush(batch, pending, identities):
    if not pending:
        return
    with transaction.atomic():
        Image.objects.bulk_create(pending)
        ids, _ = BatchIdentifiers.objects.get_or_create(batch=batch)
        ids.identities = list(identities)
        ids.request = build_request(identities)
        ids.save(update_fields=["identities", "request", "modify_date"])
    pending.clear()


def _load_identities(batch):
    found = BatchIdentifiers.objects.filter(batch=batch).first()
    return Identities(found.identities if found else [])


def _summarise(problems):
    """One error line per kind of problem, with a count, instead of one per file."""
    counts = {}
    for message in problems:
        counts[message] = counts.get(message, 0) + 1
    return [m if n == 1 else f"{m} (x{n})" for m, n in counts.items()]
