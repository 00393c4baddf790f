"""Burned-in text found by OCR: read the text in the pixels, and decide what to blank.

Headers lie (BurnedInAnnotation missing or NO on an ultrasound that shows the patient's
name) and a recipe's fixed boxes miss text that moves, so with ``DEID_OCR=true`` the
pixels themselves are read with Tesseract (through tesserocr, imported only here, only
when this module is used). Every frame is prepared as an 8-bit grey image the way a
viewer shows it (modality LUT, the header's window or VOI LUT, MONOCHROME1 inverted,
colour as luminance), read once as it is and once inverted (text is white on black as
often as black on white), and the two readings are merged.

The decision (:func:`decide`) compares each line's text with the identifying values of
the image's own input (:func:`sendit.deid.proof.identifying_values`: name parts, ids,
birth date, accession number, dates) in the forms text takes on a screen (``DOE^JOHN``,
``Doe, John``, ``01/02/1960``, ``1960-01-02``, ``02-Jan-1960``), forgiving the letters
OCR confuses (O/0, l/1, S/5...) and an edit or two in long values. Matches are blanked;
with ``scrub="all"`` every word is; a word the OCR reads with low confidence that comes
close to an identifying value without matching it cannot be decided, and holds the image.

Recognised text never leaves this module in a log line or an error: callers get boxes,
counts and reasons made of fixed words.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

#: modalities and SOP classes whose images often carry text (``DEID_OCR_MODALITIES``'s default)
DEFAULT_MODALITIES = ("US", "SC", "OT", "XA", "DX", "CR", "DOC")
#: SOP classes read as documents ("DOC" in the modality list): secondary captures and
#: encapsulated/scanned documents, whatever their Modality says
DOCUMENT_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
        "1.2.840.10008.5.1.4.1.1.77.1.1",  # VL Endoscopic (screens with text)
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF (no pixels: never read here)
    }
)
#: below this confidence (0-100) a word is not known for what it says
CONFIDENT = 60.0
#: a line taller than this (px) read with no confidence and matching nothing holds the image
HOLD_ABOVE = 16
SCRUB_MODES = ("identifying", "all")
#: where Debian's tesseract-ocr-eng puts the English model (TESSDATA_PREFIX wins)
_TESSDATA = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata", "/usr/share/tessdata")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
#: letters OCR confuses, read as one: a value matches what the screen shows as much as what it is
_CONFUSED = str.maketrans({"o": "0", "i": "1", "l": "1", "|": "1", "!": "1", "s": "5", "z": "2", "b": "8", "g": "9"})
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


#: a box x0, y0, x1, y1 (half-open), in pixels
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class OcrOptions:
    """``DEID_OCR_MODALITIES``, ``DEID_OCR_SCRUB`` and ``TESSDATA_PREFIX``, for
    :func:`sendit.deid.files.deidentify_file`."""

    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    scrub: str = "identifying"
    tessdata: str = ""

    def __post_init__(self) -> None:
        if self.scrub not in SCRUB_MODES:
            raise ValueError(f"DEID_OCR_SCRUB is one of {', '.join(SCRUB_MODES)}, not {self.scrub!r}")


class TextUndecided(Exception):
    """The OCR found text it cannot decide about: the image is held for a person.

    ``record`` is :meth:`OcrDecision.record` (counts and boxes, never text)."""

    def __init__(self, reason: str, record: dict[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.record = record


@dataclass(frozen=True)
class TextBox:
    """One word the OCR read: frame index, half-open box x0,y0,x1,y1, its text, confidence 0-100."""

    frame: int
    box: tuple[int, int, int, int]
    text: str
    confidence: float
    line: tuple[int, ...] = ()  # words of one line share it
    region: Box | None = None  # the box of the line of text it was read in (blanked whole)
    #: read in the polarity that lost to the other one at the same place (:func:`_one_polarity`):
    #: a match in it is blanked, but its noise never holds the image
    shadow: bool = False


@dataclass
class OcrDecision:
    """What to do with one image: the boxes found, those to blank, and why it is held (None: not)."""

    boxes: list[TextBox] = field(default_factory=list)
    blank: list[TextBox] = field(default_factory=list)
    undecided: list[TextBox] = field(default_factory=list)
    hold: str | None = None
    #: boxes (frame, box) blanked besides the words': the rest of a value read in part, the
    #: lines found next to a blanked one in its row
    also: list[tuple[int, Box]] = field(default_factory=list)

    def regions(self, rows: int, columns: int) -> list[tuple[int, Box]]:
        """The boxes to blank as :mod:`sendit.deid.pixels` regions, padded to take in the
        edges of the letters (Tesseract's boxes are tight, anti-aliasing is not)."""
        boxes = [_union(word.box, word.region) for word in self.blank] + [box for _, box in self.also]
        return [(0, padded(box, rows, columns)) for box in boxes]

    def record(self) -> dict[str, Any]:
        """What is recorded of this image (its page, the batch's de-identification record):
        counts and boxes as [frame, x0, y0, x1, y1], never text."""
        return {
            "found": len(self.boxes),
            "blanked": len(self.blank),
            "held": self.hold is not None,
            "boxes": [[b.frame, *b.box] for b in self.boxes][:200],
            "blanked_boxes": ([[b.frame, *b.box] for b in self.blank] + [[f, *box] for f, box in self.also])[:200],
            "undecided_boxes": [[b.frame, *b.box] for b in self.undecided][:200],
        }


def _union(box: Box, region: Box | None) -> Box:
    if region is None:
        return box
    return (min(box[0], region[0]), min(box[1], region[1]), max(box[2], region[2]), max(box[3], region[3]))


def padded(box: tuple[int, int, int, int], rows: int, columns: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    pad = max(2, (y1 - y0) // 4)
    return (max(0, x0 - pad), max(0, y0 - pad), min(columns, x1 + pad), min(rows, y1 + pad))


# -- frames ----------------------------------------------------------------------------
def wants_ocr(ds: Dataset, modalities: Iterable[str]) -> bool:
    """True when the image's modality, or its class as a document ("DOC"), is in ``modalities``."""
    wanted = {m.strip().upper() for m in modalities if m.strip()}
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality and modality in wanted:
        return True
    return "DOC" in wanted and str(ds.get("SOPClassUID", "")) in DOCUMENT_CLASSES


def frames(ds: Dataset) -> Iterator[np.ndarray]:
    """Each frame of ``ds`` as a (rows, columns) uint8 image, the way a viewer shows it.

    pydicom decodes any encoding it has a plugin for (YBR comes out as RGB); a palette
    is applied; grey images go through the modality LUT and the header's VOI (window
    or LUT) when there is one; MONOCHROME1 is inverted so that high means bright.
    """
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    arr = ds.pixel_array
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if count == 1:
        arr = arr[np.newaxis]
    for index in range(arr.shape[0]):
        frame = arr[index]
        if photometric == "PALETTE COLOR":
            frame = apply_color_lut(frame, ds)
            samples = 3
        if samples > 1 or frame.ndim == 3:
            frame = frame.astype(np.float32)
            grey = frame[..., 0] * 0.299 + frame[..., 1] * 0.587 + frame[..., 2] * 0.114
            top = float(2 ** int(ds.get("BitsStored", 8) or 8) - 1) if frame.max() > 255 else 255.0
            yield _to_uint8(grey, 0.0, top)
            continue
        values = apply_modality_lut(frame, ds)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            try:
                values = apply_voi_lut(values, ds)
            except (ValueError, TypeError, KeyError, IndexError, AttributeError):
                pass  # a malformed window: scaled by the frame's own range below
        values = np.asarray(values, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        grey = _to_uint8(values, low, high)
        if photometric == "MONOCHROME1":
            grey = 255 - grey
        yield grey


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(scaled, 0, 255).astype(np.uint8)


# -- reading ---------------------------------------------------------------------------
_local = threading.local()


def tessdata(prefix: str = "") -> str:
    """The folder of Tesseract's models: ``prefix`` (the TESSDATA_PREFIX setting), else where
    Debian puts them."""
    if prefix:
        return prefix
    for folder in _TESSDATA:
        if (Path(folder) / "eng.traineddata").is_file():
            return folder
    raise RuntimeError(
        "Tesseract's English model (eng.traineddata) is not installed: apt-get install tesseract-ocr-eng"
    )


def _api(prefix: str = "") -> Any:
    """One Tesseract engine per thread and models folder, loaded once (loading the model costs
    ~100 ms)."""
    engines: dict[str, Any] = _local.__dict__.setdefault("engines", {})
    folder = tessdata(prefix)
    api = engines.get(folder)
    if api is None:
        import tesserocr

        api = tesserocr.PyTessBaseAPI(path=folder.rstrip("/") + "/", lang="eng", psm=tesserocr.PSM.SINGLE_LINE)
        # Each line is cut out in the polarity it was found in (dark on light): Tesseract's
        # own retry of every doubtful line inverted would cost as much again.
        api.SetVariable("tessedit_do_invert", "0")
        engines[folder] = api
    return api


#: a pixel this close to the frame's brightest (darkest) value may be text drawn at it
_EXTREME = 24
#: small text's blended strokes are taken down to this far from the extreme (with hysteresis)
_LOW = 64
#: more of the frame than this at the extreme is background, not text
_MOST = 0.15
#: text stands out of its surroundings by this much (0-255) at least (white or black top-hat)
_CONTRAST = 40
#: the top-hat's square: wider than the strokes of 32 px bold text, narrower than a letter
_HAT = 11
#: lines taller than this (px) are not text of a screen; lines are read scaled to about _TARGET px
_TALLEST = 48
_TARGET = 36
_MAX_SCALE = 4.0
#: a mask with more pieces than this is noise (speckle), not text
_MOST_PIECES = 3000
#: at most this many lines are read per frame (the largest first): a bound on the cost
_MOST_LINES = 150


@dataclass(frozen=True)
class Line:
    """A line of text found in a frame: its box (half-open) and polarity ("light": light on dark)."""

    box: tuple[int, int, int, int]
    polarity: str


def _filter(a: np.ndarray, k: int, op: np.ufunc) -> np.ndarray:
    """A k x k minimum or maximum filter (``op``: np.minimum / np.maximum), separable, edges repeated."""
    pad = k // 2
    rows, columns = a.shape
    b = np.pad(a, ((0, 0), (pad, pad)), mode="edge")
    out = b[:, :columns].copy()
    for i in range(1, k):
        op(out, b[:, i : i + columns], out=out)
    b = np.pad(out, ((pad, pad), (0, 0)), mode="edge")
    out = b[:rows].copy()
    for i in range(1, k):
        op(out, b[i : i + rows], out=out)
    return out


def _pieces(mask: np.ndarray, seeds: np.ndarray | None = None) -> np.ndarray:
    """The 8-connected pieces of ``mask`` as rows of (x0, y0, x1, y1, pixels), found by runs;
    with ``seeds`` (a mask inside ``mask``), only the pieces that hold a seed pixel."""
    rows, columns = mask.shape
    edges = np.zeros((rows, columns + 2), np.int8)
    edges[:, 1:-1] = mask
    step = np.diff(edges, axis=1)
    run_row, run_start = np.nonzero(step == 1)
    _, run_end = np.nonzero(step == -1)
    count = len(run_row)
    if count == 0:
        return np.zeros((0, 5), np.int64)
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(run_row, np.arange(rows + 1))
    starts, ends = run_start.tolist(), run_end.tolist()
    for row in range(1, rows):
        i, i_end, j, j_end = int(first[row - 1]), int(first[row]), int(first[row]), int(first[row + 1])
        while i < i_end and j < j_end:
            if starts[i] <= ends[j] and starts[j] <= ends[i]:  # touching, diagonals too
                a, b = root(i), root(j)
                if a != b:
                    parent[b] = a
            if ends[i] < ends[j]:
                i += 1
            else:
                j += 1
    _, label = np.unique(np.array([root(i) for i in range(count)]), return_inverse=True)
    n = int(label.max()) + 1
    x0 = np.full(n, columns, np.int64)
    y0 = np.full(n, rows, np.int64)
    x1 = np.zeros(n, np.int64)
    y1 = np.zeros(n, np.int64)
    pixels = np.zeros(n, np.int64)
    np.minimum.at(x0, label, run_start)
    np.maximum.at(x1, label, run_end)
    np.minimum.at(y0, label, run_row)
    np.maximum.at(y1, label, run_row + 1)
    np.add.at(pixels, label, run_end - run_start)
    pieces = np.stack([x0, y0, x1, y1, pixels], axis=1)
    if seeds is not None:
        # seed pixels per run, from each row's running count
        before = np.zeros((rows, columns + 1), np.int32)
        np.cumsum(seeds, axis=1, out=before[:, 1:])
        seeded = np.zeros(n, bool)
        np.logical_or.at(seeded, label, before[run_row, run_end] > before[run_row, run_start])
        pieces = pieces[seeded]
    return pieces


def _lines_of(mask: np.ndarray, seeds: np.ndarray | None = None) -> list[tuple[int, int, int, int]]:
    """Boxes of the lines of letter-sized pieces of ``mask`` (those holding a pixel of
    ``seeds``, when given): pieces of like height that share most of their height and are
    closer than about a letter's height are one line."""
    pieces = _pieces(mask, seeds)
    if len(pieces) == 0 or len(pieces) > _MOST_PIECES:
        return []
    height, width = pieces[:, 3] - pieces[:, 1], pieces[:, 2] - pieces[:, 0]
    pieces = pieces[(height >= 2) & (height <= _TALLEST) & (width <= 4 * _TALLEST) & (pieces[:, 4] >= 2)]
    if len(pieces) == 0 or len(pieces) > _MOST_PIECES:
        return []
    pieces = pieces[np.argsort(pieces[:, 0], kind="stable")]
    x0, y0, x1, y1 = (pieces[:, i].tolist() for i in range(4))
    count = len(x0)
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(count):
        hi = y1[i] - y0[i]
        reach = x1[i] + max(3, int(1.2 * _TALLEST))
        j = i + 1
        while j < count and x0[j] <= reach:
            hj = y1[j] - y0[j]
            small, big = min(hi, hj), max(hi, hj)
            shared = min(y1[i], y1[j]) - max(y0[i], y0[j])
            if shared >= 0.5 * small and big <= 3 * max(small, 2) + 2 and x0[j] - x1[i] <= max(3, 1.2 * big):
                a, b = root(i), root(j)
                if a != b:
                    parent[b] = a
            j += 1
    groups: dict[int, list[int]] = {}
    for i in range(count):
        groups.setdefault(root(i), []).append(i)
    lines = []
    for members in groups.values():
        box = (
            min(x0[i] for i in members),
            min(y0[i] for i in members),
            max(x1[i] for i in members),
            max(y1[i] for i in members),
        )
        w, h = box[2] - box[0], box[3] - box[1]
        # a line: letter height, wider than tall, two letters or more (or one long piece);
        # of seeded pieces (small text taken down to a lower level), three letters or more
        # as wide as them: grains of speckle line up in twos often enough
        if not 4 <= h <= _TALLEST or w < h:
            continue
        if (seeds is None and (len(members) >= 2 or w >= 1.5 * h)) or (len(members) >= 3 and w >= 2.5 * h):
            lines.append(box)
    return lines


def find_lines(grey: np.ndarray, polarities: Sequence[str] = ("light", "dark")) -> list[Line]:
    """The lines of text in one 8-bit frame, light on dark and dark on light.

    Burned-in text is drawn at one value, nearly always the frame's brightest or darkest,
    and stands out of what is around it: the pixels near the extreme value (when few are)
    and the pixels well above their neighbourhood's floor (a white top-hat, for text on a
    gradient or a panel) are taken, cut into pieces, and the pieces of letter size that
    line up are lines. Found without reading, so text too small for Tesseract to find in
    the whole frame is found too, and read scaled up (:func:`read_frame`).
    """
    found: list[Line] = []
    for polarity in polarities:
        image = grey if polarity == "light" else 255 - grey
        top, bottom = int(image.max()), int(image.min())
        if top - bottom <= 2 * _EXTREME:
            continue
        masks: list[tuple[np.ndarray, np.ndarray | None]] = []
        extreme = image >= top - _EXTREME
        if extreme.mean() < _MOST:
            masks.append((extreme, None))
            # small text's strokes are thinner than a pixel: few of them reach the extreme
            # value, the rest are blended with what is under them. Taken down to a lower
            # level, but only the pieces that hold an extreme pixel (hysteresis): speckle
            # as bright as that, alone, is left out
            masks.append((image >= top - _LOW, extreme))
        hat = image.astype(np.int16) - _filter(_filter(image, _HAT, np.minimum), _HAT, np.maximum)
        masks.append((hat >= _CONTRAST, None))
        kept: list[tuple[int, int, int, int]] = []
        for mask, seeds in masks:
            # the extreme pixels' lines first: a line of the top-hat's (text and the grain or
            # the edges around it, read as nothing) does not hide a line of text within it
            # one larger than a line kept, and much like it, widens it (a letter more)
            for box in sorted(_lines_of(mask, seeds), key=lambda b: -(b[2] - b[0]) * (b[3] - b[1])):
                for k, other in enumerate(kept):
                    if _covered(box, other) >= 0.6:
                        if _covered(other, box) >= 0.6:
                            kept[k] = _union(other, box)
                        break
                else:
                    kept.append(box)
        found.extend(Line(box, polarity) for box in kept)
    found.sort(key=lambda line: -(line.box[2] - line.box[0]) * (line.box[3] - line.box[1]))
    return found[:_MOST_LINES]


def _cut(grey: np.ndarray, line: Line) -> tuple[np.ndarray, int, int, float]:
    """The line cut out with a margin, dark text on white, its contrast stretched from the
    ink to a little above it (speckle and gradients fade to white), scaled to about
    _TARGET px high; with the crop's origin and the scale."""
    rows, columns = grey.shape
    x0, y0, x1, y1 = line.box
    margin = max(2, (y1 - y0) // 3)
    left, top = max(0, x0 - margin), max(0, y0 - margin)
    crop = grey[top : min(rows, y1 + margin), left : min(columns, x1 + margin)]
    if line.polarity == "light":
        crop = 255 - crop
    crop = crop.astype(np.float32)
    ink, paper = float(np.percentile(crop, 3)), float(np.median(crop))
    span = max(1.0, 0.6 * (paper - ink))
    crop = np.clip((crop - ink) * (255.0 / span), 0, 255).astype(np.uint8)
    # and a white border: what lies around a line (speckle, the edge of a fan) at the edge
    # of the image makes Tesseract find no text at all in a line it reads well bordered
    border = max(3, (y1 - y0) // 2)
    crop = np.pad(crop, border, constant_values=255)
    scale = min(_MAX_SCALE, max(1.0, _TARGET / max(1, y1 - y0)))
    return crop, left - border, top - border, scale


def read_frame(
    grey: np.ndarray,
    frame: int = 0,
    invert: bool = True,
    found_lines: list[tuple[int, Box]] | None = None,
    tessdata: str = "",
) -> list[TextBox]:
    """The words Tesseract reads in the lines of one 8-bit frame (:func:`find_lines`), each
    line cut out and read alone as one line, scaled up when small; ``invert`` False: dark
    text on light only. Every word carries the box of the line it was read in (``region``).
    The boxes of the lines found, read or not, are added to ``found_lines`` (frame, box).
    """
    from PIL import Image, ImageFilter

    api = _api(tessdata)
    found: list[TextBox] = []
    lines = find_lines(grey, ("light", "dark") if invert else ("dark",))
    if found_lines is not None:
        found_lines.extend((frame, line.box) for line in lines)
    for number, line in enumerate(lines):
        crop, left, top, scale = _cut(grey, line)
        image = Image.fromarray(crop)
        if scale > 1:
            image = image.resize(
                (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))), Image.Resampling.BICUBIC
            )
        words = _read_line(api, image, frame, number, line, left, top, scale)
        if not words or max(w.confidence for w in words) < CONFIDENT:
            # doubtful: read once more with the specks left of speckle taken out (a 3x3
            # median of the scaled line: its strokes are 3 px or more), then binarized at
            # its own threshold (Otsu); the reading with most to show is kept
            again = _read_line(api, image.filter(ImageFilter.MedianFilter(3)), frame, number, line, left, top, scale)
            if _score(again) > _score(words):
                words = again
            if not words or max(w.confidence for w in words) < CONFIDENT:
                pixels = np.asarray(image)
                binary = Image.fromarray(np.where(pixels > _otsu(pixels), 255, 0).astype(np.uint8))
                again = _read_line(api, binary, frame, number, line, left, top, scale)
                if _score(again) > _score(words):
                    words = again
        found.extend(words)
    api.Clear()
    kept, shadows = _one_polarity(found, lines)
    return _merge(kept) + shadows


def _read_line(
    api: Any, image: Any, frame: int, number: int, line: Line, left: int, top: int, scale: float
) -> list[TextBox]:
    """The words Tesseract reads in one line's image, their boxes back in the frame."""
    from tesserocr import RIL, iterate_level

    api.SetImage(image)
    api.Recognize()
    iterator = api.GetIterator()
    words: list[TextBox] = []
    if iterator is None:
        return words
    for word in iterate_level(iterator, RIL.WORD):
        try:
            text = word.GetUTF8Text(RIL.WORD)
        except RuntimeError:  # tesserocr's way of saying the line has no text
            break
        if not text or not text.strip():
            continue
        bbox = word.BoundingBox(RIL.WORD)
        if bbox is None:
            continue
        box = (
            max(0, left + int(bbox[0] / scale)),
            max(0, top + int(bbox[1] / scale)),
            max(0, left + int(np.ceil(bbox[2] / scale))),
            max(0, top + int(np.ceil(bbox[3] / scale))),
        )
        words.append(TextBox(frame, box, text.strip(), float(word.Confidence(RIL.WORD)), (frame, number), line.box))
    return words


def _score(words: Sequence[TextBox]) -> float:
    """What a reading has to show: its confidence times its characters."""
    return sum(w.confidence * len(canonical(w.text)) for w in words)


def _otsu(pixels: np.ndarray) -> int:
    """Otsu's threshold of an 8-bit image."""
    counts = np.bincount(pixels.ravel(), minlength=256).astype(np.float64)
    total = counts.sum()
    weight = np.cumsum(counts)
    mean = np.cumsum(counts * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * weight / total - mean) ** 2 / (weight * (total - weight))
    return int(np.nanargmax(between[:-1])) if total else 127


def _one_polarity(words: list[TextBox], lines: list[Line]) -> tuple[list[TextBox], list[TextBox]]:
    """Words of ``words`` less those of a line that is the other side of a better one, and
    those (as shadows: see :class:`TextBox`).

    Dark text on light is light on dark between its letters: the same place is found
    in both polarities, and the reading of the wrong one is noise. Of two lines of
    opposite polarity that overlap, the reading with less to show (confidence times
    characters) is set apart; it is still matched with the identifying values (Tesseract
    sometimes gives the right reading a confidence of 0), but not merged with the others
    and never held for.
    """
    score: dict[int, float] = {}
    for word in words:
        score[word.line[1]] = score.get(word.line[1], 0.0) + _score([word])
    dropped: set[int] = set()
    for i, a in enumerate(lines):
        for j in range(i + 1, len(lines)):
            b = lines[j]
            if a.polarity != b.polarity and max(_covered(a.box, b.box), _covered(b.box, a.box)) >= 0.5:
                dropped.add(j if score.get(i, 0.0) >= score.get(j, 0.0) else i)
    kept = [word for word in words if word.line[1] not in dropped]
    shadows = [
        replace(word, line=(word.frame, -1 - word.line[1]), shadow=True) for word in words if word.line[1] in dropped
    ]
    return kept, shadows


def _merge(words: list[TextBox]) -> list[TextBox]:
    """The words of all lines, each kept once, grouped into lines by where they lie.

    A word half covered by a word read with higher confidence (the same word read in
    two overlapping lines, or noise read inside it) is dropped; a small word inside a long
    one read with less confidence does not drop the long one. Lines are regrouped by
    position, since one line found may hold part of a line and another the rest
    (``1980`` and ``08-05``).
    """
    kept: list[TextBox] = []
    for word in sorted(words, key=lambda w: -w.confidence):
        if not any(_covered(word.box, other.box) >= 0.5 for other in kept):
            kept.append(word)
    kept.sort(key=lambda w: (w.frame, w.box[0]))
    line_of: list[int] = list(range(len(kept)))

    def root(i: int) -> int:
        while line_of[i] != i:
            i = line_of[i]
        return i

    for i, a in enumerate(kept):
        for j in range(i + 1, len(kept)):
            b = kept[j]
            if b.frame != a.frame:
                break
            height = max(a.box[3] - a.box[1], b.box[3] - b.box[1], 1)
            shared = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1])
            gap = b.box[0] - a.box[2]
            if shared >= 0.5 * min(a.box[3] - a.box[1], b.box[3] - b.box[1]) and gap <= 1.5 * height:
                line_of[root(j)] = root(i)
    grouped = [TextBox(w.frame, w.box, w.text, w.confidence, (w.frame, root(i)), w.region) for i, w in enumerate(kept)]
    return sorted(grouped, key=lambda w: (w.line, w.box[0]))


def _covered(a: Sequence[int], b: Sequence[int]) -> float:
    """The share of box ``a`` that box ``b`` covers."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    return float(width * height / ((a[2] - a[0]) * (a[3] - a[1]) or 1))


def read_image(
    ds: Dataset, invert: bool = True, found_lines: list[tuple[int, Box]] | None = None, tessdata: str = ""
) -> list[TextBox]:
    """Every word in every frame of ``ds`` (and the lines found, in ``found_lines``)."""
    words: list[TextBox] = []
    for index, grey in enumerate(frames(ds)):
        words.extend(read_frame(grey, index, invert, found_lines, tessdata))
    return words


# -- deciding --------------------------------------------------------------------------
@dataclass(frozen=True)
class Pattern:
    """One form of an identifying value, as OCR text is compared with it."""

    text: str  # lower-case letters and digits, confused letters read as one
    edits: int  # how many edits (OCR errors) a match may have


def patterns(needles: Iterable[Sequence[Any]]) -> list[Pattern]:
    """The forms a screen shows the identifying values in (see the module docstring).

    ``needles`` are :class:`sendit.deid.proof.Needle` (or (value, kind, ..., is_date,
    name) tuples): original UIDs are left out (no screen shows them whole, and part of
    one matches anything).
    """
    forms: set[str] = set()
    for needle in needles:
        value = needle[0].decode("latin-1") if isinstance(needle[0], bytes) else str(needle[0])
        kind, is_date, name = needle[1], needle[4], needle[5]
        if "UID" in str(kind):
            continue
        value = value.lower()
        digits = re.sub(r"\D", "", value)
        if (is_date or "birth date" in str(kind)) and len(digits) == 8:
            forms.update(_date_forms(digits))
        elif name:
            forms.update(part for part in _NOT_ALNUM.split(value) if len(part) >= 3)
        else:
            whole = _NOT_ALNUM.sub("", value)
            if len(whole) >= 3:
                forms.add(whole)
            if " " in value.strip():  # an address: its long words and numbers too
                forms.update(part for part in _NOT_ALNUM.split(value) if len(part) >= 5)
    result = []
    for form in sorted(forms):
        canonical = form.translate(_CONFUSED)
        edits = 0 if len(canonical) < 5 else 1 if len(canonical) < 7 else 2
        result.append(Pattern(canonical, edits))
    return result


def _date_forms(digits: str) -> set[str]:
    """YYYYMMDD as screens write it: ISO, US and European orders, two-digit years, month names."""
    year, month, day = digits[:4], digits[4:6], digits[6:]
    forms = {year + month + day, month + day + year, day + month + year, month + day + year[2:], day + month + year[2:]}
    if 1 <= int(month) <= 12:
        name = _MONTHS[int(month) - 1]
        for d in {day, day.lstrip("0") or "0"}:
            forms.update({d + name + year, name + d + year, d + name + year[2:], year + name + d})
    return forms


def canonical(text: str) -> str:
    return _NOT_ALNUM.sub("", text.lower()).translate(_CONFUSED)


def _find(pattern: str, text: str, edits: int) -> list[tuple[int, int]]:
    """(start, end) spans of ``text`` that match ``pattern`` with at most ``edits`` edits.

    Sellers' approximate substring search; a span's start is taken as its end less the
    pattern's length (less the edits allowed), enough to say which words it touches.
    """
    if edits == 0:
        spans, start = [], text.find(pattern)
        while start >= 0:
            spans.append((start, start + len(pattern)))
            start = text.find(pattern, start + 1)
        return spans
    m = len(pattern)
    previous = list(range(m + 1))
    spans = []
    for j, char in enumerate(text, 1):
        current = [0]
        for i in range(1, m + 1):
            cost = 0 if pattern[i - 1] == char else 1
            current.append(min(previous[i] + 1, current[i - 1] + 1, previous[i - 1] + cost))
        if current[m] <= edits:
            spans.append((max(0, j - m - edits), j))
        previous = current
    return spans


def _part_of(text: str, forms: Sequence[Pattern]) -> tuple[int, int, int] | None:
    """Where ``text`` (canonical) lies in an identifying value, when it is a part of one as
    long as half of it and 4 characters or more: a name or an id read in part (``KAMUR`` of
    ``NAKAMURA``, ``A108`` of ``A1085238``), an edit allowed in 6 characters or more.
    (start, end, length of the value), or None."""
    if len(text) < 4:
        return None
    for form in forms:
        if len(text) >= len(form.text) / 2 and len(text) <= len(form.text) + 1:
            spans = _find(text, form.text, 0 if len(text) < 6 else 1)
            if spans:
                start, end = spans[0]
                return start, end, len(form.text)
    return None


def _rest_of_value(word: TextBox, span: tuple[int, int, int]) -> Box:
    """The box where the rest of a value read in part lies: the word's box widened by the
    characters of the value not read, on the side they are missing from (and one more)."""
    start, end, length = span
    x0, y0, x1, y1 = word.box
    width = (x1 - x0) / max(1, end - start)
    before = round((start + 1) * width) if start else 0
    after = round((length - end + 1) * width) if end < length else 0
    return (max(0, x0 - before), y0, x1 + after, y1)


def _close_to(text: str, forms: Sequence[Pattern]) -> bool:
    """True when ``text`` (canonical, a doubtful reading) could be an identifying value
    misread: two thirds of its characters or more agree with a part of one, or one lies in it."""
    for form in forms:
        if _find(text, form.text, len(text) // 3) or _find(form.text, text, len(form.text) // 3):
            return True
    return False


def _wide(word: TextBox) -> bool:
    """True when the line ``word`` was read in is at least twice as wide as tall: a line of
    text of a few letters (a value), not a blob that a guess was read in."""
    x0, y0, x1, y1 = _union(word.box, word.region)
    return x1 - x0 >= 2 * (y1 - y0)


#: a reading with this many digits or more, most of its characters, is a number that
#: identifies (an id, a date, a time): blanked whatever it matches
LONG_NUMBER = 6


def _long_number(text: str) -> bool:
    digits = sum(char.isdigit() for char in text)
    letters = sum(char.isalpha() for char in text)
    return digits >= LONG_NUMBER and digits >= 2 * letters


def _same_row(a: Box, b: Box) -> bool:
    """Two boxes of one line of text: of like height, sharing most of it, a gap of about a
    letter or two between them."""
    ha, hb = a[3] - a[1], b[3] - b[1]
    small, big = max(1, min(ha, hb)), max(ha, hb)
    shared = min(a[3], b[3]) - max(a[1], b[1])
    gap = max(a[0], b[0]) - min(a[2], b[2])
    return shared >= 0.5 * small and big <= 2 * small + 2 and gap <= 1.5 * big


def decide(
    words: Sequence[TextBox],
    forms: Sequence[Pattern],
    scrub: str = "identifying",
    lines: Sequence[tuple[int, Box]] = (),
) -> OcrDecision:
    """Which words to blank, and whether the image must be held (see the module docstring).

    ``lines``: the lines of text found (frame, box), read or not: those in the row of a
    blanked line, next to it, are blanked too (a value cut in two lines, one read).
    """
    if scrub not in SCRUB_MODES:
        raise ValueError(f"DEID_OCR_SCRUB is one of {', '.join(SCRUB_MODES)}")
    decision = OcrDecision(boxes=list(words))
    blank: set[int] = set()
    grown: list[tuple[int, Box]] = []
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, word in enumerate(words):
        groups.setdefault(word.line or (word.frame, index), []).append(index)
    for members in groups.values():
        text, owner = "", []
        for index in members:
            piece = canonical(words[index].text)
            text += piece
            owner.extend([index] * len(piece))
        if not text:
            continue
        for form in forms:
            for start, end in _find(form.text, text, form.edits):
                blank.update(owner[start:end])
            if len(form.text) >= 6:
                # one error more than a match: the value misread, or a number very like it;
                # blanking it costs little (shorter values: noise comes that close too often)
                for start, end in _find(form.text, text, form.edits + 1):
                    blank.update(owner[start:end])
        if _long_number("".join(words[i].text for i in members)):
            blank.update(members)
    for index, word in enumerate(words):
        span = _part_of(canonical(word.text), forms)
        if span is not None:
            blank.add(index)
            if span[0] > 0 or span[1] < span[2]:
                grown.append((word.frame, _rest_of_value(word, span)))
    done = [(words[i].frame, _union(words[i].box, words[i].region)) for i in blank]
    # a tall line found that its reading does not account for: text the OCR could not read
    # (ctbrain1's 22 px accession number read confidently as ``81!``), too large to let go
    unread = [
        line
        for line in _unread(words, lines)
        if not any(f == line[0] and _covered(line[1], box) >= 0.9 for f, box in done)
    ]
    done += unread
    also = unread + _next_to(done, grown, lines)
    done += also
    for members in groups.values():
        # a tall line read with little confidence, nothing of it identifying, that could be
        # an identifying value misread: text that cannot be decided and too large to let go
        # (a line blanked already, read in the other polarity or next to a value, is decided)
        if words[members[0]].shadow:
            continue
        members = [
            i
            for i in members
            if i not in blank and not any(f == words[i].frame and _covered(words[i].box, box) >= 0.5 for f, box in done)
        ]
        if not members:
            continue
        height = max(words[i].box[3] - words[i].box[1] for i in members)
        doubtful = [words[i] for i in members if words[i].confidence < CONFIDENT and len(canonical(words[i].text)) >= 3]
        if height > HOLD_ABOVE and doubtful and max(words[i].confidence for i in members) < CONFIDENT:
            if any((w.confidence < _GUESS and _wide(w)) or _close_to(canonical(w.text), forms) for w in doubtful):
                decision.undecided.extend(doubtful)
    if scrub == "all":
        for index, word in enumerate(words):
            if not word.shadow and len(canonical(word.text)) >= 2 and word.confidence >= 40:
                blank.add(index)
    decision.blank = [words[i] for i in sorted(blank) if words[i] not in decision.undecided]
    decision.also = also
    if decision.undecided:
        decision.hold = "OCR found text it cannot read with confidence that may be identifying"
    return decision


#: under this confidence a reading is a guess: it says nothing of what the text is
_GUESS = 40.0
#: in a found line, a stretch at least this many times its height wide that no word read
#: covers is text not read (a letter is ~0.6 of the height wide, a space ~0.3)
_UNREAD = 0.6


def _unread(words: Sequence[TextBox], lines: Sequence[tuple[int, Box]]) -> list[tuple[int, Box]]:
    """The lines found (frame, box) taller than HOLD_ABOVE that the words read do not account
    for: a stretch of the line as wide as a letter or more that no word covers.

    A line is found from the pixels, without reading: letter-sized pieces that line up.
    Where Tesseract reads a word, the word's box accounts for its part of the line; where
    it reads nothing (or only a part, ``81!`` of a 22 px ``A8199292``), what is left is
    text that was not read, and large text that was not read is not sent. Words of the
    losing polarity (shadows: noise between the letters) account for nothing.
    """
    unread: list[tuple[int, Box]] = []
    for frame, box in lines:
        x0, y0, x1, y1 = box
        height = y1 - y0
        if height <= HOLD_ABOVE:
            continue
        spans = sorted(
            (max(x0, w.box[0]), min(x1, w.box[2]))
            for w in words
            if w.frame == frame
            and not w.shadow
            and w.box[0] < x1
            and w.box[2] > x0
            and min(y1, w.box[3]) - max(y0, w.box[1]) >= 0.5 * min(height, w.box[3] - w.box[1])
        )
        edge, gap = x0, 0
        for start, end in spans:
            gap = max(gap, start - edge)
            edge = max(edge, end)
        gap = max(gap, x1 - edge)
        if gap >= _UNREAD * height:
            unread.append((frame, box))
    return unread


def _next_to(
    blanked: Sequence[tuple[int, Box]], grown: Sequence[tuple[int, Box]], lines: Sequence[tuple[int, Box]]
) -> list[tuple[int, Box]]:
    """The rest of values read in part (``grown``) and the lines found in the row of a
    blanked one (``blanked``: frame, box), next to it (and next to those in turn)."""
    done = list(blanked) + list(grown)
    also = list(grown)
    rest = [line for line in lines if not any(f == line[0] and _covered(line[1], box) >= 0.9 for f, box in done)]
    changed = True
    while changed and rest:
        changed = False
        for line in list(rest):
            if any(f == line[0] and _same_row(line[1], box) for f, box in done):
                done.append(line)
                also.append(line)
                rest.remove(line)
                changed = True
    return also


def ocr_image(
    ds: Dataset, needles: Iterable[Sequence[Any]], scrub: str = "identifying", tessdata: str = ""
) -> OcrDecision:
    """Read every frame of ``ds`` and decide (``needles``: the input's identifying values;
    ``tessdata``: the folder of Tesseract's models, empty for Debian's)."""
    found_lines: list[tuple[int, Box]] = []
    words = read_image(ds, found_lines=found_lines, tessdata=tessdata)
    return decide(words, patterns(needles), scrub, found_lines)
