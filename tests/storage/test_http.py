"""The REST destinations' HTTP client says why a request got no answer, in plain words."""
import http.server
import socket
import threading

import pytest

from sendit.storage.http import Client, RequestFailed, Response
from tests.services import free_port


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b'{"Version": "1.0", "Auth": "%s"}' % (self.headers.get("Authorization") or "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        data = self.rfile.read(length)
        body = b"%d" % len(data)
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def raw_server(behaviour):
    """A TCP server on a free port whose connections get `behaviour(conn)`."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            behaviour(conn)

    threading.Thread(target=serve, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_answers_and_basic_auth(server):
    client = Client(auth=("user", "secret"), pool=2)
    try:
        r = client.get(server + "/system", timeout=5)
        assert r.status_code == 200 and r.json()["Version"] == "1.0"
        assert r.json()["Auth"] == "Basic dXNlcjpzZWNyZXQ="
        posted = client.post(server + "/instances", data=b"x" * 100_000, timeout=5)
        assert posted.status_code == 201 and posted.text == "100000"
        with pytest.raises(ValueError):  # what the destinations catch for a non-JSON body
            Response(200, b"<html>proxy error</html>", server).json()
    finally:
        client.close()


def test_refused():
    with pytest.raises(RequestFailed) as failed:
        Client().get(f"http://127.0.0.1:{free_port()}/system", timeout=5)
    assert failed.value.reason == "connection refused"


def test_host_not_resolved():
    with pytest.raises(RequestFailed) as failed:
        Client().get("http://sendit-no-such-host.invalid/system", timeout=5)
    assert failed.value.reason == "host name not resolved"


def test_timed_out():
    held = []
    listener, url = raw_server(held.append)  # accepts, never answers
    try:
        with pytest.raises(RequestFailed) as failed:
            Client().get(url + "/system", timeout=0.5)
        assert failed.value.reason == "timed out"
    finally:
        listener.close()
        for conn in held:
            conn.close()


def test_reset():
    def hang_up(conn):
        conn.recv(65536)
        conn.close()

    listener, url = raw_server(hang_up)
    try:
        with pytest.raises(RequestFailed) as failed:
            Client().get(url + "/system", timeout=5)
        assert failed.value.reason == "connection reset"
    finally:
        listener.close()
