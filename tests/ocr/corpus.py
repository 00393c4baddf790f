"""A corpus of images with text burned into their pixels, and the true boxes of that text.

Each image is a DICOM dataset (real ones from deid-data and pydicom's test files, and
synthetic US-like, SC-like and CR-like ones) with text drawn into its pixels: the
patient's name, id, birth date, accession number and study date from the image's own
header in the forms screens use (``DOE^JOHN``, ``Doe, John``, ``01/02/1960``,
``1960-01-02``...), and decoys (``LIVER``, ``GAIN 50``...) that identify nobody. Fonts:
Pillow's default and DejaVu when installed; sizes 8-32 px; light on dark and dark on
light; random positions that do not overlap. Images without text are made too: nothing
may change in them.

Plain functions, no Django; ``scripts/bench_ocr.py`` measures the OCR on it and
``tests/deid/test_ocr.py`` takes a handful of its images.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

FONT_FILES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf",
)
DECOYS = (
    "LIVER",
    "TRANS",
    "GAIN 50",
    "MI 0.8",
    "TIS 0.4",
    "5 MHz",
    "ABDOMEN",
    "LEFT",
    "R",
    "12 cm",
    "FR 24",
    "DR 60",
    "AP",
    "PORTABLE",
    "UPRIGHT",
    "Philips",
    "C5-1",
    "SAG",
    "kVp 80",
)
FIRST = ("JOHN", "MARIA", "AHMED", "SUSAN", "PIETRO", "YUKI", "OLUWASEUN", "HELEN")
LAST = ("DOE", "GARCIA", "NAKAMURA", "KOWALSKI", "OKAFOR", "LINDQVIST", "MARTIN", "BERGSTROM")
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"


@dataclass
class Burned:
    """One piece of text drawn into the image: its box (x0, y0, x1, y1, half-open), the
    mask of its text pixels inside the box, its height in pixels, and whether it identifies."""

    box: tuple[int, int, int, int]
    mask: np.ndarray
    size: int
    identifying: bool
    text: str = ""  # what was drawn (for the benchmark's breakdown of misses only)
    font: str = ""
    light_on_dark: bool = True


#: real images that carry text of their own (the ultrasounds' headers on the screen: names,
#: ids, dates, the site), not recorded as boxes: never counted as images without text
REAL_WITH_TEXT = frozenset({"GREYSCALE_IMAGE", "RGB_IMAGE", "US1_UNCR"})


@dataclass
class Sample:
    name: str
    ds: Dataset
    burned: list[Burned] = field(default_factory=list)
    own_text: bool = False  # text of its own besides ``burned`` (real images: REAL_WITH_TEXT)

    @property
    def has_text(self) -> bool:
        return bool(self.burned)


def fonts(size: int) -> list:
    """Pillow's default font and the DejaVu fonts found, at ``size`` pixels."""
    found = [ImageFont.load_default(size)]
    found += [ImageFont.truetype(path, size) for path in FONT_FILES if Path(path).is_file()]
    return found


def header_texts(ds: Dataset, rng: random.Random) -> list[str]:
    """The identifying values of ``ds`` as a screen would show them, one form each, chosen at random."""
    texts = []
    name = str(ds.PatientName)
    parts = [p for p in name.split("^") if p]
    if len(parts) >= 2:
        last, first = parts[0], parts[1]
        texts.append(
            rng.choice(
                [
                    f"{last}^{first}",
                    f"{last.title()}, {first.title()}",
                    f"{first.title()} {last.title()}",
                    f"{last.upper()} {first.upper()}",
                ]
            )
        )
    texts.append(rng.choice([str(ds.PatientID), f"ID: {ds.PatientID}", f"MRN {ds.PatientID}"]).split(" ")[-1])
    for date in (str(ds.PatientBirthDate), str(ds.StudyDate)):
        y, m, d = date[:4], date[4:6], date[6:]
        texts.append(rng.choice([f"{m}/{d}/{y}", f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{y}/{m}/{d}"]))
    texts.append(str(ds.AccessionNumber))
    return texts


def set_identity(ds: Dataset, rng: random.Random) -> None:
    """Give ``ds`` a patient (kept when it has a usable one) and the other identifying values."""
    parts = [p for p in str(ds.get("PatientName", "")).split("^") if len(p) >= 3]
    if len(parts) < 2 or parts[0].lower() in ("compressedsamples", "anonymous"):
        ds.PatientName = f"{rng.choice(LAST)}^{rng.choice(FIRST)}"
    if len(str(ds.get("PatientID", ""))) < 6:
        ds.PatientID = str(rng.randrange(1000000, 99999999))
    ds.PatientBirthDate = f"{rng.randrange(1930, 2005)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
    ds.StudyDate = f"{rng.randrange(2015, 2026)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
    ds.AccessionNumber = f"A{rng.randrange(100000, 9999999)}"
    ds.BurnedInAnnotation = "NO"  # headers lie: the pixels say otherwise


def burn(
    grey: np.ndarray, items: list[tuple[str, bool]], rng: random.Random, size_range=(8, 32)
) -> tuple[np.ndarray, list[Burned]]:
    """A (rows, columns) coverage mask (0-255) of ``items`` drawn at random free places, and their boxes."""
    rows, columns = grey.shape[:2]
    canvas = Image.new("L", (columns, rows), 0)
    draw = ImageDraw.Draw(canvas)
    taken: list[tuple[int, int, int, int]] = []
    burned = []
    for text, identifying in items:
        size = rng.randrange(size_range[0], size_range[1] + 1)
        font = rng.choice(fonts(size))
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        width, height = right - left, bottom - top
        if width + 4 >= columns or height + 4 >= rows:
            continue
        for _ in range(50):
            x, y = rng.randrange(2, columns - width - 2), rng.randrange(2, rows - height - 2)
            box = (x, y, x + width, y + height)
            if not any(
                box[0] < t[2] + 6 and t[0] < box[2] + 6 and box[1] < t[3] + 6 and t[1] < box[3] + 6 for t in taken
            ):
                break
        else:
            continue
        draw.text((x - left, y - top), text, fill=255, font=font)
        taken.append(box)
        mask = np.asarray(canvas)[box[1] : box[3], box[0] : box[2]] > 96
        path = getattr(font, "path", None)
        font_name = Path(path).stem if isinstance(path, str) else "pillow-default"
        burned.append(Burned(box, mask.copy(), height, identifying, text, font_name))
    return np.asarray(canvas), burned


def _dataset(sop_class: str, modality: str, rows: int, columns: int, rng: random.Random) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    ds.Rows, ds.Columns = rows, columns
    ds.PatientName = ""
    set_identity(ds, rng)
    return ds


def _store(ds: Dataset, pixels: np.ndarray, photometric: str, bits_stored: int) -> None:
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for keyword in ("NumberOfFrames", "PixelSpacing"):
        if keyword in ds and keyword == "NumberOfFrames":
            del ds[keyword]


def background(kind: str, rng: random.Random, size: int = 512) -> tuple[Dataset, np.ndarray, int]:
    """A synthetic image: (dataset, 2-D or RGB pixels, the value text takes when light)."""
    nprng = np.random.default_rng(rng.randrange(1 << 30))
    y, x = np.mgrid[0:size, 0:size]
    if kind == "US":  # a speckled fan on black
        ds = _dataset(US_IMAGE, "US", size, size, rng)
        angle = np.arctan2(x - size / 2, y + size * 0.1)
        radius = np.hypot(x - size / 2, y + size * 0.1)
        fan = (np.abs(angle) < 0.6) & (radius > size * 0.2) & (radius < size * 1.0)
        speckle = nprng.gamma(2.0, 30.0, (size, size))
        pixels = np.where(fan, np.clip(speckle, 0, 200), 0).astype(np.uint8)
        return ds, pixels, 235
    if kind == "SC":  # a screen: a light panel with a grey plot
        ds = _dataset(SECONDARY_CAPTURE, "OT", size, size, rng)
        pixels = np.full((size, size), 215, np.uint8)
        pixels[size // 4 : 3 * size // 4, size // 8 : 7 * size // 8] = (110 + 40 * np.sin(x / 17.0))[
            size // 4 : 3 * size // 4, size // 8 : 7 * size // 8
        ]
        return ds, pixels, 250
    # CR: 12 bits, a smooth body with noise, windowed in the header
    ds = _dataset(CR_IMAGE, "CR", size, size, rng)
    body = 2600 - 1800 * ((x - size / 2) ** 2 + (y - size / 2) ** 2) / (size / 2) ** 2
    pixels = np.clip(body + nprng.normal(0, 60, (size, size)), 0, 4095).astype(np.uint16)
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    return ds, pixels, 4000


def _draw(pixels: np.ndarray, coverage: np.ndarray, light: int, dark: int, light_on_dark: bool) -> np.ndarray:
    """Text drawn with the coverage mask as alpha; dark text is never 0 (a blanked pixel is)."""
    alpha = coverage.astype(np.float32) / 255.0
    ink = light if light_on_dark else dark
    if pixels.ndim == 3:
        alpha = alpha[..., np.newaxis]
    out = pixels.astype(np.float32) * (1 - alpha) + ink * alpha
    return np.round(out).astype(pixels.dtype)


def synthetic(kind: str, seed: int, with_text: bool = True, size: int = 512) -> Sample:
    rng = random.Random(seed)
    ds, pixels, light = background(kind, rng, size)
    burned: list[Burned] = []
    if with_text:
        items = [(t, True) for t in header_texts(ds, rng)] + [(t, False) for t in rng.sample(DECOYS, 4)]
        coverage, burned = burn(pixels, items, rng)
        light_on_dark = kind == "US" or (kind == "CR" and rng.random() < 0.5) or (kind == "SC" and rng.random() < 0.3)
        dark = 12 if pixels.dtype == np.uint8 else 60
        if kind == "SC" and light_on_dark:
            pixels = (255 - pixels).astype(np.uint8)  # a dark screen
        pixels = _draw(pixels, coverage, light, dark, light_on_dark)
        for item in burned:
            item.light_on_dark = light_on_dark
    bits = 12 if kind == "CR" else 8
    _store(ds, pixels, "MONOCHROME2", bits)
    if kind == "CR" and rng.random() < 0.4:  # MONOCHROME1: stored inverted
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PixelData = (4095 - pixels).astype(np.uint16).tobytes()
    return Sample(f"{kind.lower()}-{seed}{'' if with_text else '-clean'}", ds, burned)


def real_files() -> list[Path]:
    """Real images to burn text into: deid-data ultrasounds and CT, pydicom's test US and CT."""
    files = []
    try:
        import deid_data

        data = Path(deid_data.__file__).parent / "data"
        files += [
            data / "ultrasounds" / "GREYSCALE_IMAGE.dcm",
            data / "ultrasounds" / "RGB_IMAGE.dcm",
            data / "humans" / "ctbrain1.dcm",
        ]
    except ImportError:
        pass
    from pydicom.data import get_testdata_file

    files += [Path(get_testdata_file(name)) for name in ("US1_UNCR.dcm", "CT_small.dcm")]
    return [path for path in files if path.is_file()]


def real(path: Path, seed: int, with_text: bool = True) -> Sample:
    """A real image with text burned in (stored native, its first frame), or as it is."""
    rng = random.Random(seed)
    ds = dcmread(path)
    set_identity(ds, rng)
    own = path.stem in REAL_WITH_TEXT
    if not with_text:
        return Sample(f"{path.stem}-clean", ds, [], own)
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    if str(ds.PhotometricInterpretation).startswith("YBR"):
        ds.PhotometricInterpretation = "RGB"
    arr = arr.astype(np.uint16 if arr.dtype.itemsize > 1 else np.uint8)
    top = int(arr.max()) if arr.dtype == np.uint16 else 255
    items = [(t, True) for t in header_texts(ds, rng)] + [(t, False) for t in rng.sample(DECOYS, 3)]
    coverage, burned = burn(arr if arr.ndim == 2 else arr[..., 0], items, rng, (8, 32))
    light_on_dark = float(np.median(arr)) < top / 2
    arr = _draw(arr, coverage, top, max(1, top // 20), light_on_dark)
    for item in burned:
        item.light_on_dark = light_on_dark
    if "NumberOfFrames" in ds:
        del ds.NumberOfFrames
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.BitsAllocated = 8 if arr.dtype == np.uint8 else 16
    ds.PixelRepresentation = 0
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in ds and ds.get("Modality") != "CT":
            del ds[keyword]
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    return Sample(f"{path.stem}-{seed}", ds, burned, own)


def corpus(
    per_kind: int = 12, clean_per_kind: int = 4, real_seeds: int = 3, size: int = 512, seed: int = 0
) -> list[Sample]:
    """The whole corpus: synthetic US, SC and CR images with and without text, and real images.

    ``seed`` draws another corpus of the same make (0: the one measured first)."""
    samples = []
    base = 10000 * seed
    for k, kind in enumerate(("US", "SC", "CR")):
        samples += [synthetic(kind, base + 1000 * k + i, True, size) for i in range(per_kind)]
        samples += [synthetic(kind, base + 1000 * k + 500 + i, False, size) for i in range(clean_per_kind)]
    for index, path in enumerate(real_files()):
        samples += [real(path, base + 77 + 10 * index + i) for i in range(real_seeds)]
        samples.append(real(path, base + 5, with_text=False))
    return samples
