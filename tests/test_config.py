"""config.py: every setting can be overridden by an environment variable of the same name."""
import pytest

from sendit.settings import config


def apply(env):
    namespace = {"SEND_TO_ORTHANC": True, "ORTHANC_PORT": 4242, "SEND_BACKOFF": 1.0,
                 "SOM_STUDY": "test", "NAMES": ("a",)}
    config.override_from_environment(namespace, env)
    return namespace


def test_types_follow_the_defaults():
    ns = apply({"SEND_TO_ORTHANC": "false", "ORTHANC_PORT": "4747", "SEND_BACKOFF": "0.5",
                "SOM_STUDY": "prod", "NAMES": "x, y"})
    assert ns == {"SEND_TO_ORTHANC": False, "ORTHANC_PORT": 4747, "SEND_BACKOFF": 0.5,
                  "SOM_STUDY": "prod", "NAMES": ("x", "y")}


def test_the_seeds_typo_is_an_alias():
    assert apply({"ORTHAC_PORT": "4747"})["ORTHANC_PORT"] == 4747
    assert apply({"ORTHAC_PORT": "4747", "ORTHANC_PORT": "1"})["ORTHANC_PORT"] == 1


def test_a_bad_boolean_is_refused():
    with pytest.raises(ValueError, match="SEND_TO_ORTHANC"):
        apply({"SEND_TO_ORTHANC": "maybe"})


def test_every_setting_is_overridable(monkeypatch):
    import importlib

    monkeypatch.setenv("DEIDENTIFY_RESTFUL", "true")
    monkeypatch.setenv("WATCHER_POLLING", "true")
    try:
        fresh = importlib.reload(config)
        assert fresh.DEIDENTIFY_RESTFUL is True and fresh.WATCHER_POLLING is True
    finally:
        monkeypatch.delenv("DEIDENTIFY_RESTFUL")
        monkeypatch.delenv("WATCHER_POLLING")
        importlib.reload(config)
