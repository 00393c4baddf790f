"""The lockdown: the whole site behind a password, the API too (or a token), CSRF on the form."""

import re
import time

import pytest
from django.test import Client

from tests.apps.web.conftest import PASSWORD, TOKEN

pytestmark = pytest.mark.django_db

PAGES = ["/", "/partials/dashboard/", "/settings/", "/batches/1/", "/images/1/", "/api/docs/"]


def login(client, password=PASSWORD):
    page = client.get("/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    return client.post("/", {"password": password, "csrfmiddlewaretoken": token})


@pytest.mark.parametrize("url", PAGES)
def test_every_page_shows_the_password_form(client, locked, url):
    response = client.get(url, HTTP_ACCEPT="text/html")
    html = response.content.decode()
    assert 'id="lockdown-form"' in html and "csrfmiddlewaretoken" in html
    assert "no-store" in response["Cache-Control"]


def test_the_right_password_opens_the_site_and_log_out_closes_it(locked):
    client = Client(enforce_csrf_checks=True)
    response = login(client)
    assert response.status_code == 302
    assert 'id="live"' in client.get("/").content.decode()
    assert client.get("/api/batches").status_code == 200
    page = client.get("/").content.decode()
    assert 'action="/logout/"' in page
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert client.post("/logout/", {"csrfmiddlewaretoken": csrf}).status_code == 302
    assert 'id="lockdown-form"' in client.get("/").content.decode()


def test_a_wrong_password_is_refused(locked):
    client = Client(enforce_csrf_checks=True)
    response = login(client, "wrong")
    html = response.content.decode()
    assert response.status_code == 200 and "Incorrect password." in html and 'id="lockdown-form"' in html
    assert 'id="lockdown-form"' in client.get("/").content.decode()


def test_the_password_form_needs_the_csrf_token(locked):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/", {"password": PASSWORD})
    assert response.status_code == 403
    assert 'id="lockdown-form"' in client.get("/").content.decode()


def test_changing_the_password_logs_everyone_out(client, locked):
    login(client)
    locked.LOCKDOWN_PASSWORDS = ("a new one",)
    assert 'id="lockdown-form"' in client.get("/").content.decode()


def test_lockdown_off_is_read_at_request_time(client, settings):
    settings.LOCKDOWN_ENABLED = True
    settings.LOCKDOWN_PASSWORDS = (PASSWORD,)
    assert 'id="lockdown-form"' in client.get("/").content.decode()
    settings.LOCKDOWN_ENABLED = False
    assert 'id="live"' in client.get("/").content.decode()


def test_the_api_without_credentials_is_401_json(client, locked):
    for url in ("/api/batches", "/api/batches/", "/api/images", "/api/schema", "/api/"):
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.json()["detail"].startswith("Authentication required")
        assert response["WWW-Authenticate"].startswith("Token")


def test_a_valid_token_passes_the_lockdown_for_the_api_only(client, locked):
    assert client.get("/api/batches", HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 200
    assert client.get("/api/schema", HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 200
    page = client.get("/", HTTP_AUTHORIZATION=f"Token {TOKEN}").content.decode()
    assert 'id="lockdown-form"' in page


@pytest.mark.parametrize("header", ["Token nope", "Token", "Basic dXNlcjpwYXNz", f"Token {TOKEN}x"])
def test_a_wrong_token_is_401(client, locked, header):
    response = client.get("/api/batches", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401


def test_no_tokens_configured_means_no_token_passes(client, locked):
    locked.API_TOKENS = ()
    assert client.get("/api/batches", HTTP_AUTHORIZATION="Token ").status_code == 401
    assert client.get("/api/batches", HTTP_AUTHORIZATION="Token anything").status_code == 401


def test_static_files_need_no_password(client, locked):
    assert client.get("/static/main/sendit.css").status_code == 200


def test_session_cookie_is_httponly_and_samesite(locked):
    client = Client(enforce_csrf_checks=True)
    response = login(client)
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"


def test_wrong_passwords_are_throttled_per_address(locked, settings):
    settings.LOCKDOWN_MAX_FAILURES = 3
    settings.LOCKDOWN_LOCKOUT_SECONDS = 1
    client = Client(REMOTE_ADDR="10.9.1.1")
    for _ in range(3):
        assert login(client, "wrong").status_code == 200  # the form again
    refused = login(client, PASSWORD)  # even the right one waits now
    assert refused.status_code == 429 and b"Too many wrong passwords" in refused.content
    other = Client(REMOTE_ADDR="10.9.9.9")  # another address is not held back
    assert login(other, PASSWORD).status_code == 302
    time.sleep(1.2)  # the lock-out ends: the right password goes through
    assert login(client, PASSWORD).status_code == 302


def test_a_right_password_clears_the_count(locked, settings):
    settings.LOCKDOWN_MAX_FAILURES = 3
    client = Client(REMOTE_ADDR="10.9.1.2")
    login(client, "wrong")
    login(client, "wrong")
    assert login(client, PASSWORD).status_code == 302
    client.post("/logout/")
    login(client, "wrong")
    login(client, "wrong")
    assert login(client, PASSWORD).status_code == 302
