"""Keep patient values out of everything that leaves the process: logs, alerts, mail, pages
and the API. The one place that knows what may carry an identifier.

Sendit's own messages never carry header values or file names. Libraries are less careful
(pydicom quotes invalid values in its warnings; a traceback can quote a path), so every log
record, Sentry event and error mail passes through :func:`redact` on its way out: it replaces
quoted text, paths, UIDs, dates, long numbers, person names and e-mail addresses.

Pages and the API show what the pipeline wrote through :func:`scrub`, defence in depth that
keeps the messages useful: paths (a folder name can be a patient name or a record number)
become ``[path]``, DICOM UIDs (traceable to the source PACS) ``[uid]``, e-mail addresses
``[email]``; counts, step names and the batch name stay (senders must not name folders after
patients: docs/interface.md). Settings are shown through :func:`mask_setting`.
"""

import logging
import logging.handlers
import os
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sendit.config import is_secret

REDACTED = "<redacted>"
MASK = "********"

# What may carry an identifier, each pattern written once.
UID = re.compile(r"(?<![\w.])\d+(?:\.\d+){3,}(?![\w.])")  # 1.2.840.113619.2.55...
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# An absolute or home path, a Windows path, or a relative path with at least one slash.
PATH = re.compile(
    r"(?:(?<![\w/])(?:~?/|[A-Za-z]:\\)[^\s'\"<>,;:]*)"  # /abs/path, ~/x, C:\x
    r"|(?:(?<![\w/.])[\w.-]+(?:[/\\][\w .-]*[\w-])+(?:\.\w+)?)"  # rel/path/file.dcm
)
QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
DATE = re.compile(r"\b(?:19|20)\d{2}-?\d{2}-?\d{2}\b")
LONG_NUMBER = re.compile(r"\b[A-Za-z]*\d{5,}[A-Za-z\d]*\b")  # MRNs, accession numbers
PERSON_NAME = re.compile(r"[^\s^=]+\^[^\s]*")  # DOE^JANE

# Logs, alerts and mail: everything that might be a value. Quoted text first (it may hold
# spaces); the path patterns of both spellings (a log line's path may hold a comma).
_LOG_PATTERNS = [
    QUOTED,
    re.compile(r"(?<![\w.])/(?:[^\s/:]+/)*[^\s/:]+"),
    PATH,
    UID,
    DATE,
    LONG_NUMBER,
    PERSON_NAME,
    EMAIL,
]
# Pages and the API: labelled, so that a message stays readable.
_PAGE_PATTERNS = [(EMAIL, "[email]"), (PATH, "[path]"), (UID, "[uid]")]


def redact(text):
    """The text with anything that could be a patient value replaced (logs, Sentry, mail)."""
    text = str(text)
    for pattern in _LOG_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def escape_controls(text: str) -> str:
    """The text on one line: control characters (a newline in a folder name would start a
    forged log line), and a name's bytes that are not UTF-8, written as escapes (\\n, \\udcff)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class RotatingFileHandler(logging.handlers.RotatingFileHandler):
    """The size-capped log file, whose folder (LOG_DIR) is made when logging is set up, so
    that a process started without sendit.config.start (a script calling django.setup())
    still logs instead of failing to configure."""

    def __init__(self, filename: str, *args: Any, **kwargs: Any) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        super().__init__(filename, *args, **kwargs)


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


# -- pages and the API ---------------------------------------------------------------
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN|CREDENTIALS", re.IGNORECASE)


def scrub(value):
    """Mask paths, UIDs and e-mail addresses in a string (or in strings inside lists/dicts),
    for a page or the API."""
    if isinstance(value, str):
        for pattern, label in _PAGE_PATTERNS:
            value = pattern.sub(label, value)
        return value
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def scrub_errors(errors):
    """A batch's errors ({time, step, message}) ready to show."""
    shown = []
    for error in errors or []:
        if isinstance(error, dict):
            shown.append(
                {
                    "time": error.get("time", ""),
                    "step": scrub(str(error.get("step", ""))),
                    "message": scrub(str(error.get("message", ""))),
                }
            )
        else:
            shown.append({"time": "", "step": "", "message": scrub(str(error))})
    return shown


# Query parameters that carry a credential: ?token=, ?password=, ?api_key=, ?sig=, ...
SECRET_QUERY = re.compile(r"pass|pwd|secret|token|key|sig|auth|credential|session", re.IGNORECASE)


def mask_url(value: str) -> str:
    """Hide every credential in a URL, or in several joined by ';' (kombu's failover brokers):
    the password (or a lone token) before @, and the value of any query parameter whose
    name says it is a secret."""
    return ";".join(_mask_one_url(part) for part in value.split(";"))


def _mask_one_url(value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:
        return MASK if "@" in value else value
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        # user:password keeps the user; a lone name before @ may be a token (redis://token@,
        # https://key@sentry): masked too.
        userinfo = f"{userinfo.split(':', 1)[0]}:{MASK}" if ":" in userinfo else MASK
        netloc = f"{userinfo}@{host}"
    query = "&".join(_mask_parameter(p) for p in parts.query.split("&")) if parts.query else ""
    if (netloc, query) == (parts.netloc, parts.query):
        return value
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _mask_parameter(parameter: str) -> str:
    name, equals, _ = parameter.partition("=")
    return f"{name}={MASK}" if equals and SECRET_QUERY.search(name) else parameter


def mask_setting(name, value):
    """A setting's value as shown: secrets masked, passwords inside URLs masked."""
    if is_secret(name) or SECRET_NAME.search(name):
        if value in (None, "", (), []):
            return "(not set)"
        if isinstance(value, (list, tuple)):
            return f"{MASK} ({len(value)} set)"
        return MASK
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(mask_url(str(v)) for v in value)
    return value
