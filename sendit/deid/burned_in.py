"""Decide what happens to an image that may show text in its pixels.

The decision is made by deid-format ``%filter`` rules: the filters of the site's recipe
when it has any (deid's shipped ``deid.dicom`` and ``deid.dicom.ultrasound`` among them),
and ``data/burned_in.dicom`` for an image none of them matches (or when the site has none).

Order: a ``blacklist`` rule that matches always counts; otherwise a ``whitelist`` match
lets the image through as it is; otherwise a ``graylist`` match (or a rule of any
other filter name) counts. When every rule that counts carries pixel regions
(``coordinates``, ``keepcoordinates``...), the image is cleaned: the regions of every
matching rule are applied in recipe order, as deid's DicomCleaner does. When any rule
that counts has no regions, nobody knows where the text is, and the image is held
for a person to look at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pydicom.dataset import Dataset

from sendit.deid.recipe import Match, MatchRegion, Recipe

DEFAULT_FILTERS = Path(__file__).parent / "data" / "burned_in.dicom"


@lru_cache(maxsize=1)
def default_recipe() -> Recipe:
    """The shipped filter recipe (parsed once)."""
    return Recipe.from_file(DEFAULT_FILTERS)


@dataclass
class PixelDecision:
    """``hold``: why the image is held (None: not held). ``clean``: the matching rules whose
    regions clean it (empty: sent as it is)."""

    hold: str | None = None
    clean: list[Match] = field(default_factory=list)
    held_by: str = ""  # the filter name of the rule that holds (blacklist, graylist...)

    @property
    def coordinates(self) -> list[MatchRegion]:
        return [region for match in self.clean for region in match.coordinates]

    @property
    def rules(self) -> str:
        """The cleaning rules as a person reads them, e.g. ``graylist: Blank Image``."""
        return "; ".join(f"{m.group}: {m.title}" for m in self.clean)


def filters_of(recipe: Recipe | None) -> Recipe:
    return recipe if recipe is not None and recipe.filters else default_recipe()


def pixel_decision(ds: Dataset, recipe: Recipe | None = None) -> PixelDecision:
    """Hold, clean or send ``ds`` as it is (see the module docstring); never reads a value
    into the reason, only rule names."""
    matches = filters_of(recipe).detect(ds)
    if not matches and recipe is not None and recipe.filters:
        # No rule of the site's speaks of this image: sendit's own defaults still hold what
        # the header says may carry text (BurnedInAnnotation YES, ultrasound, secondary capture).
        matches = default_recipe().detect(ds)
    if not matches:
        return PixelDecision()
    black = [m for m in matches if m.group == "blacklist"]
    if not black and any(m.group == "whitelist" for m in matches):
        return PixelDecision()
    counting = [m for m in matches if m.group != "whitelist"]
    for match in counting:
        if not match.coordinates:
            return PixelDecision(hold=f"matched filter rule '{match.group}: {match.title}'", held_by=match.group)
    return PixelDecision(clean=[m for m in matches if m.coordinates])


def burned_in_reason(ds: Dataset, recipe: Recipe | None = None) -> str | None:
    """None when ``ds`` may be sent (as it is, or once cleaned), else a short reason naming
    the rule (no values)."""
    return pixel_decision(ds, recipe).hold
