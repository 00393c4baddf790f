"""nginx.conf and https/nginx.conf limit what reaches uwsgi: small bodies, few POSTs.

The real nginx runs each configuration with the upstream socket absent (an allowed request
gets 502 from nginx itself), so what is refused (413, 429) is nginx's doing alone.
"""

import http.client
import subprocess
import time

import pytest

from tests.deploy.test_files import ROOT, substituted
from tests.deploy.test_stack import nginx_binary
from tests.services import free_port, reachable

pytestmark = pytest.mark.skipif(not nginx_binary(), reason="nginx is not installed (apt-get install nginx)")


def request(port, method, body=b""):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, "/", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture
def nginx(tmp_path):
    """The project's nginx.conf on a free port (the TLS one has the same lines, checked below)."""
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        substituted((ROOT / "nginx.conf").read_text(), tmp_path, port, f"unix:{tmp_path}/absent.sock", tmp_path)
    )
    proc = subprocess.Popen(
        [nginx_binary(), "-g", "daemon off;", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not reachable(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def test_bodies_and_posts_are_limited(nginx):
    assert request(nginx, "POST", b"x" * (128 * 1024)) == 413
    statuses = [request(nginx, "POST", b"password=wrong") for _ in range(25)]
    assert statuses[:5] == [502] * 5, statuses  # the first ones pass to the (absent) upstream
    assert 429 in statuses, statuses
    assert 429 not in [request(nginx, "GET") for _ in range(25)]  # reading is not limited


@pytest.mark.parametrize("name", ["nginx.conf", "https/nginx.conf"])
def test_both_configurations_carry_the_limits(name):
    text = (ROOT / name).read_text()
    assert "client_max_body_size 64k;" in text and "client_max_body_size 1g" not in text
    assert "limit_req_zone $sendit_post_client zone=sendit_posts" in text
    assert "limit_req zone=sendit_posts" in text and "limit_req_status 429;" in text
