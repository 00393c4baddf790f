"""Every status page through Django's test client (lockdown off; see test_lockdown.py)."""

import re
from pathlib import Path

import pytest

from sendit.apps.main.models import Batch, Image

pytestmark = pytest.mark.django_db


def test_dashboard_shows_counts_batches_watcher_and_chart(client, make_batch, step_log):
    make_batch("A", status="DONE", log=step_log)
    make_batch("B", status="PROCESSING", images=[("PROCESSING",)])
    make_batch("C", status="DONEPROCESSING", errors=[{"time": "t", "step": "send", "message": "m"}])
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-status="DONE">1<' in html and 'data-status="PROCESSING">1<' in html
    assert 'data-status="errors">1<' in html
    for name in "ABC":
        assert f'data-batch="{name}"' in html
    assert "Watcher" in html and "not running" in html
    assert "<svg" in html and 'id="sent-last-hour">2<' in html
    assert "De-identification is OFF" not in html
    assert 'data-refresh="/partials/dashboard/"' in html
    assert "/static/main/sendit.js" in html and "/static/main/sendit.css" in html
    assert "cdn" not in html.lower() and "https://" not in html


def test_dashboard_partial_is_a_fragment(client, make_batch):
    make_batch("A")
    response = client.get("/partials/dashboard/")
    assert response.status_code == 200 and response["X-Sendit-Partial"] == "1"
    html = response.content.decode()
    assert 'data-batch="A"' in html and "<html" not in html
    assert "no-cache" in response["Cache-Control"]


def test_deidentify_off_is_a_plain_warning(client, settings):
    settings.DEIDENTIFY = False
    html = client.get("/").content.decode()
    assert 'id="deid-warning"' in html and "De-identification is OFF" in html


def test_watcher_running_shows_since_and_folder(client, settings):
    from datetime import timedelta

    from django.utils import timezone

    from sendit.apps.watcher.models import Heartbeat

    started = timezone.now() - timedelta(hours=1)
    Heartbeat.objects.create(name="watcher", started=started, beat=timezone.now(), folder="/srv/data", mode="polling")
    html = client.get("/").content.decode()
    assert "running</span> since " + started.strftime("%Y-%m-%d %H:%M:%S") in html
    assert "/srv/data" in html
    Heartbeat.objects.filter(name="watcher").update(stopped=True)
    assert "not running</span> last seen" in client.get("/").content.decode()


def test_batch_page_shows_images_per_destination_errors_and_steps(client, make_batch, step_log):
    batch = make_batch(
        "ST-1",
        status="DONEPROCESSING",
        log=step_log,
        images=[
            ("SENT", "CT_small.dcm", {"orthanc": {"time": "2024-01-01T10:00:00+00:00", "remote_id": "x"}}),
            ("DONEPROCESSING", "CT_small.dcm", {}),
        ],
        errors=[
            {
                "time": "2024-01-01T10:00:01+00:00",
                "step": "send",
                "message": "orthanc: 1 image(s) not delivered: refused",
            }
        ],
    )
    response = client.get(f"/batches/{batch.id}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('<span class="pill ok"') == 1 and "<th>orthanc</th>" in html
    # The old wording, rewritten for people: the destination once, the cause, what to do.
    assert "[send]" not in html and "orthanc: 1 image(s) not delivered" not in html
    assert "Orthanc did not take 1 image: refused." in html and f"manage.py retry_batch {batch.id}" in html
    assert html.count("Orthanc did not take") == 1 and "[path]" not in html
    assert "2024-01-01T10:00:01" in html
    for step in ("import", "identifiers", "deidentify", "send"):
        assert f'data-step="{step}"' in html
    assert "1.25" in html and "3.85" in html  # a step's seconds and the total
    assert 'id="retry"' in html and 'id="resend"' in html and 'id="delete"' in html
    assert html.count("csrfmiddlewaretoken") == 2


def test_batch_page_of_a_cleaned_up_batch(client, make_batch, step_log):
    batch = make_batch("GONE", status="DONE", log=step_log)
    html = client.get(f"/batches/{batch.id}/").content.decode()
    assert "delivered and cleaned up" in html and 'id="retry"' not in html and 'id="resend"' not in html


def test_unknown_pages_are_404(client):
    assert client.get("/batches/999/").status_code == 404
    assert client.get("/images/999/").status_code == 404
    assert client.get("/images/999/preview.png").status_code == 404


def test_errors_are_scrubbed_on_the_page(client, make_batch):
    batch = make_batch(
        "S",
        errors=[
            {
                "time": "t",
                "step": "import",
                "message": "could not read /data/Doe^Jane/IM0001 uid 1.2.840.113619.2.55.3.1",
            }
        ],
    )
    html = client.get(f"/batches/{batch.id}/").content.decode()
    assert "Doe" not in html and "1.2.840.113619" not in html
    assert "[path]" in html and "[uid]" in html


def test_actions_are_post_only(client, make_batch):
    batch = make_batch("P", errors=[{"time": "t", "step": "send", "message": "x"}])
    for action in ("retry", "resend"):
        assert client.get(f"/batches/{batch.id}/{action}/").status_code == 405


def test_actions_need_the_csrf_token(make_batch):
    from django.test import Client

    batch = make_batch("P", images=[("SENT", None, {"orthanc": {}})])
    strict = Client(enforce_csrf_checks=True)
    for action in ("retry", "resend", "delete"):
        assert strict.post(f"/batches/{batch.id}/{action}/").status_code == 403
    assert Batch.objects.filter(pk=batch.pk).exists()
    # With the token from the page, the form works.
    page = strict.get(f"/batches/{batch.id}/delete/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert strict.post(f"/batches/{batch.id}/delete/", {"csrfmiddlewaretoken": token}).status_code == 302
    assert not Batch.objects.filter(pk=batch.pk).exists()


def test_retry_calls_retry_batch(client, make_batch, monkeypatch):
    calls = []
    monkeypatch.setattr("sendit.apps.main.retry.retry_batch", lambda b: calls.append(b.id) or "the pipeline")
    batch = make_batch("R", status="DONEPROCESSING", errors=[{"time": "t", "step": "send", "message": "x"}])
    response = client.post(f"/batches/{batch.id}/retry/", follow=True)
    assert calls == [batch.id]
    assert "Retry queued: the pipeline." in response.content.decode()
    batch.refresh_from_db()
    [entry] = batch.log["audit"]  # who did what, from where: on the batch page too
    assert entry["action"] == "retry" and entry["origin"] == "page, client 127.0.0.1"
    assert entry["result"] == "queued the pipeline" and entry["time"]
    html = response.content.decode()
    assert 'id="audit"' in html and "page, client 127.0.0.1" in html


def test_retry_of_a_clean_done_batch_does_nothing(client, make_batch, monkeypatch):
    calls = []
    monkeypatch.setattr("sendit.apps.main.retry.retry_batch", lambda b: calls.append(b.id))
    batch = make_batch("OK", status="DONE")
    response = client.post(f"/batches/{batch.id}/retry/", follow=True)
    assert calls == [] and "Nothing to retry" in response.content.decode()


def test_resend_clears_marks_and_queues_upload(client, make_batch, monkeypatch):
    from sendit.apps.main.lease import is_handover

    queued = []
    monkeypatch.setattr(
        "sendit.apps.main.tasks.upload_storage.delay", lambda batch_id, lease=None: queued.append((batch_id, lease))
    )
    batch = make_batch(
        "RS",
        status="DONEPROCESSING",
        images=[
            ("SENT", None, {"orthanc": {"time": "t"}}),
            ("DONEPROCESSING", None, {"orthanc": {"time": "t"}}),
            ("PROCESSING", None, {}),
        ],
    )
    response = client.post(f"/batches/{batch.id}/resend/", follow=True)
    # The send step is queued with the batch's lease handed to it: nothing else takes it meanwhile.
    assert queued == [(batch.id, Batch.objects.get(pk=batch.id).lease_owner)] and is_handover(queued[0][1])
    assert "Re-send queued for 2 image(s)." in response.content.decode()
    statuses = sorted(Image.objects.filter(batch=batch).values_list("status", "destinations"))
    assert statuses == [("DONEPROCESSING", {}), ("DONEPROCESSING", {}), ("PROCESSING", {})]
    batch.refresh_from_db()
    assert [(a["action"], a["origin"], a["result"]) for a in batch.log["audit"]] == [
        ("re-send", "page, client 127.0.0.1", "2 image(s) queued")
    ]


def test_resend_refused_while_a_worker_holds_the_batch(client, make_batch, monkeypatch):
    queued = []
    monkeypatch.setattr("sendit.apps.main.tasks.upload_storage.delay", lambda batch_id, **kw: queued.append(batch_id))
    batch = make_batch("BUSY", images=[("SENT", None, {"orthanc": {}})])
    assert batch.acquire(600)
    response = client.post(f"/batches/{batch.id}/resend/", follow=True)
    assert "being processed right now" in response.content.decode() and queued == []
    assert Image.objects.get(batch=batch).destinations == {"orthanc": {}}


def test_delete_confirms_then_removes_media_and_rows_not_data(client, make_batch, settings, caplog):
    batch = make_batch(
        "DEL",
        status="DONEPROCESSING",
        images=[("DONEPROCESSING", "CT_small.dcm")],
        errors=[{"time": "t", "step": "import", "message": "x"}],
    )
    media = Path(settings.MEDIA_ROOT) / "batches" / str(batch.id)
    kept = Path(settings.DATA_FOLDER) / "DEL.err"
    kept.mkdir()
    (kept / "broken.dcm").write_bytes(b"x")
    page = client.get(f"/batches/{batch.id}/delete/")
    assert page.status_code == 200 and "DEL.err" in page.content.decode()
    assert media.exists() and Batch.objects.filter(pk=batch.pk).exists()  # GET changes nothing

    response = client.post(f"/batches/{batch.id}/delete/", follow=True)
    assert response.redirect_chain[-1][0] == "/"
    assert "Batch DEL deleted" in response.content.decode()
    assert not Batch.objects.filter(pk=batch.pk).exists() and not Image.objects.filter(batch_id=batch.pk).exists()
    assert not media.exists()
    assert (kept / "broken.dcm").exists()
    # The batch's log went with it: the audit line is in sendit.audit (var/logs).
    assert f"AUDIT batch={batch.pk} delete from page, client 127.0.0.1: 1 image(s)" in caplog.text


def test_delete_never_touches_a_media_root_inside_the_data_folder(client, make_batch, settings):
    batch = make_batch("IN", images=[("NEW", None)])
    settings.MEDIA_ROOT = settings.DATA_FOLDER  # a misconfiguration: media inside the data folder
    inside = Path(settings.DATA_FOLDER) / "batches" / str(batch.id)
    inside.mkdir(parents=True)
    (inside / "keep.dcm").write_bytes(b"x")
    client.post(f"/batches/{batch.id}/delete/")
    assert (inside / "keep.dcm").exists()


def test_settings_page_masks_secrets(client, settings):
    settings.ORTHANC_PASSWORD = "orthanc-pw-value"
    settings.DATABASE_URL = "postgres://sendit:db-pw-value@db:5432/sendit"
    settings.CELERY_BROKER_URL = "redis://:redis-pw-value@redis:6379/0"
    settings.GOOGLE_APPLICATION_CREDENTIALS = "/secrets/key.json"
    settings.LOCKDOWN_PASSWORDS = ("lockdown-pw-value",)
    settings.API_TOKENS = ("token-value",)
    response = client.get("/settings/")
    assert response.status_code == 200
    html = response.content.decode()
    for secret in (
        "orthanc-pw-value",
        "db-pw-value",
        "redis-pw-value",
        "/secrets/key.json",
        "lockdown-pw-value",
        "token-value",
        settings.SECRET_KEY,
        settings.DEID_SECRET,
    ):
        assert secret not in html
    assert "postgres://sendit:********@db:5432/sendit" in html
    assert "redis://:********@redis:6379/0" in html
    from sendit.config import names

    for name in names():
        assert f'data-setting="{name}"' in html
    assert 'data-setting="LOCKDOWN_ENABLED"' in html and "lockdown OFF" in html


def test_static_files_are_served_locally(client):
    css = client.get("/static/main/sendit.css")
    js = client.get("/static/main/sendit.js")
    assert css.status_code == 200 and js.status_code == 200
    assert b"X-Sendit-Partial" in b"".join(js.streaming_content)


def test_pages_set_safe_headers(client):
    response = client.get("/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_settings_page_is_grouped_and_described_from_the_configuration_doc(client, settings):
    """Pipeline, De-identification, Destinations, Web, Operations, in that order; each setting
    with the first sentence of its meaning in docs/configuration.md (the one source)."""
    from sendit.apps.main.settings_doc import described
    from sendit.config import names

    settings.ORTHANC_PASSWORD = "orthanc-pw-grouped"
    html = client.get("/settings/").content.decode()
    headings = re.findall(r'<h2 id="heading-[\w-]+">([^<]+)</h2>', html)
    assert headings == ["Pipeline", "De-identification", "Destinations", "Web", "Operations"]
    docs = described()
    missing = [name for name in names() if name not in docs]
    assert not missing, f"settings of sendit.config not described in docs/configuration.md: {missing}"
    row = re.search(r'data-setting="SEND_RETRIES">[^<]*</td><td class="describe">([^<]*)</td>', html)
    assert row.group(1) == "Attempts per remote call before a send fails."
    destinations = html[html.index('id="group-destinations"') : html.index('id="group-web"')]
    assert 'data-setting="ORTHANC_PASSWORD">********<' in destinations and "orthanc-pw-grouped" not in html
    assert 'data-setting="DEID_SECRET"' in html[html.index('id="group-de-identification"') :]
