"""A PNG preview of a DICOM image's pixels, and its header as rows for a page.

Windowing: the modality LUT (RescaleSlope/Intercept) first, then the file's first
WindowCenter/WindowWidth when present, else the 0.5-99.5 percentile range. MONOCHROME1
is inverted, RGB (and YBR, converted by pydicom) is shown as colour, PALETTE COLOR
through its lookup table, and only the first frame of a multi-frame image is drawn.
Anything that cannot be decoded (a compressed transfer syntax without its plugin, a
missing Pixel Data) raises PreviewError, and the page shows "no preview" instead.

Pixel cleaning (:func:`pixel_cleaning`): when the site recipe's filter rules with regions
match an image, the preview is drawn with those boxes blanked (deid's mask, as
sendit.deid.pixels cleans the file), so a preview never shows text the rules blank even
before the image is de-identified; each box is then outlined, red where it was blanked and
green where ``keepcoordinates`` kept it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image as PILImage
from PIL import ImageDraw
from pydicom.multival import MultiValue

from sendit.deid.burned_in import filters_of, pixel_decision
from sendit.deid.pixels import BLANK, Region, keep_mask, resolve_regions

MAX_SIDE = 1024
#: outline colours: a box the rules blanked, a box ``keepcoordinates`` kept
BLANKED_COLOUR = (255, 0, 0)
KEPT_COLOUR = (0, 255, 0)
#: outline width in preview pixels: thin, yet still seen once the browser scales the image down
OUTLINE = 2
# Header values longer than this are cut on the page.
MAX_VALUE = 200


class PreviewError(Exception):
    """The pixels could not be read or drawn."""


def _first(value):
    if isinstance(value, (MultiValue, list, tuple)):
        return float(value[0]) if len(value) else None
    return float(value) if value not in (None, "") else None


def _to_uint8(plane, ds):
    """A 2-D grey plane windowed to 0..255."""
    from pydicom.pixels import apply_modality_lut

    data = plane.astype(np.float64)
    try:
        data = apply_modality_lut(data, ds).astype(np.float64)
    except Exception:
        pass
    center = _first(ds.get("WindowCenter")) if "WindowCenter" in ds else None
    width = _first(ds.get("WindowWidth")) if "WindowWidth" in ds else None
    if center is not None and width is not None and width > 0:
        low, high = center - width / 2.0, center + width / 2.0
    else:
        finite = data[np.isfinite(data)]
        if finite.size == 0:
            raise PreviewError("no finite pixel values")
        low, high = np.percentile(finite, [0.5, 99.5])
        if high <= low:
            low, high = float(finite.min()), float(finite.max())
    if high <= low:
        high = low + 1.0
    scaled = np.clip((data - low) / (high - low), 0.0, 1.0) * 255.0
    out = scaled.astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 255 - out
    return out


def _color_to_uint8(array):
    if array.dtype == np.uint8:
        return array
    data = array.astype(np.float64)
    top = float(data.max()) or 1.0
    return np.clip(data / top * 255.0, 0, 255).astype(np.uint8)


@dataclass
class Cleaning:
    """What the site recipe's filter rules do to one stored image's pixels.

    ``apply``: the boxes the preview must blank (the rules match the stored file, which
    may not be cleaned yet). ``outline``: the boxes drawn on the preview (those, or the
    boxes of the rules the pipeline recorded when it cleaned the file). ``rules``: the
    cleaning rules by name. ``hold``: the rule that holds the image (no pixels are shown).
    ``done``: the stored file is the pipeline's cleaned output. ``unknown``: recorded rules
    the recipe no longer has (their boxes cannot be outlined).
    """

    rules: str = ""
    apply: list[Region] = field(default_factory=list)
    outline: list[Region] = field(default_factory=list)
    hold: str | None = None
    done: bool = False
    unknown: list[str] = field(default_factory=list)

    @property
    def cleans(self) -> bool:
        return bool(self.apply) or self.done

    def boxes(self) -> list[dict]:
        """The outlined boxes for the page (coordinates only, never a value)."""
        return [
            {"kept": value != BLANK, "x0": x0, "y0": y0, "x1": x1, "y1": y1} for value, (x0, y0, x1, y1) in self.outline
        ]


def pixel_cleaning(path: str | Path, recorded: str = "", recipe=None) -> Cleaning:
    """How ``recipe``'s filters (sendit.deid.burned_in) treat the file at ``path``.

    ``recorded`` is what the pipeline wrote in ``Image.header["cleaned"]`` when it cleaned
    the file: the rule names. A cleaned output says BurnedInAnnotation NO, which deid's
    recipes whitelist, so its boxes are found again from those names. Raises
    PreviewError when the rules match but their boxes cannot be read (then no preview
    may be shown: it would not be the cleaned one).
    """
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as exc:
        raise PreviewError(type(exc).__name__) from None
    decision = pixel_decision(ds, recipe)
    if decision.hold:
        return Cleaning(hold=decision.hold)
    try:
        if decision.clean:
            regions = resolve_regions(ds, decision.coordinates)
            return Cleaning(rules=recorded or decision.rules, apply=regions, outline=regions, done=bool(recorded))
        if not recorded:
            return Cleaning()
        rules = {
            f"{group}: {rule.title}": rule for group, found in filters_of(recipe).filters.items() for rule in found
        }
        names = [name.strip() for name in recorded.split(";") if name.strip()]
        coordinates = [entry for name in names if name in rules for entry in rules[name].coordinates]
        return Cleaning(
            rules=recorded,
            outline=resolve_regions(ds, coordinates),
            done=True,
            unknown=[name for name in names if name not in rules],
        )
    except ValueError as exc:  # a box the recipe names cannot be read from this header
        raise PreviewError(f"the recipe's pixel regions cannot be read ({type(exc).__name__})") from None


def _outline(picture, regions: list[Region], rows: int, columns: int):
    """``picture`` (already scaled) in colour, with a thin rectangle on the edge of each box."""
    picture = picture.convert("RGB")
    draw = ImageDraw.Draw(picture)
    sx, sy = picture.width / columns, picture.height / rows
    for value, (x0, y0, x1, y1) in regions:
        x1, y1 = min(x1, columns), min(y1, rows)
        if x1 <= x0 or y1 <= y0:
            continue  # empty, or wholly outside the image
        left, top = int(x0 * sx), int(y0 * sy)
        right, bottom = max(left, round(x1 * sx) - 1), max(top, round(y1 * sy) - 1)
        draw.rectangle(
            [left, top, right, bottom], outline=BLANKED_COLOUR if value == BLANK else KEPT_COLOUR, width=OUTLINE
        )
    return picture


def render_png(path, max_side=MAX_SIDE, clean: list[Region] | None = None, outline: list[Region] | None = None):
    """PNG bytes of the first frame of the DICOM file at path.

    ``clean``: boxes blanked first, in the decoded frame, as deid's mask blanks them
    (sendit.deid.pixels.clean_pixels gives the same frame). ``outline``: boxes drawn
    around afterwards, red for blanked, green for kept.
    """
    try:
        ds = pydicom.dcmread(str(path))
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise PreviewError("the file has no pixel data")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        try:
            array = ds.pixel_array if frames <= 1 else ds.pixel_array[0]
        except Exception:
            # Big multi-frame files: pydicom 3 can decode one frame alone.
            from pydicom.pixels import pixel_array as _pixel_array

            array = _pixel_array(ds, index=0)
        rows, columns = int(ds.Rows), int(ds.Columns)
        if clean:
            if not array.flags.writeable:
                array = array.copy()
            array[~keep_mask(rows, columns, clean)] = 0  # every sample of each blanked pixel
        photometric = str(ds.get("PhotometricInterpretation", "")).upper()
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            array = apply_color_lut(array, ds)
            samples = 3
        if samples == 3 and array.ndim == 3:
            picture = PILImage.fromarray(_color_to_uint8(array), mode="RGB")
        elif array.ndim == 2:
            picture = PILImage.fromarray(_to_uint8(array, ds), mode="L")
        else:
            raise PreviewError(f"unexpected pixel array shape {array.shape}")
    except PreviewError:
        raise
    except Exception as exc:  # a decoder plugin missing, a truncated file, an odd header
        raise PreviewError(type(exc).__name__) from None
    picture.thumbnail((max_side, max_side))
    if outline:
        picture = _outline(picture, outline, rows, columns)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def header_rows(path):
    """[(tag, keyword, VR, value)] of the file's header (file meta first), values cut short."""
    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    rows = []
    for dataset in (getattr(ds, "file_meta", None), ds):
        if dataset is None:
            continue
        for element in dataset.iterall():
            if element.tag.group == 0x7FE0:
                continue
            if element.VR == "SQ":
                value = f"sequence of {len(element.value)} item(s)"
            elif element.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") and not isinstance(element.value, str):
                value = f"({len(element.value or b'')} bytes)"
            else:
                value = str(element.value)
            if len(value) > MAX_VALUE:
                value = value[:MAX_VALUE] + "…"
            rows.append(
                (
                    f"({element.tag.group:04X},{element.tag.element:04X})",
                    element.keyword or element.name,
                    element.VR,
                    value,
                )
            )
    return rows
