"""The REST destinations' HTTP client says why a request got no answer, in plain words."""

import contextlib
import http.server
import socket
import threading
import time

import pytest

from sendit.storage.http import Client, RequestFailed, Response
from tests.services import free_port


class _Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Orthanc

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
    client = Client(auth=("user", "secret"))
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


def test_a_connection_the_server_closed_while_idle_is_replaced(monkeypatch):
    """Servers drop idle kept-alive connections (Orthanc's KeepAlive timeout): the next
    request goes out on a new connection, found before the request is sent (a 512 kB
    body is not sent into a closed connection), not as an error."""
    import http.client

    connections, sent = [], []
    real_request = http.client.HTTPConnection.request
    monkeypatch.setattr(
        http.client.HTTPConnection, "request", lambda self, *a, **k: sent.append(a[1]) or real_request(self, *a, **k)
    )

    def answer_then_close(conn):
        connections.append(conn)
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d" % (len(str(len(connections))), len(connections))
        )
        conn.close()  # kept alive by the client, closed here while idle

    with raw_server(answer_then_close) as url:
        client = Client()
        try:
            assert client.get(url + "/a", timeout=5).text == "1"
            time.sleep(0.2)
            assert client.get(url + "/b", timeout=5).text == "2"
        finally:
            client.close()
    assert sent == ["/a", "/b"]


def test_a_hang_up_as_a_reused_connection_sends_is_tried_once_more():
    """The race a reconnect check cannot see: the server closes the kept-alive connection
    just as the request goes out. One more try on a new connection, then it is an error."""
    answers = []

    def answer_once_then_hang_up(conn):
        conn.recv(65536)
        if not answers:
            answers.append(1)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            conn.recv(65536)  # the next request on this connection: hang up without answering
            conn.close()
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain")

    with raw_server(
        lambda conn: threading.Thread(target=answer_once_then_hang_up, args=(conn,), daemon=True).start()
    ) as url:
        client = Client()
        try:
            assert client.get(url + "/a", timeout=5).text == "ok"
            assert client.get(url + "/b", timeout=5).text == "again"
        finally:
            client.close()


def test_a_file_is_posted_whole_from_its_start(server, tmp_path):
    path = tmp_path / "image.dcm"
    path.write_bytes(bytes(range(256)) * 2735 + b"end")  # 700,163 bytes
    client = Client()
    try:
        with open(path, "rb") as f:
            assert client.post(server + "/instances", data=f, timeout=5).text == "700163"
            f.read()  # at its end: posted again, it is sent from its start
            assert client.post(server + "/instances", data=f, timeout=5).text == "700163"
    finally:
        client.close()


def _read_request(conn):
    """Bytes of one whole request (headers and a Content-Length body) read from conn."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head, body


def test_a_file_sent_again_after_a_hang_up_is_sent_whole(tmp_path):
    """The hang-up race of the test above, with a file body: the second try sends the
    whole file again, not what was left of it."""
    path = tmp_path / "image.dcm"
    path.write_bytes(b"DICM" * 150_000)
    bodies = []

    def serve(conn):
        if not bodies:  # the first connection: answer once, then hang up on the file
            bodies.append(_read_request(conn)[1])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            conn.recv(65536)
            conn.close()
            return
        bodies.append(_read_request(conn)[1])
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")

    with raw_server(lambda conn: threading.Thread(target=serve, args=(conn,), daemon=True).start()) as url:
        client = Client()
        try:
            assert client.get(url + "/a", timeout=5).text == "ok"
            with open(path, "rb") as f:
                assert client.post(url + "/instances", data=f, timeout=5).text == "good"
        finally:
            client.close()
    assert bodies == [b"", path.read_bytes()]


def test_threads_share_a_client(server):
    """The send step posts from SEND_WORKERS threads through one client, whose connections
    are kept alive for the next request, whichever thread makes it."""
    import concurrent.futures

    client = Client()
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            sizes = list(
                pool.map(lambda n: client.post(server + "/instances", data=b"x" * n, timeout=5).text, range(1, 41))
            )
        assert sizes == [str(n) for n in range(1, 41)]
        idle = client._idle[("http", server.split("//", 1)[1])]
        assert 1 <= len(idle) <= 4  # kept alive, at most one per thread
        assert all(conn.sock is not None for conn in idle)
    finally:
        client.close()
    assert client._idle == {} and all(conn.sock is None for conn in idle)


def test_an_untrusted_certificate_is_named(tmp_path):
    """https:// with a certificate no CA vouches for: refused, and the reason says so."""
    import ssl
    import subprocess

    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")

    def handshake(conn):
        try:
            context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            pass

    with raw_server(handshake) as url:
        with pytest.raises(RequestFailed) as failed:
            Client().get(url.replace("http://", "https://") + "/system", timeout=5)
    assert failed.value.reason == "TLS certificate not trusted"
