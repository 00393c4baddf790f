"""Blank burned-in text in the pixels, by the boxes of deid recipe filters.

A deid ``%filter`` rule may name boxes of the image: ``coordinates x0,y0,x1,y1``
(blank the box), ``keepcoordinates ...`` (keep it), the CTP forms (translated to
x0,y0,x1,y1 when the recipe is parsed), ``all`` (the whole image) and
``from:<Keyword>`` (the regions of a sequence such as SequenceOfUltrasoundRegions).
deid's ``DicomCleaner`` applies them with a mask that starts as all ones; each
entry, in order, sets its box to its value (0 blank, 1 keep), and every pixel
whose mask is 0 becomes 0 in every frame and every sample. This module does the
same, in place on a pydicom dataset, for every encoding pydicom can decode, and
stores the result as native Explicit VR Little Endian pixel data with a header
that describes it, so that the file stays valid whatever encoding it came in.

Boxes are half-open like numpy slices: x0 <= x < x1, y0 <= y < y1, and a box
that runs past the image is cut at its edge.

Plain functions, no Django::

    regions = resolve_regions(ds, coordinates)   # as deid's has_burned_pixels gives them
    if not keeps_everything(ds, regions):
        clean_pixels(ds, regions)                 # then write ds as usual
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.pixels.decoders.base import Decoder
from pydicom.pixels.utils import as_pixel_options, get_expected_length, pack_bits
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
)

from sendit.deid.recipe import region_locations

BLANK = 0
KEEP = 1

#: (mask value, (x0, y0, x1, y1)): 0 blanks the box, 1 keeps it
Region = tuple[int, tuple[int, int, int, int]]

#: elements that describe encapsulated pixel data only; wrong once the data is native
_ENCAPSULATION_ONLY = (0x7FE00001, 0x7FE00002, 0x7FE00003)  # Extended Offset Table (Lengths), Total Length

#: transfer syntaxes that are always lossy: the output must keep saying so (PS3.3 C.7.6.1.1.5)
_ALWAYS_LOSSY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless})


def resolve_regions(ds: Dataset, coordinates: Iterable[Sequence[Any]]) -> list[Region]:
    """The boxes of one or more matched filter rules, in the order they apply.

    ``coordinates`` is what deid's ``has_burned_pixels`` gives for a rule (or the
    rules of a file, one after the other): a list of ``[mask_value, coordinate]``
    where the coordinate is ``"x0,y0,x1,y1"``, ``"all"``, ``"from:<Keyword>"`` or a
    list of those. ``all`` and ``from:`` are read from ``ds`` here. Anything else
    raises ValueError: a recipe that cannot be applied must not let a file through.
    """
    regions: list[Region] = []
    for entry in coordinates:
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 2:
            raise ValueError(f"a coordinate entry is [mask_value, coordinate], not {entry!r}")
        value, coordinate = entry
        if isinstance(value, bool) or value not in (BLANK, KEEP):
            raise ValueError(f"a mask value is 0 (blank) or 1 (keep), not {value!r}")
        items = coordinate if isinstance(coordinate, (list, tuple)) else [coordinate]
        for item in items:
            regions.extend((int(value), box) for box in _boxes(ds, item))
    return regions


def _boxes(ds: Dataset, item: Any) -> list[tuple[int, int, int, int]]:
    """The boxes one coordinate string stands for."""
    if not isinstance(item, str):
        raise ValueError(f"a coordinate is a string such as '0,0,512,110', 'all' or 'from:Keyword', not {item!r}")
    text = item.strip()
    if text.lower() == "all":
        rows, columns = ds.get("Rows"), ds.get("Columns")
        if not rows or not columns:
            raise ValueError("coordinates 'all' need the image's Rows and Columns")
        return [(0, 0, int(columns), int(rows))]
    if text.startswith("from:"):
        return _boxes_from(ds, text[len("from:") :].strip())
    return [_parse_box(text)]


def _parse_box(text: str) -> tuple[int, int, int, int]:
    """``"x0,y0,x1,y1"`` as four integers, checked."""
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError(f"coordinates are four integers x0,y0,x1,y1, not {text!r}")
    try:
        x0, y0, x1, y1 = (int(part) for part in parts)
    except ValueError:
        raise ValueError(f"coordinates are four integers x0,y0,x1,y1, not {text!r}") from None
    if min(x0, y0, x1, y1) < 0:
        # numpy would count a negative index from the far edge: never what a recipe means
        raise ValueError(f"coordinates cannot be negative: {text!r}")
    if x1 < x0 or y1 < y0:
        raise ValueError(f"coordinates x0,y0,x1,y1 need x0 <= x1 and y0 <= y1: {text!r}")
    return (x0, y0, x1, y1)


def _boxes_from(ds: Dataset, keyword: str) -> list[tuple[int, int, int, int]]:
    """The Region Location boxes of the items of ``keyword`` (none when it is absent).

    As deid does, (MaxX1, MaxY1) is taken as the end of a half-open box, so the last
    row and column the header names are outside it.
    """
    if not keyword or tag_for_keyword(keyword) is None:
        # deid finds no box for an unknown name; a misspelt 'coordinates from:' would blank nothing
        raise ValueError(f"coordinates 'from:' need a DICOM keyword, not {keyword!r}")
    return [_parse_box(text) for text in region_locations(ds, keyword)]


def result_coordinates(result: Mapping[str, Any]) -> list[Sequence[Any]]:
    """All coordinate entries of a ``has_burned_pixels`` result, in the order deid applies them."""
    return [entry for matched in result.get("results", ()) for entry in matched.get("coordinates", ())]


def keep_mask(rows: int, columns: int, regions: Iterable[Region]) -> np.ndarray:
    """The (rows, columns) mask of deid's cleaner as booleans: True keeps a pixel.

    It starts as all True; each region in order sets its box to its value.
    """
    mask = np.ones((rows, columns), dtype=bool)
    for value, (x0, y0, x1, y1) in regions:
        mask[y0:y1, x0:x1] = bool(value)
    return mask


def keeps_everything(ds: Dataset, regions: Iterable[Region]) -> bool:
    """True when cleaning would change no pixel (so the pixel data can go as it is)."""
    return bool(keep_mask(int(ds.Rows), int(ds.Columns), regions).all())


def blanks_everything(ds: Dataset, regions: Iterable[Region]) -> bool:
    """True when the regions blank the whole image (every frame becomes 0)."""
    return not keep_mask(int(ds.Rows), int(ds.Columns), regions).any()


def clean_pixels(ds: Dataset, regions: Iterable[Region]) -> None:
    """Blank the regions in every frame of ``ds``, in place, and store native pixels.

    The pixel data is decoded by pydicom's decoders (native data as a view of one
    writable copy of its bytes, compressed data by the installed plugins), cleaned
    in place, and stored as Explicit VR Little Endian: the transfer syntax,
    Photometric Interpretation (YBR becomes RGB, as pydicom decodes it), Planar
    Configuration and Bits Allocated are set to what the new bytes are, and the
    elements that only describe encapsulated data are removed. Palette color images
    are cleaned in their indices; 0 is written as it is, whatever it displays as
    (white under MONOCHROME1). UIDs are left to the caller.
    """
    if "PixelData" not in ds:
        raise ValueError("the dataset has no Pixel Data (7FE0,0010) to clean (float pixel data is not supported)")
    tsyntax = ds.get("file_meta", Dataset()).get("TransferSyntaxUID")
    if not tsyntax:
        raise ValueError("the dataset's file meta has no Transfer Syntax UID: its pixel data cannot be decoded")
    tsyntax = UID(tsyntax)
    decoder = get_decoder(tsyntax)  # NotImplementedError for a syntax pydicom cannot decode at all
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise RuntimeError(f"no installed plugin decodes {tsyntax.name}: {missing}")

    writable, arr, pixel = _decode(ds, tsyntax, decoder)
    if arr.dtype.byteorder == ">":  # pydicom keeps big-endian native data in its byte order
        arr = arr.byteswap(inplace=True).view(arr.dtype.newbyteorder("<"))
    frames = int(pixel["number_of_frames"])
    samples = int(pixel["samples_per_pixel"])
    if arr.ndim == (3 if samples > 1 else 2):
        arr = arr[np.newaxis]  # one frame: add the frame axis (a view, whatever the strides)
    if samples == 1:
        arr = arr[..., np.newaxis]
    blanked = _apply_regions(arr, list(regions))

    bits_allocated = 1 if ds.BitsAllocated == 1 else arr.dtype.itemsize * 8
    planar = 0  # what tobytes() gives: samples interleaved
    if writable is not None:
        del arr  # no view of the buffer may remain, or getvalue() copies it
        data = writable.getvalue()  # the cleaned bytes themselves, not a copy (CPython's BytesIO)
        planar = ds.get("PlanarConfiguration", 0)  # cleaned where they lie: the layout is the input's
    elif bits_allocated == 1:
        data = pack_bits(arr)  # pydicom's own packing, padded to even length
    else:
        data = arr.tobytes()
    if len(data) % 2:
        data += b"\x00"
    if not tsyntax.is_little_endian:
        _other_words_to_little_endian(ds)
    _store_native(ds, data, pixel, frames, samples, bits_allocated, planar, tsyntax, blanked)


def _decode(ds: Dataset, tsyntax: UID, decoder: Decoder) -> tuple[io.BytesIO | None, np.ndarray, dict[str, str | int]]:
    """(buffer the array is a view of, or None; array; pixel properties) of ``ds``'s pixels.

    Native little-endian data is copied once into a BytesIO and decoded as a view of
    it (``view_only`` on a mutable buffer gives a writable view), so that cleaning
    writes straight into what becomes the new element value. pydicom returns a new
    array instead when it has to convert (bit-packed, YBR, big endian); that array
    is the one cleaned then.
    """
    if decoder.is_native and tsyntax.is_little_endian:
        length = get_expected_length(ds)
        length += length % 2
        pixel_bytes = ds.PixelData
        if len(pixel_bytes) != length:
            pixel_bytes = bytes(memoryview(pixel_bytes)[:length])
        writable = io.BytesIO(pixel_bytes)  # shares the bytes until getbuffer() copies them
        view = writable.getbuffer()
        # pydicom annotates **kwargs as DecodeOptions where it means Unpack[DecodeOptions]
        options: dict[str, Any] = {"view_only": True, "pixel_keyword": "PixelData", **as_pixel_options(ds)}
        arr, pixel = decoder.as_array(view, **options)
        return (writable if np.may_share_memory(arr, view) else None), arr, pixel
    arr, pixel = decoder.as_array(ds)
    return None, arr, pixel


#: item size of the VRs whose bytes pydicom leaves in the order they were read
_WORD_SIZES = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _other_words_to_little_endian(ds: Dataset) -> None:
    """Make a dataset read as Explicit VR Big Endian writable as little endian.

    pydicom converts numbers and text itself when the encoding changes, but not the
    bytes of OW, OL, OF, OD and OV values (a palette's LUT data, for example): they
    are swapped here, at every depth (the pixel data is replaced anyway). UN values
    have no known word size and stay as they are. The dataset is then marked as
    read little endian, so that pydicom writes it as such.
    """

    def swap(dataset: Dataset, element: DataElement) -> None:
        size = _WORD_SIZES.get(element.VR)
        if size and element.tag != 0x7FE00010 and element.value and len(element.value) % size == 0:
            element.value = np.frombuffer(element.value, dtype=f">u{size}").astype(f"<u{size}").tobytes()

    ds.walk(swap)
    ds.set_original_encoding(False, True)


def _apply_regions(frames: np.ndarray, regions: Sequence[Region]) -> bool:
    """Set to 0, in every frame and sample, each pixel deid's mask would blank.

    ``frames`` is (frames, rows, columns, samples), a view of the pixel array. The
    mask is built only over the rectangle that holds the blank boxes (outside it no
    entry blanks anything), as booleans, and inverted in place, so it costs one byte
    per pixel of that rectangle; a rectangle blanked whole is a slice assignment.
    Returns whether any pixel was blanked.
    """
    rows, columns = frames.shape[1:3]
    blanks = [(x0, y0, min(x1, columns), min(y1, rows)) for value, (x0, y0, x1, y1) in regions if value == BLANK]
    blanks = [(x0, y0, x1, y1) for x0, y0, x1, y1 in blanks if x0 < x1 and y0 < y1]
    if not blanks:
        return False
    top, left = min(box[1] for box in blanks), min(box[0] for box in blanks)
    bottom, right = max(box[3] for box in blanks), max(box[2] for box in blanks)
    mask = np.ones((bottom - top, right - left), dtype=bool)  # True keeps, as in deid
    for value, (x0, y0, x1, y1) in regions:
        # shifted into the rectangle; a start above or left of it is clamped (numpy would wrap it)
        mask[max(y0 - top, 0) : max(y1 - top, 0), max(x0 - left, 0) : max(x1 - left, 0)] = bool(value)
    blank = np.logical_not(mask, out=mask)
    if not blank.any():
        return False
    target = frames[:, top:bottom, left:right, :]
    if blank.all():
        target[...] = 0
    else:
        np.copyto(target, 0, where=blank[:, :, np.newaxis])
    return True


def _store_native(
    ds: Dataset,
    data: bytes,
    pixel: dict[str, str | int],
    frames: int,
    samples: int,
    bits_allocated: int,
    planar: int,
    tsyntax: UID,
    blanked: bool,
) -> None:
    """Put the cleaned native bytes in ``ds`` and make its header describe them."""
    ds.PixelData = data
    element = ds["PixelData"]
    element.VR = "OB" if bits_allocated <= 8 else "OW"
    element.is_undefined_length = False
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for tag in _ENCAPSULATION_ONLY:
        if tag in ds:
            del ds[tag]

    ds.BitsAllocated = bits_allocated
    ds.PhotometricInterpretation = pixel["photometric_interpretation"]
    if samples > 1:
        ds.PlanarConfiguration = planar
    if "NumberOfFrames" in ds or frames > 1:
        ds.NumberOfFrames = frames
    if blanked:
        # the new zeros may lie outside the range these Type 3 values claim
        for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
            if keyword in ds:
                del ds[keyword]
    if tsyntax in _ALWAYS_LOSSY and ds.get("LossyImageCompression") != "01":
        ds.LossyImageCompression = "01"


def clean_file(src: str | Path, dst: str | Path, coordinates: Iterable[Sequence[Any]]) -> list[Region]:
    """Read ``src``, clean it by ``coordinates`` (deid's form) and write ``dst``; the regions applied."""
    ds = dcmread(src)
    regions = resolve_regions(ds, coordinates)
    clean_pixels(ds, regions)
    ds.save_as(dst)  # the file meta as read, only its transfer syntax changed (pydicom would
    # otherwise copy SOPInstanceUID into it, however malformed)
    return regions
