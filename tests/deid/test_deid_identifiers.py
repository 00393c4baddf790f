"""Identifier providers: request building, LocalProvider, DasherClient vs a local DASHER."""

import copy
import json
import os
import stat

import pytest

from sendit.deid.identifiers import (
    DasherClient,
    IdentifierError,
    LocalProvider,
    StudyIdentifiers,
    build_request,
    extract_identifiers,
    validate_response,
)
from sendit.deid.identifiers.dasher import split_request

IDENTITIES = [
    {
        "patient_id": "MRN1",
        "birth_date": "19800102",
        "accession": "ACC1",
        "study_date": "20200315",
        "study_time": "101112.5",
        "study_uid": "1.2.3.1",
    },
    {
        "patient_id": "MRN1",
        "birth_date": "19800102",
        "accession": "ACC1",
        "study_date": "20200315",
        "study_time": "101112",
        "study_uid": "1.2.3.1",
    },  # same study, another file
    {
        "patient_id": "MRN1",
        "birth_date": "19800102",
        "accession": "ACC2",
        "study_date": "20210101",
        "study_time": "",
        "study_uid": "1.2.3.2",
    },
    {
        "patient_id": "MRN2",
        "birth_date": "",
        "accession": "",
        "study_date": "",
        "study_time": "",
        "study_uid": "1.2.3.3",
    },
]


def test_build_request():
    body = build_request(IDENTITIES)
    first, second = body["identifiers"]
    assert first == {
        "id": "MRN1",
        "id_source": "Stanford MRN",
        "id_timestamp": "1980-01-02T00:00:00Z",
        "items": [
            {"id": "ACC1", "id_source": "DCM Accession #", "id_timestamp": "2020-03-15T10:11:12Z"},
            {"id": "ACC2", "id_source": "DCM Accession #", "id_timestamp": "2021-01-01T00:00:00Z"},
        ],
    }
    assert second == {
        "id": "MRN2",
        "id_source": "Stanford MRN",
        "items": [{"id": "1.2.3.3", "id_source": "DCM StudyInstanceUID"}],
    }


def test_build_request_without_patient_id_or_anything():
    body = build_request([{"patient_id": "", "accession": "A", "study_uid": "1.2.3"}])
    assert body["identifiers"][0]["id_source"] == "DCM StudyInstanceUID"
    with pytest.raises(IdentifierError) as info:
        build_request([{"patient_id": "", "accession": "", "study_uid": ""}])
    assert "PatientID" in str(info.value)


def test_local_provider_consistent_jitter_per_patient():
    provider = LocalProvider(b"secret")
    response = provider.identify(build_request(IDENTITIES))
    one = extract_identifiers(response, "MRN1", "ACC1")
    two = extract_identifiers(response, "MRN1", "ACC2")
    other = extract_identifiers(response, "MRN2", "", study_uid="1.2.3.3")
    assert one.patient_suid == two.patient_suid != other.patient_suid
    assert one.study_suid != two.study_suid
    assert one.jitter == two.jitter  # same patient, same shift
    # a later, separate request for the same patient gives the same answer
    again = extract_identifiers(provider.identify(build_request(IDENTITIES[2:3])), "MRN1", "ACC2")
    assert again == two
    item = response["results"][0]["items"][0]
    assert item["jittered_timestamp"] != "2020-03-15T10:11:12Z"


def test_local_provider_store_survives_secret_change():
    store = {}
    first = LocalProvider(b"old-secret", store).identify(build_request(IDENTITIES))
    assert "entity:Stanford MRN:MRN1" in store and "item:DCM Accession #:ACC1" in store
    second = LocalProvider(b"new-secret", store).identify(build_request(IDENTITIES))
    assert first == second
    third = LocalProvider(b"new-secret").identify(build_request(IDENTITIES))
    assert third["results"][0]["suid"] != first["results"][0]["suid"]


@pytest.mark.parametrize("low,high", [(-30, -1), (-3, 3), (1, 2), (-1, 1)])
def test_local_provider_jitter_range_never_zero(low, high):
    provider = LocalProvider(b"s", jitter_min=low, jitter_max=high)
    body = {"identifiers": [{"id": f"P{i}", "id_source": "Stanford MRN", "items": []} for i in range(300)]}
    jitters = {r["jitter"] for r in provider.identify(body)["results"]}
    assert 0 not in jitters
    assert all(low <= j <= high for j in jitters)
    assert len(jitters) > 1


def test_local_provider_rejects_bad_ranges():
    with pytest.raises(ValueError):
        LocalProvider(b"s", jitter_min=0, jitter_max=0)
    with pytest.raises(ValueError):
        LocalProvider(b"s", jitter_min=5, jitter_max=1)


def test_extract_identifiers_errors():
    response = LocalProvider(b"s").identify(build_request(IDENTITIES))
    with pytest.raises(IdentifierError):
        extract_identifiers(response, "MRN-UNKNOWN", "ACC1")
    with pytest.raises(IdentifierError):
        extract_identifiers(response, "MRN1", "ACC-UNKNOWN")


def test_split_request():
    items = [{"id": str(i), "id_source": "DCM Accession #"} for i in range(2500)]
    body = {
        "identifiers": [
            {"id": "BIG", "id_source": "Stanford MRN", "items": items},
            {"id": "SMALL", "id_source": "Stanford MRN", "items": items[:3]},
        ]
    }
    parts = split_request(body)
    assert [len(p["identifiers"]) for p in parts] == [1, 1, 1, 1]
    assert parts[0]["identifiers"][0]["id"] == "SMALL"
    assert sum(len(p["identifiers"][0]["items"]) for p in parts[1:]) == 2500
    assert all(len(e["items"]) <= 1000 for p in parts for e in p["identifiers"])


# -- DasherClient against the local DASHER -------------------------------------------


@pytest.fixture
def client(dasher, tmp_path):
    path = dasher.write_secrets(tmp_path / "secrets.json")
    os.chmod(path, 0o600)
    return DasherClient(dasher.base_url, study="test", secrets_path=str(path), timeout=2, retries=3, backoff=0.01)


def test_dasher_identify(client, dasher):
    body = build_request(IDENTITIES)
    response = client.identify(body)
    ids = extract_identifiers(response, "MRN1", "ACC1")
    assert isinstance(ids, StudyIdentifiers) and ids.jitter != 0
    assert extract_identifiers(response, "MRN1", "ACC2").jitter == ids.jitter
    # stable: a second call answers the same
    assert client.identify(body) == response
    method, path, sent = dasher.requests[0]
    assert path == "/v1/uid/test" and sent == body


def test_dasher_requires_token(dasher, tmp_path):
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"accessToken": "wrong", "refreshToken": "also-wrong", "token_uri": dasher.token_uri}))
    client = DasherClient(dasher.base_url, secrets_path=str(path), retries=0)
    with pytest.raises(IdentifierError, match="refresh failed"):
        client.identify(build_request(IDENTITIES))


def test_dasher_refreshes_expired_token(client, dasher, tmp_path):
    old = dasher.access_token
    dasher.expire_token()
    response = client.identify(build_request(IDENTITIES))
    assert response["results"]
    assert dasher.refreshes == 1
    saved = json.loads((tmp_path / "secrets.json").read_text())
    assert saved["accessToken"] == dasher.access_token != old
    assert saved["refreshToken"] == dasher.refresh_token  # other keys preserved
    assert stat.S_IMODE(os.stat(tmp_path / "secrets.json").st_mode) == 0o600
    refresh = [r for r in dasher.requests if r[1] == "/token/refresh"]
    assert refresh[0][2]["refreshToken"] == dasher.refresh_token


def test_dasher_retries_server_errors(client, dasher):
    dasher.fail_next(2, status=503)
    assert client.identify(build_request(IDENTITIES))["results"]
    assert len([r for r in dasher.requests if r[1].startswith("/v1/uid")]) == 3


def test_dasher_gives_up_after_retries(client, dasher):
    dasher.fail_next(10, status=502)
    with pytest.raises(IdentifierError) as info:
        client.identify(build_request(IDENTITIES))
    assert "4 attempts" in str(info.value) and "MRN1" not in str(info.value)


def test_dasher_retries_timeouts(dasher, tmp_path):
    path = dasher.write_secrets(tmp_path / "s.json")
    client = DasherClient(dasher.base_url, secrets_path=str(path), timeout=0.2, retries=2, backoff=0.01)
    dasher.delay_next(1, 0.6)
    assert client.identify(build_request(IDENTITIES))["results"]


def test_dasher_bad_request_not_retried(client, dasher):
    with pytest.raises(IdentifierError, match="400"):
        client.identify({"identifiers": [{"id": "", "id_source": "Stanford MRN"}]})
    assert len(dasher.requests) == 1


@pytest.mark.parametrize("kind", ["bad_suid", "empty_suid", "missing_item", "missing_entity", "bad_jitter", "not_json"])
def test_dasher_invalid_response(client, dasher, kind):
    dasher.corrupt_next(1, kind)
    with pytest.raises(IdentifierError) as info:
        client.identify(build_request(IDENTITIES))
    assert "invalid identifiers response" in str(info.value)
    assert "MRN" not in str(info.value) and "ACC" not in str(info.value)


def test_dasher_splits_large_requests(client, dasher):
    identities = [{"patient_id": "MRNBIG", "accession": f"A{i}", "study_uid": f"1.2.{i}"} for i in range(2300)]
    body = build_request(identities)
    response = client.identify(body)
    assert len(response["results"]) == 1
    assert len(response["results"][0]["items"]) == 2300
    posted = [r for r in dasher.requests if r[1].startswith("/v1/uid")]
    assert len(posted) == 3
    assert all(len(r[2]["identifiers"][0]["items"]) <= 1000 for r in posted)
    jitters = {i["jitter"] for i in response["results"][0]["items"]}
    assert jitters == {response["results"][0]["jitter"]}


def test_dasher_health(client, dasher):
    assert client.health() is True
    assert dasher.requests[-1][1] == "/v1/mrn/test"
    dasher.fail_next(1, status=500)
    assert client.health() is False


def test_dasher_needs_credentials():
    with pytest.raises(IdentifierError, match="STANFORD_CLIENT_SECRETS"):
        DasherClient("http://127.0.0.1:9")


def test_dasher_reads_its_credentials_file(dasher, tmp_path):
    path = dasher.write_secrets(tmp_path / "credentials.json")
    assert DasherClient(dasher.base_url, secrets_path=str(path)).health()


def test_validate_response_accepts_provider_answers_and_refuses_a_short_one():
    body = build_request(IDENTITIES)
    answer = LocalProvider(b"x").identify(body)
    assert validate_response(body, answer) == answer
    short = copy.deepcopy(answer)
    short["results"] = short["results"][:-1]
    with pytest.raises(IdentifierError):
        validate_response(body, short)
