"""Client for Stanford's DASHER identifiers service.

Protocol (reference/dasher-api.md): ``POST {base}/v1/uid/{study}`` with a
bearer token and the request body; at most 1000 items per entity per request.

Token refresh: DASHER's document says only that the client "posts the refresh
token to token_uri". Sendit sends ``POST token_uri`` with the JSON body
``{"refreshToken": "<refresh token>", "client_id": "<client_id>"}`` and expects
``200`` with ``{"accessToken": "<new token>"}`` (``access_token`` is accepted
too, and a new ``refreshToken`` if present is stored as well). The new token
is written back to the secrets file (atomically, same permissions) and the
request is retried once.

Failures: 5xx, timeouts and connection errors are retried with exponential
backoff (``backoff * 2**attempt`` seconds, ``retries`` times); a 400, a second
401 or an answer that does not cover the request raises IdentifierError.
Messages name the problem, never an id, name or token.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import requests

from sendit.deid.identifiers.request import MAX_ITEMS, IdentifierError, JSONObject, validate_response

logger = logging.getLogger(__name__)

SECRETS_ENV = "STANFORD_CLIENT_SECRETS"


def split_request(request_body: JSONObject, max_items: int = MAX_ITEMS) -> list[JSONObject]:
    """Split a request so that no entity carries more than ``max_items`` items.

    Entities that fit travel together in the first body; a larger entity is
    sent as several copies of itself, each with a slice of its items.
    """
    small: list[JSONObject] = []
    bodies: list[JSONObject] = []
    for entity in request_body.get("identifiers", []):
        items = entity.get("items") or []
        if len(items) <= max_items:
            small.append(entity)
            continue
        for start in range(0, len(items), max_items):
            bodies.append({"identifiers": [dict(entity, items=items[start : start + max_items])]})
    if small or not bodies:
        bodies.insert(0, {"identifiers": small})
    return bodies


def merge_responses(responses: list[JSONObject]) -> JSONObject:
    """Merge the answers of split requests: one result per entity, items concatenated."""
    merged: dict[tuple[object, str], JSONObject] = {}  # (id_source, id) -> result
    for response in responses:
        for result in response.get("results", []):
            key = (result.get("id_source"), str(result.get("id")))
            if key in merged:
                merged[key]["items"] = (merged[key].get("items") or []) + (result.get("items") or [])
            else:
                merged[key] = dict(result, items=list(result.get("items") or []))
    return {"results": list(merged.values())}


class DasherClient:
    """Ask DASHER for suids and jitters (see module docstring)."""

    def __init__(
        self,
        base_url: str,
        study: str = "test",
        secrets_path: str | None = None,
        timeout: float = 30,
        retries: int = 4,
        backoff: float = 0.5,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.study = study
        path = secrets_path
        if not path:
            raise IdentifierError(f"no DASHER credentials: set {SECRETS_ENV} or pass secrets_path")
        self.secrets_path: str = path
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.session = session or requests.Session()

    # -- credentials -------------------------------------------------------
    def _secrets(self) -> JSONObject:
        try:
            data = json.loads(Path(self.secrets_path).read_text())
        except (OSError, ValueError):
            raise IdentifierError("DASHER credentials file is missing or not JSON") from None
        if not isinstance(data, dict) or not data.get("accessToken"):
            raise IdentifierError("DASHER credentials file has no accessToken")
        return data

    def _save_secrets(self, data: JSONObject) -> None:
        path = Path(self.secrets_path)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".dasher-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, indent=2)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def refresh_token(self) -> str:
        """Exchange the refresh token for a new access token and save it."""
        data = self._secrets()
        if not data.get("refreshToken") or not data.get("token_uri"):
            raise IdentifierError("DASHER credentials lack refreshToken or token_uri")
        body = {"refreshToken": data["refreshToken"]}
        if data.get("client_id"):
            body["client_id"] = data["client_id"]
        try:
            response = self.session.post(data["token_uri"], json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise IdentifierError(f"DASHER token refresh failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise IdentifierError(f"DASHER token refresh failed (HTTP {response.status_code})")
        try:
            answer = response.json()
        except ValueError:
            raise IdentifierError("DASHER token refresh answered without JSON") from None
        token: str | None = (
            answer.get("accessToken") or answer.get("access_token") if isinstance(answer, dict) else None
        )
        if not token:
            raise IdentifierError("DASHER token refresh answered without accessToken")
        data["accessToken"] = token
        if answer.get("refreshToken"):
            data["refreshToken"] = answer["refreshToken"]
        self._save_secrets(data)
        logger.info("DASHER access token refreshed")
        return token

    # -- transport ---------------------------------------------------------
    def _post(self, endpoint: str, body: JSONObject, retries: int | None = None) -> JSONObject:
        url = f"{self.base_url}/v1/{endpoint}/{self.study}"
        retries = self.retries if retries is None else retries
        token = self._secrets()["accessToken"]
        refreshed = False
        attempt = 0
        while True:
            problem = None
            try:
                response = self.session.post(
                    url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=self.timeout
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                problem = type(exc).__name__
            else:
                status = response.status_code
                if status == 401 and not refreshed:
                    token = self.refresh_token()
                    refreshed = True
                    continue
                if status == 401:
                    raise IdentifierError("DASHER refused the refreshed token (HTTP 401)")
                if status >= 500:
                    problem = f"HTTP {status}"
                elif status != 200:
                    raise IdentifierError(f"DASHER rejected the request (HTTP {status})")
                else:
                    try:
                        answer: JSONObject = response.json()  # its shape is the caller's to check
                        return answer
                    except ValueError:
                        raise IdentifierError("invalid identifiers response: not JSON") from None
            if attempt >= retries:
                raise IdentifierError(f"DASHER unavailable after {attempt + 1} attempts ({problem})")
            delay = self.backoff * (2**attempt)
            logger.warning("DASHER %s (%s); retrying in %.1fs", endpoint, problem, delay)
            time.sleep(delay)
            attempt += 1

    # -- API ---------------------------------------------------------------
    def identify(self, request_body: JSONObject) -> JSONObject:
        """Send a DASHER request body (split as needed); return the merged, validated response."""
        answers = [self._post("uid", body) for body in split_request(request_body)]
        for body, answer in zip(split_request(request_body), answers):
            validate_response(body, answer)
        return validate_response(request_body, merge_responses(answers))

    def health(self) -> bool:
        """True when the look-up endpoint answers an empty request."""
        try:
            answer = self._post("mrn", {"identifiers": []}, retries=0)
        except IdentifierError as exc:
            logger.warning("DASHER health check failed: %s", exc)
            return False
        return isinstance(answer, dict) and isinstance(answer.get("results"), list)
