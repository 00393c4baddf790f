"""The low items of the security review: numbers that overflow, throttles shared by every
process, tokens, logout by POST, credentials in URLs, and no-store on what the app answers."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from sendit.redact import mask_setting, mask_url
from tests.apps.web.conftest import PASSWORD, TOKEN
from tests.apps.web.test_lockdown import login

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[3]
HUGE = "99999999999999999999999"


def test_an_id_too_large_for_the_database_is_400_or_404(client, settings, make_batch):
    settings.LOCKDOWN_ENABLED = False
    make_batch("ST-1")
    response = client.get(f"/api/images?batch={HUGE}")
    assert response.status_code == 400 and "batch" in response.json()
    assert client.get(f"/api/images?batch=-{HUGE}").status_code == 400
    # A detail id is checked like a filter now (the schema says 1 to 2**63-1): 400, in JSON.
    assert client.get(f"/api/images/{HUGE}").status_code == 400
    assert client.get(f"/api/batches/{HUGE}/").status_code == 400
    assert client.get("/api/images?batch=9223372036854775807").status_code == 200


def test_wrong_tokens_are_throttled_per_address(client, locked, settings):
    settings.LOCKDOWN_MAX_FAILURES = 3
    settings.LOCKDOWN_LOCKOUT_SECONDS = 1
    address = {"REMOTE_ADDR": "10.8.0.1"}
    for _ in range(3):
        assert client.get("/api/batches", HTTP_AUTHORIZATION="Token " + "w" * 40, **address).status_code == 401
    refused = client.get("/api/batches", HTTP_AUTHORIZATION=f"Token {TOKEN}", **address)
    assert refused.status_code == 429 and b"Too many wrong tokens" in refused.content
    assert client.get("/api/batches", HTTP_AUTHORIZATION=f"Token {TOKEN}", REMOTE_ADDR="10.8.0.2").status_code == 200
    import time

    time.sleep(1.2)
    assert client.get("/api/batches", HTTP_AUTHORIZATION=f"Token {TOKEN}", **address).status_code == 200


def test_a_short_token_never_passes_even_when_configured(client, locked):
    locked.API_TOKENS = ("short-token",)  # settings refuse it at start; the check refuses it too
    assert client.get("/api/batches", HTTP_AUTHORIZATION="Token short-token").status_code == 401


def test_the_count_is_shared_by_every_process(locked, settings):
    """Another process (another uwsgi worker) counts wrong passwords into the same count."""
    assert "locmem" not in settings.CACHES["default"]["BACKEND"]
    settings.LOCKDOWN_MAX_FAILURES = 3
    code = (
        "from django.test import RequestFactory; from sendit.apps.api.access import record_attempt; "
        "request = RequestFactory().post('/', REMOTE_ADDR='10.7.0.1'); "
        "[record_attempt(request, failed=True) for _ in range(3)]"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert login(Client(REMOTE_ADDR="10.7.0.1"), PASSWORD).status_code == 429


def test_logout_is_a_post_with_the_csrf_token(locked):
    client = Client(enforce_csrf_checks=True)
    assert login(client).status_code == 302
    # The old GET logout does nothing now: a link or an image cannot log anyone out.
    client.get("/?preview-logout=1")
    client.get("/logout/")
    page = client.get("/").content.decode()
    assert 'id="live"' in page
    assert client.post("/logout/").status_code == 403  # no CSRF token
    assert 'id="live"' in client.get("/").content.decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert client.post("/logout/", {"csrfmiddlewaretoken": csrf}).status_code == 302
    assert 'id="lockdown-form"' in client.get("/").content.decode()


def test_every_credential_in_every_url_is_masked():
    failover = "redis://:first-pw@redis1:6379/0;redis://:second-pw@redis2:6379/0"
    assert mask_url(failover) == "redis://:********@redis1:6379/0;redis://:********@redis2:6379/0"
    shown = mask_url("https://orthanc.example/x?token=abc123&study=7&api_key=k9&Signature=s1")
    assert shown == "https://orthanc.example/x?token=********&study=7&api_key=********&Signature=********"
    assert mask_url("https://sentrykey@o1.ingest.sentry.io/5") == "https://********@o1.ingest.sentry.io/5"
    assert mask_url("http://orthanc:8042") == "http://orthanc:8042"
    assert mask_setting("CELERY_BROKER_URL", failover).count("********") == 2


def test_the_settings_page_shows_no_credential_of_any_url(client, settings):
    settings.LOCKDOWN_ENABLED = False
    settings.CELERY_BROKER_URL = "redis://:first-pw-1@redis1:6379/0;redis://:second-pw-2@redis2:6379/0"
    settings.ORTHANC_URL = "https://orthanc.example/?token=tok-in-query-3"
    settings.DASHER_URL = "https://user:dasher-pw-4@dasher.example/api"
    page = client.get("/settings/").content.decode()
    for secret in ("first-pw-1", "second-pw-2", "tok-in-query-3", "dasher-pw-4"):
        assert secret not in page, secret


def test_the_app_s_answers_are_not_stored_but_static_files_may_be(client, locked, make_batch):
    for url, headers in (
        ("/api/batches", {"HTTP_AUTHORIZATION": f"Token {TOKEN}"}),
        ("/api/batches", {}),
        ("/", {}),
        ("/healthz?parts=database", {}),
    ):
        assert "no-store" in client.get(url, **headers)["Cache-Control"], url
    assert "no-store" not in client.get("/static/main/sendit.css").get("Cache-Control", "")
