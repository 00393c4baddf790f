"""Secrets and identifiers at rest: what a copy of the database gives away.

A session keeps a marker of the lockdown password, never the password; the local
identifier provider's table keeps a keyed hash of the MRN and accession number, never
the values (and migration 0003 hashes rows kept before).
"""

import hashlib
import hmac
import json
import re

import pytest
from django.contrib.sessions.models import Session
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from sendit.apps.main.deidconfig import get_provider
from sendit.apps.main.models import LocalIdentifier
from tests.apps.web.conftest import PASSWORD
from tests.apps.web.test_lockdown import login

MRN, ACCESSION = "MRN-SECRET-4711", "ACC-SECRET-0815"
REQUEST = {
    "identifiers": [
        {"id": MRN, "id_source": "Stanford MRN", "items": [{"id": ACCESSION, "id_source": "DCM Accession #"}]}
    ]
}


@pytest.mark.django_db
def test_a_session_keeps_a_marker_never_the_password(locked):
    client = Client(enforce_csrf_checks=True)
    assert login(client).status_code == 302
    rows = list(Session.objects.all())
    assert rows
    for row in rows:
        assert PASSWORD not in row.session_data
        decoded = row.get_decoded()
        assert PASSWORD not in json.dumps(decoded)
    allow = [r.get_decoded()["lockdown-allow"] for r in rows if "lockdown-allow" in r.get_decoded()]
    assert allow and all(v.startswith("marker:") for v in allow)
    assert 'id="live"' in client.get("/").content.decode()


@pytest.mark.django_db
def test_a_session_holding_the_password_itself_is_not_let_in(locked):
    """What an older sendit kept: the password as the session's token. It logs in again."""
    client = Client()
    session = client.session
    session["lockdown-allow"] = PASSWORD
    session.save()
    assert 'id="lockdown-form"' in client.get("/").content.decode()


def all_keys():
    return list(LocalIdentifier.objects.values_list("key", flat=True))


@pytest.mark.django_db
def test_the_local_provider_table_holds_no_mrn_or_accession(settings):
    settings.DEIDENTIFY_RESTFUL = False
    first = get_provider().identify(REQUEST)
    keys = all_keys()
    assert len(keys) == 2
    dump = json.dumps(list(LocalIdentifier.objects.values("key", "value")))
    assert MRN not in dump and ACCESSION not in dump
    assert all(re.fullmatch(r"[0-9a-f]{64}", k) for k in keys)
    # The pseudonyms are read back from the table: the same patient gets the same ones.
    LocalIdentifier.objects.update(value={"suid": "kept-suid", "jitter": -7})
    again = get_provider().identify(REQUEST)
    assert again["results"][0]["suid"] == "kept-suid" and again["results"][0]["jitter"] == -7
    assert first["results"][0]["suid"] != "kept-suid"
    # The hash is keyed: without DEID_SECRET the MRN does not find its row.
    unkeyed = hashlib.sha256(f"sendit.local-identifier:entity:Stanford MRN:{MRN}".encode()).hexdigest()
    assert unkeyed not in keys


@pytest.mark.django_db(transaction=True)
def test_migration_0003_hashes_the_rows_kept_before(settings):
    executor = MigrationExecutor(connection)
    executor.migrate([("main", "0002_image_header")])
    old_apps = executor.loader.project_state([("main", "0002_image_header")]).apps
    Old = old_apps.get_model("main", "LocalIdentifier")
    Old.objects.create(key=f"entity:Stanford MRN:{MRN}", value={"suid": "aaaa", "jitter": -3})
    Old.objects.create(key=f"item:DCM Accession #:{ACCESSION}", value={"suid": "bbbb"})
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    keys = all_keys()
    assert len(keys) == 2 and not any(MRN in k or ACCESSION in k for k in keys)
    secret = settings.DEID_SECRET.encode()
    expected = hmac.new(
        secret, f"sendit.local-identifier:entity:Stanford MRN:{MRN}".encode(), hashlib.sha256
    ).hexdigest()
    assert LocalIdentifier.objects.get(key=expected).value == {"suid": "aaaa", "jitter": -3}
    # The provider finds the migrated pseudonyms.
    settings.DEIDENTIFY_RESTFUL = False
    answer = get_provider().identify(REQUEST)
    assert answer["results"][0]["suid"] == "aaaa" and answer["results"][0]["items"][0]["suid"] == "bbbb"
