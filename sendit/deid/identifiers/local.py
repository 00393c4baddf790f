"""A built-in provider for sites without DASHER: same answers, no network.

Suids and jitters come from a keyed hash (HMAC-SHA256) of the id, so they are
stable and cannot be reversed without the secret. Every answer is also written
to ``store`` (the lead passes a database-backed mapping) and read back from it
first, so a patient keeps the same pseudonym and jitter even after the secret
is rotated.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import MutableMapping
from datetime import datetime, timedelta

from sendit.deid.identifiers.request import IdentifierError, JSONObject, validate_response


def _shift_timestamp(stamp: str | None, days: int) -> str | None:
    if not stamp:
        return None
    try:
        moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return (moment + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


class LocalProvider:
    """DASHER-format answers computed locally (see module docstring)."""

    def __init__(
        self,
        secret: bytes,
        store: MutableMapping[str, JSONObject] | None = None,
        jitter_min: int = -30,
        jitter_max: int = -1,
    ) -> None:
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if not secret:
            raise ValueError("LocalProvider needs a non-empty secret")
        if jitter_min > jitter_max:
            raise ValueError("jitter_min must not exceed jitter_max")
        self._choices = [j for j in range(jitter_min, jitter_max + 1) if j != 0]
        if not self._choices:
            raise ValueError("the jitter range must contain a value other than 0")
        self.secret = secret
        self.store = store if store is not None else {}

    def _digest(self, key: str) -> bytes:
        return hmac.new(self.secret, key.encode("utf-8"), hashlib.sha256).digest()

    def _entity(self, source: str, ident: str) -> JSONObject:
        key = f"entity:{source}:{ident}"
        found = self.store.get(key)
        if found is None:
            digest = self._digest(key)
            found = {
                "suid": digest[:8].hex(),  # 16 characters: fits AccessionNumber (SH)
                "jitter": self._choices[int.from_bytes(digest[10:18], "big") % len(self._choices)],
            }
            self.store[key] = found
        return found

    def _item(self, source: str, ident: str) -> JSONObject:
        key = f"item:{source}:{ident}"
        found = self.store.get(key)
        if found is None:
            found = {"suid": self._digest(key)[:8].hex()}
            self.store[key] = found
        return found

    def identify(self, request_body: JSONObject) -> JSONObject:
        """Answer a DASHER request body with a DASHER response body."""
        entities = request_body.get("identifiers") if isinstance(request_body, dict) else None
        if not isinstance(entities, list):
            raise IdentifierError("malformed identifiers request: no identifiers list")
        results: list[JSONObject] = []
        for entity in entities:
            if not isinstance(entity, dict) or not entity.get("id") or not entity.get("id_source"):
                raise IdentifierError("malformed identifiers request: an entity lacks id or id_source")
            known = self._entity(entity["id_source"], str(entity["id"]))
            jitter = int(known["jitter"])
            result: JSONObject = {
                "id": entity["id"],
                "id_source": entity["id_source"],
                "suid": known["suid"],
                "jitter": jitter,
                "items": [],
            }
            shifted = _shift_timestamp(entity.get("id_timestamp"), jitter)
            if shifted:
                result["jittered_timestamp"] = shifted
            if entity.get("custom_fields"):
                result["custom_fields"] = entity["custom_fields"]
            for item in entity.get("items") or []:
                if not isinstance(item, dict) or not item.get("id") or not item.get("id_source"):
                    raise IdentifierError("malformed identifiers request: an item lacks id or id_source")
                answer: JSONObject = {
                    "id": item["id"],
                    "id_source": item["id_source"],
                    "suid": self._item(item["id_source"], str(item["id"]))["suid"],
                    "jitter": jitter,
                }
                shifted = _shift_timestamp(item.get("id_timestamp"), jitter)
                if shifted:
                    answer["jittered_timestamp"] = shifted
                result["items"].append(answer)
            results.append(result)
        return validate_response(request_body, {"results": results})
