"""Sendit's configuration: every setting, typed, read once, validated at start-up.

One frozen dataclass per concern (the folders and services, de-identification, each
destination, sending, the watcher, the receiver, the web interface, operations). A setting's
environment variable is its field name in capitals (``Orthanc.orthanc_url`` is
``ORTHANC_URL``). :func:`load` builds them all from, in order: the environment, the site's
``sendit/settings/secrets.py`` (see ``bogus_secrets.py``), the default here. A value that
cannot be used stops the node with a :class:`ConfigError` naming the setting.

Plain Python, no Django: ``sendit.settings`` exports these values as Django settings,
``sendit.deid`` and ``sendit.storage`` are handed what they need. This is the only module
that reads ``os.environ``. Loading writes nothing: :func:`prepare` makes the folders and
:func:`make_local_secrets` the development keys, each called by an entry point on purpose.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, get_type_hints

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

#: Environment names accepted for another setting's when it is not set itself (the original
#: sendit spelled ORTHANC_PORT as ORTHAC_PORT; HTTPS is SECURE_SSL's older name).
ALIASES = {"ORTHAC_PORT": "ORTHANC_PORT", "HTTPS": "SECURE_SSL"}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and never shows a secret's value."""


def setting(default: Any, *, secret: bool = False, choices: tuple[str, ...] = (), minimum: float | None = None) -> Any:
    """A field of a settings dataclass: its default, whether it is a secret (masked on every
    page, read from secrets.py too), the values it may take and its smallest value."""
    return field(default=default, metadata={"secret": secret, "choices": choices, "minimum": minimum})


@dataclass(frozen=True)
class Pipeline:
    """Where studies arrive and wait, the database and the broker."""

    GROUP: ClassVar[str] = "Pipeline"

    data_folder: str = setting(str(BASE_DIR / "data"))
    media_root: str = setting(str(VAR_DIR / "media"))
    var_dir: str = setting(str(VAR_DIR))
    database_url: str = setting("sqlite:///" + str(VAR_DIR / "sendit.sqlite3"))
    celery_broker_url: str = setting("filesystem://")
    cache_url: str = setting("")
    max_file_bytes: int = setting(4 * 1024**3, minimum=1)
    max_sequence_depth: int = setting(16, minimum=1)


@dataclass(frozen=True)
class Deid:
    """How headers and pixels are de-identified, and where pseudonyms come from."""

    GROUP: ClassVar[str] = "De-identification"

    deidentify: bool = setting(True)
    deidentify_restful: bool = setting(False)
    som_study: str = setting("test")
    dasher_url: str = setting("https://api.rit.stanford.edu/identifiers/api")
    dasher_timeout: float = setting(30.0, minimum=0.1)
    dasher_retries: int = setting(4, minimum=0)
    dasher_backoff: float = setting(0.5, minimum=0)
    stanford_client_secrets: str = setting("")
    local_jitter_min: int = setting(-30)
    local_jitter_max: int = setting(-1)
    deid_secret: str = setting("", secret=True)
    study_deid: str = setting("")
    deid_functions: tuple[str, ...] = setting(())
    deid_uid_root: str = setting("2.25.")
    deid_retain_long_modified_dates: bool = setting(True)
    deid_retain_patient_characteristics: bool = setting(False)
    deid_retain_device_identity: bool = setting(False)
    deid_retain_institution_identity: bool = setting(False)
    deid_clean_descriptors: bool = setting(False)
    deid_retain_uids: bool = setting(False)
    deid_retain_safe_private: bool = setting(False)
    anonymize_pixels: bool = setting(False)
    deid_ocr: bool = setting(False)
    deid_ocr_modalities: tuple[str, ...] = setting(("US", "SC", "OT", "XA", "DX", "CR", "DOC"))
    deid_ocr_scrub: str = setting("identifying", choices=("identifying", "all"))
    deid_ocr_release: bool = setting(True)
    ocr_queue: str = setting("")
    tessdata_prefix: str = setting("")


@dataclass(frozen=True)
class Orthanc:
    """The Orthanc destination, over REST or DICOM (C-STORE)."""

    GROUP: ClassVar[str] = "Destinations"

    send_to_orthanc: bool = setting(True)
    orthanc_transport: str = setting("rest", choices=("rest", "http", "dicom"))
    orthanc_url: str = setting("http://127.0.0.1:8042")
    orthanc_username: str = setting("")
    orthanc_password: str = setting("", secret=True)
    orthanc_verify: str = setting("series", choices=("series", "md5"))
    orthanc_ipaddress: str = setting("127.0.0.1")
    orthanc_port: int = setting(4242, minimum=1)
    orthanc_aet: str = setting("ORTHANC")
    sendit_aet: str = setting("SENDIT")
    orthanc_dicom_associations: int = setting(4, minimum=1)
    sendit_max_pdu: int = setting(0, minimum=0)


@dataclass(frozen=True)
class Dicomweb:
    """A DICOMweb destination (STOW-RS, verified by QIDO-RS)."""

    GROUP: ClassVar[str] = "Destinations"

    send_to_dicomweb: bool = setting(False)
    dicomweb_url: str = setting("")
    dicomweb_auth: str = setting("none", choices=("none", "basic", "bearer", "google"))
    dicomweb_username: str = setting("")
    dicomweb_password: str = setting("", secret=True)
    dicomweb_token: str = setting("", secret=True)
    dicomweb_instances_per_request: int = setting(25, minimum=1)


@dataclass(frozen=True)
class Google:
    """Google Cloud Storage, and the Datastore entities that describe what it holds."""

    GROUP: ClassVar[str] = "Destinations"

    send_to_google: bool = setting(False)
    google_cloud_storage: str = setting("som-pacs")
    google_project_name: str = setting("")
    google_storage_collection: str = setting("sendit")
    google_storage_format: str = setting("dicom", choices=("dicom", "nifti"))
    google_application_credentials: str = setting("")
    storage_emulator_host: str = setting("")
    google_datastore: bool = setting(False)
    google_datastore_study_kind: str = setting("Study")
    google_datastore_series_kind: str = setting("Series")
    google_datastore_fields: str = setting(
        "Modality,BodyPartExamined,SeriesDescription,StudyDate,Manufacturer,ManufacturerModelName,"
        "SliceThickness,PixelSpacing"
    )
    google_datastore_namespace: str = setting("")
    datastore_emulator_host: str = setting("")


@dataclass(frozen=True)
class Sending:
    """How every destination retries, how many uploads run at once, how long one may take."""

    GROUP: ClassVar[str] = "Destinations"

    send_retries: int = setting(5, minimum=0)
    send_backoff: float = setting(1.0, minimum=0)
    send_backoff_max: float = setting(30.0, minimum=0)
    send_workers: int = setting(8, minimum=1)
    send_timeout: float = setting(60.0, minimum=0.1)


@dataclass(frozen=True)
class Watcher:
    """The data folder's watcher and its sweeper."""

    GROUP: ClassVar[str] = "Pipeline"

    watcher_polling: bool = setting(False)
    watcher_poll_interval: float = setting(2.0, minimum=0.01)
    watcher_settle_seconds: float = setting(1.0, minimum=0)
    watcher_pid_file: str = setting(str(VAR_DIR / "watcher.pid"))
    watcher_log_dir: str = setting(str(VAR_DIR))
    watcher_log_max_bytes: int = setting(5 * 1024 * 1024, minimum=1)
    watcher_log_backups: int = setting(3, minimum=0)
    sweep_interval: float = setting(60.0, minimum=0.1)
    sweep_after_seconds: float = setting(900.0, minimum=0)


@dataclass(frozen=True)
class Receiver:
    """The DICOM receiver (C-STORE SCP)."""

    GROUP: ClassVar[str] = "Pipeline"

    receiver_aet: str = setting("SENDIT")
    receiver_port: int = setting(11112, minimum=1)
    receiver_bind: str = setting("127.0.0.1")
    receiver_allowed_aets: tuple[str, ...] = setting(())
    receiver_study_settle_seconds: float = setting(10.0, minimum=0)
    receiver_max_associations: int = setting(10, minimum=1)


@dataclass(frozen=True)
class Web:
    """The status page and the API: the password, tokens, hosts and HTTPS."""

    GROUP: ClassVar[str] = "Web"

    debug: bool = setting(False)
    secret_key: str = setting("", secret=True)
    allowed_hosts: tuple[str, ...] = setting(("127.0.0.1", "localhost"))
    lockdown_enabled: bool = setting(True)
    lockdown_passwords: tuple[str, ...] = setting((), secret=True)
    api_tokens: tuple[str, ...] = setting((), secret=True)
    lockdown_max_failures: int = setting(10, minimum=1)
    lockdown_lockout_seconds: int = setting(300, minimum=0)
    session_cookie_age: int = setting(12 * 3600, minimum=60)
    secure_ssl: bool = setting(False)
    secure_ssl_redirect: bool = setting(True)
    secure_hsts_seconds: int = setting(31536000, minimum=0)
    secure_hsts_preload: bool = setting(True)
    secure_proxy_ssl_header: bool = setting(True)


@dataclass(frozen=True)
class Operations:
    """Workers, leases and recovery, logs, metrics and alerts."""

    GROUP: ClassVar[str] = "Operations"

    batch_lease_seconds: float = setting(60.0, minimum=1)
    lease_heartbeat_seconds: float = setting(15.0, minimum=0.1)
    broker_visibility_timeout: int = setting(3600, minimum=1)
    celery_task_always_eager: bool = setting(False)
    log_dir: str = setting("")  # empty: VAR_DIR/logs (load() fills it in)
    sendit_log_level: str = setting("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    metrics_token: str = setting("", secret=True)
    sentry_dsn: str = setting("", secret=True)
    sentry_environment: str = setting("production")
    admins: tuple[str, ...] = setting(())
    server_email: str = setting("sendit@localhost")
    email_host: str = setting("localhost")
    email_port: int = setting(25, minimum=1)
    email_host_user: str = setting("")
    email_host_password: str = setting("", secret=True)
    email_use_tls: bool = setting(False)
    # Fault injection for the reliability tests and scripts/chaos.py (never in production):
    # the process reaching the step named SENDIT_CRASH_AT kills itself once, marking
    # SENDIT_CRASH_MARKER.
    sendit_crash_at: str = setting("")
    sendit_crash_marker: str = setting("")


@dataclass(frozen=True)
class Config:
    """Every concern's settings, as :func:`load` built them (a new concern is a dataclass
    above and a field here)."""

    pipeline: Pipeline
    deid: Deid
    orthanc: Orthanc
    dicomweb: Dicomweb
    google: Google
    sending: Sending
    watcher: Watcher
    receiver: Receiver
    web: Web
    operations: Operations

    def concerns(self) -> tuple[Any, ...]:
        """Each concern's settings, in field order."""
        return tuple(getattr(self, f.name) for f in fields(self))

    def settings(self) -> dict[str, Any]:
        """Every setting by its NAME, as Django settings carry them."""
        return {name: value for concern in self.concerns() for name, value in values(concern).items()}


#: Every concern, in the order of Config's fields.
CONCERNS: tuple[type[Any], ...] = tuple(get_type_hints(Config)[f.name] for f in fields(Config))
#: The concerns sendit.storage is handed (sendit.storage.get_destinations).
STORAGE_CONCERNS: tuple[type[Any], ...] = (Orthanc, Dicomweb, Google, Sending)


def env_name(field_name: str) -> str:
    """A field's setting NAME (and environment variable): its name in capitals."""
    return field_name.upper()


def values(concern: Any) -> dict[str, Any]:
    """A concern's settings by NAME."""
    return {env_name(f.name): getattr(concern, f.name) for f in fields(concern)}


def names(*concerns: type) -> tuple[str, ...]:
    """The NAMEs of the given concerns' settings (all of them when none is given)."""
    return tuple(env_name(f.name) for concern in (concerns or CONCERNS) for f in fields(concern))


#: NAME -> (its concern, its field), worked out once
_SETTINGS: dict[str, tuple[type[Any], Field[Any]]] = {env_name(f.name): (c, f) for c in CONCERNS for f in fields(c)}


def is_secret(name: str) -> bool:
    """Whether the setting NAME is a secret (False for a name that is not a setting)."""
    found = _SETTINGS.get(name)
    return bool(found and found[1].metadata.get("secret"))


def group_of(name: str) -> str | None:
    """The settings page's group of the setting NAME."""
    found = _SETTINGS.get(name)
    return str(found[0].GROUP) if found else None


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    """An environment string (or a secrets.py value) as the field's type."""
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{name} must be true or false")
    if kind in (int, float):
        try:
            return kind(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a {'whole ' if kind is int else ''}number") from None
    if kind == tuple[str, ...]:
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        return tuple(str(v).strip() for v in items if str(v).strip())
    return str(raw)


def build(concern: type, environ: Mapping[str, str] | None = None, site_secrets: ModuleType | None = None) -> Any:
    """One concern's settings from the environment, then secrets.py, then the defaults."""
    environ = os.environ if environ is None else environ
    hints = get_type_hints(concern)
    given: dict[str, Any] = {}
    for f in fields(concern):
        name = env_name(f.name)
        alias = next((a for a, target in ALIASES.items() if target == name and a in environ), None)
        if name in environ:
            raw: Any = environ[name]
        elif alias:
            raw = environ[alias]
        elif site_secrets is not None and hasattr(site_secrets, name):
            raw = getattr(site_secrets, name)
        else:
            continue
        value = _coerce(name, hints[f.name], raw)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}")
        minimum = f.metadata.get("minimum")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}")
        given[f.name] = value
    return concern(**given)


def load(environ: Mapping[str, str] | None = None, site_secrets: ModuleType | None = None) -> Config:
    """Every concern's settings, checked together where they depend on each other.

    ``site_secrets`` is the site's sendit/settings/secrets.py module, when there is one.
    Empty SECRET_KEY and DEID_SECRET fall back to the development keys in VAR_DIR that
    :func:`make_local_secrets` made.
    """
    built = {f.name: build(concern, environ, site_secrets) for f, concern in zip(fields(Config), CONCERNS)}
    config = Config(**built)
    var_dir = Path(config.pipeline.var_dir)
    web, deid = config.web, config.deid
    if not web.secret_key:
        web = replace(web, secret_key=_read_local(var_dir, "secret_key"))
    if not deid.deid_secret:
        deid = replace(deid, deid_secret=_read_local(var_dir, "deid_secret"))
    operations = config.operations
    if not operations.log_dir:
        operations = replace(operations, log_dir=str(var_dir / "logs"))
    if not web.lockdown_passwords:
        made = _read_local(var_dir, "lockdown_password")
        if made:
            web = replace(web, lockdown_passwords=(made,))
    config = replace(config, web=web, deid=deid, operations=operations)
    _check(config)
    return config


def _read_local(var_dir: Path, name: str) -> str:
    """A key kept in VAR_DIR by make_local_secrets ('' when there is none)."""
    try:
        return (var_dir / name).read_text().strip()
    except OSError:
        return ""


def _check(config: Config) -> None:
    """The rules that join two settings."""
    for name, value in (("SECRET_KEY", config.web.secret_key), ("DEID_SECRET", config.deid.deid_secret)):
        if not value:
            raise ConfigError(
                f"{name} is not set: set it in the environment or in sendit/settings/secrets.py "
                "(`python scripts/make_secrets.py`), or make development keys with "
                "`python scripts/make_secrets.py --local`"
            )
    if config.web.lockdown_enabled and not config.web.lockdown_passwords:
        raise ConfigError(
            "LOCKDOWN_ENABLED is true but no LOCKDOWN_PASSWORDS is set: set it in the "
            "environment or in sendit/settings/secrets.py (or set LOCKDOWN_ENABLED=false)"
        )
    if config.deid.local_jitter_min > config.deid.local_jitter_max:
        raise ConfigError("LOCAL_JITTER_MIN must not be above LOCAL_JITTER_MAX")


def make_local_secrets(var_dir: Path | str = VAR_DIR) -> None:
    """Random SECRET_KEY and DEID_SECRET kept in VAR_DIR for a development node (`make run`,
    scripts/run_node.py), stable across its restarts. Keys already there are kept."""
    folder = Path(var_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in ("secret_key", "deid_secret"):
        path = folder / name
        if not path.exists():
            path.write_text(secrets.token_urlsafe(50))
            path.chmod(0o600)


def prepare(config: Config) -> None:
    """Make the folders a node writes to: VAR_DIR and MEDIA_ROOT private (folders that exist,
    such as docker volumes, keep their modes), the logs, the static files and the embedded
    broker's folders. Called by each entry point (manage.py, wsgi, the Celery app)."""
    for folder in (config.pipeline.var_dir, config.pipeline.media_root):
        if not Path(folder).exists():
            Path(folder).mkdir(mode=0o700, parents=True, exist_ok=True)
    Path(config.operations.log_dir).mkdir(parents=True, exist_ok=True)
    (Path(config.pipeline.var_dir) / "static").mkdir(parents=True, exist_ok=True)
    if config.pipeline.celery_broker_url.startswith("filesystem://"):
        (Path(config.pipeline.var_dir) / "broker" / "processed").mkdir(parents=True, exist_ok=True)


def use_django_settings(module: str = "sendit.settings") -> None:
    """Point Django at sendit's settings unless DJANGO_SETTINGS_MODULE names others (tests)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", module)


def start() -> Config:
    """What manage.py and the WSGI application do first (the Celery app does the same when a
    worker starts): choose the settings module, load it (a bad setting stops here, named) and
    make the folders its configuration names. The only function here that touches Django."""
    from django.conf import settings

    use_django_settings()
    config: Config = settings.CONFIG
    prepare(config)
    return config
