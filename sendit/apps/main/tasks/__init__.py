"""The pipeline, one module per step: import -> identifiers -> deidentify -> send -> cleanup."""

from .cleanup import cleanup
from .deidentify import replace_identifiers
from .identifiers import get_identifiers
from .import_dicom import import_dicomdir
from .send import upload_storage

__all__ = ["import_dicomdir", "get_identifiers", "replace_identifiers", "upload_storage", "cleanup"]
