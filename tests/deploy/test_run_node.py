"""`make run` on embedded defaults: no manual step, and nothing it keeps readable by others.

scripts/run_node.py's preparation runs for real (private folders, the password made once,
migrate, collectstatic) with VAR_DIR in a temporary folder and a permissive umask, as a
laptop's shell has; then every file under var/ is the user's alone.
"""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What tests/settings.py puts into the environment: make run has none of it.
NOT_SET = (
    "DJANGO_",
    "PYTEST",
    "SECRET_KEY",
    "DEID_SECRET",
    "LOCKDOWN",
    "API_TOKENS",
    "DATA_FOLDER",
    "MEDIA_ROOT",
    "DATABASE_URL",
    "CELERY_",
    "LOG_DIR",
    "VAR_DIR",
    "SENDIT_TEST",
    "DEBUG",
)


@pytest.mark.skipif(
    (ROOT / "sendit/settings/secrets.py").exists(), reason="a local secrets.py would supply the secrets"
)
def test_make_run_prepares_a_private_node_with_no_manual_step(tmp_path):
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_SET)}
    # The defaults of config.py, moved under tmp_path (they name the checkout's var/).
    env.update(
        VAR_DIR=str(var),
        DATABASE_URL=f"sqlite:///{var}/sendit.sqlite3",
        MEDIA_ROOT=str(var / "media"),
        DATA_FOLDER=str(tmp_path / "data"),
        WATCHER_LOG_DIR=str(var),
    )
    code = "import os, runpy; os.umask(0o022); print(runpy.run_path('scripts/run_node.py')['prepare']())"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (var / "lockdown_password").is_file() and (var / "sendit.sqlite3").is_file()
    assert (var / "secret_key").is_file() and (var / "deid_secret").is_file() and (var / "media").is_dir()

    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    # collectstatic copies the packages' modes: the static files are public anyway.
    kept = [p for p in [var, *var.rglob("*")] if (var / "static") not in p.parents]
    opened = [p for p in kept if stat.S_IMODE(p.lstat().st_mode) & 0o077]
    assert not opened, f"readable by others: {[(str(p), oct(p.lstat().st_mode)) for p in opened[:10]]}"

    # A var/ left world-readable by an older sendit is closed again.
    var.chmod(0o755)
    again = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
