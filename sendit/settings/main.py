"""Django settings of sendit, made from the typed configuration (sendit/config.py).

Every setting of sendit.config is exported here under its NAME, so the code reads
``django.conf.settings.NAME`` and a test can override one the usual Django way. Values come
from the environment, then an untracked secrets.py (see bogus_secrets.py), then the
defaults. Importing this module writes nothing (sendit.config.prepare makes the folders).
"""

import importlib
from pathlib import Path
from types import ModuleType

import environ
from django.core.exceptions import ImproperlyConfigured

from sendit import config as _config

_site_secrets: ModuleType | None
try:  # the site's secrets.py (bogus_secrets.py shows its layout), when there is one
    _site_secrets = importlib.import_module("sendit.settings.secrets")
except ModuleNotFoundError as exc:
    if exc.name != "sendit.settings.secrets":
        raise
    _site_secrets = None

try:
    CONFIG = _config.load(site_secrets=_site_secrets)
except _config.ConfigError as exc:
    raise ImproperlyConfigured(str(exc)) from None
globals().update(CONFIG.settings())

BASE_DIR = _config.BASE_DIR
VAR_DIR = CONFIG.pipeline.var_dir
LOCKDOWN_PASSWORDS = CONFIG.web.lockdown_passwords
API_TOKENS = CONFIG.web.api_tokens

# Secrets anyone could guess (bogus_secrets.py's "change-me") or brute-force are refused by a
# production node (DEBUG off): the minimum length of each, in characters.
SECRET_MINIMUM = {"SECRET_KEY": 50, "DEID_SECRET": 32, "LOCKDOWN_PASSWORDS": 16, "API_TOKENS": 32}
_PLACEHOLDERS = ("change-me", "changeme", "change_me", "django-insecure", "replace-me")
MAKE_SECRETS = (
    "Make real ones: `python scripts/make_secrets.py` writes sendit/settings/secrets.py, "
    "`scripts/setup_instance.sh --env-only` writes .env for docker compose, or make one with "
    '`python -c "import secrets; print(secrets.token_urlsafe(48))"`.'
)


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
    named = [("SECRET_KEY", CONFIG.web.secret_key), ("DEID_SECRET", CONFIG.deid.deid_secret)]
    if CONFIG.web.lockdown_enabled:
        named += [("LOCKDOWN_PASSWORDS", p) for p in LOCKDOWN_PASSWORDS]
    named += [("API_TOKENS", t) for t in API_TOKENS]
    for name, value in named:
        reason = weak_secret(value, SECRET_MINIMUM[name])
        if reason:
            raise ImproperlyConfigured(f"{name} {reason}: a node with DEBUG off refuses to start on it. {MAKE_SECRETS}")


if not CONFIG.web.debug:
    refuse_weak_secrets()

ALLOWED_HOSTS = list(CONFIG.web.allowed_hosts)

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
DATABASES = {"default": _env.db_url_config(CONFIG.pipeline.database_url)}
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
    DATABASES["default"]["TEST"]["NAME"] = str(Path(VAR_DIR) / "test.sqlite3")
else:
    DATABASES["default"]["CONN_MAX_AGE"] = 60
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = str(Path(VAR_DIR) / "static")
MEDIA_URL = "/media-not-served/"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"


def cache_from_url(url: str) -> dict:
    """Django's CACHES entry for CACHE_URL (redis://, rediss://, file:///path, locmem://)."""
    if url.startswith(("redis://", "rediss://")):
        return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url, "KEY_PREFIX": "sendit"}
    if url.startswith("file://"):
        return {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": url[len("file://") :]}
    if url.startswith("locmem://"):
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    raise ImproperlyConfigured("CACHE_URL must start with redis://, rediss://, file:// or locmem://")


# Shared by every process (uwsgi's, the worker's), so that a count of wrong passwords is one
# count: the Redis broker's server when there is one, else files under VAR_DIR (one machine).
_broker_first = CONFIG.pipeline.celery_broker_url.split(";")[0].strip()
CACHES = {
    "default": cache_from_url(
        CONFIG.pipeline.cache_url
        or (_broker_first if _broker_first.startswith(("redis://", "rediss://")) else "")
        or "file://" + str(Path(VAR_DIR) / "cache")
    )
}

# Celery: tasks take ids, acknowledge late, and are safe to run twice.
if CONFIG.pipeline.celery_broker_url.startswith("filesystem://"):
    _broker_dir = Path(VAR_DIR) / "broker"  # made by sendit.config.prepare
    # kombu's filesystem transport with whole-or-nothing message files and a consumer that
    # passes over a file being written (kombu's own lost the message and stopped the worker
    # on JSONDecodeError): sendit/broker.py. Wins over the URL's scheme, so only set here.
    CELERY_BROKER_TRANSPORT = "sendit.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        # message files no consumer could read (empty, cut short), kept for a person to look at
        "bad_folder": str(_broker_dir / "bad"),
        # The folder is listed this often; a step then waits at most this long for the next.
        # 0.05 s costs an idle worker 0.6% of one CPU (0.1 s: 0.35%, 0.02 s: 1.4%), and let
        # scripts/bench_pipeline.py's SQLite run go from about 275 to 300 images/s.
        "polling_interval": 0.05,
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CONFIG.operations.broker_visibility_timeout}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
if CONFIG.deid.deid_ocr and CONFIG.deid.ocr_queue:
    # OCR costs CPU: the de-identification step goes to workers of its own (docs/configuration.md)
    CELERY_TASK_ROUTES = {"sendit.apps.main.tasks.deidentify.replace_identifiers": {"queue": CONFIG.deid.ocr_queue}}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Logs: one line per batch step, size-capped files under LOG_DIR, and every record
# through sendit.redact so no library can write a patient value.
LOG_LEVEL = CONFIG.operations.sendit_log_level
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "sendit.redact.RedactFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(process)d %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]},
        "file": {
            "class": "sendit.redact.RotatingFileHandler",
            "formatter": "plain",
            "filters": ["redact"],
            "filename": str(Path(CONFIG.operations.log_dir) / "sendit.log"),
            "maxBytes": 10 * 1024 * 1024,
            "backupCount": 5,
        },
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

# /healthz answers without the lockdown (ok / not ok only); /metrics checks its own token.
LOCKDOWN_URL_EXCEPTIONS = (r"^/healthz$", r"^/metrics$")
# No logging out by GET (lockdown's ?preview-logout=1, which any link or image could trigger):
# the Log out button POSTs to /logout/ with the CSRF token.
LOCKDOWN_LOGOUT_KEY = None

# Server errors by mail: ADMINS="Name <a@b.org>,Other <c@d.org>", EMAIL_HOST, EMAIL_PORT...
ADMINS = [
    (entry.split("<")[0].strip() or entry, entry.split("<")[-1].rstrip(">").strip())
    for entry in CONFIG.operations.admins
]

# Server errors to Sentry (the original sendit's Opbeat is gone): no PII, scrubbed before sending.
if CONFIG.operations.sentry_dsn:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    from sendit.redact import scrub_sentry_event

    sentry_sdk.init(
        dsn=CONFIG.operations.sentry_dsn,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        before_send=scrub_sentry_event,
        environment=CONFIG.operations.sentry_environment,
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
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "Token": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "`Token <token>`, one of API_TOKENS",
            }
        }
    },
    "SECURITY": [{"Token": []}],
}

# HTTPS: SECURE_SSL=true (or HTTPS=true) when the node is served over https (nginx in front).
if CONFIG.web.secure_ssl:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    # nginx terminates TLS and says so in X-Forwarded-Proto; only trust it behind that proxy.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if CONFIG.web.secure_proxy_ssl_header else None
else:
    SECURE_PROXY_SSL_HEADER = None
    SECURE_SSL_REDIRECT = False
    SECURE_HSTS_SECONDS = 0
    SECURE_HSTS_PRELOAD = False
CSRF_COOKIE_HTTPONLY = True
