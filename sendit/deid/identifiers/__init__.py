"""Pseudonyms and date jitter for patients and studies: DASHER or local."""

from sendit.deid.identifiers.dasher import DasherClient
from sendit.deid.identifiers.local import LocalProvider
from sendit.deid.identifiers.request import (
    IdentifierError,
    StudyIdentifiers,
    build_request,
    extract_identifiers,
    validate_response,
)

__all__ = [
    "DasherClient",
    "IdentifierError",
    "LocalProvider",
    "StudyIdentifiers",
    "build_request",
    "extract_identifiers",
    "validate_response",
]
