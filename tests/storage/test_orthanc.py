"""Both Orthanc transports against a real Orthanc started per test (tests/services.py)."""

import threading
import time

import pytest

from sendit.storage import get_destinations, orthanc_id
from tests.services import make_ct_series
from tests.storage.helpers import items_for, pixel_bytes, sample_files

TRANSPORTS = ["rest", "dicom"]
FAST = {"SEND_RETRIES": 3, "SEND_BACKOFF": 0.05, "SEND_BACKOFF_MAX": 0.2}


def destination(orthanc, transport, **overrides):
    [dest] = get_destinations(orthanc.settings(ORTHANC_TRANSPORT=transport, **{**FAST, **overrides}))
    return dest


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_files_arrive_intact(orthanc_private, tmp_path, transport):
    paths = sample_files(tmp_path / "in", n_ct=4)
    items = items_for(paths)
    results = destination(orthanc_private, transport).send_batch(items)
    assert [r.error for r in results if not r.ok] == []
    assert all(r.ok and not r.already_stored for r in results)
    assert sorted(orthanc_private.instances()) == sorted(r.remote_id for r in results)
    for path, item, r in zip(paths, items, results):
        # the remote id is Orthanc's own id, equal to the one computed from the identifiers
        assert r.remote_id == orthanc_id(
            item.patient_id, item.study_instance_uid, item.series_instance_uid, item.sop_instance_uid
        )
        stored = orthanc_private.get_bytes(f"/instances/{r.remote_id}/file")
        assert pixel_bytes(stored) == pixel_bytes(path)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_resend_is_harmless(orthanc_private, tmp_path, transport):
    items = items_for(sample_files(tmp_path / "in", n_ct=3))
    dest = destination(orthanc_private, transport)
    first = dest.send_batch(items)
    assert all(r.ok for r in first)
    count = len(orthanc_private.instances())
    again = dest.send_batch(items)
    assert all(r.ok and r.already_stored for r in again)
    assert [r.remote_id for r in again] == [r.remote_id for r in first]
    assert len(orthanc_private.instances()) == count == len(items)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_orthanc_restarted_mid_batch(orthanc_private, tmp_path, transport):
    paths = make_ct_series(tmp_path / "in", 80, patient_id="SUID-RESTART")
    items = items_for(paths)
    dest = destination(
        orthanc_private,
        transport,
        SEND_WORKERS=1,
        ORTHANC_DICOM_ASSOCIATIONS=1,
        SEND_RETRIES=8,
        SEND_BACKOFF=0.1,
        SEND_BACKOFF_MAX=0.5,
    )
    box = {}
    sender = threading.Thread(target=lambda: box.update(results=dest.send_batch(items)))
    sender.start()
    deadline = time.monotonic() + 30
    while len(orthanc_private.instances()) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    orthanc_private.stop(kill=True)  # a crash: SIGTERM would wait for our keep-alive requests
    time.sleep(0.5)
    orthanc_private.start()
    sender.join(120)
    results = box["results"]
    assert [r.error for r in results if not r.ok] == []
    assert max(r.attempts for r in results) > 1, "the outage was not noticed; test proves nothing"
    assert len(orthanc_private.instances()) == len(paths)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_destination_down_for_good(tmp_path, transport, monkeypatch):
    from tests.services import Orthanc, free_port

    gone = Orthanc(tmp_path / "never-started", http_port=free_port(), dicom_port=free_port())
    items = items_for(make_ct_series(tmp_path / "in", 5))
    dest = destination(gone, transport, SEND_RETRIES=3, SEND_BACKOFF=0.05, SEND_BACKOFF_MAX=0.1)
    sleeps = []
    delay = dest.delay
    monkeypatch.setattr(dest, "delay", lambda n: sleeps.append(delay(n)) or sleeps[-1])
    results = dest.send_batch(items)
    assert all(not r.ok for r in results)
    for r in results:
        assert "gave up after 4 attempts" in r.error
        assert "refused" in r.error or "cannot connect" in r.error
    # One capped backoff per round for the whole batch, not one per image.
    assert sleeps == [0.05, 0.1, 0.1]
    ok, message = dest.check()
    assert not ok and message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_password_fails_fast(orthanc_auth, tmp_path, transport):
    items = items_for(make_ct_series(tmp_path / "in", 6, patient_id="SUID-AUTH"))
    dest = destination(orthanc_auth, transport, ORTHANC_PASSWORD="wrong", SEND_BACKOFF=1.0)
    results = dest.send_batch(items)
    # No retry storm: authentication failures are not retried.
    assert all(not r.ok and "authentication failed" in r.error and r.attempts == 1 for r in results)
    assert "wrong" not in results[0].error
    ok, message = destination(orthanc_auth, "rest", ORTHANC_PASSWORD="wrong").check()
    assert not ok and "authentication failed" in message


def test_right_password_works(orthanc_auth, tmp_path):
    items = items_for(make_ct_series(tmp_path / "in", 2, patient_id="SUID-AUTH-OK"))
    for transport in TRANSPORTS:
        results = destination(orthanc_auth, transport).send_batch(items)
        assert all(r.ok for r in results), [r.error for r in results]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_check_reports_reachable(orthanc, transport):
    ok, message = destination(orthanc, transport).check()
    assert ok, message


def test_dicom_without_url_is_unverified_but_ok(orthanc_private, tmp_path):
    items = items_for(make_ct_series(tmp_path / "in", 3))
    results = destination(orthanc_private, "dicom", ORTHANC_URL=None).send_batch(items)
    assert all(r.ok and "not verified" in r.note for r in results)
    assert len(orthanc_private.instances()) == 3


def test_invalid_file_is_rejected_per_item(orthanc_private, tmp_path):
    from sendit.storage import SendItem

    good = items_for(make_ct_series(tmp_path / "in", 2))
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all" * 100)
    bad = SendItem(str(junk), "1.2.3.4", "1.2.3", "1.2.3.1", "SUID")
    for transport in TRANSPORTS:
        results = destination(orthanc_private, transport).send_batch([good[0], bad, good[1]])
        assert [r.ok for r in results] == [True, False, True], [r.error for r in results]
        assert results[1].attempts == 1 and "junk" not in results[1].error


@pytest.mark.parametrize("verify", ["series", "md5"])
def test_a_local_file_gone_fails_its_item_once(orthanc_private, tmp_path, verify):
    """Sent from the file (sendfile) or read to hash it: a file that cannot be opened is
    that item's failure, said plainly, not a connection problem to retry."""
    from sendit.storage import SendItem

    good = items_for(make_ct_series(tmp_path / "in", 2))
    gone = SendItem(str(tmp_path / "gone.dcm"), "1.2.3.4", "1.2.3", "1.2.3.1", "SUID")
    results = destination(orthanc_private, "rest", ORTHANC_VERIFY=verify).send_batch([good[0], gone, good[1]])
    assert [r.ok for r in results] == [True, False, True], [r.error for r in results]
    assert results[1].attempts == 1
    assert results[1].error == "orthanc: cannot read the local file (ENOENT: No such file or directory)"
