"""Every operator command as a process in a `make run`-like checkout, with no extra environment
scripts/run_node.py's prepare() makes var/ (password, keys, SQLite database),
then retry_batch, import_folder, batch_logs, export_metrics, summary_metrics and cleanup run
as a person would type them. The checkout's var/ and data/ are moved to a temporary folder
(VAR_DIR, DATA_FOLDER, MEDIA_ROOT, DATABASE_URL: where, not how) and Orthanc is the session's.
"""

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.node import ROOT
from tests.services import make_ct_series, stop_process

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        (ROOT / "sendit/settings/secrets.py").exists(), reason="a local secrets.py would supply the password"
    ),
]

PATIENT = "MRN-MAKE-RUN-5150"


def checkout_env(tmp, orthanc):
    """The environment of a shell in a make-run checkout: nothing of sendit's but where its
    folders are (and which Orthanc), no password, no secret, no settings module."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")}
    return {
        **keep,
        "VAR_DIR": str(tmp / "var"),
        "DATA_FOLDER": str(tmp / "data"),
        "MEDIA_ROOT": str(tmp / "var" / "media"),
        "DATABASE_URL": f"sqlite:///{tmp}/var/sendit.sqlite3",
        "ORTHANC_URL": orthanc.url,
        "ORTHANC_PORT": str(orthanc.dicom_port),
    }


def run(env, *args, check=True):
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def batch_json(env, batch_id):
    return json.loads(run(env, "batch_logs", str(batch_id), "--json").stdout)


def until(predicate, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    return predicate()


def test_every_operator_command_works_as_make_run_left_the_checkout(tmp_path, orthanc_server):
    orthanc_server.clear()
    env = checkout_env(tmp_path, orthanc_server)
    for name in ("LOCKDOWN_PASSWORDS", "SECRET_KEY", "DEID_SECRET", "DJANGO_SETTINGS_MODULE", "LOCKDOWN_ENABLED"):
        assert name not in env
    (tmp_path / "data").mkdir()
    prepare = "import sys; sys.path.insert(0, 'scripts'); import run_node; run_node.prepare()"
    subprocess.run([sys.executable, "-c", prepare], cwd=ROOT, env=env, check=True, timeout=180, capture_output=True)
    assert (tmp_path / "var" / "lockdown_password").stat().st_mode & 0o777 == 0o600

    # A study with a file that is not DICOM, queued by hand; a worker of the checkout takes it.
    folder = tmp_path / "data" / "ST-000007"
    make_ct_series(folder, 2, patient_id=PATIENT, rows=32, columns=32)
    (folder / "junk.txt").write_text("not DICOM")
    assert "queued ST-000007" in run(env, "import_folder", str(folder)).stdout
    log = open(tmp_path / "worker.log", "ab")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "sendit",
            "worker",
            "--concurrency",
            "1",
            "--without-mingle",
            "--without-gossip",
            "-n",
            f"mr-{uuid.uuid4().hex[:6]}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:

        def stopped():
            try:
                data = batch_json(env, 1)
            except AssertionError:
                return None  # not imported yet
            return (
                data
                if data["status"] == "DONEPROCESSING" and data["has_error"] and data["log"].get("steps", {}).get("send")
                else None
            )

        data = until(stopped)
        assert data, (tmp_path / "worker.log").read_text()[-3000:]
        assert data["state"] == "1 file set aside in ST-000007.err: not DICOM (1)"

        # The person removes the bad file and retries from the command line: the batch ends DONE.
        (tmp_path / "data" / "ST-000007.err" / "junk.txt").unlink()
        out = run(env, "retry_batch", "1").stdout
        assert "batch 1 ST-000007: queued cleanup" in out, out
        done = until(lambda: (d := batch_json(env, 1))["status"] == "DONE" and d)
        assert done and not done["has_error"] and done["log"]["cleanup"] == "done"
        assert not (tmp_path / "data" / "ST-000007.err").exists()
    finally:
        stop_process(worker)
        log.close()
    assert len(orthanc_server.instances()) == 2

    text = run(env, "batch_logs", "1").stdout
    assert "state: Delivered and cleaned up" in text
    assert "(audit)" in text and "retry from command retry_batch (user " in text and "queued cleanup" in text
    assert "no batch 99" in run(env, "batch_logs", "99", check=False).stderr
    assert "nothing to retry (Delivered and cleaned up)" in run(env, "retry_batch", "1").stdout

    out = run(env, "export_metrics", "--output-dir", str(tmp_path)).stdout
    assert "wrote 1 batches" in out and list(tmp_path.glob("sendit-process-time-*.tsv"))
    summary = json.loads(run(env, "summary_metrics").stdout)
    assert summary and PATIENT not in json.dumps(summary)
    assert (
        "would delete 1 finished batch(es) older than 0 days"
        in run(env, "cleanup", "--older-than", "0", "--dry-run").stdout
    )
    assert "deleted 0 finished batch(es) older than 30 days" in run(env, "cleanup", "--older-than", "30").stdout
