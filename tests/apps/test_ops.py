"""/healthz, /metrics, and the redaction that keeps patient values out of logs, Sentry and mail."""

import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from sendit.apps.main.tasks import import_dicomdir
from sendit.redact import redact
from tests.services import free_port, make_ct_series

PHI = ["PHI-MRN-31337", "Doe^Jane", "19700101"]


@pytest.mark.django_db
def test_healthz_needs_no_password_and_says_only_ok(client, settings):
    settings.LOCKDOWN_ENABLED = True
    settings.LOCKDOWN_PASSWORDS = ("pw",)
    settings.SEND_TO_ORTHANC = False
    response = client.get("/healthz?parts=database,broker")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}
    response = client.get("/healthz")
    assert response.json()["watcher"] == "not ok" and response.status_code == 503


@pytest.mark.django_db(transaction=True)
def test_metrics_behind_a_token(client, settings, node, data_folder):
    settings.METRICS_TOKEN = "t0ken"
    make_ct_series(data_folder / "M", 2)
    import_dicomdir(str(data_folder / "M"))
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    text = client.get("/metrics", HTTP_AUTHORIZATION="Bearer t0ken").content.decode()
    assert 'sendit_batches{status="DONE"} 1' in text
    assert 'sendit_step_seconds_count{step="deidentify"} 1' in text


def test_redact_removes_values_but_keeps_the_sense():
    text = "Invalid value for VR DA: '19700101' in /data/ST-1/Doe_Jane.dcm uid 1.2.840.1136.2.55 PHI-MRN-31337"
    cleaned = redact(text)
    assert cleaned.startswith("Invalid value for VR DA:")
    for value in ["19700101", "Doe_Jane", "1.2.840.1136.2.55", "31337"]:
        assert value not in cleaned


def test_library_log_records_are_redacted(caplog):
    from sendit.redact import RedactFilter

    record = logging.LogRecord(
        "pydicom", logging.WARNING, __file__, 1, "Invalid value %r for PatientID", ("PHI-MRN-31337",), None
    )
    RedactFilter().filter(record)
    assert "31337" not in record.getMessage()


class _Sink(BaseHTTPRequestHandler):
    bodies = []

    def do_POST(self):
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_a_sentry_event_reaches_a_local_endpoint_without_patient_values():
    import gzip

    import sentry_sdk

    from sendit.redact import scrub_sentry_event

    port = free_port()
    server = HTTPServer(("127.0.0.1", port), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = sentry_sdk.Client(
            f"http://public@127.0.0.1:{port}/1",
            send_default_pii=False,
            include_local_variables=False,
            before_send=scrub_sentry_event,
        )
        with sentry_sdk.isolation_scope() as scope:
            scope.set_client(client)
            try:
                patient = PHI[0]  # noqa: F841 (a local that must not travel)
                raise ValueError(f"bad header in /data/{PHI[1]}.dcm: PatientID '{PHI[0]}' born {PHI[2]}")
            except ValueError:
                sentry_sdk.capture_exception()
            client.flush(timeout=5)
    finally:
        server.shutdown()
    assert _Sink.bodies, "no event arrived"
    raw = b"".join(gzip.decompress(b) if b[:2] == b"\x1f\x8b" else b for b in _Sink.bodies).decode()
    assert "ValueError" in raw
    for value in PHI:
        assert value not in raw


@pytest.mark.django_db
def test_error_mail_reaches_a_local_smtp_sink_without_patient_values(settings):
    from aiosmtpd.controller import Controller

    class Handler:
        messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(envelope.content.decode())
            return "250 OK"

    handler = Handler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings.ADMINS = [("Ops", "ops@example.org")]
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        logger = logging.getLogger("sendit.test")
        from sendit.redact import AdminMailHandler

        mail = AdminMailHandler()
        logger.addHandler(mail)
        try:
            raise KeyError(f"PatientName '{PHI[1]}' id {PHI[0]}")
        except KeyError:
            logger.exception("import failed for '%s'", PHI[0])
        finally:
            logger.removeHandler(mail)
    finally:
        controller.stop()
    assert handler.messages
    text = handler.messages[0]
    assert "KeyError" in text and "import failed" in text
    for value in PHI[:2]:
        assert value not in text
