"""What the status pages and the API may show: scrubbed messages and masked settings.

The pipeline already writes errors without patient values. `scrub` is defence in depth
for everything shown on a page or returned by the API: it masks what could still carry
an identifier by accident:

- file system paths (a folder or file name can be a patient name or a medical record
  number): anything with a slash that looks like a path becomes ``[path]``;
- DICOM UIDs (dotted digits with four or more parts, e.g. 1.2.840.113619.2.55...): input
  UIDs can be traced back to the source PACS, so they become ``[uid]``;
- e-mail addresses become ``[email]``.

It deliberately leaves short numbers, counts, step names and the batch name alone so the
messages stay useful. The batch name is the folder name chosen by the sender; senders
must not name folders after patients (docs/interface.md).
"""
import re
from urllib.parse import urlsplit, urlunsplit

from sendit.settings import config as _config

MASK = "********"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN|CREDENTIALS", re.IGNORECASE)

_UID = re.compile(r"(?<![\w.])\d+(?:\.\d+){3,}(?![\w.])")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# An absolute or home path, a Windows path, or a relative path with at least one slash.
_PATH = re.compile(
    r"(?:(?<![\w/])(?:~?/|[A-Za-z]:\\)[^\s'\"<>,;:]*)"      # /abs/path, ~/x, C:\x
    r"|(?:(?<![\w/.])[\w.-]+(?:[/\\][\w .-]*[\w-])+(?:\.\w+)?)"  # rel/path/file.dcm
)


def scrub(value):
    """Mask paths, UIDs and e-mail addresses in a string (or in strings inside lists/dicts)."""
    if isinstance(value, str):
        text = _EMAIL.sub("[email]", value)
        text = _PATH.sub("[path]", text)
        return _UID.sub("[uid]", text)
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
            shown.append({"time": error.get("time", ""), "step": scrub(str(error.get("step", ""))),
                          "message": scrub(str(error.get("message", "")))})
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
    if SECRET_NAME.search(name):
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


def config_names():
    """Every UPPERCASE name of sendit.settings.config (the pipeline's settings)."""
    return sorted(n for n in vars(_config) if n.isupper() and not n.startswith("_"))


def effective_settings(settings):
    """[(group, [(name, shown value)])]: the pipeline settings and the access settings."""
    pipeline = [(n, mask_setting(n, getattr(settings, n, getattr(_config, n)))) for n in config_names()]
    access_names = ["LOCKDOWN_ENABLED", "LOCKDOWN_PASSWORDS", "API_TOKENS", "SECURE_SSL", "DEBUG",
                    "ALLOWED_HOSTS", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS",
                    "SECRET_KEY", "DEID_SECRET", "ORTHANC_PASSWORD", "DICOMWEB_PASSWORD", "DICOMWEB_TOKEN"]
    access = [(n, mask_setting(n, getattr(settings, n, None))) for n in access_names]
    return [("Pipeline (sendit/settings/config.py)", pipeline), ("Access and security", access)]
