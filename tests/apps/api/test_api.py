"""The read-only REST API through Django's test client."""

import pytest

from sendit.apps.main.models import Image

pytestmark = pytest.mark.django_db


@pytest.fixture
def batches(make_batch, step_log):
    done = make_batch("DONE-1", status="DONE", log=step_log)
    failed = make_batch(
        "ERR-1",
        status="DONEPROCESSING",
        images=[
            ("SENT", None, {"orthanc": {"time": "t", "remote_id": "r"}}),
            ("PROCESSING", None, {}, "burned-in annotation"),
            ("NEW", None),
        ],
        errors=[{"time": "t", "step": "import", "message": "left in /data/Doe^Jane/x.dcm uid 1.2.840.1.2.3"}],
    )
    new = make_batch("NEW-1", status="NEW", images=[("NEW", None)])
    return {"done": done, "failed": failed, "new": new}


@pytest.mark.parametrize("url", ["/api/batches", "/api/batches/"])
def test_batch_list_with_and_without_slash(client, batches, url):
    response = client.get(url)
    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"count", "next", "previous", "results"}
    assert data["count"] == 3 and [b["name"] for b in data["results"]] == ["NEW-1", "ERR-1", "DONE-1"]


def test_batch_detail(client, batches):
    batch = batches["failed"]
    for url in (f"/api/batches/{batch.id}", f"/api/batches/{batch.id}/"):
        data = client.get(url).json()
        assert data["id"] == batch.id and data["status"] == "DONEPROCESSING" and data["has_error"]
        assert data["images"] == 3
        assert data["errors"][0]["message"] == "left in [path] uid [uid]"
        assert data["images_url"].endswith(f"/api/images?batch={batch.id}")
        assert client.get(data["images_url"]).json()["count"] == 3
    done = client.get(f"/api/batches/{batches['done'].id}").json()
    assert done["log"]["steps"]["send"]["seconds"] == 2.0 and done["images_imported"] == 2
    assert client.get("/api/batches/999").status_code == 404


def test_batch_filters(client, batches):
    def names(query):
        return [b["name"] for b in client.get("/api/batches" + query).json()["results"]]

    assert names("?status=DONE") == ["DONE-1"]
    assert names("?status=done") == ["DONE-1"]
    assert names("?has_error=true") == ["ERR-1"]
    assert names("?has_error=false") == ["NEW-1", "DONE-1"]
    assert names("?status=NEW&has_error=false") == ["NEW-1"]
    assert client.get("/api/batches?status=BOGUS").status_code == 400
    assert client.get("/api/batches?has_error=maybe").status_code == 400


def test_pagination(client, make_batch):
    for i in range(7):
        make_batch(f"B{i}")
    first = client.get("/api/batches?page_size=3").json()
    assert first["count"] == 7 and len(first["results"]) == 3 and first["previous"] is None
    assert "page=2" in first["next"]
    last = client.get("/api/batches?page_size=3&page=3").json()
    assert len(last["results"]) == 1 and last["next"] is None
    assert client.get("/api/batches?page=99").status_code == 404


def test_images_and_their_filters(client, batches):
    failed = batches["failed"]
    data = client.get("/api/images").json()
    assert data["count"] == 4
    in_batch = client.get(f"/api/images/?batch={failed.id}").json()["results"]
    assert [i["status"] for i in in_batch] == ["SENT", "PROCESSING", "NEW"]
    sent = client.get(f"/api/images?batch={failed.id}&status=SENT").json()["results"]
    assert len(sent) == 1 and sent[0]["destinations"]["orthanc"]["remote_id"] == "r"
    assert sent[0]["deidentified"] is True and sent[0]["uid"] == Image.objects.get(pk=sent[0]["id"]).uid
    held = client.get("/api/images?flagged=true").json()["results"]
    assert [i["flagged"] for i in held] == ["burned-in annotation"]
    assert client.get("/api/images?batch=x").status_code == 400


def test_the_input_uid_is_never_returned(client, batches):
    for image in client.get("/api/images?status=NEW").json()["results"]:
        assert image["uid"] is None and image["deidentified"] is False
    image = Image.objects.filter(status="PROCESSING").first()
    data = client.get(f"/api/images/{image.id}").json()
    assert data["uid"] is None and image.uid not in str(data)


def test_the_api_is_read_only(client, batches):
    batch = batches["done"]
    assert client.post("/api/batches", {}).status_code == 405
    assert client.delete(f"/api/batches/{batch.id}").status_code == 405
    assert client.put(f"/api/images/{Image.objects.first().id}", {}).status_code == 405


def test_schema_and_swagger_page_use_local_assets(client):
    schema = client.get("/api/schema")
    assert schema.status_code == 200
    text = schema.content.decode()
    assert "/api/batches/" in text and "/api/images/{id}/" in text and "has_error" in text
    assert "Token" in text
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn.jsdelivr" not in html and "unpkg" not in html
    assert client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js").status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        "/api/batches?page_size=",
        "/api/batches?page_size=0",
        "/api/batches?page_size=501",
        "/api/batches?page_size=x",
        "/api/batches?status=",
        "/api/batches?status=BOGUS",
        "/api/batches?status=Done",
        "/api/batches?has_error=",
        "/api/batches?page=",
        "/api/batches?page=0",
        "/api/batches?page=last",
        "/api/batches?has_errors=true",
        "/api/images?batch=",
        "/api/images?batch=0",
        "/api/images?batch=%D9%A3",
        "/api/images?status=",
        "/api/batches/x",
        "/api/batches/%C2%84/",
        "/api/images/0",
        "/api/images/9223372036854775808",
        "/api/batches/1?page=1",
    ],
)
def test_invalid_values_are_400_saying_what_each_must_be(client, batches, query):
    """Each used to be ignored (an empty value listed everything, a misspelt filter too) or a
    404 page in HTML; the schema says what is allowed, and the answer now says it too."""
    response = client.get(query)
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    ((name, message),) = response.json().items()
    assert name in query.replace("/1?", "?").replace("/api/", "").replace("/", "id") and message


def test_not_found_is_json(client, batches):
    assert client.get("/api/batches/9223372036854775807").json() == {"detail": "No Batch matches the given query."}
    assert client.get("/api/batches?page=2").json() == {"detail": "Invalid page."}
    response = client.get("/api/nothing/here")
    assert response.status_code == 404 and response.json() == {"detail": "Not found."}


def test_the_schema_documents_every_answer(client):
    paths = client.get("/api/schema", HTTP_ACCEPT="application/json").json()["paths"]
    assert set(paths) == {"/api/batches/", "/api/batches/{id}/", "/api/images/", "/api/images/{id}/"}
    for path in paths.values():
        operation = path["get"]
        assert set(operation["responses"]) == {"200", "400", "401", "404", "429"}
        assert operation["security"] == [{"Token": []}]  # never {} (no authentication needed)
    size = next(p for p in paths["/api/batches/"]["get"]["parameters"] if p["name"] == "page_size")
    assert size["schema"] == {"type": "integer", "minimum": 1, "maximum": 500}
