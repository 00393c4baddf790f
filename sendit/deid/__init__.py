"""Sendit's de-identification engine: plain Python on pydicom, no Django.

* :func:`deidentify_dataset` / :func:`deidentify_file` apply DICOM PS3.15
  Table E.1-1 (Basic Profile plus options, :class:`DeidOptions`) and an
  optional deid-format :class:`~sendit.deid.recipe.Recipe`.
* :func:`burned_in_reason` holds back images that may show text in pixels.
* :func:`read_identity` reads what the identifier request needs.
* :mod:`sendit.deid.identifiers` gets pseudonyms and jitter (DASHER or local).
"""

from sendit.deid.burned_in import burned_in_reason
from sendit.deid.files import deidentify_file, read_identity, write_dataset
from sendit.deid.options import DeidOptions
from sendit.deid.proof import IdentifyingValueFound, OutputNotProven
from sendit.deid.recipe import Recipe, RecipeError
from sendit.deid.scrub import deidentify_dataset

__all__ = [
    "DeidOptions",
    "IdentifyingValueFound",
    "OutputNotProven",
    "Recipe",
    "RecipeError",
    "burned_in_reason",
    "deidentify_dataset",
    "deidentify_file",
    "read_identity",
    "write_dataset",
]
