"""The production stack without containers: nginx (the project's nginx.conf) -> uwsgi
(uwsgi.ini) -> Django on PostgreSQL, a Celery worker on Redis and the watcher, each started
with scripts/entrypoint.sh as in the image. A study dropped into the data folder reaches
Orthanc, and the password-locked dashboard loads through nginx.
"""

import http.cookiejar
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from tests.deploy.test_files import substituted
from tests.services import free_port, make_ct_series, reachable

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
POSTGRES = "postgres://postgres@127.0.0.1:5432"
PASSWORD = "stack-" + uuid.uuid4().hex[:12]


def nginx_binary():
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def uwsgi_binary():
    for candidate in (VENV_BIN / "uwsgi", shutil.which("uwsgi")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def missing():
    if not nginx_binary():
        return "nginx is not installed (apt-get install nginx)"
    if not uwsgi_binary():
        return "uwsgi is not installed (.venv/bin/pip install uwsgi)"
    if not reachable(6379):
        return "Redis does not answer on 127.0.0.1:6379 (scripts/test_services.sh starts it)"
    if not reachable(5432):
        return "PostgreSQL does not answer on 127.0.0.1:5432 (scripts/test_services.sh starts it)"
    return None


class Stack:
    """The processes of one stack; each stopped by the pid it was started with."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = {}

    def start(self, name, args, env=None, cwd=ROOT):
        log = open(self.tmp / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        return self.procs[name]

    def check_alive(self):
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}:\n{self.log(name)}"

    def log(self, name, tail=4000):
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def stop(self):
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_for(condition, timeout, stack, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(
        f"timed out waiting for {what}\n" + "\n".join(f"--- {n}\n{stack.log(n, 2000)}" for n in stack.procs)
    )


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(opener, url, data=None):
    request = urllib.request.Request(url, data=data)
    if data is not None:  # as a browser posts a form: Origin and Referer (Django's CSRF checks them)
        parts = urllib.parse.urlsplit(url)
        request.add_header("Origin", f"{parts.scheme}://{parts.netloc}")
        request.add_header("Referer", url)
    try:
        with opener.open(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode("utf-8", "replace")


@pytest.fixture
def database():
    """A throw-away PostgreSQL database, dropped afterwards."""
    import psycopg

    name = "sendit_deploy_" + uuid.uuid4().hex[:8]
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{POSTGRES}/{name}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def broker():
    """An empty Redis database number, claimed (so that tests running side by side take
    different ones), emptied again afterwards."""
    import redis

    for number in (12, 13, 14, 15, 11, 10):
        client = redis.Redis(host="127.0.0.1", port=6379, db=number)
        if client.set("sendit-tests:claimed", "1", nx=True):
            if client.dbsize() == 1:
                break
            client.delete("sendit-tests:claimed")  # in use by something else
    else:
        pytest.skip("no empty Redis database among 10-15")
    yield f"redis://127.0.0.1:6379/{number}"
    client.flushdb()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_production_stack_end_to_end(tmp_path, orthanc_server, database, broker, scheme):
    reason = missing()
    if reason:
        pytest.skip(reason)
    import psycopg

    orthanc_server.clear()
    data, media, var = tmp_path / "data", tmp_path / "media", tmp_path / "var"
    for folder in (data, media, var):
        folder.mkdir()
    http_port, nginx_port = free_port(), free_port()
    # uwsgi's unix socket, as in docker-compose.yml (a short folder: sun_path holds 107 bytes).
    socket_dir = Path(tempfile.mkdtemp(prefix="sendit-sock-"))
    uwsgi_socket = socket_dir / "uwsgi.sock"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST", "UWSGI"))},
        "PATH": f"{Path(uwsgi_binary()).parent}:{VENV_BIN}:{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(ROOT / ".venv"),
        "DJANGO_SETTINGS_MODULE": "sendit.settings",
        "SECRET_KEY": "stack-" + uuid.uuid4().hex + uuid.uuid4().hex,
        "DEID_SECRET": "stack-deid-secret-" + uuid.uuid4().hex,
        "LOCKDOWN_ENABLED": "true",
        "LOCKDOWN_PASSWORDS": PASSWORD,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database,
        "CELERY_BROKER_URL": broker,
        "DATA_FOLDER": str(data),
        "MEDIA_ROOT": str(media),
        "VAR_DIR": str(var),
        "WATCHER_PID_FILE": str(var / "watcher.pid"),
        "WATCHER_LOG_DIR": str(var),
        "ORTHANC_URL": orthanc_server.url,
        "ORTHANC_PORT": str(orthanc_server.dicom_port),
        "SEND_TO_ORTHANC": "true",
        "SEND_TO_GOOGLE": "false",
        "SENDIT_UWSGI_SOCKET": str(uwsgi_socket),
        "SENDIT_UWSGI_HTTP": f"127.0.0.1:{http_port}",
        "SENDIT_UWSGI_PROCESSES": "2",
        "WORKER_CONCURRENCY": "2",
        "WORKER_NAME": f"deploy-{uuid.uuid4().hex[:6]}@%h",
    }
    entry = str(ROOT / "scripts/entrypoint.sh")
    static = var / "static"  # STATIC_ROOT is VAR_DIR/static
    conf = tmp_path / "nginx.conf"
    handlers = []
    if scheme == "http":
        conf.write_text(
            substituted((ROOT / "nginx.conf").read_text(), tmp_path, nginx_port, f"unix:{uwsgi_socket}", static)
        )
        base = f"http://127.0.0.1:{nginx_port}/"
    else:
        # https/nginx.conf with a certificate made by scripts/generate_certs.sh, and the
        # SECURE_* settings docker-compose.yml gives uwsgi.
        certs = tmp_path / "certs"
        subprocess.run(
            [str(ROOT / "scripts/generate_certs.sh"), "--self-signed", "--domain", "localhost", "--out", str(certs)],
            check=True,
            capture_output=True,
        )
        tls_port = free_port()
        conf.write_text(
            substituted(
                (ROOT / "https/nginx.conf").read_text(),
                tmp_path,
                nginx_port,
                f"unix:{uwsgi_socket}",
                static,
                extra=[
                    ("listen 443 ssl http2 default_server;", f"listen 127.0.0.1:{tls_port} ssl http2 default_server;"),
                    ("/etc/nginx/certs/", f"{certs}/"),
                    ("root /var/www/acme;", f"root {tmp_path};"),
                ],
            )
        )
        tls_env = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["uwsgi"]["environment"]
        env.update(
            {k: str(v).replace("${SECURE_SSL:-true}", "true") for k, v in tls_env.items() if k.startswith("SECURE_")}
        )
        base = f"https://127.0.0.1:{tls_port}/"
        context = ssl.create_default_context(cafile=str(certs / "fullchain.pem"))
        handlers.append(urllib.request.HTTPSHandler(context=context))
    stack = Stack(tmp_path)
    try:

        def role_env(role):
            return {**env, "SENDIT_ROLE_FILE": str(tmp_path / f"{role}.role")}

        stack.start("uwsgi", [entry, "uwsgi"], role_env("uwsgi"))
        wait_for(lambda: reachable(http_port), 120, stack, "uwsgi (migrate, collectstatic, start)")
        stack.start("worker", [entry, "worker"], role_env("worker"))
        stack.start("watcher", [entry, "watcher"], role_env("watcher"))
        stack.start(
            "nginx",
            [
                nginx_binary(),
                "-g",
                "daemon off;",
                "-p",
                str(tmp_path),
                "-e",
                str(tmp_path / "error.log"),
                "-c",
                str(conf),
            ],
        )
        wait_for(lambda: reachable(nginx_port), 30, stack, "nginx")
        wait_for(lambda: (var / "watcher.pid").exists(), 60, stack, "the watcher's pid file")

        # The health checks of the image pass for each service (retried, as Docker does
        # during a start period: the worker needs a few seconds to join the broker).
        for role in ("uwsgi", "watcher", "worker"):

            def healthy():
                check = subprocess.run(
                    [entry, "healthcheck"], env=role_env(role), cwd=ROOT, capture_output=True, text=True, timeout=60
                )
                return check.returncode == 0

            wait_for(healthy, 90, stack, f"the {role} health check")

        # A study arrives the atomic way: NAME.tmp1, renamed to NAME when complete.
        make_ct_series(data / "ST-DEPLOY.tmp1", 3, patient_id="PHI-DEPLOY-1", patient_name="Secret^Deploy")
        (data / "ST-DEPLOY.tmp1").rename(data / "ST-DEPLOY")

        def batch_status():
            with psycopg.connect(database) as conn:
                row = conn.execute("SELECT status, has_error FROM main_batch WHERE uid = %s", ("ST-DEPLOY",)).fetchone()
            return row if row and row[0] == "DONE" else None

        assert wait_for(batch_status, 180, stack, "batch ST-DEPLOY to be DONE") == ("DONE", False)
        instances = orthanc_server.instances()
        assert len(instances) == 3
        for instance in instances:
            tags = orthanc_server.get_json(f"/instances/{instance}/simplified-tags")
            assert not tags["PatientID"].startswith("PHI-DEPLOY")
        assert not (data / "ST-DEPLOY").exists()

        # The dashboard through nginx: locked until the lockdown form gets the password.
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), *handlers)
        plain = urllib.request.build_opener(*handlers)
        if scheme == "https":
            # Plain http only redirects; the session cookie is marked Secure.
            status, headers, _ = get(
                urllib.request.build_opener(NoRedirect), f"http://127.0.0.1:{nginx_port}/batches/1/?x=1"
            )
            assert status == 301 and headers["Location"] == "https://127.0.0.1/batches/1/?x=1"
        status, headers, body = get(browser, base)
        assert status == 200 and 'name="password"' in body and "ST-DEPLOY" not in body
        assert headers.get("X-Content-Type-Options") == "nosniff"
        assert headers.get("X-Frame-Options") == "DENY"
        assert "Content-Security-Policy" in headers
        assert "nginx/" not in headers.get("Server", "")  # server_tokens off
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body)
        form = {"password": "wrong"}
        if csrf:
            form["csrfmiddlewaretoken"] = csrf.group(1)
        status, _, body = get(browser, base, urllib.parse.urlencode(form).encode())
        assert 'name="password"' in body and "ST-DEPLOY" not in body
        form["password"] = PASSWORD
        status, _, body = get(browser, base, urllib.parse.urlencode(form).encode())
        assert status == 200 and "ST-DEPLOY" in body, body[:2000]
        status, headers, body = get(browser, base)
        assert status == 200 and "ST-DEPLOY" in body and 'name="password"' not in body
        if scheme == "https":
            assert all(c.secure for c in jar if c.name == "sessionid") and any(c.name == "sessionid" for c in jar)
            assert headers["Strict-Transport-Security"] == "max-age=31536000"  # once, from nginx

        # Static files come from nginx (collected by the uwsgi entry point), media never.
        collected = sorted(p for p in static.rglob("*") if p.is_file())
        assert collected, "collectstatic put nothing in STATIC_ROOT"
        relative = collected[0].relative_to(static).as_posix()
        status, headers, _ = get(plain, base + "static/" + relative)
        assert status == 200 and "max-age=" in headers.get("Cache-Control", "")
        assert "static/" + relative not in stack.log("uwsgi", 10**6), "static was served by uwsgi"
        assert get(plain, base + "media/x")[0] == 404
        assert get(urllib.request.build_opener(), f"http://127.0.0.1:{nginx_port}/nginx-health")[0] == 200

        logs = "".join(stack.log(n, 10**6) for n in stack.procs)
        assert "PHI-DEPLOY" not in logs and "Secret^Deploy" not in logs
        stack.check_alive()
    finally:
        stack.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)
    # Every service stopped on SIGTERM (docker stop), and the watcher removed its pid file.
    for name, proc in stack.procs.items():
        assert proc.returncode is not None, name
    assert not (var / "watcher.pid").exists()
