"""A PNG preview of a DICOM image's pixels, and its header as rows for a page.

Windowing: the modality LUT (RescaleSlope/Intercept) first, then the file's first
WindowCenter/WindowWidth when present, else the 0.5-99.5 percentile range. MONOCHROME1
is inverted, RGB (and YBR, converted by pydicom) is shown as colour, PALETTE COLOR
through its lookup table, and only the first frame of a multi-frame image is drawn.
Anything that cannot be decoded (a compressed transfer syntax without its plugin, a
missing Pixel Data) raises PreviewError, and the page shows "no preview" instead.
"""
import io

import numpy as np
import pydicom
from PIL import Image as PILImage
from pydicom.multival import MultiValue

MAX_SIDE = 1024
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


def render_png(path, max_side=MAX_SIDE):
    """PNG bytes of the first frame of the DICOM file at path."""
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
            rows.append((f"({element.tag.group:04X},{element.tag.element:04X})",
                         element.keyword or element.name, element.VR, value))
    return rows
