"""Unit tests of the destination machinery: no services, no Django."""

import pytest

from sendit.storage import REGISTRY, Destination, DestinationError, SendItem, get_destinations, orthanc_id
from sendit.storage.base import Outcome


def item(n):
    return SendItem(
        path=f"/nonexistent/{n}.dcm",
        sop_instance_uid=f"1.2.3.{n}",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.0",
        patient_id="SUID",
    )


class Scripted(Destination):
    """A destination whose outcomes per round are scripted by the test."""

    name = "scripted"

    def __init__(self, config, script):
        super().__init__(config)
        self.script = script  # list of callables (index) -> Outcome, one per round
        self.rounds = 0
        self.opened = 0

    def open(self):
        self.opened += 1

    def send_round(self, batch):
        fn = self.script[min(self.rounds, len(self.script) - 1)]
        self.rounds += 1
        return self.parallel(batch, lambda i, it: fn(i))

    def check(self):
        return True, "ok"


FAST = {"SEND_RETRIES": 3, "SEND_BACKOFF": 0.01, "SEND_BACKOFF_MAX": 0.02, "SEND_WORKERS": 2}


def test_orthanc_id_format_and_known_value():
    # value computed by Orthanc 1.10 for these identifiers (see test_orthanc_rest)
    oid = orthanc_id("P", "1.2", "1.2.3", "1.2.3.4")
    assert len(oid) == 44 and oid.count("-") == 4
    assert orthanc_id(" P ", "1.2") == orthanc_id("P", "1.2")


def test_transient_failures_are_retried_then_succeed():
    dest = Scripted(
        FAST,
        [
            lambda i: Outcome.retry("HTTP 503", unreachable=True),
            lambda i: Outcome.retry("HTTP 503"),
            lambda i: Outcome.success(f"id{i}"),
        ],
    )
    results = dest.send_batch([item(n) for n in range(5)])
    assert all(r.ok for r in results)
    assert [r.remote_id for r in results] == [f"id{n}" for n in range(5)]
    assert dest.rounds == 3 and all(r.attempts == 3 for r in results)


def test_gives_up_after_capped_backoff():
    dest = Scripted(FAST, [lambda i: Outcome.retry("connection refused", unreachable=True)])
    results = dest.send_batch([item(n) for n in range(50)])
    assert not any(r.ok for r in results)
    assert all("gave up after 4 attempts" in r.error and "connection refused" in r.error for r in results)
    assert dest.rounds == 4  # 1 try + SEND_RETRIES, not one backoff per file


def test_abort_batch_fails_everything_without_retry():
    dest = Scripted(FAST, [lambda i: Outcome.failed("authentication failed", abort_batch=True)])
    results = dest.send_batch([item(n) for n in range(20)])
    assert dest.rounds == 1
    assert all(not r.ok and r.error == "authentication failed" for r in results)


def test_permanent_item_failure_does_not_block_others():
    dest = Scripted(FAST, [lambda i: Outcome.failed("HTTP 400") if i == 2 else Outcome.success()])
    results = dest.send_batch([item(n) for n in range(4)])
    assert [r.ok for r in results] == [True, True, False, True]
    assert dest.rounds == 1 and results[2].error == "HTTP 400"


def test_stored_fresh_then_already_stored_reports_fresh():
    first = Outcome.retry("reset during verify")
    first.stored_fresh = True
    dest = Scripted(FAST, [lambda i: first, lambda i: Outcome.success("x", already_stored=True)])
    [result] = dest.send_batch([item(0)])
    assert result.ok and not result.already_stored


def test_get_destinations_selects_and_validates():
    assert get_destinations({}) == []
    assert get_destinations({"SEND_TO_ORTHANC": "false", "SEND_TO_GOOGLE": "0"}) == []
    [d] = get_destinations({"SEND_TO_ORTHANC": "true", "ORTHANC_URL": "http://127.0.0.1:1"})
    assert d.name == "orthanc" and type(d) is REGISTRY["orthanc_rest"]
    [d] = get_destinations(
        {
            "SEND_TO_ORTHANC": True,
            "ORTHANC_TRANSPORT": "dicom",
            "ORTHANC_IPADDRESS": "127.0.0.1",
            "ORTHANC_PORT": "4242",
        }
    )
    assert d.name == "orthanc" and type(d) is REGISTRY["orthanc_dicom"]
    [d] = get_destinations(
        {
            "SEND_TO_GOOGLE": True,
            "GOOGLE_CLOUD_STORAGE": "b",
            "GOOGLE_STORAGE_COLLECTION": "c",
            "STORAGE_EMULATOR_HOST": "127.0.0.1:1",
        }
    )
    assert d.name == "gcs"
    for bad in (
        {"SEND_TO_ORTHANC": True},
        {"SEND_TO_ORTHANC": True, "ORTHANC_TRANSPORT": "ftp", "ORTHANC_URL": "http://x"},
        {"SEND_TO_ORTHANC": True, "ORTHANC_TRANSPORT": "dicom"},
        {"SEND_TO_ORTHANC": True, "ORTHANC_TRANSPORT": "dicom", "ORTHANC_IPADDRESS": "h", "ORTHANC_AET": "X" * 17},
        {"SEND_TO_GOOGLE": True, "GOOGLE_STORAGE_COLLECTION": "c"},
        {
            "SEND_TO_GOOGLE": True,
            "GOOGLE_CLOUD_STORAGE": "b",
            "GOOGLE_STORAGE_COLLECTION": "c",
            "GOOGLE_STORAGE_FORMAT": "zip",
        },
        {"SEND_TO_ORTHANC": True, "ORTHANC_URL": "http://x", "SEND_RETRIES": "many"},
    ):
        with pytest.raises(DestinationError):
            get_destinations(bad)


def test_unreadable_file_is_a_per_item_error_without_its_name():
    [d] = get_destinations({"SEND_TO_ORTHANC": True, "ORTHANC_URL": "http://127.0.0.1:1"})
    secret = SendItem(
        path="/nonexistent/DOE_JOHN_12345.dcm",
        sop_instance_uid="1.2",
        study_instance_uid="1",
        series_instance_uid="1.1",
        patient_id="S",
    )
    [r] = d.send_batch([secret])
    assert not r.ok and "DOE_JOHN" not in r.error and "ENOENT" in r.error


def test_storage_does_not_import_django():
    """sendit/storage is plain Python: no module of it imports Django."""
    import ast
    import pathlib

    import sendit.storage

    folder = pathlib.Path(sendit.storage.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] == "django" for n in names), path.name


def test_the_heartbeat_runs_before_every_round_and_can_stop_the_send():
    beats = []
    dest = Scripted(
        FAST,
        [lambda i: Outcome.retry("HTTP 503"), lambda i: Outcome.retry("HTTP 503"), lambda i: Outcome.success(f"id{i}")],
    )
    results = dest.send_batch([item(0)], heartbeat=lambda: beats.append(dest.rounds))
    assert results[0].ok and beats == [0, 1, 2]

    class LeaseGone(Exception):
        pass

    def lost():
        if dest.rounds:
            raise LeaseGone()

    dest = Scripted(FAST, [lambda i: Outcome.retry("HTTP 503")])
    with pytest.raises(LeaseGone):
        dest.send_batch([item(0)], heartbeat=lost)
    assert dest.rounds == 1
