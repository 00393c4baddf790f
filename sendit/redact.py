"""Keep patient values out of everything that leaves the process: logs, alerts, mail.

Sendit's own messages never carry header values or file names. Libraries are less
careful (pydicom quotes invalid values in its warnings; a traceback can quote a path),
so every log record, Sentry event and error mail passes through `redact` on its way out.
"""
import logging
import re

REDACTED = "<redacted>"

# Quoted text, absolute paths, DICOM UIDs, dates and long numbers (MRNs, accession numbers).
_PATTERNS = [
    re.compile(r"'[^'\n]*'|\"[^\"\n]*\""),
    re.compile(r"(?<![\w.])/(?:[^\s/:]+/)*[^\s/:]+"),
    re.compile(r"\b\d+(?:\.\d+){3,}\b"),
    re.compile(r"\b(?:19|20)\d{2}-?\d{2}-?\d{2}\b"),
    re.compile(r"\b[A-Za-z]*\d{5,}[A-Za-z\d]*\b"),
    re.compile(r"[^\s^=]+\^[^\s]*"),  # DICOM person names: DOE^JANE
    re.compile(r"\b[\w.-]+/[\w./-]+"),  # relative paths: ST1/DOE_JANE.dcm
]


def redact(text):
    """The text with anything that could be a patient value replaced."""
    text = str(text)
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def escape_controls(text: str) -> str:
    """The text on one line: control characters (a newline in a folder name would start a
    forged log line), and a name's bytes that are not UTF-8, written as escapes (\\n, \\udcff)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class RedactFilter(logging.Filter):
    """A logging filter that redacts the formatted message of libraries' records, and writes
    every record's message on one line (escape_controls).

    Sendit's own loggers ("sendit.*") are trusted and left readable, except for the
    exception text of a traceback, which may quote anything.
    """

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        record.msg = escape_controls(message if record.name.startswith("sendit") else redact(message))
        record.args = ()
        if record.exc_info and record.exc_info[1] is not None:
            exc_type, exc, tb = record.exc_info
            try:
                record.exc_info = (exc_type, exc_type(redact(exc)), tb)
            except Exception:
                record.exc_info = (RuntimeError, RuntimeError(redact(exc)), tb)
            record.exc_text = None
        return True


def scrub_sentry_event(event, hint=None):
    """Sentry before_send: no request body, cookies, headers values, locals or quoted values."""
    request = event.get("request")
    if request:
        for key in ("data", "cookies", "query_string", "env"):
            request.pop(key, None)
        if "headers" in request:
            request["headers"] = {k: REDACTED for k in request["headers"]}
        if "url" in request:
            request["url"] = redact(request["url"])
    for exception in (event.get("exception") or {}).get("values", []):
        if exception.get("value"):
            exception["value"] = redact(exception["value"])
        for frame in (exception.get("stacktrace") or {}).get("frames", []):
            frame.pop("vars", None)
    for crumb in (event.get("breadcrumbs") or {}).get("values", []):
        if crumb.get("message"):
            crumb["message"] = redact(crumb["message"])
        crumb.pop("data", None)
    if event.get("logentry"):
        event["logentry"] = {"message": redact(event["logentry"].get("message", "")), "params": []}
    if event.get("message"):
        event["message"] = redact(event["message"])
    event.pop("extra", None)
    event.pop("user", None)
    return event


class AdminMailHandler(logging.Handler):
    """Mail server errors to ADMINS, redacted: no request data, no local variables.

    Django's AdminEmailHandler attaches the request (POST data, cookies) and the
    traceback's local variables; this one sends the code locations and redacted text.
    """

    def emit(self, record):
        import traceback

        from django.core.mail import mail_admins

        try:
            body = [redact(record.getMessage()), ""]
            if record.exc_info and record.exc_info[0] is not None:
                exc_type, exc, tb = record.exc_info
                for frame in traceback.extract_tb(tb):
                    body.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
                body.append(f"{exc_type.__name__}: {redact(exc)}")
            subject = f"{record.levelname}: {redact(record.getMessage())}"[:200].replace("\n", " ")
            mail_admins(subject, "\n".join(body), fail_silently=True)
        except Exception:
            self.handleError(record)
