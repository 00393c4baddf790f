#!/usr/bin/env python
"""Run a whole sendit node in the foreground: web page, worker, watcher, DICOM receiver (and a
local Orthanc).

`make run` calls this after setting up .venv. Ctrl-C stops everything it started.
On embedded defaults it needs no server: SQLite under var/ and kombu's filesystem
broker. When SEND_TO_ORTHANC is on and nothing answers at ORTHANC_URL, it starts
Debian's Orthanc on 127.0.0.1 (REST 8042, DICOM 4242) with its data under var/orthanc.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("VAR_DIR") or ROOT / "var")
PY = sys.executable


def say(message):
    print(f"sendit: {message}", flush=True)


def lockdown_password():
    """The status page password: from the environment, secrets.py, or made once in var/."""
    if os.environ.get("LOCKDOWN_PASSWORDS") or (ROOT / "sendit/settings/secrets.py").exists():
        return None
    path = VAR / "lockdown_password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    os.environ["LOCKDOWN_PASSWORDS"] = path.read_text().strip()
    return path


def answers(url):
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/system", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it is there, maybe behind a password
    except OSError:
        return False


def local_orthanc():
    """Start Debian's Orthanc when the configured one does not answer; None if not needed."""
    if os.environ.get("SEND_TO_ORTHANC", "true").lower() in ("0", "false", "no", "off"):
        return None
    url = os.environ.get("ORTHANC_URL", "http://127.0.0.1:8042")
    if answers(url):
        say(f"using the Orthanc at {url}")
        return None
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not os.path.exists(binary):
        say("no Orthanc answers and Debian's orthanc package is not installed: images will wait in media")
        return None
    port = int(url.rsplit(":", 1)[-1].split("/")[0]) if url.count(":") == 2 else 8042
    home = VAR / "orthanc"
    (home / "db").mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "sendit-local",
        "StorageDirectory": str(home / "db"),
        "IndexDirectory": str(home / "db"),
        "HttpPort": port,
        "DicomPort": int(os.environ.get("ORTHANC_PORT", os.environ.get("ORTHAC_PORT", 4242))),
        "DicomAet": os.environ.get("ORTHANC_AET", "ORTHANC"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "DicomAlwaysAllowStore": True,
        "DicomCheckCalledAet": False,
        "UnknownSopClassAccepted": True,
        # 128 kB PDUs instead of DCMTK's 16 kB: a C-STORE of a CT slice in 4 PDUs, not 32.
        "MaximumPduLength": 131072,
    }
    (home / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = open(home / "orthanc.log", "ab")
    # TCP_NODELAY=1 keeps DCMTK's Nagle delay off C-STORE answers (docs/storage.md).
    proc = subprocess.Popen(
        [binary, str(home / "orthanc.json")], stdout=log, stderr=log, env={**os.environ, "TCP_NODELAY": "1"}
    )
    for _ in range(100):
        if answers(url):
            say(f"started a local Orthanc at {url} (data in var/orthanc)")
            return proc
        time.sleep(0.2)
    say("the local Orthanc did not start; see var/orthanc/orthanc.log")
    return proc


def private_state():
    """Only this user may read what the node keeps: the SQLite database, the keys and
    password in var/, and media (identified images until they are de-identified).

    umask 077 makes every file the node's processes create 0600 and every folder 0700;
    var/ itself (and with it a var/ made world-readable by an older sendit) becomes 0700.
    """
    os.umask(0o077)
    VAR.mkdir(parents=True, exist_ok=True)
    VAR.chmod(0o700)


def prepare():
    """Everything before the processes start: private folders, password, database, static."""
    private_state()
    os.chdir(ROOT)
    password_file = lockdown_password()
    # Random SECRET_KEY and DEID_SECRET kept in var/ when the environment and secrets.py
    # give none (loading the settings never writes them).
    sys.path.insert(0, str(ROOT))
    from sendit.config import make_local_secrets

    make_local_secrets(VAR)
    manage = [PY, "manage.py"]
    subprocess.run(manage + ["migrate", "--noinput", "-v", "0"], check=True)
    subprocess.run(manage + ["collectstatic", "--noinput", "-v", "0"], check=True)
    return password_file


def main():
    password_file = prepare()
    manage = [PY, "manage.py"]
    processes = {}
    orthanc = local_orthanc()
    if orthanc:
        processes["orthanc"] = orthanc
    address = os.environ.get("SENDIT_ADDRESS", "127.0.0.1:8000")
    processes["web"] = subprocess.Popen(manage + ["runserver", address, "--noreload", "--insecure"])
    processes["worker"] = subprocess.Popen(
        [
            PY,
            "-m",
            "celery",
            "-A",
            "sendit",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            os.environ.get("WORKER_CONCURRENCY", "2"),
        ]
    )
    processes["watcher"] = subprocess.Popen(manage + ["watcher_start", "--foreground"])
    # The DICOM receiver (C-STORE SCP) drops arriving studies into data/ for the watcher.
    processes["receiver"] = subprocess.Popen(manage + ["dicom_receiver"])
    say(
        f"status page: http://{address}/"
        + (f" (password in {password_file.relative_to(ROOT)})" if password_file else "")
    )
    say(
        "drop a study folder into data/ as NAME.tmp1, then rename it to NAME, or send it over DICOM to "
        f"{os.environ.get('RECEIVER_AET', 'SENDIT')} at {os.environ.get('RECEIVER_BIND', '127.0.0.1')}:"
        f"{os.environ.get('RECEIVER_PORT', '11112')}. Ctrl-C stops the node."
    )

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while not stopping:
        for name, proc in processes.items():
            if proc.poll() is not None:
                say(f"{name} exited with code {proc.returncode}; stopping the node")
                code, stopping = 1, True
                break
        time.sleep(0.5)
    for proc in reversed(list(processes.values())):
        if proc.poll() is None:
            proc.terminate()
    for proc in processes.values():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return code


if __name__ == "__main__":
    sys.exit(main())
