"""The default docker-compose.yml serves HTTPS: port 80 only redirects, cookies are Secure.

Everything is taken from docker-compose.yml as it stands, and run here without containers:
the `certs` service's command makes the first-start certificate, the nginx configuration
the `nginx` service mounts runs in Debian's nginx (ports moved to free ones on loopback,
paths to temporary folders), and uwsgi starts through scripts/entrypoint.sh with the
environment the `uwsgi` service gets. Before HTTPS was the default, plain HTTP answered the
password form itself (and took the password), and the cookies were not Secure.
"""

import http.client
import re
import shutil
import ssl
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import pytest
import yaml

from tests.deploy.test_files import mount, substituted
from tests.deploy.test_stack import ROOT, Stack, nginx_binary, uwsgi_binary, wait_for
from tests.deploy.test_uwsgi_security import PASSWORD, uwsgi_env
from tests.services import free_port, reachable

pytestmark = pytest.mark.skipif(
    not (nginx_binary() and uwsgi_binary()), reason="needs nginx (apt-get install nginx) and uwsgi (.venv)"
)
APP_PATHS = ("DATABASE_URL", "CELERY_BROKER_URL", "DATA_FOLDER", "MEDIA_ROOT")


def resolved(value: str) -> str:
    """A compose value as compose gives it with no .env: ${NAME:-default} -> default, $$ -> $."""
    value = re.sub(r"(?<!\$)\$\{[A-Z_][A-Z0-9_]*:-([^}]*)\}", r"\1", str(value))
    return value.replace("$$", "$")


def answer(
    conn: http.client.HTTPConnection, method: str, path: str, body: str = "", headers: dict | None = None
) -> tuple[int, http.client.HTTPMessage, str]:
    conn.request(method, path, body=body or None, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.headers, response.read().decode("utf-8", "replace")


def cookies(headers: http.client.HTTPMessage) -> dict[str, str]:
    """name -> the whole Set-Cookie line."""
    return {line.split("=", 1)[0]: line for line in headers.get_all("Set-Cookie") or []}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    tmp = tmp_path_factory.mktemp("https-default")
    for name in ("var", "data", "media"):
        (tmp / name).mkdir()
    certs = tmp / "certs"
    certs_service = compose.get("certs")
    if certs_service:  # its command as the container runs it (entrypoint.sh runs `sh -c` as is)
        command = [resolved(c).replace("/certs", str(certs)) for c in certs_service["command"]]
        env = {"PATH": "/usr/bin:/bin", **{k: resolved(v) for k, v in certs_service["environment"].items()}}
        for _ in range(2):  # the second start keeps the first start's certificate
            subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    nginx_conf = next(
        source for source, target in map(mount, compose["nginx"]["volumes"]) if target == "/etc/nginx/nginx.conf"
    )
    socket_dir = Path(tempfile.mkdtemp(prefix="sendit-tls-"))  # sun_path holds 107 bytes
    http_port, tls_port = free_port(), free_port()
    text = (ROOT / nginx_conf).read_text()
    extra = [
        (old, new)
        for old, new in [
            ("listen 443 ssl http2 default_server;", f"listen 127.0.0.1:{tls_port} ssl http2 default_server;"),
            ("/etc/nginx/certs/", f"{certs}/"),
            ("root /var/www/acme;", f"root {tmp};"),
        ]
        if old in text
    ]
    conf = tmp / "nginx.conf"
    conf.write_text(substituted(text, tmp, http_port, f"unix:{socket_dir}/uwsgi.sock", tmp / "var/static", extra))
    app_env = {k: resolved(v) for k, v in compose["uwsgi"]["environment"].items() if k not in APP_PATHS}
    env = uwsgi_env(tmp, SENDIT_UWSGI_SOCKET=str(socket_dir / "uwsgi.sock"), **app_env)
    stack = Stack(tmp)
    try:
        stack.start("uwsgi", [str(ROOT / "scripts/entrypoint.sh"), "uwsgi"], env)
        wait_for(lambda: (socket_dir / "uwsgi.sock").exists(), 120, stack, "uwsgi (migrate, collectstatic)")
        stack.start(
            "nginx",
            [nginx_binary(), "-g", "daemon off;", "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)],
        )
        wait_for(lambda: reachable(http_port), 30, stack, "nginx")
        yield type("Node", (), {"http_port": http_port, "tls_port": tls_port, "certs": certs, "compose": compose})
        stack.check_alive()
    finally:
        stack.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_plain_http_only_redirects_to_https(node):
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=30)
    status, headers, body = answer(conn, "GET", "/batches/1/?x=1")
    assert status == 301, f"plain HTTP answered {status} itself: {body[:200]}"
    assert headers["Location"] == "https://127.0.0.1/batches/1/?x=1"
    # A password posted over plain HTTP never reaches the application: no cookie, no form.
    status, headers, body = answer(
        conn, "POST", "/", f"password={PASSWORD}", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 301 and not headers.get_all("Set-Cookie")
    assert answer(conn, "GET", "/nginx-health")[0] == 200  # the container's health check


def test_https_serves_the_page_with_secure_cookies_and_hsts(node):
    context = ssl.create_default_context(cafile=str(node.certs / "fullchain.pem"))
    conn = http.client.HTTPSConnection("127.0.0.1", node.tls_port, context=context, timeout=30)
    status, headers, body = answer(conn, "GET", "/")
    assert status == 200 and 'name="password"' in body
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    assert len(headers.get_all("Strict-Transport-Security")) == 1  # nginx's alone, not Django's too
    csrf_cookie = cookies(headers)["csrftoken"]
    assert "; Secure" in csrf_cookie and "; HttpOnly" in csrf_cookie
    origin = f"https://127.0.0.1:{node.tls_port}"
    form = urllib.parse.urlencode(
        {
            "password": PASSWORD,
            "csrfmiddlewaretoken": re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1),
        }
    )
    status, headers, body = answer(
        conn,
        "POST",
        "/",
        form,
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": origin,
            "Referer": origin + "/",
            "Cookie": csrf_cookie.split(";", 1)[0],
        },
    )
    assert status == 302, (status, body[:500])
    session_cookie = cookies(headers)["sessionid"]
    assert "; Secure" in session_cookie and "; HttpOnly" in session_cookie
    status, _, body = answer(conn, "GET", "/", headers={"Cookie": session_cookie.split(";", 1)[0]})
    assert status == 200 and 'name="password"' not in body


def test_the_first_start_certificate_is_self_signed_and_kept(node):
    text = subprocess.run(
        ["openssl", "x509", "-in", str(node.certs / "fullchain.pem"), "-noout", "-text"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text
    nginx, certs = node.compose["nginx"], node.compose["certs"]
    assert nginx["depends_on"]["certs"]["condition"] == "service_completed_successfully"
    assert certs["restart"] == "no" and "--if-missing" in " ".join(certs["command"])
    mounts = {target: source for source, target in map(mount, nginx["volumes"] + certs["volumes"])}
    assert mounts["/etc/nginx/certs"] == mounts["/certs"] == "${CERTS_DIR:-./https/certs}"
    assert sorted(p.split(":")[-1] for p in nginx["ports"]) == ["443", "80"]
