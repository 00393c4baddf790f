"""Nothing unrecorded is deleted, a held batch is not retried under a worker, surprises are recorded."""

import pytest
from django.utils import timezone

from sendit.apps.main.models import Batch, Image
from sendit.apps.main.retry import BatchInUse, retry_batch
from sendit.apps.main.tasks import import_dicomdir
from sendit.apps.main.tasks.cleanup import cleanup
from sendit.apps.main.tasks.common import media_dir
from tests.services import make_ct_series

pytestmark = pytest.mark.django_db(transaction=True)


def test_cleanup_keeps_files_it_has_no_record_of(node, data_folder, monkeypatch):
    handed = []
    monkeypatch.setattr(cleanup, "delay", lambda batch_id, lease=None: handed.append(lease))  # stop before cleanup
    make_ct_series(data_folder / "K", 2)
    import_dicomdir(str(data_folder / "K"))
    batch = Batch.objects.get(uid="K")
    assert Image.objects.filter(batch=batch, status="SENT").count() == 2
    stray = media_dir(batch.id) / "raw" / "moved-but-never-recorded.dcm"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"the only copy of an input")
    monkeypatch.undo()

    cleanup(batch.id, lease=handed[0])  # the queued step, with the lease handed to it
    batch.refresh_from_db()
    assert batch.status != "DONE" and batch.has_error
    assert "never recorded" in batch.errors[-1]["message"]
    assert stray.exists() and Image.objects.filter(batch=batch).count() == 2


def test_retry_waits_for_the_worker_that_holds_the_batch(node, data_folder):
    batch = Batch.objects.create(uid="BUSY", has_error=True)
    assert batch.acquire(600)
    with pytest.raises(BatchInUse):
        retry_batch(batch)
    batch.refresh_from_db()
    assert batch.lease_until > timezone.now()  # the worker keeps its lease


def test_an_unexpected_failure_is_recorded_on_the_batch(node, data_folder, monkeypatch):
    from sendit.apps.main.tasks import send

    def broken(config):
        raise RuntimeError("boom")

    monkeypatch.setattr(send, "get_destinations", broken)
    make_ct_series(data_folder / "U", 1)
    with pytest.raises(RuntimeError):
        import_dicomdir(str(data_folder / "U"))
    batch = Batch.objects.get(uid="U")
    assert batch.has_error and batch.errors[-1]["step"] == "send"
    assert "unexpected RuntimeError" in batch.errors[-1]["message"]
    assert "boom" not in str(batch.errors)


def test_a_set_aside_folder_keeps_its_batch_name_on_retry(node, data_folder):
    (data_folder / "E").mkdir()
    (data_folder / "E" / "bad.txt").write_text("no")
    import_dicomdir(str(data_folder / "E"))
    batch = Batch.objects.get(uid="E")
    retry_batch(batch)  # still bad: stays E.err, no E.err.err, no new batch
    assert sorted(p.name for p in data_folder.iterdir()) == ["E.err"]
    assert list(Batch.objects.values_list("uid", flat=True)) == ["E"]
