"""Folder names the sender chose badly, and a study folder that is a symbolic link.

Each one used to vanish or crash: a name that is not UTF-8 failed the import before a
batch existed (nothing shown, the sweeper retrying forever), a newline in a name forged log
lines, a name too long to take ".err" could not be set aside, and a link was skipped
without a word. Each is now set aside as .err and recorded on a batch, shown escaped.
"""

import logging
import os

import pytest

from sendit.apps.main.models import Batch
from sendit.apps.main.tasks import import_dicomdir
from sendit.apps.watcher.watcher import FolderWatcher
from tests.apps.watcher.test_watcher import Running
from tests.services import make_ct_series

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_name_that_is_not_utf8_is_set_aside_and_recorded_escaped(data_folder, eager):
    name = os.fsdecode(b"ST-\xff\xfe01")
    make_ct_series(data_folder / name, 1)
    import_dicomdir(str(data_folder / name))
    batch = Batch.objects.get()
    assert batch.uid == "ST-\\xff\\xfe01" and batch.has_error
    message = batch.errors[-1]["message"]
    assert "not UTF-8" in message and "ST-\\xff\\xfe01.err" in message
    assert not (data_folder / name).exists() and (data_folder / (name + ".err")).is_dir()
    # The folder is set aside, so nothing queues it again.
    assert [p.name for p in data_folder.iterdir()] == [name + ".err"]


def test_a_newline_in_a_name_forges_no_log_line(tmp_path, caplog):
    name = "ST-1\n2026-01-01 00:00:00 INFO FINISHED FORGED queued for import"
    (tmp_path / name).mkdir()
    queued = []
    watcher = FolderWatcher(tmp_path, queued.append, settle=0)
    with caplog.at_level(logging.INFO, logger="sendit.watcher"):
        watcher.scan()
    assert queued == [str(tmp_path / name)]
    lines = [r.getMessage() for r in caplog.records if r.name == "sendit.watcher"]
    assert lines and all("\n" not in line for line in lines)
    assert any("ST-1\\n2026-01-01" in line for line in lines)


def test_a_name_too_long_for_err_is_shortened_and_recorded(data_folder, eager):
    name = "L" * 252
    folder = data_folder / name
    folder.mkdir()
    (folder / "notes.txt").write_text("not DICOM")
    import_dicomdir(str(folder))
    batch = Batch.objects.get(uid=name)
    left = [p.name for p in data_folder.iterdir()]
    assert len(left) == 1 and left[0].endswith(".err") and len(os.fsencode(left[0])) <= 255
    assert (data_folder / left[0] / "notes.txt").is_file()
    message = batch.errors[-1]["message"]
    assert left[0] in message and "shortened" in message


def test_a_study_folder_that_is_a_link_is_recorded_not_followed(data_folder, eager, tmp_path):
    outside = tmp_path / "outside" / "STUDY"
    make_ct_series(outside, 2)
    link = data_folder / "LINKED"
    link.symlink_to(outside, target_is_directory=True)
    # The watcher queues it (it used to skip it unseen)...
    with Running(data_folder) as running:
        assert "LINKED" in running.wait_for(1)
    # ...and the import records it, sets the link aside and never reads through it.
    import_dicomdir(str(link))
    batch = Batch.objects.get(uid="LINKED")
    assert batch.has_error and "symbolic link" in batch.errors[-1]["message"]
    assert (data_folder / "LINKED.err").is_symlink() and not link.exists()
    assert len(list(outside.iterdir())) == 2 and not batch.images.exists()
