"""The API's query and path values: each read strictly, with its OpenAPI schema beside it.

The schema the API serves is built from the same constants the code checks against, so a
value the schema calls invalid is answered 400, never quietly ignored or defaulted (an
empty `?status=` used to list everything). tests/apps/api/test_schema_conformance.py runs
schemathesis against the served schema to keep the two in agreement.
"""

import re
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

# The database's ids are 64-bit: a larger number would overflow in the query (a 500).
MAX_ID = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]{1,19}")  # ASCII digits only: int() also takes "٣", " 1", "1_0"
TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")


def query_value(request: Request, name: str) -> str | None:
    """The parameter's value; None when it is absent. Present but empty (`?status=`) is an
    error: the caller asked for something, and ignoring it would answer another question."""
    value = request.query_params.get(name)
    if value == "":
        raise ValidationError({name: "a value is required"})
    return value


def integer(value: str, name: str, minimum: int = 1, maximum: int = MAX_ID) -> int:
    """`value` as an integer within [minimum, maximum], else 400."""
    if not _INTEGER.fullmatch(value) or not minimum <= int(value) <= maximum:
        raise ValidationError({name: f"an integer from {minimum} to {maximum}"})
    return int(value)


def integer_schema(minimum: int = 1, maximum: int = MAX_ID) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


def choice(value: str, name: str, choices: list[str]) -> str:
    """One of `choices` (upper case) as written or in lower case (`DONE`, `done`), else 400."""
    if value in choices or (value == value.lower() and value.upper() in choices):
        return value.upper()
    raise ValidationError({name: f"one of {', '.join(choices)} (or in lower case)"})


def choice_schema(choices: list[str]) -> dict[str, Any]:
    return {"type": "string", "enum": choices + [c.lower() for c in choices]}


def boolean(value: str, name: str) -> bool:
    """true/false (also 1/0, yes/no, on/off, any case), else 400."""
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise ValidationError({name: "true or false"})
