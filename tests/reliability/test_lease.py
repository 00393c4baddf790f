"""Two workers never process one batch at once; late duplicates of a step change nothing."""
import subprocess
import sys
import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from sendit.apps.main.models import Batch, Image
from sendit.apps.main.tasks import cleanup, get_identifiers, import_dicomdir, replace_identifiers, upload_storage
from sendit.apps.main.tasks.common import BatchBusy, LeaseLost, batch_lease, keep_lease
from tests.services import make_ct_series

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_acquires_have_one_winner(db):
    batch = Batch.objects.create(uid="RACE")
    wins, barrier = [], threading.Barrier(8)

    def contend():
        from django.db import connection as conn
        mine = Batch.objects.get(pk=batch.pk)
        barrier.wait()
        wins.append(mine.acquire(60))
        conn.close()

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_a_dead_holders_lease_is_taken_over_at_once(db):
    batch = Batch.objects.create(uid="DEAD")
    # A process of this machine held the lease, then died (SIGKILL) without releasing it.
    from datetime import timedelta

    from django.utils import timezone

    from sendit.apps.main.lease import machine_id
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    Batch.objects.filter(pk=batch.pk).update(lease_owner=f"{machine_id()}:{dead.pid}:0123456789abcdef",
                                             lease_until=timezone.now() + timedelta(minutes=10))
    batch.refresh_from_db()
    assert batch.lease_owner  # still held, for ten minutes, by a dead process
    with batch_lease(batch.id):
        pass
    # A live holder (this process's other lease) keeps everyone out.
    with batch_lease(batch.id):
        with pytest.raises(BatchBusy):
            with batch_lease(batch.id):
                pass


def test_a_lost_lease_stops_the_step(db):
    batch = Batch.objects.create(uid="LOST")
    with pytest.raises(LeaseLost):
        with batch_lease(batch.id) as held:
            Batch.objects.filter(pk=batch.pk).update(lease_owner="someone-else")  # expired, taken over
            keep_lease(held)


def test_late_duplicates_of_every_step_leave_a_done_batch_done(node, data_folder):
    make_ct_series(data_folder / "DUPS", 3, patient_id="PDUPS")
    import_dicomdir(str(data_folder / "DUPS"))
    batch = Batch.objects.get(uid="DUPS")
    assert batch.status == "DONE"
    for task in (get_identifiers, replace_identifiers, upload_storage, cleanup):
        task(batch.id)  # a redelivery, or a sweep racing a slow queue
        batch.refresh_from_db()
        assert batch.status == "DONE" and not batch.has_error, (task.name, batch.status, batch.errors)
    import_dicomdir(str(data_folder / "DUPS"))  # the folder is gone
    assert Batch.objects.get(uid="DUPS").status == "DONE" and len(node.instances()) == 3


def test_duplicates_mid_pipeline_do_not_move_a_batch_backwards(node, data_folder, monkeypatch):
    from sendit.apps.main.tasks import deidentify
    monkeypatch.setattr(deidentify.upload_storage if hasattr(deidentify, "upload_storage") else
                        upload_storage, "delay", lambda *a: None)
    make_ct_series(data_folder / "MID", 2, patient_id="PMID")
    import_dicomdir(str(data_folder / "MID"))
    batch = Batch.objects.get(uid="MID")
    assert batch.status == "DONEPROCESSING"
    get_identifiers(batch.id)  # a duplicate of an earlier step
    batch.refresh_from_db()
    assert batch.status == "DONEPROCESSING"
    assert set(Image.objects.filter(batch=batch).values_list("status", flat=True)) == {"DONEPROCESSING"}
    monkeypatch.undo()
    upload_storage(batch.id)
    batch.refresh_from_db()
    assert batch.status == "DONE" and len(node.instances()) == 2


def _queries(node, data_folder, name, n):
    make_ct_series(data_folder / name, n, patient_id="PQ" + name, seed=1)
    with CaptureQueriesContext(connection) as ctx:
        import_dicomdir(str(data_folder / name))
    assert Batch.objects.get(uid=name).status == "DONE"
    return len(ctx.captured_queries)


def test_queries_do_not_grow_with_the_number_of_images(node, data_folder):
    """Bulk queries per chunk, never one per image per step."""
    small = _queries(node, data_folder, "Q20", 20)
    large = _queries(node, data_folder, "Q240", 240)
    # 12x the images: a few more chunks (200 per chunk), not 12x the queries.
    assert large <= small + 20, (small, large)
