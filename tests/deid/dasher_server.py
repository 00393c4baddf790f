"""A local DASHER-compatible server for tests (reference/dasher-api.md).

    with DasherServer() as server:
        server.write_secrets(path)            # credentials file for the client
        client = DasherClient(server.base_url, secrets_path=path)
        server.fail_next(2, status=503)       # the next two API calls answer 503
        server.expire_token()                 # the next call answers 401 until refreshed
        server.corrupt_next(1, "bad_suid")    # answer once with an invalid body
        server.requests                        # [(method, path, json body or None)]

Endpoints: ``POST /v1/uid/{study}`` (saves), ``POST /v1/mrn/{study}``
(look-up only), ``POST /token/refresh`` (``{"refreshToken"}`` ->
``{"accessToken"}``). Requests need ``Authorization: Bearer <token>``; a
malformed body or more than 1000 items for an entity answers 400. Suids and
jitters are stable per study and entity id (a keyed hash), items share their
entity's jitter.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_ITEMS = 1000
_STAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
CORRUPTIONS = ("bad_suid", "missing_item", "missing_entity", "bad_jitter", "not_json", "empty_suid")


class DasherServer:
    """Threaded HTTP server speaking the DASHER protocol (see module docstring)."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.access_token = secrets.token_hex(8)
        self.refresh_token = secrets.token_hex(8)
        self.client_id = "tester@example.org"
        self.requests: list[tuple[str, str, object]] = []
        self.saved: dict[tuple[str, str, str], dict] = {}  # (study, source, id) -> answer
        self.refreshes = 0
        self._fail: list[int] = []
        self._corrupt: list[str] = []
        self._delay: list[float] = []
        self._expired = False
        self._lock = threading.Lock()
        self._httpd = None
        self._thread = None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> DasherServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                server._handle(self)

            def log_message(self, *args):  # quiet
                pass

        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token/refresh"

    # -- test controls ----------------------------------------------------
    def write_secrets(self, path) -> Path:
        path = Path(path)
        path.write_text(
            json.dumps(
                {
                    "accessToken": self.access_token,
                    "refreshToken": self.refresh_token,
                    "client_id": self.client_id,
                    "token_uri": self.token_uri,
                }
            )
        )
        return path

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._fail.extend([status] * n)

    def corrupt_next(self, n: int = 1, kind: str = "bad_suid") -> None:
        if kind not in CORRUPTIONS:
            raise ValueError(f"kind must be one of {CORRUPTIONS}")
        with self._lock:
            self._corrupt.extend([kind] * n)

    def delay_next(self, n: int, seconds: float) -> None:
        with self._lock:
            self._delay.extend([seconds] * n)

    def expire_token(self) -> None:
        """The current access token is refused (401) until the client refreshes."""
        with self._lock:
            self._expired = True

    # -- protocol --------------------------------------------------------
    def _answer(self, handler, status: int, body) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _handle(self, handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(("POST", handler.path, body))
        path = handler.path.rstrip("/")
        if path == "/token/refresh":
            return self._refresh(handler, body)
        match = re.fullmatch(r"/v1/(uid|mrn)/([A-Za-z0-9_-]+)", path)
        if not match:
            return self._answer(handler, 404, {"error": "not found"})
        with self._lock:
            delay = self._delay.pop(0) if self._delay else 0
        if delay:
            threading.Event().wait(delay)
        auth = handler.headers.get("Authorization", "")
        with self._lock:
            expired = self._expired
            token_ok = auth == f"Bearer {self.access_token}"
        if expired or not token_ok:
            return self._answer(handler, 401, {"error": "token expired or invalid"})
        with self._lock:
            failure = self._fail.pop(0) if self._fail else None
            corruption = self._corrupt.pop(0) if self._corrupt else None
        if failure:
            return self._answer(handler, failure, {"error": "service unavailable"})
        problem = self._validate(body)
        if problem:
            return self._answer(handler, 400, {"error": problem})
        response = self._respond(match.group(2), body, save=match.group(1) == "uid")
        if corruption:
            return self._corrupted(handler, corruption, response)
        return self._answer(handler, 200, response)

    def _refresh(self, handler, body) -> None:
        if not isinstance(body, dict) or body.get("refreshToken") != self.refresh_token:
            return self._answer(handler, 401, {"error": "invalid refresh token"})
        with self._lock:
            self.access_token = secrets.token_hex(8)
            self._expired = False
            self.refreshes += 1
        return self._answer(handler, 200, {"accessToken": self.access_token})

    @staticmethod
    def _validate(body) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("identifiers"), list):
            return "body must be an object with an identifiers list"
        for entity in body["identifiers"]:
            if not isinstance(entity, dict):
                return "an identifier is not an object"
            for key in ("id", "id_source"):
                if not isinstance(entity.get(key), str) or not entity[key]:
                    return f"an identifier lacks {key}"
            if "id_timestamp" in entity and not _STAMP_RE.match(str(entity["id_timestamp"])):
                return "id_timestamp must be ISO 8601 UTC"
            items = entity.get("items", [])
            if not isinstance(items, list):
                return "items must be a list"
            if len(items) > MAX_ITEMS:
                return f"at most {MAX_ITEMS} items per identifier"
            for item in items:
                if not isinstance(item, dict):
                    return "an item is not an object"
                for key in ("id", "id_source"):
                    if not isinstance(item.get(key), str) or not item[key]:
                        return f"an item lacks {key}"
                if "id_timestamp" in item and not _STAMP_RE.match(str(item["id_timestamp"])):
                    return "id_timestamp must be ISO 8601 UTC"
        return None

    def _pseudonym(self, study: str, source: str, ident: str, save: bool) -> dict:
        key = (study, source, ident)
        found = self.saved.get(key)
        if found is None:
            digest = hashlib.sha256(f"{study}\0{source}\0{ident}".encode()).digest()
            found = {"suid": digest[:6].hex(), "jitter": -1 - digest[6] % 30}
            if save:
                self.saved[key] = found
        return found

    @staticmethod
    def _jittered(stamp, days):
        if not stamp:
            return None
        moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ") + timedelta(days=days)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _respond(self, study: str, body: dict, save: bool) -> dict:
        results = []
        with self._lock:
            for entity in body["identifiers"]:
                known = self._pseudonym(study, entity["id_source"], entity["id"], save)
                result = {
                    "id": entity["id"],
                    "id_source": entity["id_source"],
                    "suid": known["suid"],
                    "jitter": known["jitter"],
                    "items": [],
                }
                if entity.get("id_timestamp"):
                    result["jittered_timestamp"] = self._jittered(entity["id_timestamp"], known["jitter"])
                if entity.get("custom_fields"):
                    result["custom_fields"] = entity["custom_fields"]
                for item in entity.get("items", []):
                    item_known = self._pseudonym(study, item["id_source"], item["id"], save)
                    answer = {
                        "id": item["id"],
                        "id_source": item["id_source"],
                        "suid": item_known["suid"],
                        "jitter": known["jitter"],
                    }
                    if item.get("id_timestamp"):
                        answer["jittered_timestamp"] = self._jittered(item["id_timestamp"], known["jitter"])
                    result["items"].append(answer)
                results.append(result)
        return {"results": results}

    def _corrupted(self, handler, kind: str, response: dict) -> None:
        results = response["results"]
        if kind == "not_json":
            return self._answer(handler, 200, b"<html>oops</html>")
        if kind == "missing_entity":
            response["results"] = results[1:]
        elif results:
            first = results[0]
            if kind == "bad_suid":
                first["suid"] = "not/allowed suid"
            elif kind == "empty_suid":
                first["suid"] = ""
            elif kind == "bad_jitter":
                first["jitter"] = "-3"
            elif kind == "missing_item" and first["items"]:
                first["items"] = first["items"][1:]
        return self._answer(handler, 200, response)
