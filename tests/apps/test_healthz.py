"""/healthz under load: only the parts asked for, each bounded, destinations checked once.

The destination here is a TCP port that accepts and never answers (the worst case: a
refused connection fails at once), counting the connections it is offered.
"""

import socket
import threading
import time

import pytest


class Silent:
    """A listening socket that accepts connections, counts them and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_orthanc(settings):
    server = Silent()
    settings.SEND_TO_ORTHANC = True
    settings.ORTHANC_TRANSPORT = "rest"
    settings.ORTHANC_URL = f"http://127.0.0.1:{server.port}"
    settings.SEND_TO_GOOGLE = False
    settings.LOCKDOWN_ENABLED = False
    yield server
    server.close()


def timed_get(client, url):
    start = time.monotonic()
    response = client.get(url)
    return response, time.monotonic() - start


@pytest.mark.django_db
def test_parts_are_honoured_and_no_destination_is_called(client, silent_orthanc):
    response, seconds = timed_get(client, "/healthz?parts=database,broker")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}
    assert seconds < 1.5
    time.sleep(0.2)
    assert silent_orthanc.accepted == []


@pytest.mark.django_db
def test_a_silent_destination_costs_one_bounded_check_for_a_flood(client, silent_orthanc):
    response, seconds = timed_get(client, "/healthz")
    assert response.status_code == 503 and response.json()["orthanc"] == "not ok"
    assert seconds < 4, f"the destination check was not bounded: {seconds:.1f}s"
    assert len(silent_orthanc.accepted) == 1
    for _ in range(20):
        response, seconds = timed_get(client, "/healthz?parts=orthanc")
        assert response.json() == {"status": "not ok", "orthanc": "not ok"}
        assert seconds < 0.5
    assert len(silent_orthanc.accepted) == 1, "a request within the cache's time checked again"


@pytest.mark.django_db
def test_concurrent_requests_share_one_check(client, silent_orthanc):
    from django.test import Client

    answers = []

    def ask():
        answers.append(timed_get(Client(), "/healthz?parts=orthanc"))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 6
    assert all(r.json()["orthanc"] == "not ok" and s < 4 for r, s in answers)
    assert len(silent_orthanc.accepted) == 1
