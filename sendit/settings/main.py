"""Django settings. Pipeline settings live in config.py, lockdown in auth.py.

Secrets come from the environment first, then from an untracked secrets.py (see
bogus_secrets.py). A development node without either gets random keys kept in var/.
"""
import os
import secrets as _secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from . import config as _config
from .auth import *  # noqa: F401,F403
from .config import *  # noqa: F401,F403

try:
    from . import secrets as _site_secrets
except ImportError:
    _site_secrets = None

BASE_DIR = _config.BASE_DIR
# Private when made here (make run): var/ holds the keys and the SQLite database, media the
# images before de-identification. Folders that exist (docker volumes) keep their modes.
for _folder in (_config.VAR_DIR, _config.MEDIA_ROOT):
    if not Path(_folder).exists():
        Path(_folder).mkdir(mode=0o700, parents=True, exist_ok=True)


def _secret(name, default=None):
    """A secret from the environment, else secrets.py, else the default."""
    if name in os.environ:
        return os.environ[name]
    return getattr(_site_secrets, name, default)


def _local_key(name):
    """A random key kept in var/ so a development node stays stable across restarts."""
    path = Path(_config.VAR_DIR) / name
    if not path.exists():
        path.write_text(_secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret("SECRET_KEY") or _local_key("secret_key")
DEID_SECRET = _secret("DEID_SECRET") or _local_key("deid_secret")
ORTHANC_PASSWORD = _secret("ORTHANC_PASSWORD", "") or ""
DICOMWEB_PASSWORD = _secret("DICOMWEB_PASSWORD", "") or ""
DICOMWEB_TOKEN = _secret("DICOMWEB_TOKEN", "") or ""
DEBUG = str(_secret("DEBUG", False)).strip().lower() in ("1", "true", "yes", "on")

_passwords = _secret("LOCKDOWN_PASSWORDS", ())
_made_password = Path(_config.VAR_DIR) / "lockdown_password"
if not _passwords and _made_password.is_file():
    # The password `make run` (scripts/run_node.py) made and keeps in var/: every command of
    # that checkout (retry_batch, batch_logs...) starts with no extra environment.
    _passwords = _made_password.read_text().strip()
if isinstance(_passwords, str):
    _passwords = tuple(p for p in _passwords.split(",") if p)
LOCKDOWN_PASSWORDS = tuple(_passwords)
if LOCKDOWN_ENABLED and not LOCKDOWN_PASSWORDS:  # noqa: F405
    raise ImproperlyConfigured(
        "LOCKDOWN_ENABLED is true but no LOCKDOWN_PASSWORDS is set: set it in the "
        "environment or in sendit/settings/secrets.py (or set LOCKDOWN_ENABLED=false)."
    )

# Tokens for scripts: `Authorization: Token <t>` passes the lockdown on /api/ only.
_tokens = _secret("API_TOKENS", ())
if isinstance(_tokens, str):
    _tokens = _tokens.split(",")
API_TOKENS = tuple(t.strip() for t in _tokens if t and t.strip())

# Secrets anyone could guess (bogus_secrets.py's "change-me") or brute-force are refused by a
# production node (DEBUG off): the minimum length of each, in characters.
SECRET_MINIMUM = {"SECRET_KEY": 50, "DEID_SECRET": 32, "LOCKDOWN_PASSWORDS": 16, "API_TOKENS": 32}
_PLACEHOLDERS = ("change-me", "changeme", "change_me", "django-insecure", "replace-me")
MAKE_SECRETS = ("Make real ones: `python scripts/make_secrets.py` writes sendit/settings/secrets.py, "
                "`scripts/setup_instance.sh --env-only` writes .env for docker compose, or make one with "
                "`python -c \"import secrets; print(secrets.token_urlsafe(48))\"`.")


def weak_secret(value: str, minimum: int) -> str | None:
    """Why a secret is too weak to run with (None when it is fine): a known placeholder,
    shorter than `minimum`, or fewer than 5 distinct characters (Django's own rule)."""
    if any(word in value.lower() for word in _PLACEHOLDERS):
        return "is a placeholder"
    if len(value) < minimum:
        return f"is shorter than {minimum} characters"
    if len(set(value)) < 5:
        return "has fewer than 5 distinct characters"
    return None


def refuse_weak_secrets() -> None:
    """Stop a node with DEBUG off before it runs on a guessable secret (docs/security.md)."""
    named = [("SECRET_KEY", SECRET_KEY), ("DEID_SECRET", DEID_SECRET)]
    if LOCKDOWN_ENABLED:  # noqa: F405
        named += [("LOCKDOWN_PASSWORDS", p) for p in LOCKDOWN_PASSWORDS]
    named += [("API_TOKENS", t) for t in API_TOKENS]
    for name, value in named:
        reason = weak_secret(value, SECRET_MINIMUM[name])
        if reason:
            raise ImproperlyConfigured(
                f"{name} {reason}: a node with DEBUG off refuses to start on it. {MAKE_SECRETS}")


if not DEBUG:
    refuse_weak_secrets()

ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Before lockdown, so that its templates/lockdown/form.html (with the site's look) wins.
    "sendit.apps.main",
    "sendit.apps.watcher",
    "sendit.apps.ops",
    "sendit.apps.api",
    "lockdown",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "sendit.apps.main.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # After WhiteNoise, which answers static files itself: those stay cacheable.
    "sendit.apps.main.security.NoStoreMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # django-lockdown, plus API tokens and CSRF on the password form (sendit/apps/api/access.py).
    "sendit.apps.api.access.LockdownMiddleware",
]

ROOT_URLCONF = "sendit.urls"
WSGI_APPLICATION = "sendit.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.messages.context_processors.messages",
                "sendit.apps.main.context_processors.sendit",
            ]
        },
    }
]

_env = environ.Env()
DATABASES = {"default": _env.db_url_config(_config.DATABASE_URL)}
DATABASES["default"].setdefault("TEST", {})
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Wait for the lock instead of failing when the worker and the web page write at once.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    # WAL: the status page reads while a worker writes, and a commit appends to the log
    # instead of rewriting a rollback journal; NORMAL syncs at checkpoints, which WAL
    # keeps consistent through a crash (a power cut may lose the last commits, and every
    # step is safe to run again).
    DATABASES["default"]["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    # A file, not memory, so a worker process can share the test database.
    DATABASES["default"]["TEST"]["NAME"] = os.environ.get(
        "SENDIT_TEST_SQLITE", str(Path(_config.VAR_DIR) / "test.sqlite3")
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = 60
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = str(Path(_config.VAR_DIR) / "static")
MEDIA_URL = "/media-not-served/"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"



def cache_from_url(url: str) -> dict:
    """Django's CACHES entry for CACHE_URL (redis://, rediss://, file:///path, locmem://)."""
    if url.startswith(("redis://", "rediss://")):
        return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url,
                "KEY_PREFIX": "sendit"}
    if url.startswith("file://"):
        return {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": url[len("file://"):]}
    if url.startswith("locmem://"):
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    raise ImproperlyConfigured("CACHE_URL must start with redis://, rediss://, file:// or locmem://")


# Shared by every process (uwsgi's, the worker's), so that a count of wrong passwords is one
# count: the Redis broker's server when there is one, else files under VAR_DIR (one machine).
_broker_first = _config.CELERY_BROKER_URL.split(";")[0].strip()
CACHES = {"default": cache_from_url(
    _config.CACHE_URL
    or (_broker_first if _broker_first.startswith(("redis://", "rediss://")) else "")
    or "file://" + str(Path(_config.VAR_DIR) / "cache"))}

# Celery: tasks take ids, acknowledge late, and are safe to run twice.
CELERY_BROKER_URL = _config.CELERY_BROKER_URL
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = Path(_config.VAR_DIR) / "broker"
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        # The folder is listed this often; a step then waits at most this long for the next.
        # 0.05 s costs an idle worker 0.6% of one CPU (0.1 s: 0.35%, 0.02 s: 1.4%), and let
        # scripts/bench_pipeline.py's SQLite run go from about 275 to 300 images/s.
        "polling_interval": 0.05,
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": _config.BROKER_VISIBILITY_TIMEOUT}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
if _config.DEID_OCR and _config.OCR_QUEUE:
    # OCR costs CPU: the de-identification step goes to workers of its own (docs/configuration.md)
    CELERY_TASK_ROUTES = {"sendit.apps.main.tasks.deidentify.replace_identifiers": {"queue": _config.OCR_QUEUE}}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = os.environ.get("CELERY_TASK_ALWAYS_EAGER", "false").lower() == "true"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Logs: one line per batch step, size-capped files under LOG_DIR, and every record
# through sendit.redact so no library can write a patient value.
LOG_DIR = os.environ.get("LOG_DIR", str(Path(_config.VAR_DIR) / "logs"))
Path(LOG_DIR).mkdir(parents=True, exist_ok=True)
LOG_LEVEL = os.environ.get("SENDIT_LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "sendit.redact.RedactFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(process)d %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]},
        "file": {"class": "logging.handlers.RotatingFileHandler", "formatter": "plain", "filters": ["redact"],
                 "filename": str(Path(LOG_DIR) / "sendit.log"), "maxBytes": 10 * 1024 * 1024, "backupCount": 5},
        "mail_admins": {"level": "ERROR", "class": "sendit.redact.AdminMailHandler"},
    },
    "root": {"handlers": ["console", "file"], "level": "WARNING"},
    "loggers": {
        "sendit": {"handlers": ["console", "file", "mail_admins"], "level": LOG_LEVEL, "propagate": False},
        "django.request": {"handlers": ["console", "file", "mail_admins"], "level": "ERROR", "propagate": False},
        "celery": {"level": "INFO"},
        # kombu warns that filesystem:// names no host; that is how the embedded broker works.
        "kombu.connection": {"level": "ERROR"},
    },
}

# Wrong passwords (and, apart, wrong API tokens): after LOCKDOWN_MAX_FAILURES from one client
# address, that address is refused (429) until LOCKDOWN_LOCKOUT_SECONDS have passed since its
# last wrong one; counted in the shared cache (CACHES), so every process sees one count.
LOCKDOWN_MAX_FAILURES = int(os.environ.get("LOCKDOWN_MAX_FAILURES", "10"))
LOCKDOWN_LOCKOUT_SECONDS = int(os.environ.get("LOCKDOWN_LOCKOUT_SECONDS", "300"))

# /healthz answers without the lockdown (ok / not ok only); /metrics checks its own token.
LOCKDOWN_URL_EXCEPTIONS = (r"^/healthz$", r"^/metrics$")
# No logging out by GET (lockdown's ?preview-logout=1, which any link or image could trigger):
# the Log out button POSTs to /logout/ with the CSRF token.
LOCKDOWN_LOGOUT_KEY = None
METRICS_TOKEN = _secret("METRICS_TOKEN", "") or ""

# Server errors by mail: ADMINS="Name <a@b.org>,Other <c@d.org>", EMAIL_HOST, EMAIL_PORT...
ADMINS = [
    (entry.split("<")[0].strip() or entry, entry.split("<")[-1].rstrip(">").strip())
    for entry in os.environ.get("ADMINS", "").split(",") if entry.strip()
]
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = _secret("EMAIL_HOST_PASSWORD", "") or ""
EMAIL_USE_TLS = os.environ.get("EMAIL_USE_TLS", "false").lower() == "true"
SERVER_EMAIL = os.environ.get("SERVER_EMAIL", "sendit@localhost")

# Server errors to Sentry (the seed's Opbeat is gone): no PII, scrubbed before sending.
SENTRY_DSN = _secret("SENTRY_DSN", "") or ""
if SENTRY_DSN:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    from sendit.redact import scrub_sentry_event

    sentry_sdk.init(
        dsn=SENTRY_DSN, integrations=[DjangoIntegration(), CeleryIntegration()],
        send_default_pii=False, include_local_variables=False, max_request_body_size="never",
        before_send=scrub_sentry_event, environment=os.environ.get("SENTRY_ENVIRONMENT", "production"),
    )

# --- Web interface and REST API (docs/interface.md) -------------------------------------
# The lockdown password form of sendit: constant-time check, no django.contrib.auth needed.
LOCKDOWN_FORM = "sendit.apps.main.forms.LockdownForm"
# Static files served by WhiteNoise from the apps too, so a node works before collectstatic.
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    # The lockdown (session or API token) is the gate; DRF itself needs no users.
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "sendit.apps.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sendit API",
    "DESCRIPTION": "Read-only status of sendit's batches and images. Behind the site's lockdown "
                   "password, or send `Authorization: Token <token>` (tokens from API_TOKENS).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No deep links: each would be a link inside the operation's button (axe: nested-interactive).
    "SWAGGER_UI_SETTINGS": {"deepLinking": False},
    "APPEND_COMPONENTS": {"securitySchemes": {"Token": {
        "type": "apiKey", "in": "header", "name": "Authorization",
        "description": "`Token <token>`, one of API_TOKENS"}}},
    "SECURITY": [{"Token": []}],
}

# HTTPS: SECURE_SSL=true (or HTTPS=true) when the node is served over https (nginx in front).
SECURE_SSL = str(_secret("SECURE_SSL", os.environ.get("HTTPS", "false"))).strip().lower() in (
    "1", "true", "yes", "on")
if SECURE_SSL:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = os.environ.get("SECURE_SSL_REDIRECT", "true").lower() in ("1", "true", "yes", "on")
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 31536000))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = os.environ.get("SECURE_HSTS_PRELOAD", "true").lower() in ("1", "true", "yes", "on")
    # nginx terminates TLS and says so in X-Forwarded-Proto; only trust it behind that proxy.
    if os.environ.get("SECURE_PROXY_SSL_HEADER", "true").lower() in ("1", "true", "yes", "on"):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = int(os.environ.get("SESSION_COOKIE_AGE", 12 * 3600))
# WhiteNoise warns at start-up when STATIC_ROOT is missing (before the first collectstatic).
Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)
