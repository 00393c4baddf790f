"""A broken STUDY_DEID recipe stops the node's processes at start, with its file and line:
manage.py check, the watcher's command and a Celery worker, run as real processes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BROKEN = "FORMAT dicom\n%header\nREMOVE PatientName\nremove PatientID\n"
MESSAGE = "line 4: 'remove': actions are written in capitals"


def node_env(tmp_path, recipe: str) -> dict:
    path = tmp_path / "site.dicom"
    path.write_text(recipe)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))}
    env.update(
        STUDY_DEID=str(path),
        LOCKDOWN_ENABLED="false",
        CELERY_BROKER_URL="memory://",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        VAR_DIR=str(tmp_path / "var"),
        MEDIA_ROOT=str(tmp_path / "media"),
        DATA_FOLDER=str(tmp_path / "data"),
        DJANGO_SETTINGS_MODULE="sendit.settings",
    )
    return env


def run(args, env) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [["manage.py", "check"], ["manage.py", "start_watcher"]])
def test_management_commands_refuse_a_broken_recipe(tmp_path, command):
    done = run([sys.executable, *command], node_env(tmp_path, BROKEN))
    assert done.returncode != 0
    assert "sendit.E101" in done.stderr and MESSAGE in done.stderr and str(tmp_path / "site.dicom") in done.stderr


def test_a_worker_does_not_start_on_a_broken_recipe(tmp_path):
    celery = Path(sys.executable).parent / "celery"
    done = run([str(celery), "-A", "sendit", "worker", "--pool=solo", "-l", "warning"], node_env(tmp_path, BROKEN))
    assert done.returncode != 0
    assert f"sendit worker not started: STUDY_DEID: {tmp_path / 'site.dicom'}, {MESSAGE[:7]}" in done.stderr


def test_a_shipped_recipe_by_name_passes_the_check(tmp_path):
    env = node_env(tmp_path, BROKEN)
    env["STUDY_DEID"] = "deid.dicom"
    done = run([sys.executable, "manage.py", "check"], env)
    assert done.returncode == 0, done.stderr
    assert "sendit.W101" in done.stderr and "'PatientsName' is no DICOM keyword" in done.stderr
