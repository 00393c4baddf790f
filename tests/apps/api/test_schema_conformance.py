"""The API answers as its own OpenAPI schema says: schemathesis against the schema the app serves.

The schema is fetched from the app (/api/schema) and every operation is called through
Django's WSGI application, with the test API token, with all of schemathesis' checks on
(status codes, content types, response bodies, invalid values rejected, valid values
accepted, authentication not ignored...). Its examples, coverage and fuzzing phases run
with a fixed seed and a bounded number of examples, so a run is the same each time.
"""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, assume, seed, settings

from tests.apps.web.conftest import TOKEN

pytestmark = pytest.mark.django_db

schema = schemathesis.openapi.from_wsgi("/api/schema", get_wsgi_application())


@pytest.fixture(autouse=True)
def node(locked, make_batch):
    """The lockdown on (so the token is what lets requests in), two batches and their images.

    Called as WSGI, Django closes the database connection after each request, which would
    end the test's transaction; Django's own test client unhooks the same handler."""
    make_batch("DONE-1", status="DONE")
    make_batch("ERR-1", status="DONEPROCESSING", images=[("SENT", None), ("NEW", None, {}, "burned-in")])
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@seed(18)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_answers_as_its_schema_says(case):
    # A parameter whose value is an empty list is not sent at all (no "name=" in the URL): a
    # "negative" case such as {"batch": 1, "": []} reaches the API as the valid ?batch=1, which
    # it rightly answers 200. Such a case says nothing about the API; it is skipped.
    assume(not any(value == [] for value in (case.query or {}).values()))
    case.call_and_validate(headers={"Authorization": f"Token {TOKEN}"})
