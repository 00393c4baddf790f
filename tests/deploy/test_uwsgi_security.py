"""Only nginx talks to uwsgi, and nothing a request says makes uwsgi run other code.

The uwsgi protocol trusts its peer: whoever can send a packet chooses REMOTE_ADDR (the
password throttle counts per address) and uwsgi's "magic" variables, which uwsgi 2.0 acts
on in C before Python sees the request (UWSGI_FILE=/data/NAME.err/x.py loads and runs that
file as an application). The real uwsgi runs here with the project's uwsgi.ini, behind
the real nginx with the project's nginx.conf, and gets raw uwsgi packets built by hand.
"""

import http.cookiejar
import os
import re
import shutil
import socket
import stat
import struct
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

from tests.deploy.test_files import UWSGI_SOCKET, substituted
from tests.deploy.test_stack import ROOT, VENV_BIN, Stack, nginx_binary, uwsgi_binary, wait_for
from tests.services import free_port, reachable

PASSWORD = "sec-" + uuid.uuid4().hex[:12]
MAX_FAILURES = 3

# The Python file a request names: it leaves a marker when imported.
EVIL = """
from pathlib import Path
Path({marker!r}).write_text("ran")
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"evil application ran"]
"""


def missing():
    if not nginx_binary():
        return "nginx is not installed (apt-get install nginx)"
    if not uwsgi_binary():
        return "uwsgi is not installed (.venv/bin/pip install uwsgi)"
    return None


def packet(variables, modifier1=0, modifier2=0, body=b""):
    """A uwsgi request: modifier1 (1 byte), size of the vars (2 bytes LE), modifier2 (1 byte),
    then each key and value as a 2-byte LE length and its bytes; the body follows."""
    pairs = b"".join(
        struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
        for k, v in ((k.encode(), v.encode()) for k, v in variables.items())
    )
    return struct.pack("<BHB", modifier1, len(pairs), modifier2) + pairs + body


def request_vars(path, method="GET", **extra):
    """What nginx.conf sends for a request, plus `extra` (what a forger would add)."""
    variables = {
        "REQUEST_METHOD": method,
        "REQUEST_URI": path,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_SCHEME": "http",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "HTTP_HOST": "localhost",
        "REMOTE_ADDR": "203.0.113.7",
        "REMOTE_PORT": "40000",
        "CONTENT_TYPE": "",
        "CONTENT_LENGTH": "",
    }
    variables.update(extra)
    return variables


def send(address, variables, body=b"", timeout=30):
    """One raw uwsgi packet to a unix socket path or a (host, port); the whole answer."""
    if isinstance(address, tuple):
        conn = socket.create_connection(address, timeout=timeout)
    else:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(timeout)
        conn.connect(str(address))
    with conn:
        conn.sendall(packet(variables, body=body))
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer.decode("utf-8", "replace")


def uwsgi_env(tmp, **extra):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST", "UWSGI", "SENDIT_"))},
        "PATH": f"{Path(uwsgi_binary()).parent}:{VENV_BIN}:{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(ROOT / ".venv"),
        "DJANGO_SETTINGS_MODULE": "sendit.settings",
        "SECRET_KEY": "sec-" + uuid.uuid4().hex + uuid.uuid4().hex,
        "DEID_SECRET": "sec-deid-secret-" + uuid.uuid4().hex,
        "LOCKDOWN_ENABLED": "true",
        "LOCKDOWN_PASSWORDS": PASSWORD,
        "LOCKDOWN_MAX_FAILURES": str(MAX_FAILURES),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        # The password form needs neither; no request here reaches the database or broker.
        "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
        "CELERY_BROKER_URL": "memory://",
        "VAR_DIR": str(tmp / "var"),
        "DATA_FOLDER": str(tmp / "data"),
        "MEDIA_ROOT": str(tmp / "media"),
        # One process: the throttle's count lives in that process's cache.
        "SENDIT_UWSGI_PROCESSES": "1",
        "SENDIT_UWSGI_HTTP": f"127.0.0.1:{free_port()}",
    }
    env.update(extra)
    return env


def uwsgi_pids(master):
    """The master and every process under it."""
    pids, found = {master}, True
    while found:
        found = False
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) not in pids:
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid in pids:
                    pids.add(int(entry.name))
                    found = True
    return pids


def listening_tcp_ports(pids):
    """TCP ports in LISTEN held by these processes (from /proc, so no ss or root needed)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """uwsgi (the project's uwsgi.ini, its socket a unix socket as in docker-compose.yml, plus
    a TCP socket on loopback as SENDIT_UWSGI_SOCKET could make it) behind nginx."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("uwsgi-sec")
    for name in ("var", "data", "media", "evil"):
        (tmp / name).mkdir()
    # sun_path holds 107 bytes: a short folder for the socket.
    socket_dir = Path(tempfile.mkdtemp(prefix="sendit-sec-"))
    unix = socket_dir / "uwsgi.sock"
    tcp = ("127.0.0.1", free_port())
    nginx_port = free_port()
    env = uwsgi_env(tmp, SENDIT_UWSGI_SOCKET=str(unix))
    conf = tmp / "nginx.conf"
    conf.write_text(substituted((ROOT / "nginx.conf").read_text(), tmp, nginx_port, f"unix:{unix}", tmp / "var"))
    stack = Stack(tmp)
    try:
        stack.start("uwsgi", [uwsgi_binary(), "--ini", str(ROOT / "uwsgi.ini"), "--socket", "%s:%d" % tcp], env)
        wait_for(lambda: unix.exists() and reachable(tcp[1]), 60, stack, "uwsgi")
        stack.start(
            "nginx",
            [nginx_binary(), "-g", "daemon off;", "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)],
        )
        wait_for(lambda: reachable(nginx_port), 30, stack, "nginx")
        yield type(
            "Served",
            (),
            {"tmp": tmp, "unix": unix, "tcp": tcp, "stack": stack, "base": f"http://127.0.0.1:{nginx_port}/"},
        )
        stack.check_alive()
    finally:
        stack.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


# -- configuration ---------------------------------------------------------------------------


def uwsgi_get(option):
    """An option's value as uwsgi resolves uwsgi.ini with no SENDIT_UWSGI_* set (`--get`);
    None when the option is not set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENDIT_UWSGI", "UWSGI"))}
    result = subprocess.run(
        [uwsgi_binary(), "--ini", str(ROOT / "uwsgi.ini"), "--get", option],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    values = result.stdout.splitlines()
    assert len(values) <= 1, values
    return values[0] if values else None


def test_default_uwsgi_socket_is_a_unix_socket_only_nginx_shares():
    if not uwsgi_binary():
        pytest.skip("uwsgi is not installed (.venv/bin/pip install uwsgi)")
    assert uwsgi_get("socket") == UWSGI_SOCKET, "the uwsgi protocol must not listen on TCP by default"
    assert uwsgi_get("chmod-socket") == "660"
    assert uwsgi_get("max-apps") == "1", "uwsgi must not load another application for a request"
    assert uwsgi_get("log-x-forwarded-for") is None, "the logged address is REMOTE_ADDR, from nginx"

    folder = os.path.dirname(UWSGI_SOCKET)
    for conf in ("nginx.conf", "https/nginx.conf"):
        text = (ROOT / conf).read_text()
        assert f"server unix:{UWSGI_SOCKET};" in text, conf
        assert "3031" not in text, conf
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "3031" not in (ROOT / "docker-compose.yml").read_text()

    def sharing(services):
        return {
            name
            for name, service in services.items()
            for volume in service.get("volumes", [])
            if volume.split(":")[1] == folder
        }

    # Only uwsgi and nginx see the socket's folder; it is a named volume, nothing on the host.
    assert sharing(compose["services"]) == {"uwsgi", "nginx"}
    name = next(v.split(":")[0] for v in compose["services"]["uwsgi"]["volumes"] if v.split(":")[1] == folder)
    assert name in compose["volumes"], "the socket's folder is a named volume"
    options = dict(o.split("=") for o in compose["volumes"][name]["driver_opts"]["o"].split(","))
    assert options["mode"] == "2750", "only its owner (uwsgi) and its group (nginx) may enter it"
    for service in compose["services"].values():
        for port in service.get("ports", []) + service.get("expose", []):
            assert "3031" not in str(port)


def test_default_config_opens_no_tcp_port_for_the_uwsgi_protocol(tmp_path):
    """The unchanged uwsgi.ini, run: its one TCP socket is the loopback health check."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    folder = Path(UWSGI_SOCKET).parent
    made = False
    if not folder.exists():
        try:
            folder.mkdir(mode=0o750)
            made = True
        except OSError:
            pytest.skip(f"{folder} does not exist and cannot be made here (not root)")
    if os.path.exists(UWSGI_SOCKET) or not os.access(folder, os.W_OK):
        pytest.skip(f"{UWSGI_SOCKET} is in use or {folder} is not writable")
    for name in ("var", "data", "media"):
        (tmp_path / name).mkdir()
    env = uwsgi_env(tmp_path)
    health = int(env["SENDIT_UWSGI_HTTP"].rsplit(":", 1)[1])
    stack = Stack(tmp_path)
    try:
        uwsgi = stack.start("uwsgi", [uwsgi_binary(), "--ini", str(ROOT / "uwsgi.ini")], env)
        wait_for(lambda: reachable(health), 60, stack, "uwsgi")
        ports = listening_tcp_ports(uwsgi_pids(uwsgi.pid))
        assert ports == {health}, f"uwsgi listens on TCP ports {sorted(ports)}, not only {health}"
        mode = os.stat(UWSGI_SOCKET).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660, oct(mode)
        # It serves the uwsgi protocol there.
        assert 'name="password"' in send(UWSGI_SOCKET, request_vars("/raw-packet"))
    finally:
        stack.stop()
        if made:
            shutil.rmtree(folder, ignore_errors=True)
    assert not os.path.exists(UWSGI_SOCKET), "vacuum removes the socket on exit"


# -- magic variables -------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_magic_variables_load_no_code(served, transport):
    """A packet naming a Python file (as a dropped NAME.err/x.py would be) runs nothing,
    over the unix socket and over a TCP socket alike."""
    address = served.unix if transport == "unix" else served.tcp
    evil = served.tmp / "evil"
    marker = served.tmp / f"ran-{transport}"
    (evil / f"evil_{transport}.py").write_text(EVIL.format(marker=str(marker)))
    (evil / "__init__.py").write_text("")
    module = f"evil_{transport}"
    worker_cwds = {os.readlink(f"/proc/{pid}/cwd") for pid in uwsgi_pids(served.stack.procs["uwsgi"].pid)}

    # Without magic, the packet is an ordinary request Django answers (the password form).
    plain = send(address, request_vars("/raw-packet"))
    assert plain.startswith("HTTP/1.1 200 ") and 'name="password"' in plain, plain[:300]

    attempts = [
        {"UWSGI_FILE": str(evil / f"{module}.py")},
        {"UWSGI_SCRIPT": module, "UWSGI_CHDIR": str(evil)},
        {
            "UWSGI_MODULE": module,
            "UWSGI_CALLABLE": "application",
            "UWSGI_PYHOME": str(ROOT / ".venv"),
            "UWSGI_CHDIR": str(evil),
            "UWSGI_TOUCH_RELOAD": str(evil / "__init__.py"),
        },
        {"UWSGI_SCRIPT": f"{module}:application", "UWSGI_HOME": str(ROOT / ".venv"), "UWSGI_APPID": "/other"},
    ]
    for magic in attempts:
        # A SCRIPT_NAME no application is mounted at: what makes uwsgi 2.0 load one.
        for script_name in ("/x" + uuid.uuid4().hex[:6], ""):
            answer = send(address, request_vars("/raw-packet", SCRIPT_NAME=script_name, **magic))
            assert "evil application ran" not in answer, magic
            assert answer.startswith("HTTP/1.1 400 "), (magic, answer[:300])
    time.sleep(0.5)
    assert not marker.exists(), "uwsgi ran a Python file named by a request"
    # UWSGI_CHDIR did not move the workers.
    assert {os.readlink(f"/proc/{pid}/cwd") for pid in uwsgi_pids(served.stack.procs["uwsgi"].pid)} == worker_cwds

    # UWSGI_POSTFILE makes a file the request's body: the request is refused unread.
    secret = served.tmp / "secret.txt"
    secret.write_text(f"password={PASSWORD}")
    answer = send(
        address,
        request_vars(
            "/raw-packet",
            method="POST",
            CONTENT_TYPE="application/x-www-form-urlencoded",
            CONTENT_LENGTH=str(secret.stat().st_size),
            UWSGI_POSTFILE=str(secret),
        ),
    )
    assert answer.startswith("HTTP/1.1 400 "), answer[:300]


# -- the client's address --------------------------------------------------------------------


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_page_works_through_nginx_and_the_address_is_nginx_s(served):
    """Through nginx the page answers; headers a client sends choose neither the address
    Django and uwsgi's log see nor any uwsgi variable."""
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
    marker = served.tmp / "ran-header"
    (served.tmp / "evil" / "evil_header.py").write_text(EVIL.format(marker=str(marker)))

    def fetch(data=None, forged="198.51.100.1"):
        request = urllib.request.Request(
            served.base,
            data=data,
            headers={
                "X-Forwarded-For": forged,
                "X-Real-IP": forged,
                "Forwarded": f"for={forged}",
                "Client-IP": forged,
                "Remote-Addr": forged,
                "Uwsgi-File": str(served.tmp / "evil" / "evil_header.py"),
                "Uwsgi-Script": "evil_header",
            },
        )
        if data is not None:
            request.add_header("Origin", served.base.rstrip("/"))
            request.add_header("Referer", served.base)
        try:
            with browser.open(request, timeout=30) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")

    status, body = fetch()
    assert status == 200 and 'name="password"' in body, body[:500]
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body)
    form = {"password": "wrong"}
    if csrf:
        form["csrfmiddlewaretoken"] = csrf.group(1)
    # Wrong passwords, each from "another address": the throttle counts them all as one.
    for n in range(MAX_FAILURES):
        status, body = fetch(urllib.parse.urlencode(form).encode(), forged=f"198.51.100.{n + 10}")
        assert status == 200 and 'name="password"' in body, (n, status, body[:300])
    form["password"] = PASSWORD
    status, body = fetch(urllib.parse.urlencode(form).encode(), forged="198.51.100.99")
    assert status == 429, (status, body[:300])

    time.sleep(0.5)
    assert not marker.exists()
    log = served.stack.log("uwsgi", 10**6)
    lines = [line for line in log.splitlines() if '"GET / ' in line or '"POST / ' in line]
    assert len(lines) >= MAX_FAILURES + 2, log[-2000:]
    assert all(line.startswith('127.0.0.1 "') for line in lines), lines
    assert "198.51.100." not in log
