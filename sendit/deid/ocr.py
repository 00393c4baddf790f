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

import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

#: modalities and SOP classes whose images often carry text (``DEID_OCR_MODALITIES``'s default)
DEFAULT_MODALITIES = ("US", "SC", "OT", "XA", "DX", "CR", "DOC")
#: SOP classes read as documents ("DOC" in the modality list): secondary captures and
#: encapsulated/scanned documents, whatever their Modality says
DOCUMENT_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
    "1.2.840.10008.5.1.4.1.1.77.1.1",  # VL Endoscopic (screens with text)
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF (no pixels: never read here)
})
#: below this confidence (0-100) a word is not known for what it says
CONFIDENT = 60.0
SCRUB_MODES = ("identifying", "all")
#: where Debian's tesseract-ocr-eng puts the English model (TESSDATA_PREFIX wins)
_TESSDATA = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
             "/usr/share/tessdata")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
#: letters OCR confuses, read as one: a value matches what the screen shows as much as what it is
_CONFUSED = str.maketrans({"o": "0", "i": "1", "l": "1", "|": "1", "!": "1",
                           "s": "5", "z": "2", "b": "8", "g": "9"})
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True)
class OcrOptions:
    """``DEID_OCR_MODALITIES`` and ``DEID_OCR_SCRUB``, for :func:`sendit.deid.files.deidentify_file`."""

    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    scrub: str = "identifying"

    def __post_init__(self):
        if self.scrub not in SCRUB_MODES:
            raise ValueError(f"DEID_OCR_SCRUB is one of {', '.join(SCRUB_MODES)}, not {self.scrub!r}")


class TextUndecided(Exception):
    """The OCR found text it cannot decide about: the image is held for a person.

    ``record`` is :meth:`OcrDecision.record` (counts and boxes, never text)."""

    def __init__(self, reason: str, record: dict):
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
    line: tuple = ()  # words of one line share it


@dataclass
class OcrDecision:
    """What to do with one image: the boxes found, those to blank, and why it is held (None: not)."""

    boxes: list[TextBox] = field(default_factory=list)
    blank: list[TextBox] = field(default_factory=list)
    undecided: list[TextBox] = field(default_factory=list)
    hold: str | None = None

    def regions(self, rows: int, columns: int) -> list:
        """The boxes to blank as :mod:`sendit.deid.pixels` regions, padded to take in the
        edges of the letters (Tesseract's boxes are tight, anti-aliasing is not)."""
        return [(0, padded(box.box, rows, columns)) for box in self.blank]

    def record(self) -> dict:
        """What is recorded of this image (its page, the batch's de-identification record):
        counts and boxes as [frame, x0, y0, x1, y1], never text."""
        return {
            "found": len(self.boxes),
            "blanked": len(self.blank),
            "held": self.hold is not None,
            "boxes": [[b.frame, *b.box] for b in self.boxes][:200],
            "blanked_boxes": [[b.frame, *b.box] for b in self.blank][:200],
            "undecided_boxes": [[b.frame, *b.box] for b in self.undecided][:200],
        }


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


def tessdata() -> str:
    """The folder of Tesseract's models (TESSDATA_PREFIX, else where Debian puts them)."""
    prefix = os.environ.get("TESSDATA_PREFIX")
    if prefix:
        return prefix
    for folder in _TESSDATA:
        if (Path(folder) / "eng.traineddata").is_file():
            return folder
    raise RuntimeError("Tesseract's English model (eng.traineddata) is not installed: apt-get install tesseract-ocr-eng")


def _api():
    """One Tesseract engine per thread, loaded once (loading the model costs ~100 ms)."""
    api = getattr(_local, "api", None)
    if api is None:
        import tesserocr

        api = tesserocr.PyTessBaseAPI(path=tessdata().rstrip("/") + "/", lang="eng", psm=tesserocr.PSM.SPARSE_TEXT)
        # Each frame is read inverted by read_frame already: Tesseract's own retry of every
        # doubtful line inverted would cost as much again (measured: x2 on a noisy frame).
        api.SetVariable("tessedit_do_invert", "0")
        _local.api = api
    return api


def read_frame(grey: np.ndarray, frame: int = 0, invert: bool = True) -> list[TextBox]:
    """The words Tesseract reads in one 8-bit frame, as it is and (``invert``) inverted.

    A word both readings find (boxes overlapping by half or more) is kept once, with the
    reading of higher confidence.
    """
    from PIL import Image
    from tesserocr import RIL, iterate_level

    api = _api()
    found: list[TextBox] = []
    passes = _passes(grey) if invert else [(grey, 1)]
    for number, (image, scale) in enumerate(passes):
        api.SetImage(Image.fromarray(np.ascontiguousarray(image)))
        api.Recognize()
        iterator = api.GetIterator()
        if iterator is None:
            continue
        block = paragraph = line = 0
        for word in iterate_level(iterator, RIL.WORD):
            try:
                text = word.GetUTF8Text(RIL.WORD)
            except RuntimeError:  # tesserocr's way of saying the page has no text
                break
            if not text or not text.strip():
                continue
            if word.IsAtBeginningOf(RIL.BLOCK):
                block += 1
            if word.IsAtBeginningOf(RIL.PARA):
                paragraph += 1
            if word.IsAtBeginningOf(RIL.TEXTLINE):
                line += 1
            bbox = word.BoundingBox(RIL.WORD)
            if bbox is None:
                continue
            found.append(TextBox(frame, tuple(int(v) // scale for v in bbox), text.strip(),
                                 float(word.Confidence(RIL.WORD)), (frame, number, block, paragraph, line)))
    api.Clear()
    return _merge(found)


#: a pixel this close to the frame's brightest (darkest) value may be text drawn at it
_EXTREME = 24
#: more of the frame than this at the extreme is background, not text
_MOST = 0.15


def _passes(grey: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """The images one frame is read as, each with its scale: itself, inverted, and its
    extreme pixels alone.

    Burned-in text is drawn at one value, nearly always the brightest or the darkest the
    frame has, while speckle, anatomy and plots vary: keeping only the pixels near the
    extreme (drawn black on white, as Tesseract reads best) takes text out of a noisy
    background that hides it from the plain readings.
    """
    images = [(grey, 1), (255 - grey, 1)]
    high, low = int(grey.max()), int(grey.min())
    for extreme in (grey >= high - _EXTREME, grey <= low + _EXTREME):
        if high - low > 2 * _EXTREME and extreme.mean() < _MOST:
            # (read at twice the size, it found fewer of the corpus's boxes, 2026-12-07)
            images.append((np.where(extreme, 0, 255).astype(np.uint8), 1))
    return images


def _merge(words: list[TextBox]) -> list[TextBox]:
    """The words of all readings, each kept once, grouped into lines by where they lie.

    A word half covered by a word read with higher confidence (the same word in another
    reading, or noise read inside it) is dropped; a small word inside a long one read with
    less confidence does not drop the long one. Lines are regrouped by position, since one reading
    may find part of a line and another the rest (``1980`` and ``08-05``).
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
    grouped = [TextBox(w.frame, w.box, w.text, w.confidence, (w.frame, root(i))) for i, w in enumerate(kept)]
    return sorted(grouped, key=lambda w: (w.line, w.box[0]))


def _covered(a, b) -> float:
    """The share of box ``a`` that box ``b`` covers."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    return width * height / ((a[2] - a[0]) * (a[3] - a[1]) or 1)


def read_image(ds: Dataset, invert: bool = True) -> list[TextBox]:
    """Every word in every frame of ``ds``."""
    words: list[TextBox] = []
    for index, grey in enumerate(frames(ds)):
        words.extend(read_frame(grey, index, invert))
    return words


# -- deciding --------------------------------------------------------------------------
@dataclass(frozen=True)
class Pattern:
    """One form of an identifying value, as OCR text is compared with it."""

    text: str  # lower-case letters and digits, confused letters read as one
    edits: int  # how many edits (OCR errors) a match may have


def patterns(needles: Iterable) -> list[Pattern]:
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
    forms = {year + month + day, month + day + year, day + month + year,
             month + day + year[2:], day + month + year[2:]}
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


def decide(words: Sequence[TextBox], forms: Sequence[Pattern], scrub: str = "identifying") -> OcrDecision:
    """Which words to blank, and whether the image must be held (see the module docstring)."""
    if scrub not in SCRUB_MODES:
        raise ValueError(f"DEID_OCR_SCRUB is one of {', '.join(SCRUB_MODES)}")
    decision = OcrDecision(boxes=list(words))
    blank: set[int] = set()
    near: set[int] = set()
    lines: dict[tuple, list[int]] = {}
    for index, word in enumerate(words):
        lines.setdefault(word.line or (word.frame, index), []).append(index)
    for members in lines.values():
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
            if len(form.text) >= 6:  # shorter: noise comes that close too often
                for start, end in _find(form.text, text, form.edits + 1):
                    near.update(owner[start:end])
    for index, word in enumerate(words):
        alnum = len(canonical(word.text))
        if index in blank:
            continue
        if scrub == "all" and alnum >= 2 and word.confidence >= 40:
            blank.add(index)
        elif index in near and word.confidence < CONFIDENT and alnum >= 3:
            decision.undecided.append(word)
    decision.blank = [words[i] for i in sorted(blank)]
    if decision.undecided:
        decision.hold = "OCR found text it cannot read with confidence that may be identifying"
    return decision


def ocr_image(ds: Dataset, needles: Iterable, scrub: str = "identifying") -> OcrDecision:
    """Read every frame of ``ds`` and decide (``needles``: the input's identifying values)."""
    return decide(read_image(ds), patterns(needles), scrub)
