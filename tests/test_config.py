"""sendit.config: every setting typed, read from the environment, secrets.py or its default,
checked once with a message naming it, and loading writes nothing."""

import subprocess
import sys
import types
from pathlib import Path

import pytest

from sendit import config

ROOT = Path(__file__).resolve().parent.parent
BASE = {
    "SECRET_KEY": "test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
    "DEID_SECRET": "test-site-secret-0123456789abcdefghij",
    "LOCKDOWN_ENABLED": "false",
}


def load(env, secrets=None, tmp=None):
    environ = dict(BASE, **env)
    if tmp is not None:
        environ.setdefault("VAR_DIR", str(tmp))
    return config.load(environ, secrets)


def test_types_follow_the_fields(tmp_path):
    c = load(
        {
            "SEND_TO_ORTHANC": "false",
            "ORTHANC_PORT": "4747",
            "SEND_BACKOFF": "0.5",
            "SOM_STUDY": "prod",
            "RECEIVER_ALLOWED_AETS": "A, B,",
            "DEID_OCR": "yes",
        },
        tmp=tmp_path,
    )
    assert c.orthanc.send_to_orthanc is False and c.orthanc.orthanc_port == 4747
    assert c.sending.send_backoff == 0.5 and c.deid.som_study == "prod" and c.deid.deid_ocr is True
    assert c.receiver.receiver_allowed_aets == ("A", "B")
    assert c.settings()["ORTHANC_PORT"] == 4747


def test_defaults_without_environment(tmp_path):
    c = load({}, tmp=tmp_path)
    assert c.orthanc.orthanc_transport == "rest" and c.sending.send_workers == 8
    assert c.deid.deid_ocr_modalities == ("US", "SC", "OT", "XA", "DX", "CR", "DOC")


def test_older_names_are_aliases(tmp_path):
    assert load({"ORTHAC_PORT": "4747"}, tmp=tmp_path).orthanc.orthanc_port == 4747
    assert load({"ORTHAC_PORT": "4747", "ORTHANC_PORT": "1"}, tmp=tmp_path).orthanc.orthanc_port == 1
    assert load({"HTTPS": "true"}, tmp=tmp_path).web.secure_ssl is True
    assert load({"HTTPS": "true", "SECURE_SSL": "false"}, tmp=tmp_path).web.secure_ssl is False


@pytest.mark.parametrize(
    "env, named",
    [
        ({"SEND_TO_ORTHANC": "maybe"}, "SEND_TO_ORTHANC must be true or false"),
        ({"ORTHANC_PORT": "eighty"}, "ORTHANC_PORT must be a whole number"),
        ({"ORTHANC_TRANSPORT": "ftp"}, "ORTHANC_TRANSPORT must be one of rest, http, dicom"),
        ({"SEND_WORKERS": "0"}, "SEND_WORKERS must be at least 1"),
        ({"DICOMWEB_AUTH": "kerberos"}, "DICOMWEB_AUTH must be one of"),
        ({"LOCAL_JITTER_MIN": "5", "LOCAL_JITTER_MAX": "1"}, "LOCAL_JITTER_MIN must not be above"),
        ({"LOCKDOWN_ENABLED": "true"}, "no LOCKDOWN_PASSWORDS"),
    ],
)
def test_a_value_that_cannot_be_used_is_refused_by_name(tmp_path, env, named):
    with pytest.raises(config.ConfigError, match=named):
        load(env, tmp=tmp_path)


def test_a_secret_is_never_in_the_message(tmp_path):
    with pytest.raises(config.ConfigError) as caught:
        load({"DEBUG": "not-a-boolean-s3cr3t"}, tmp=tmp_path)
    assert "s3cr3t" not in str(caught.value)


def test_secrets_py_comes_after_the_environment(tmp_path):
    site = types.SimpleNamespace(
        ORTHANC_PASSWORD="from-file", LOCKDOWN_PASSWORDS=("p" * 20,), DICOMWEB_TOKEN="file-token"
    )
    c = load({"ORTHANC_PASSWORD": "from-env", "LOCKDOWN_ENABLED": "true"}, site, tmp=tmp_path)
    assert c.orthanc.orthanc_password == "from-env"
    assert c.dicomweb.dicomweb_token == "file-token" and c.web.lockdown_passwords == ("p" * 20,)


def test_missing_keys_name_the_setting_and_the_command_that_makes_them(tmp_path):
    environ = {"LOCKDOWN_ENABLED": "false", "VAR_DIR": str(tmp_path)}
    with pytest.raises(config.ConfigError, match="SECRET_KEY is not set.*make_secrets.py --local"):
        config.load(environ)
    config.make_local_secrets(tmp_path)
    made = config.load(environ)
    assert len(made.web.secret_key) >= 50 and len(made.deid.deid_secret) >= 50
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert config.load(environ).deid.deid_secret == made.deid.deid_secret  # kept, not remade


def test_the_log_folder_follows_var_dir_unless_set(tmp_path):
    assert load({"VAR_DIR": str(tmp_path / "v")}).operations.log_dir == str(tmp_path / "v" / "logs")
    assert load({"VAR_DIR": str(tmp_path), "LOG_DIR": "/srv/logs"}).operations.log_dir == "/srv/logs"


def test_loading_writes_nothing_and_prepare_makes_the_folders(tmp_path):
    var, media = tmp_path / "var", tmp_path / "media"
    c = load({"VAR_DIR": str(var), "MEDIA_ROOT": str(media), "LOG_DIR": str(var / "logs")})
    assert not var.exists() and not media.exists()
    config.prepare(c)
    assert (var / "logs").is_dir() and (var / "broker" / "processed").is_dir() and media.is_dir()
    assert var.stat().st_mode & 0o777 == 0o700 and media.stat().st_mode & 0o777 == 0o700


def test_every_setting_has_a_group_and_secrets_are_known():
    names = config.names()
    assert len(names) == len(set(names)), "a NAME is declared twice"
    assert all(config.group_of(n) for n in names)
    assert config.is_secret("DEID_SECRET") and config.is_secret("DICOMWEB_TOKEN")
    assert not config.is_secret("ORTHANC_URL")
    storage = config.names(*config.STORAGE_CONCERNS)
    assert "DICOMWEB_URL" in storage and "SEND_RETRIES" in storage and "DEID_SECRET" not in storage


def test_importing_the_settings_writes_nothing(tmp_path):
    """A fresh process importing sendit.settings with folders that do not exist leaves them so."""
    var = tmp_path / "var"
    code = "import sendit.settings as s; print(s.CONFIG.pipeline.var_dir)"
    env = {
        "PATH": "/usr/bin:/bin",
        "VAR_DIR": str(var),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "LOG_DIR": str(var / "logs"),
        "LOCKDOWN_ENABLED": "false",
        **{k: v for k, v in BASE.items()},
    }
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(var)
    assert list(tmp_path.iterdir()) == []


def test_deid_options_come_from_the_settings_by_one_rule(tmp_path):
    """Every DeidOptions flag is the setting DEID_ + its name; the key is DEID_SECRET."""
    from sendit.deid import DeidOptions

    c = load({"DEID_RETAIN_UIDS": "true", "DEID_CLEAN_DESCRIPTORS": "true", "DEID_UID_ROOT": "1.2.3."}, tmp=tmp_path)
    options = DeidOptions.from_settings(config.values(c.deid))
    assert options.retain_uids and options.clean_descriptors and options.uid_root == "1.2.3."
    assert not options.retain_device_identity and options.retain_long_modified_dates
    assert options.uid_secret == c.deid.deid_secret.encode()
