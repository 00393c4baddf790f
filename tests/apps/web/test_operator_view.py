"""The operator's view: each not-DONE situation, made by the real pipeline (run
eagerly against the session's Orthanc), in plain words on the dashboard, the batch page and
the API; and the command line's retry ending where the page's button ends."""

import html as htmllib
import re
from collections import Counter

import pydicom
import pytest
from django.core.management import call_command
from django.utils import timezone

from sendit.apps.main.models import Batch
from sendit.apps.main.plain import plain_error, plain_state, send_failure
from sendit.apps.main.tasks import import_dicomdir
from tests.apps.main.test_deidentify_holds import cut_in_half, lenient_import  # noqa: F401 (a fixture)
from tests.services import make_ct_series

pytestmark = pytest.mark.django_db(transaction=True)

PATIENT, NAME = "MRN-OPS-7731", "Operator^Patient"


def states(client, batch):
    """The plain-language state as the dashboard, the batch page and the API show it."""
    dashboard = client.get("/").content.decode()
    row = re.search(rf'<tr data-batch="{re.escape(batch.uid)}".*?data-state="([^"]*)"', dashboard, re.DOTALL)
    page = client.get(f"/batches/{batch.id}/").content.decode()
    on_page = re.search(r'<p class="state" id="state">([^<]*)</p>', page)
    api = client.get(f"/api/batches/{batch.id}").json()
    for text in (dashboard, page, str(api)):
        assert PATIENT not in text and "Operator" not in text and "[path]" not in text
    return htmllib.unescape(row.group(1)), htmllib.unescape(on_page.group(1)), api["state"]


def test_destination_down_is_said_on_every_view(client, node, data_folder, settings):
    settings.ORTHANC_URL = "http://127.0.0.1:9"  # nothing listens there
    make_ct_series(data_folder / "DOWN", 2, patient_id=PATIENT, patient_name=NAME)
    import_dicomdir(str(data_folder / "DOWN"))
    batch = Batch.objects.get(uid="DOWN")
    assert batch.status == "DONEPROCESSING"
    expected = "Stopped: Orthanc is not answering; 2 images wait on this node"
    assert states(client, batch) == (expected,) * 3
    [error] = client.get(f"/api/batches/{batch.id}").json()["errors"]
    message = error["message"]
    # The destination once, the cause, what sendit did, what a person can do.
    assert message.count("Orthanc") == 2 and message.startswith("Orthanc did not take 2 images: it is not answering")
    assert re.search(r"Sendit tried \d+ times and gave up at \d\d:\d\d UTC; the images wait on this node", message)
    assert f"python manage.py retry_batch {batch.id}" in message and "Retry what failed" in message
    dashboard = client.get("/").content.decode()
    assert 'id="destination-orthanc"' in dashboard and 'data-up="false"' in dashboard
    assert re.search(r'data-waiting="2"', dashboard)
    assert 'href="/#destination-orthanc"' in client.get(f"/batches/{batch.id}/").content.decode()


def test_files_set_aside_are_counted_by_kind(client, node, data_folder):
    folder = data_folder / "ST-000004"
    make_ct_series(folder, 2, patient_id=PATIENT, patient_name=NAME)
    (folder / "notes.txt").write_text("not DICOM")
    (folder / "report.pdf").write_bytes(b"%PDF-1.4 not DICOM either")
    (folder / "empty.dcm").write_bytes(b"")
    import_dicomdir(str(folder))
    batch = Batch.objects.get(uid="ST-000004")
    expected = "3 files set aside in ST-000004.err: not DICOM (2), empty (1)"
    assert states(client, batch) == (expected,) * 3
    page = htmllib.unescape(client.get(f"/batches/{batch.id}/").content.decode())
    assert (
        "files that could not be imported were left in ST-000004.err: fix or remove them there" in page
        and f"python manage.py retry_batch {batch.id}" in page
    )


def test_burned_in_text_holds_images_for_review(client, node, data_folder):
    folder = data_folder / "BURNED"
    paths = make_ct_series(folder, 3, patient_id=PATIENT, patient_name=NAME, rows=32, columns=32)
    for path in paths[:2]:
        ds = pydicom.dcmread(path)
        ds.BurnedInAnnotation = "YES"
        ds.save_as(path)
    import_dicomdir(str(folder))
    batch = Batch.objects.get(uid="BURNED")
    assert len(node.instances()) == 1
    expected = "Held for review: burned-in text suspected (2 images)"
    assert states(client, batch) == (expected,) * 3


def test_failed_de_identification_holds_images_for_review(client, node, data_folder, lenient_import):  # noqa: F811
    from pydicom.data import get_testdata_file

    folder = data_folder / "CUT"
    make_ct_series(folder, 2, patient_id=PATIENT, patient_name=NAME, rows=32, columns=32)
    source = get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")
    for i in (1, 2):
        cut_in_half(source, folder / f"half{i}.dcm", sop_digit=str(i))
    import_dicomdir(str(folder))
    batch = Batch.objects.get(uid="CUT")
    expected = "Held for review: de-identification failed (2 images)"
    assert states(client, batch) == (expected,) * 3


def test_a_delivered_batch_and_the_wait_between_tries(client, node, data_folder, settings):
    make_ct_series(data_folder / "FINE", 2, patient_id=PATIENT, patient_name=NAME, rows=32, columns=32)
    import_dicomdir(str(data_folder / "FINE"))
    batch = Batch.objects.get(uid="FINE")
    assert states(client, batch) == ("Delivered and cleaned up",) * 3
    # While the send step waits between rounds, it says who and when.
    later = (timezone.now() + timezone.timedelta(seconds=120)).isoformat()
    batch.status, batch.log = "DONEPROCESSING", {**batch.log, "waiting": {"destination": "orthanc", "next_try": later}}
    batch.save()
    assert (
        plain_state(batch, Counter(), Counter({"DONEPROCESSING": 2}))
        == "Waiting: Orthanc is not answering, next try in 2 min"
    )


def test_the_old_wording_is_rewritten_and_no_path_is_left():
    old = {
        "time": "2026-12-07T10:00:00+00:00",
        "step": "send",
        "message": "orthanc: 1 image(s) not delivered: orthanc: gave up after 6 attempts: "
        "orthanc: HTTP 503 on POST /instances",
    }
    text = plain_error(old, 4)
    assert text == (
        "Orthanc did not take 1 image: it is unavailable (HTTP 503). Sendit tried 6 times and gave "
        "up at 10:00 UTC; the images wait on this node. When Orthanc answers again, press “Retry "
        "what failed” on the batch page or run `python manage.py retry_batch 4`."
    )
    refused = send_failure("orthanc", 2, "orthanc: Orthanc refused this instance: no pixel data", 9)
    assert refused.startswith("Orthanc did not take 2 images: it refused this instance: no pixel data.")
    assert "Once the cause is fixed" in refused


def _set_aside_then_fixed(data_folder, name):
    """A batch delivered but for a bad file set aside, which a person then removes."""
    folder = data_folder / name
    make_ct_series(folder, 2, patient_id=PATIENT, patient_name=NAME, rows=32, columns=32)
    (folder / "junk.txt").write_text("not DICOM")
    import_dicomdir(str(folder))
    batch = Batch.objects.get(uid=name)
    assert batch.status == "DONEPROCESSING" and batch.has_error
    (data_folder / f"{name}.err" / "junk.txt").unlink()  # the person removes the bad file
    return batch


def test_command_line_retry_and_the_button_end_the_same(client, node, data_folder):
    by_page = _set_aside_then_fixed(data_folder, "BYPAGE")
    by_command = _set_aside_then_fixed(data_folder, "BYCOMMAND")
    client.post(f"/batches/{by_page.id}/retry/")
    call_command("retry_batch", str(by_command.id))
    ends = []
    for batch in (by_page, by_command):
        batch.refresh_from_db()
        ends.append(
            (
                batch.status,
                batch.has_error,
                batch.errors,
                "cleanup" in batch.log.get("steps", {}),
                batch.log.get("cleanup"),
                batch.images.count(),
                (data_folder / f"{batch.uid}.err").exists(),
            )
        )
        assert states(client, batch)[0] == "Delivered and cleaned up"
    assert ends[0] == ends[1] == ("DONE", False, [], True, "done", 0, False)
    assert len(node.instances()) == 4
    origins = [[a["origin"] for a in Batch.objects.get(pk=b.pk).log["audit"]] for b in (by_page, by_command)]
    assert origins[0] == ["page, client 127.0.0.1"]
    assert len(origins[1]) == 1 and origins[1][0].startswith("command retry_batch (user ")


def test_the_receiver_card_shows_a_running_receiver_then_its_stop(client, data_folder, settings):
    """The receiver (a process of its own in make run and compose) publishes its status to the
    shared cache; the dashboard's card shows it while it is fresh."""
    import threading

    from django.core.cache import cache

    from sendit.apps.main.destinations import RECEIVER_KEY, publish_receiver
    from sendit.receiver import ReceiverConfig, serve
    from tests.services import free_port, wait_for

    settings.SEND_TO_ORTHANC = False
    cache.delete(RECEIVER_KEY)
    assert 'id="receiver"' not in client.get("/").content.decode()  # none has run here
    port = free_port()
    stop = threading.Event()
    config = ReceiverConfig(data_folder=data_folder, key=b"k" * 32, ae_title="SENDITTEST", port=port, settle=0.5)
    thread = threading.Thread(
        target=serve, args=(config, stop), daemon=True, kwargs={"report": publish_receiver, "report_every": 0.1}
    )
    thread.start()
    try:
        assert wait_for(lambda: "listening</span>" in client.get("/").content.decode(), timeout=10)
        card = client.get("/").content.decode()
        assert f"<code>SENDITTEST</code> on 127.0.0.1:{port}" in card
        assert 'data-associations="0"' in card and 'data-images-today="0"' in card
    finally:
        stop.set()
        thread.join(10)
    card = client.get("/").content.decode()  # its last word: stopped
    assert 'id="receiver"' in card and "not listening" in card
    assert "None switched on" in card  # no destination: the destinations card says so
