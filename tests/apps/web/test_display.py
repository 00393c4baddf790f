"""The scrub helper and the settings masks (sendit/redact.py)."""

import pytest

from sendit.redact import mask_setting, mask_url, scrub, scrub_errors


@pytest.mark.parametrize(
    "text,expected",
    [
        ("a file could not be imported: not a DICOM file (x3)", "a file could not be imported: not a DICOM file (x3)"),
        ("orthanc: 2 image(s) not delivered: HTTP 500", "orthanc: 2 image(s) not delivered: HTTP 500"),
        ("files were left in ST-000001.err", "files were left in ST-000001.err"),
        ("cannot open /data/Doe^Jane/IM0001.dcm: denied", "cannot open [path]: denied"),
        ("in Smith_John/series2/img.dcm", "in [path]"),
        ("C:\\Users\\pat\\x.dcm broken", "[path] broken"),
        ("SOP 1.2.840.113619.2.55.3.604688119 repeated", "SOP [uid] repeated"),
        ("version 1.2.3 ok", "version 1.2.3 ok"),
        ("mail jane.doe@hospital.org", "mail [email]"),
    ],
)
def test_scrub(text, expected):
    assert scrub(text) == expected


def test_scrub_nested_and_errors():
    assert scrub({"a": ["/x/y", 3]}) == {"a": ["[path]", 3]}
    assert scrub_errors([{"time": "t", "step": "s", "message": "/p/q"}, "loose /a/b"]) == [
        {"time": "t", "step": "s", "message": "[path]"},
        {"time": "", "step": "", "message": "loose [path]"},
    ]


def test_masks():
    assert mask_url("redis://:pw@host:6379/0") == "redis://:********@host:6379/0"
    assert mask_url("postgres://user:pw@db/x") == "postgres://user:********@db/x"
    assert mask_url("redis://token@host") == "redis://********@host"
    assert mask_url("http://orthanc:8042") == "http://orthanc:8042"
    assert mask_setting("ORTHANC_PASSWORD", "x") == "********"
    assert mask_setting("ORTHANC_PASSWORD", "") == "(not set)"
    assert mask_setting("API_TOKENS", ("a", "b")) == "******** (2 set)"
    assert mask_setting("GOOGLE_APPLICATION_CREDENTIALS", "/k.json") == "********"
    assert mask_setting("DEID_RETAIN_UIDS", False) is False
