"""Production settings: refuse to run open, and `check --deploy` is clean over https."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def manage(tmp_path, *args, **env):
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LOCKDOWN", "SECURE", "HTTPS", "DEBUG", "API_TOKENS", "DJANGO_SETTINGS"))
    }
    base.update(
        {
            "DJANGO_SETTINGS_MODULE": "sendit.settings",
            "VAR_DIR": str(tmp_path / "var"),
            "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
            "DATA_FOLDER": str(tmp_path / "data"),
            "MEDIA_ROOT": str(tmp_path / "media"),
            "LOG_DIR": str(tmp_path / "logs"),
        }
    )
    base.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=base, capture_output=True, text=True, timeout=120
    )


# Real secrets, as scripts/make_secrets.py makes them.
GOOD = {
    "SECRET_KEY": secrets.token_urlsafe(48),
    "DEID_SECRET": secrets.token_urlsafe(48),
    "LOCKDOWN_PASSWORDS": secrets.token_urlsafe(18),
}


needs_no_secrets_py = pytest.mark.skipif(
    (ROOT / "sendit/settings/secrets.py").exists(), reason="a local secrets.py would supply a password"
)


@needs_no_secrets_py
def test_lockdown_without_a_password_refuses_to_start(tmp_path):
    result = manage(tmp_path, "check", SECRET_KEY=GOOD["SECRET_KEY"])
    assert result.returncode != 0
    assert "LOCKDOWN_ENABLED is true but no LOCKDOWN_PASSWORDS is set" in result.stderr


@needs_no_secrets_py
def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = manage(
        tmp_path,
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        **GOOD,
        SECURE_SSL="true",
        ALLOWED_HOSTS="sendit.example.org",
        API_TOKENS=f"{secrets.token_urlsafe(32)},{secrets.token_urlsafe(32)}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@needs_no_secrets_py
def test_https_alias_and_debug_default_off(tmp_path):
    code = (
        "from django.conf import settings as s; print(s.DEBUG, s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_HTTPONLY, s.SESSION_COOKIE_SAMESITE, "
        "s.API_TOKENS)"
    )
    a, b = "a" + secrets.token_hex(16), "b" + secrets.token_hex(16)
    result = manage(tmp_path, "shell", "--no-imports", "-c", code, **GOOD, HTTPS="true", API_TOKENS=f"{a}, {b}")
    assert result.stdout.split() == ["False", "True", "True", "31536000", "True", "Lax", f"('{a}',", f"'{b}')"], (
        result.stderr
    )
    plain = manage(
        tmp_path,
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE)",
        **GOOD,
    )
    assert plain.stdout.strip() == "False", plain.stderr


def bogus_secrets():
    """The values of sendit/settings/bogus_secrets.py, which `cp` used to make secrets.py."""
    import runpy

    return runpy.run_path(str(ROOT / "sendit/settings/bogus_secrets.py"))


@needs_no_secrets_py
@pytest.mark.parametrize("name", ["SECRET_KEY", "DEID_SECRET", "LOCKDOWN_PASSWORDS"])
def test_a_placeholder_or_short_secret_refuses_to_start(tmp_path, name):
    bogus = bogus_secrets()[name]
    for weak in (",".join(bogus) if isinstance(bogus, tuple) else bogus, secrets.token_urlsafe(8)):
        result = manage(tmp_path, "check", **{**GOOD, name: weak})
        assert result.returncode != 0, (name, weak)
        assert f"{name} is" in result.stderr and "refuses to start" in result.stderr
        assert "scripts/make_secrets.py" in result.stderr and "setup_instance.sh" in result.stderr
        assert weak not in result.stderr  # the refusal does not print the secret


@needs_no_secrets_py
def test_a_short_api_token_refuses_to_start(tmp_path):
    result = manage(tmp_path, "check", **GOOD, API_TOKENS=f"{secrets.token_urlsafe(32)},short-token")
    assert result.returncode != 0 and "API_TOKENS is shorter than 32 characters" in result.stderr


@needs_no_secrets_py
def test_debug_on_runs_with_placeholders(tmp_path):
    bogus = bogus_secrets()
    result = manage(
        tmp_path,
        "check",
        DEBUG="true",
        SECRET_KEY=bogus["SECRET_KEY"],
        DEID_SECRET=bogus["DEID_SECRET"],
        LOCKDOWN_PASSWORDS=bogus["LOCKDOWN_PASSWORDS"][0],
    )
    assert result.returncode == 0, result.stderr


@needs_no_secrets_py
def test_make_secrets_writes_secrets_a_node_starts_with(tmp_path):
    import runpy
    import stat

    out = tmp_path / "secrets.py"
    script = [sys.executable, str(ROOT / "scripts/make_secrets.py"), "--out", str(out)]
    made = subprocess.run(script, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    values = runpy.run_path(str(out))
    env = {
        "SECRET_KEY": values["SECRET_KEY"],
        "DEID_SECRET": values["DEID_SECRET"],
        "LOCKDOWN_PASSWORDS": ",".join(values["LOCKDOWN_PASSWORDS"]),
    }
    assert len(set(env.values())) == 3
    result = manage(tmp_path, "check", **env)
    assert result.returncode == 0, result.stderr
    # Never overwritten: a DEID_SECRET in use must stay.
    before = out.read_text()
    again = subprocess.run(script, capture_output=True, text=True)
    assert again.returncode != 0 and "exists" in again.stderr and out.read_text() == before


@pytest.mark.django_db
def test_every_page_carries_a_strict_content_security_policy(client, settings):
    settings.LOCKDOWN_ENABLED = False
    for url in ("/", "/settings/", "/api/docs"):
        policy = client.get(url)["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    page = client.get("/api/docs").content.decode()
    assert "<script>" not in page.replace(" ", "")  # the Swagger start-up script is a file
