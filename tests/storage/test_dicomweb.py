"""The DICOMweb destination against a real DICOMweb server: Orthanc with its DICOMweb plugin.

Each server runs on free ports (tests/services.py, Orthanc(dicomweb=True)); the tests skip
with a reason when Orthanc or the plugin (Debian's orthanc-dicomweb) is not installed.
"""

import threading
import time

import pydicom
import pytest
from pydicom.data import get_testdata_file

from sendit.storage import DestinationError, SendItem, get_destinations
from tests.services import Orthanc, dicomweb_missing, make_ct_series, start_or_skip
from tests.storage.helpers import items_for, sample_files

MISSING = dicomweb_missing()


@pytest.fixture(scope="module")
def dicomweb(tmp_path_factory):
    """An Orthanc with the DICOMweb plugin, no authentication, for this module."""
    server = start_or_skip(Orthanc(tmp_path_factory.mktemp("orthanc-dicomweb"), dicomweb=True), MISSING)
    yield server
    server.stop()


@pytest.fixture
def server(dicomweb):
    dicomweb.clear()
    return dicomweb


def destination(server, **overrides):
    config = {
        "SEND_TO_DICOMWEB": True,
        "DICOMWEB_URL": server.dicomweb_url,
        "SEND_RETRIES": 2,
        "SEND_BACKOFF": 0.2,
        "SEND_BACKOFF_MAX": 1.0,
        **overrides,
    }
    [dest] = get_destinations(config)
    return dest


def stored_uids(server) -> set[tuple[str, str, str]]:
    """(study, series, SOP Instance UID) of every instance the server keeps (its REST API)."""
    found = set()
    for instance in server.instances():
        tags = server.get_json(f"/instances/{instance}/simplified-tags")
        found.add((tags["StudyInstanceUID"], tags["SeriesInstanceUID"], tags["SOPInstanceUID"]))
    return found


def test_a_batch_is_delivered_verified_and_a_resend_is_already_stored(server, tmp_path):
    paths = sample_files(tmp_path, n_ct=6)
    items = items_for(paths)
    dest = destination(server, DICOMWEB_INSTANCES_PER_REQUEST=3, SEND_WORKERS=2)
    results = dest.send_batch(items)
    assert [r.error for r in results] == [None] * len(items)
    assert all(r.ok and not r.already_stored and r.attempts == 1 for r in results)
    assert stored_uids(server) == {(i.study_instance_uid, i.series_instance_uid, i.sop_instance_uid) for i in items}
    # What the server keeps is the file sent, byte for byte in its data set.
    stored = server.get_bytes(f"/instances/{server.instances()[0]}/file")
    local = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in paths}
    ds = pydicom.dcmread(__import__("io").BytesIO(stored))
    assert ds == local[ds.SOPInstanceUID]

    again = dest.send_batch(items)
    assert all(r.ok and r.already_stored for r in again)
    assert len(server.instances()) == len(items)
    assert dest.check()[0]


def test_another_instance_with_the_same_uids_fails_and_the_stored_one_is_kept(server, tmp_path):
    [path] = sample_files(tmp_path, n_ct=1)[2:]
    dest = destination(server)
    assert dest.send_batch(items_for([path]))[0].ok
    other = tmp_path / "other.dcm"
    ds = pydicom.dcmread(path)
    ds.SeriesDescription = "another version"
    ds.save_as(other)
    first, second = dest.send_batch(items_for([str(other), path]))
    assert not first.ok and first.error == "dicomweb: a different instance with this UID is already stored"
    assert first.attempts == 1
    assert second.ok and second.already_stored
    kept = pydicom.dcmread(__import__("io").BytesIO(server.get_bytes(f"/instances/{server.instances()[0]}/file")))
    assert kept.SeriesDescription != "another version"


def test_one_refused_instance_fails_alone(server, tmp_path):
    paths = sample_files(tmp_path, n_ct=4)
    no_series = tmp_path / "no-series.dcm"
    ds = pydicom.dcmread(paths[2])
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    del ds.SeriesInstanceUID
    ds.save_as(no_series)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"not a DICOM file" * 100)
    good = items_for(paths)
    bad_header = SendItem(str(no_series), ds.SOPInstanceUID, ds.StudyInstanceUID, "1.2.3", "P")
    bad_file = SendItem(str(garbage), "1.2.826.0.1.3680043.8.498.2", ds.StudyInstanceUID, "1.2.3", "P")
    items = good[:3] + [bad_header] + good[3:] + [bad_file]
    # One request for all of them: the answer says which instance failed.
    results = destination(server, DICOMWEB_INSTANCES_PER_REQUEST=50, SEND_WORKERS=1).send_batch(items)
    assert [r.ok for r in results] == [True] * 3 + [False] + [True] * 3 + [False]
    assert results[3].error == (
        "dicomweb: the DICOMweb server refused this instance: it has no "
        "SeriesInstanceUID (FailureReason 0xC000, cannot understand)"
    )
    assert results[7].error.startswith(
        "dicomweb: the DICOMweb server refused this instance: not a DICOM instance the server could read (HTTP 400"
    )
    assert all(r.attempts == 1 for r in results)
    assert len(server.instances()) == 6
    assert str(garbage) not in str([r.error for r in results])


def test_basic_auth_against_orthancs_user_list(tmp_path):
    server = start_or_skip(Orthanc(tmp_path / "o", username="sendit", password="s3cret-dw", dicomweb=True), MISSING)
    try:
        items = items_for(sample_files(tmp_path, n_ct=2))
        ok = destination(server, DICOMWEB_AUTH="basic", DICOMWEB_USERNAME="sendit", DICOMWEB_PASSWORD="s3cret-dw")
        assert all(r.ok for r in ok.send_batch(items))
        assert len(server.instances()) == len(items)
        assert ok.check()[0]

        wrong = destination(
            server, DICOMWEB_AUTH="basic", DICOMWEB_USERNAME="sendit", DICOMWEB_PASSWORD="wrong", SEND_BACKOFF=5.0
        )
        started = time.monotonic()
        results = wrong.send_batch(items)
        assert time.monotonic() - started < 5  # no retry
        assert all(not r.ok and "authentication failed (HTTP 401" in r.error for r in results)
        assert "wrong" not in str([r.error for r in results])
        ok_, message = wrong.check()
        assert not ok_ and "authentication failed" in message
        bearer = destination(server, DICOMWEB_AUTH="bearer", DICOMWEB_TOKEN="not-a-user")
        assert "authentication failed" in bearer.send_batch(items[:1])[0].error
    finally:
        server.stop()


def test_a_server_that_is_down_is_retried_and_the_batch_not_stuck(tmp_path):
    server = start_or_skip(Orthanc(tmp_path / "o", dicomweb=True), MISSING)
    try:
        items = items_for(sample_files(tmp_path, n_ct=3))
        server.stop()
        # Down for good: given up after the retries, quickly, every image said so.
        dead = destination(server, SEND_RETRIES=2, SEND_BACKOFF=0.1, SEND_BACKOFF_MAX=0.2)
        started = time.monotonic()
        results = dead.send_batch(items)
        assert time.monotonic() - started < 10
        assert all(
            not r.ok and r.error.startswith("dicomweb: gave up after 3 attempts: dicomweb: connection") for r in results
        ), results[0].error
        assert not dead.check()[0]
        # Back after a moment: the same call delivers everything.
        back = threading.Timer(1.0, server.start)
        back.start()
        results = destination(server, SEND_RETRIES=8, SEND_BACKOFF=0.5, SEND_BACKOFF_MAX=1.0).send_batch(items)
        back.join()
        assert all(r.ok for r in results), [r.error for r in results]
        assert max(r.attempts for r in results) > 1
        assert len(server.instances()) == len(items)
    finally:
        server.stop()


def test_misconfiguration_is_said_at_once():
    with pytest.raises(DestinationError, match="DICOMWEB_URL"):
        get_destinations({"SEND_TO_DICOMWEB": True})
    with pytest.raises(DestinationError, match="DICOMWEB_AUTH"):
        get_destinations({"SEND_TO_DICOMWEB": True, "DICOMWEB_URL": "http://h/dicom-web", "DICOMWEB_AUTH": "kerberos"})
    with pytest.raises(DestinationError, match="DICOMWEB_TOKEN"):
        get_destinations({"SEND_TO_DICOMWEB": True, "DICOMWEB_URL": "http://h/dicom-web", "DICOMWEB_AUTH": "bearer"})


def test_a_url_that_is_not_a_dicomweb_root_stops_the_batch(server, tmp_path):
    items = items_for([get_testdata_file("CT_small.dcm")])
    results = destination(server, DICOMWEB_URL=server.url + "/nothing-here").send_batch(items)
    assert not results[0].ok and results[0].attempts == 1
    assert "is DICOMWEB_URL the DICOMweb service root?" in results[0].error


def orthanc_id_of(server, sop_instance_uid: str) -> str:
    [found] = json_post(server, "/tools/lookup", sop_instance_uid)
    return found["ID"]


def json_post(server, path, body: str):
    import json
    import urllib.request

    req = urllib.request.Request(server.url + path, data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def losing(dest, server, uid, times):
    """Make the server lose the instance with this SOP Instance UID right after its STOW-RS
    answer (before the verification), `times` times: stored, answered, then not there."""
    stow, lost = dest._stow, []

    def stow_then_lose(members):
        got = stow(members)
        if uid in {item.sop_instance_uid for _, item in members} and len(lost) < times:
            server.delete(f"/instances/{orthanc_id_of(server, uid)}")
            lost.append(uid)
        return got

    dest._stow = stow_then_lose
    return lost


@pytest.mark.parametrize("verified_by", ["metadata", "qido"])
def test_an_instance_missing_after_its_stow_is_sent_again_then_fails_alone(server, tmp_path, verified_by):
    """The per-instance guarantee, by either verification: WADO-RS series metadata (a new
    series) or QIDO-RS per request (a series already bigger than what is sent)."""
    paths = make_ct_series(tmp_path / "series", 8, patient_id="LOST")
    # qido: 5 of the series already kept, 3 sent (the series is the bigger); metadata: 3 sent
    kept, sent = (paths[:5], paths[5:]) if verified_by == "qido" else ([], paths[:3])
    items = items_for(sent)
    missing = items[1].sop_instance_uid
    calls = []
    for times, expect_ok in ((1, True), (9, False)):
        server.clear()
        for path in kept:
            server.post_file(path)
        dest = destination(server, DICOMWEB_INSTANCES_PER_REQUEST=2, SEND_WORKERS=2, SEND_BACKOFF=0.1)
        seen = {"metadata": 0, "qido": 0}
        metadata, listed = dest._metadata_listed, dest._listed
        dest._metadata_listed = lambda s: (seen.__setitem__("metadata", seen["metadata"] + 1), metadata(s))[1]
        dest._listed = lambda s: (seen.__setitem__("qido", seen["qido"] + 1), listed(s))[1]
        lost = losing(dest, server, missing, times)
        results = dest.send_batch(items)
        calls.append(seen)
        assert lost, "the instance was never lost"
        assert [r.ok for r in results] == [True, expect_ok, True], [r.error for r in results]
        assert [r.attempts for r in results] == [1, 2, 1]
        if not expect_ok:
            assert results[1].error == (
                "dicomweb: the DICOMweb server did not keep this instance (stored, then not listed in its series)"
            )
        assert all(not r.already_stored for r in results)
    # the verification that ran is the one this case is about
    other = "qido" if verified_by == "metadata" else "metadata"
    assert all(seen[verified_by] > 0 for seen in calls), calls
    if verified_by == "qido":
        assert all(seen[other] == 0 for seen in calls), calls


def test_a_series_not_listed_by_its_metadata_is_searched_by_qido(server, tmp_path, monkeypatch):
    """A server without WADO-RS metadata (here: an error) still verifies by QIDO-RS."""
    items = items_for(make_ct_series(tmp_path / "s", 4, patient_id="NOMETA"))
    dest = destination(server, DICOMWEB_INSTANCES_PER_REQUEST=2, SEND_WORKERS=2)
    dest.open()

    def no_metadata(*args, **kwargs):
        raise ValueError("no metadata here")

    monkeypatch.setattr(dest.web, "retrieve_series_metadata", no_metadata)
    dest.open = lambda: None  # keep the patched client for the call
    results = dest.send_batch(items)
    assert all(r.ok and r.attempts == 1 for r in results), [r.error for r in results]
    assert len(server.instances()) == 4
