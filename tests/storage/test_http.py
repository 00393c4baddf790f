"""The REST destinations' HTTP client says why a request got no answer, in plain words."""
import contextlib
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


@contextlib.contextmanager
def raw_server(behaviour):
    """The URL of a TCP server on a free port whose connections get `behaviour(conn)`;
    the listener and every connection are closed on exit."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            behaviour(conn)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


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
    with raw_server(lambda conn: None) as url:  # accepts, never answers
        with pytest.raises(RequestFailed) as failed:
            Client().get(url + "/system", timeout=0.5)
    assert failed.value.reason == "timed out"


def test_reset():
    def hang_up(conn):
        conn.recv(65536)
        conn.close()

    with raw_server(hang_up) as url:
        with pytest.raises(RequestFailed) as failed:
            Client().get(url + "/system", timeout=5)
    assert failed.value.reason == "connection reset"
