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
from tests.node import ROOT
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
    Batch.objects.filter(pk=batch.pk).update(
        lease_owner=f"{machine_id()}:{dead.pid}:0123456789abcdef", lease_until=timezone.now() + timedelta(minutes=10)
    )
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
    """The send step is queued (held here), with the batch's lease handed to it: a duplicate
    of an earlier step waits for the lease instead of running; once the queued step has run,
    a duplicate runs and changes nothing."""
    from celery.exceptions import Retry

    handed = []
    monkeypatch.setattr(upload_storage, "delay", lambda batch_id, lease=None: handed.append(lease))
    make_ct_series(data_folder / "MID", 2, patient_id="PMID")
    import_dicomdir(str(data_folder / "MID"))
    batch = Batch.objects.get(uid="MID")
    assert batch.status == "DONEPROCESSING" and batch.lease_owner == handed[0]  # held for the send step
    with pytest.raises(Retry):
        get_identifiers(batch.id)  # a duplicate of an earlier step: the batch is not free
    monkeypatch.undo()
    upload_storage(batch.id, lease=handed[0])  # the queued step, with its hand-over
    batch.refresh_from_db()
    assert batch.status == "DONE" and len(node.instances()) == 2 and not batch.lease_owner
    get_identifiers(batch.id)  # a late duplicate
    batch.refresh_from_db()
    assert batch.status == "DONE" and not batch.has_error


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


# --- The lease rules of recovery (sendit.apps.main.lease, sendit.apps.main.recovery) ---


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_holder_on_this_machine_is_dead_only_when_its_pid_is_gone():
    from sendit.apps.main.lease import holder_is_dead, machine_id, owner_token

    here = machine_id()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not holder_is_dead(f"{here}:{alive.pid}:0123456789abcdef")
        alive.kill()
        alive.wait()
        assert holder_is_dead(f"{here}:{alive.pid}:0123456789abcdef")
    finally:
        alive.kill()
    assert not holder_is_dead(owner_token())  # this process
    # Another machine's pid tells nothing here, dead or not: only its lease's expiry counts.
    assert not holder_is_dead(f"0ther0machine:{_dead_pid()}:0123456789abcdef")
    assert not holder_is_dead("not-a-token")


def test_abandoned_leases():
    from datetime import timedelta

    from django.utils import timezone

    from sendit.apps.main.lease import abandoned, machine_id, owner_token

    now = timezone.now()
    later, earlier = now + timedelta(seconds=50), now - timedelta(seconds=1)
    dead_here = f"{machine_id()}:{_dead_pid()}:0123456789abcdef"
    alive_here = owner_token()
    other_host = f"0ther0machine:{_dead_pid()}:0123456789abcdef"
    other_handover = f"0ther0machine:{_dead_pid()}:q123456789abcdef"
    for at_start in (True, False):
        assert abandoned(dead_here, later, now, at_start)  # same host, pid gone: at once
        assert not abandoned(alive_here, later, now, at_start)  # a live holder keeps it
        assert not abandoned(other_host, later, now, at_start)  # other host: until it expires
        assert abandoned(other_host, earlier, now, at_start)  # ... and then at once
        assert not abandoned(other_handover, later, now, at_start)
    # A free batch has its next step queued; only a (re)starting worker queues it again.
    assert abandoned("", None, now, at_start=True)
    assert not abandoned("", None, now, at_start=False)
    # An expired hand-over is a step waiting in a long queue: not piled up every period.
    assert abandoned(other_handover, earlier, now, at_start=True)
    assert not abandoned(other_handover, earlier, now, at_start=False)


def test_the_heartbeat_keeps_a_working_lease_alive(db, settings):
    import time

    from django.utils import timezone

    settings.BATCH_LEASE_SECONDS = 2
    settings.LEASE_HEARTBEAT_SECONDS = 0.5
    batch = Batch.objects.create(uid="BEAT")
    with batch_lease(batch.id) as held:
        first = Batch.objects.get(pk=batch.pk).lease_until
        time.sleep(3.5)  # longer than the lease, with no keep_lease: only the heartbeat renews
        now = Batch.objects.get(pk=batch.pk)
        assert now.lease_owner == held.lease_owner and now.lease_until > timezone.now()
        assert now.lease_until > first
        assert not Batch.objects.get(pk=batch.pk).acquire(2)  # still held
    assert Batch.objects.get(pk=batch.pk).lease_owner == ""  # released at the end


def _database_url():
    from django.conf import settings as django_settings

    db = django_settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db.get('USER') or 'postgres'}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def test_a_killed_holders_lease_lapses_within_the_lease_period(db, tmp_path):
    """A real process holds a lease with its heartbeat, is SIGKILLed: the lease stops being
    renewed and lapses about BATCH_LEASE_SECONDS later (how another host sees a death)."""
    import os
    import signal
    import time
    from datetime import timedelta

    from django.utils import timezone

    batch = Batch.objects.create(uid="KILLED")
    ready = tmp_path / "ready"
    code = (
        "import django, pathlib, time; django.setup()\n"
        "from sendit.apps.main.tasks.common import batch_lease\n"
        f"with batch_lease({batch.id}):\n"
        f"    pathlib.Path({str(ready)!r}).touch()\n"
        "    time.sleep(120)\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sendit.settings",
        "DATABASE_URL": _database_url(),
        "BATCH_LEASE_SECONDS": "3",
        "LEASE_HEARTBEAT_SECONDS": "0.5",
        "LOCKDOWN_ENABLED": "false",
    }
    holder = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(ROOT))
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the holder did not start"
            time.sleep(0.1)
        time.sleep(4)  # past one lease period: still held, thanks to the heartbeat
        held = Batch.objects.get(pk=batch.pk)
        assert held.lease_until > timezone.now()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        killed = timezone.now()
        last = Batch.objects.get(pk=batch.pk).lease_until
        assert last <= killed + timedelta(seconds=3)
        time.sleep(max(0.0, (last - timezone.now()).total_seconds()) + 0.2)
        after = Batch.objects.get(pk=batch.pk)
        assert after.lease_until == last and after.lease_until < timezone.now()  # lapsed, not renewed
    finally:
        holder.kill()


def _stuck(uid, owner="", until=None):
    """A batch with images waiting for identifiers, and the given lease."""
    batch = Batch.objects.create(uid=uid, lease_owner=owner, lease_until=until)
    Image.objects.create(batch=batch, uid=f"1.2.3.{batch.pk}", image=f"batches/{batch.pk}/raw/x.dcm")
    return batch


def _recorder(monkeypatch):
    """get_identifiers.delay recording (batch id, lease token) instead of queueing."""
    calls, lock = [], threading.Lock()

    def delay(batch_id, lease=None):
        with lock:
            calls.append((batch_id, lease))

    monkeypatch.setattr(get_identifiers, "delay", delay)
    return calls


def test_two_workers_starting_together_requeue_each_abandoned_batch_once(db, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from sendit.apps.main.lease import machine_id, owner_token
    from sendit.apps.main.recovery import requeue_abandoned

    now = timezone.now()
    soon, gone = now + timedelta(minutes=5), now - timedelta(seconds=1)
    abandoned = [
        _stuck("FREE"),
        _stuck("DEAD-HERE", f"{machine_id()}:{_dead_pid()}:0123456789abcdef", soon),
        _stuck("EXPIRED-ELSEWHERE", "0ther0machine:4242:0123456789abcdef", gone),
    ]
    kept = [
        _stuck("ALIVE-HERE", owner_token(), soon),
        _stuck("ALIVE-ELSEWHERE", "0ther0machine:4242:0123456789abcdef", soon),
    ]
    # a free batch whose worker died a while ago (one that recorded a step just now is
    # between two steps of its chain: see the next test)
    Batch.objects.filter(pk=abandoned[0].pk).update(modify_date=now - timedelta(minutes=1))
    done = _stuck("DONE")
    Batch.objects.filter(pk=done.pk).update(status="DONE")
    failed = _stuck("FAILED")
    Batch.objects.filter(pk=failed.pk).update(has_error=True)
    calls = _recorder(monkeypatch)
    results, barrier = [], threading.Barrier(4)

    def start_a_worker():
        from django.db import connection as conn

        barrier.wait()
        results.append(requeue_abandoned(at_start=True))
        conn.close()

    threads = [threading.Thread(target=start_a_worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(b for b, _ in calls) == sorted(b.pk for b in abandoned)  # each exactly once
    assert sum(len(r) for r in results) == len(abandoned)
    for batch_id, token in calls:
        # The queued step holds the lease by its hand-over token: a worker starting now,
        # or a later pass, leaves the batch alone.
        assert Batch.objects.get(pk=batch_id).lease_owner == token
    assert requeue_abandoned(at_start=True) == {} and len(calls) == len(abandoned)
    untouched = {b.pk: (b.lease_owner, b.lease_until) for b in kept}
    assert {b.pk: (b.lease_owner, b.lease_until) for b in Batch.objects.filter(pk__in=untouched)} == untouched


def test_a_running_worker_requeues_lapsed_leases_not_free_batches(db, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from sendit.apps.main.recovery import requeue_abandoned

    gone = timezone.now() - timedelta(seconds=1)
    _stuck("FREE-QUEUED")
    lapsed = _stuck("LAPSED", "0ther0machine:4242:0123456789abcdef", gone)
    _stuck("HANDOVER-WAITING", "0ther0machine:4242:q123456789abcdef", gone)
    calls = _recorder(monkeypatch)
    assert requeue_abandoned(at_start=False) == {lapsed.pk: "identifiers"}
    assert [b for b, _ in calls] == [lapsed.pk]


def test_the_queued_step_takes_its_handed_lease_and_a_duplicate_waits(db):
    from django.utils import timezone

    from sendit.apps.main.lease import owner_token

    batch = _stuck("HANDED")
    token = owner_token(handover=True)
    assert batch.hand_over(token, 60)
    stale = Batch.objects.get(pk=batch.pk)
    stale.lease_owner, stale.lease_until = "", None
    assert not stale.hand_over(owner_token(handover=True), 60)  # read before: loses
    with pytest.raises(BatchBusy):
        with batch_lease(batch.id):  # a plain duplicate of the step (a redelivery)
            pass
    with batch_lease(batch.id, handed=token) as held:
        assert held.lease_owner != token and Batch.objects.get(pk=batch.pk).lease_until > timezone.now()
        with pytest.raises(BatchBusy):
            with batch_lease(batch.id, handed=token):  # the same message delivered twice
                pass
    assert Batch.objects.get(pk=batch.pk).lease_until is None


def test_an_unfinished_import_is_resumed_before_anything_else(db, data_folder):
    from sendit.apps.main.pipeline import next_step, task

    batch = _stuck("HALF")  # some images recorded, the rest of the files still in the folder
    (data_folder / "HALF").mkdir()
    name, args = next_step(batch)
    assert (name, args) == ("import", (str(data_folder / "HALF"),)) and task(name) is import_dicomdir
    Batch.objects.filter(pk=batch.pk).update(log={"imported": True})
    batch.refresh_from_db()
    assert next_step(batch)[0] == "identifiers"


@pytest.mark.parametrize("destination", ["SEND_TO_ORTHANC", "SEND_TO_DICOMWEB", "SEND_TO_GOOGLE", None])
def test_a_batch_waiting_to_be_sent_resumes_with_its_send_step(db, settings, destination):
    """Whichever destination is on alone, a de-identified batch resumes with the send step
    (a node sending only to DICOMweb once never did); with none on, there is nothing to send."""
    from sendit.apps.main.pipeline import next_step

    for name in ("SEND_TO_ORTHANC", "SEND_TO_DICOMWEB", "SEND_TO_GOOGLE"):
        setattr(settings, name, name == destination)
    batch = _stuck("READY")
    Image.objects.filter(batch=batch).update(status="DONEPROCESSING")
    assert next_step(batch) == (("send", (batch.id,)) if destination else None)


def test_a_free_batch_between_two_steps_is_not_taken_from_its_chain(db, monkeypatch, settings):
    """A worker starting while a batch moves from one step to the next (lease free for a
    moment, its next step queued) does not hand the lease to a second copy of that step,
    which would make the chain's own step wait; it looks again a pass later, and queues
    the batch then if it is still free and has not moved."""
    from datetime import timedelta

    from django.utils import timezone

    from sendit.apps.main import recovery

    monkeypatch.setattr(recovery, "_deferred", set())
    moving = _stuck("MOVING")
    calls = _recorder(monkeypatch)
    assert recovery.requeue_abandoned(at_start=True) == {}
    assert moving.pk in recovery._deferred
    # The next pass: it recorded nothing since and is still free, so it was abandoned.
    Batch.objects.filter(pk=moving.pk).update(modify_date=timezone.now() - timedelta(minutes=1))
    assert list(recovery.requeue_abandoned(at_start=False)) == [moving.pk]
    assert len(calls) == 1 and not recovery._deferred


# --- A step's message taken by a worker: the reservation (sendit.celery, recovery.reserve) ---


def test_a_taken_message_reserves_its_batch_for_the_worker_until_the_step_runs(db, settings):
    from datetime import timedelta

    from django.utils import timezone

    from sendit.apps.main import lease
    from sendit.apps.main.recovery import renew_reservations, reserve

    settings.BATCH_LEASE_SECONDS = 30
    batch = _stuck("RESERVED")
    token = lease.owner_token(handover=True)
    assert batch.hand_over(token, 30)
    assert reserve(token) and not reserve(token)  # the second delivery finds it reserved
    held = Batch.objects.get(pk=batch.pk)
    assert held.lease_owner == lease.reservation(token) and held.lease_owner.startswith(lease.reservations_prefix())
    assert not lease.is_handover(held.lease_owner) and not lease.holder_is_dead(held.lease_owner)
    # The worker's main process renews what it holds, and nothing else.
    other = _stuck("SOMEONE-ELSES", "0ther0machine:4242:r0123456789abcdef", timezone.now() + timedelta(seconds=5))
    Batch.objects.filter(pk=batch.pk).update(lease_until=timezone.now() + timedelta(seconds=5))
    assert renew_reservations() == 1
    assert Batch.objects.get(pk=batch.pk).lease_until > timezone.now() + timedelta(seconds=25)
    assert Batch.objects.get(pk=other.pk).lease_until < timezone.now() + timedelta(seconds=6)
    with pytest.raises(BatchBusy):
        with batch_lease(batch.id):  # a duplicate without the hand-over waits
            pass
    with pytest.raises(BatchBusy):
        with batch_lease(batch.id, handed=lease.owner_token(handover=True)):  # another step's token
            pass
    with batch_lease(batch.id, handed=token) as step:  # the step itself takes it
        assert Batch.objects.get(pk=batch.pk).lease_owner == step.lease_owner != held.lease_owner
    assert Batch.objects.get(pk=batch.pk).lease_owner == ""


def test_a_reservation_is_abandoned_when_its_worker_stops_renewing_it_or_dies_here():
    from datetime import timedelta

    from django.utils import timezone

    from sendit.apps.main.lease import abandoned, holder_is_dead, machine_id

    now = timezone.now()
    later, earlier = now + timedelta(seconds=50), now - timedelta(seconds=1)
    elsewhere = "0ther0machine:4242:r0123456789abcdef"
    handover = "0ther0machine:4242:q0123456789abcdef"
    assert not abandoned(elsewhere, later, now, at_start=False)
    assert abandoned(elsewhere, earlier, now, at_start=False)  # its worker (host) is gone
    # A hand-over not yet taken waits in the broker: lapsed, it is no worker's to lose.
    assert not abandoned(handover, earlier, now, at_start=False)
    dead_here = f"{machine_id()}:{_dead_pid()}:r0123456789abcdef"
    assert holder_is_dead(dead_here) and abandoned(dead_here, later, now, at_start=False)
    # A hand-over names the process that queued it, which may be gone: it is held all the same.
    assert not holder_is_dead(f"{machine_id()}:{_dead_pid()}:q0123456789abcdef")


def test_a_running_worker_requeues_a_lapsed_reservation_once(db, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from sendit.apps.main.recovery import requeue_abandoned

    gone = timezone.now() - timedelta(seconds=1)
    lapsed = _stuck("RESERVED-BY-A-DEAD-HOST", "0ther0machine:4242:r0123456789abcdef", gone)
    _stuck("HANDED-WAITING", "0ther0machine:4242:q0123456789abcdef", gone)
    calls = _recorder(monkeypatch)
    assert requeue_abandoned(at_start=False) == {lapsed.pk: "identifiers"}
    assert requeue_abandoned(at_start=False) == {}
    [(batch_id, token)] = calls
    assert batch_id == lapsed.pk and Batch.objects.get(pk=lapsed.pk).lease_owner == token
