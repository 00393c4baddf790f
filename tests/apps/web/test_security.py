"""Production settings: refuse to run open, and `check --deploy` is clean over https."""
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def manage(tmp_path, *args, **env):
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("LOCKDOWN", "SECURE", "HTTPS", "DEBUG", "API_TOKENS", "DJANGO_SETTINGS"))}
    base.update({"DJANGO_SETTINGS_MODULE": "sendit.settings", "VAR_DIR": str(tmp_path / "var"),
                 "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3", "DATA_FOLDER": str(tmp_path / "data"),
                 "MEDIA_ROOT": str(tmp_path / "media"), "LOG_DIR": str(tmp_path / "logs")})
    base.update(env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=base,
                          capture_output=True, text=True, timeout=120)


needs_no_secrets_py = pytest.mark.skipif((ROOT / "sendit/settings/secrets.py").exists(),
                                         reason="a local secrets.py would supply a password")


@needs_no_secrets_py
def test_lockdown_without_a_password_refuses_to_start(tmp_path):
    result = manage(tmp_path, "check", SECRET_KEY="x" * 60)
    assert result.returncode != 0
    assert "LOCKDOWN_ENABLED is true but no LOCKDOWN_PASSWORDS is set" in result.stderr


@needs_no_secrets_py
def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING",
                    SECRET_KEY=secrets.token_urlsafe(60), LOCKDOWN_PASSWORDS="a-long-password",
                    SECURE_SSL="true", ALLOWED_HOSTS="sendit.example.org", API_TOKENS="t1,t2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@needs_no_secrets_py
def test_https_alias_and_debug_default_off(tmp_path):
    code = ("from django.conf import settings as s; print(s.DEBUG, s.SESSION_COOKIE_SECURE, "
            "s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_HTTPONLY, s.SESSION_COOKIE_SAMESITE, "
            "s.API_TOKENS)")
    result = manage(tmp_path, "shell", "--no-imports", "-c", code, SECRET_KEY="x" * 60, LOCKDOWN_PASSWORDS="pw",
                    HTTPS="true", API_TOKENS="a, b")
    assert result.stdout.split() == ["False", "True", "True", "31536000", "True", "Lax", "('a',", "'b')"], \
        result.stderr
    plain = manage(tmp_path, "shell", "--no-imports", "-c", "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE)",
                   SECRET_KEY="x" * 60, LOCKDOWN_PASSWORDS="pw")
    assert plain.stdout.strip() == "False", plain.stderr


@pytest.mark.django_db
def test_every_page_carries_a_strict_content_security_policy(client, settings):
    settings.LOCKDOWN_ENABLED = False
    for url in ("/", "/settings/", "/api/docs"):
        policy = client.get(url)["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    page = client.get("/api/docs").content.decode()
    assert "<script>" not in page.replace(" ", "")  # the Swagger start-up script is a file
