"""Decide whether an image may carry burned-in text and must be held back.

Pixel data is never changed by sendit (ANONYMIZE_PIXELS is reserved), so an
image that may show a name or date in its pixels is not sent: the pipeline
keeps it for a person to look at. The decision is made by deid-format filters:
``data/burned_in.dicom`` by default, or the filters of the site's recipe when it
has any.

Order: a ``blacklist`` rule that matches holds the file back; otherwise a
``whitelist`` match lets it through; otherwise a ``graylist`` match (or a rule
of any other filter name) holds it back.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sendit.deid.recipe import Recipe

DEFAULT_FILTERS = Path(__file__).parent / "data" / "burned_in.dicom"


@lru_cache(maxsize=1)
def default_recipe() -> Recipe:
    """The shipped filter recipe (parsed once)."""
    return Recipe.from_file(DEFAULT_FILTERS)


def burned_in_reason(ds, recipe: Recipe | None = None) -> str | None:
    """None when ``ds`` is safe to send, else a short reason naming the rule (no values)."""
    filters = recipe.filters if recipe is not None and recipe.filters else default_recipe().filters
    for rule in filters.get("blacklist", ()):
        if rule.matches(ds):
            return f"matched filter rule 'blacklist: {rule.label}'"
    for rule in filters.get("whitelist", ()):
        if rule.matches(ds):
            return None
    for name, rules in filters.items():
        if name in ("blacklist", "whitelist"):
            continue
        for rule in rules:
            if rule.matches(ds):
                return f"matched filter rule '{name}: {rule.label}'"
    return None
