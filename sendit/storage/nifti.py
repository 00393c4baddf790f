"""DICOM series -> compressed NIfTI-1 volume (.nii.gz) plus a BIDS-style JSON sidecar.

The volume is built here from pydicom, written with nibabel (no dicom2nifti: its
validation raises on cases we want to name ourselves, it reads whole series through its
own pipeline, and we need only the plain single-frame case):

* slices are sorted by ImagePositionPatient projected on the slice normal
  (row cosine x column cosine from ImageOrientationPatient);
* the affine maps voxel (i = column, j = row, k = slice) to patient coordinates:
  LPS = IPP_0 + i*dc*R + j*dr*C + k*S (R, C the row/column cosines, dr, dc = PixelSpacing,
  S the step between consecutive slice positions), then LPS -> RAS (negate x and y), which
  is what NIfTI's qform/sform (code 1, scanner) mean;
* voxels = pixel_array * RescaleSlope + RescaleIntercept, per slice; int16 when every
  value is an integer that fits, float32 otherwise.

A series that cannot be converted faithfully raises `NotConvertible` with a reason that
names no patient data: fewer than 2 slices, multi-frame or colour images, differing
orientation / size / pixel spacing, duplicate positions, non-uniform slice steps, pixel
data that cannot be decoded. The caller then sends the series as DICOM.

The header carries no text from the DICOM files: descrip, aux_file, intent_name, db_name
and data_type are set to fixed values (empty, descrip "sendit"), no extensions are
written. The gzip stream has mtime 0 and no file name, so the same series gives the same
bytes (and MD5) every time: a re-send uploads nothing.

Memory: one series volume (e.g. 512x512x300 int16 = 150 MB) is held at once; files are
read one at a time.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # pragma: no cover - pydicom and nibabel are imported when a series is converted
    from nibabel.nifti1 import Nifti1Header
    from pydicom.dataset import Dataset

#: a vector of the patient coordinate system, or of numbers read from a header
Vector = NDArray[np.float64]

__all__ = ["NotConvertible", "SeriesVolume", "build_volume", "write_nifti", "bids_stem", "clean_header", "HEADER_TEXT"]

# Fixed values of every text field of the NIfTI-1 header (nothing comes from DICOM).
HEADER_TEXT = {"descrip": b"sendit", "aux_file": b"", "intent_name": b"", "db_name": b"", "data_type": b""}

_POSITION_TOL = 1e-3  # relative tolerance on slice steps / geometry equality
_ABS_TOL = 1e-3  # mm
COMPRESS_LEVEL = 3  # gzip level of .nii.gz (module constant: changing it changes every MD5)


class NotConvertible(Exception):
    """This series is not a single regular 3D volume; the message says why (no patient data)."""


@dataclass
class SeriesVolume:
    """A converted series: data[i, j, k] (column, row, slice), RAS affine, slice order."""

    data: np.ndarray
    affine: np.ndarray
    sop_instance_uids: list[str] = field(default_factory=list)  # in slice order (k)
    slice_step: float = 0.0  # mm between slices


def _floats(value: Any, n: int, name: str) -> Vector:
    """``n`` finite numbers of a (multi-valued) DICOM value."""
    try:
        out = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        raise NotConvertible(f"{name} is not numeric") from None
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise NotConvertible(f"{name} does not hold {n} numbers")
    return out


def _geometry(ds: Dataset) -> tuple[Vector, Vector, Vector, Vector]:
    """(row direction, column direction, position, pixel spacing) of an image."""
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        if keyword not in ds or ds[keyword].value in (None, ""):
            raise NotConvertible(f"{keyword} is missing")
    iop = _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient")
    ipp = _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient")
    spacing = _floats(ds.PixelSpacing, 2, "PixelSpacing")
    if np.any(spacing <= 0):
        raise NotConvertible("PixelSpacing is not positive")
    row, col = iop[:3], iop[3:]
    if not (
        abs(np.linalg.norm(row) - 1) < 1e-2 and abs(np.linalg.norm(col) - 1) < 1e-2 and abs(float(row @ col)) < 1e-2
    ):
        raise NotConvertible("ImageOrientationPatient is not two orthonormal vectors")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    return row, col, ipp, spacing


def _rescale(ds: Dataset) -> tuple[float, float]:
    try:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError):
        raise NotConvertible("RescaleSlope/RescaleIntercept is not numeric") from None
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
        raise NotConvertible("RescaleSlope/RescaleIntercept is not usable")
    return slope, intercept


def _check_single_frame(ds: Dataset) -> None:
    frames = ds.get("NumberOfFrames", 1)
    try:
        frames = int(frames or 1)
    except (TypeError, ValueError):
        frames = 2
    if frames != 1:
        raise NotConvertible("multi-frame image")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise NotConvertible("not a grey-scale image (SamplesPerPixel != 1)")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise NotConvertible("no pixel data")


def build_volume(paths: list[str]) -> SeriesVolume:
    """Read the files of one series (headers first, then pixels one file at a time)."""
    import pydicom

    if len(paths) < 2:
        raise NotConvertible("single image (a 2D series)")
    # (path, SOPInstanceUID, row, column, position, spacing, (rows, columns), (slope, intercept))
    headers: list[tuple[str, str, Vector, Vector, Vector, Vector, tuple[int, int], tuple[float, float]]] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=False, defer_size=1024)
        except Exception as exc:
            raise NotConvertible(f"unreadable file ({type(exc).__name__})") from None
        _check_single_frame(ds)
        row, col, ipp, spacing = _geometry(ds)
        shape = (int(ds.Rows), int(ds.Columns))
        headers.append((path, str(ds.get("SOPInstanceUID", "")), row, col, ipp, spacing, shape, _rescale(ds)))
    _, _, row0, col0, _, spacing0, shape0, _ = headers[0]
    for _, _, row, col, _, spacing, shape, _ in headers[1:]:
        if shape != shape0:
            raise NotConvertible("images of different sizes (mixed geometry)")
        if not (np.allclose(row, row0, atol=1e-4) and np.allclose(col, col0, atol=1e-4)):
            raise NotConvertible("images of different orientations (mixed geometry)")
        if not np.allclose(spacing, spacing0, rtol=_POSITION_TOL, atol=1e-5):
            raise NotConvertible("images of different pixel spacing (mixed geometry)")
    normal = np.cross(row0, col0)
    headers.sort(key=lambda h: float(h[4] @ normal))
    positions = np.array([h[4] for h in headers])
    steps = np.diff(positions, axis=0)
    distances = steps @ normal
    if np.any(np.abs(distances) < _ABS_TOL):
        raise NotConvertible("two images at the same position (several volumes or time points)")
    step = steps.mean(axis=0)
    tolerance = max(_ABS_TOL, _POSITION_TOL * float(np.linalg.norm(step)))
    if np.any(np.linalg.norm(steps - step, axis=1) > tolerance):
        raise NotConvertible("non-uniform slice spacing (missing slices or a stack of stacks)")

    rows, cols = shape0
    scales = [h[7] for h in headers]
    integral = all(float(s).is_integer() and float(b).is_integer() for s, b in scales)
    # int32 while reading when every value is an integer (downcast to int16 if it fits)
    data = np.empty((cols, rows, len(headers)), dtype=np.int32 if integral else np.float32)
    uids: list[str] = []
    for k, (path, uid, *_rest) in enumerate(headers):
        pixels = _pixels(path)
        if pixels.shape != (rows, cols):
            raise NotConvertible("pixel data does not match Rows x Columns")
        slope, intercept = scales[k]
        values = pixels.astype(np.float64) * slope + intercept
        if integral and (values.min() < -(2**31) or values.max() >= 2**31):
            raise NotConvertible("rescaled values exceed 32 bits")
        data[:, :, k] = values.T
        uids.append(uid)
    if integral and data.min() >= -32768 and data.max() <= 32767:
        data = data.astype(np.int16)

    dr, dc = spacing0  # PixelSpacing = (between rows, between columns)
    lps = np.eye(4)
    lps[:3, 0] = row0 * dc
    lps[:3, 1] = col0 * dr
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return SeriesVolume(data=data, affine=affine, sop_instance_uids=uids, slice_step=float(abs(step @ normal)))


def _pixels(path: str) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:
        raise NotConvertible(f"unreadable file ({type(exc).__name__})") from None
    try:
        return ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        what = f" ({syntax.name})" if syntax is not None else ""
        raise NotConvertible(f"pixel data cannot be decoded{what}: {type(exc).__name__}") from None


def clean_header(header: Nifti1Header) -> None:
    """Set every text field of a NIfTI-1 header to its fixed value."""
    for key, value in HEADER_TEXT.items():
        header[key] = value


def write_nifti(volume: SeriesVolume, out_path: str) -> None:
    """Write volume as a deterministic .nii.gz (gzip mtime 0, no name, no extensions)."""
    import nibabel as nib

    img = nib.Nifti1Image(volume.data, volume.affine)
    header = img.header
    header.set_xyzt_units("mm", "sec")
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    clean_header(header)
    del header.extensions[:]
    with (
        open(out_path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=COMPRESS_LEVEL) as gz,
    ):
        img.to_file_map(img.make_file_map({"image": gz}))


_LABEL = re.compile(r"[^A-Za-z0-9]+")


def _label(text: object, limit: int = 64) -> str:
    return _LABEL.sub("", str(text or ""))[:limit]


def bids_stem(patient_id: str, study_uid: str, metadata: Mapping[str, object]) -> str:
    """A BIDS-style file stem: sub-<pseudonym>_ses-<study>[_acq-<desc>][_run-<n>]_<suffix>.

    Labels are alphanumeric: the pseudonym with other characters removed, the study as the
    first 10 hex digits of SHA-1(StudyInstanceUID), acq from the (de-identified) series
    description, run from SeriesNumber, suffix from the modality (CT, MR, PT...). Uniqueness
    per series comes from the object path, which holds the SeriesInstanceUID.
    """
    import hashlib

    parts = [f"sub-{_label(patient_id) or 'unknown'}", "ses-" + hashlib.sha1(study_uid.encode()).hexdigest()[:10]]
    acq = _label(metadata.get("SeriesDescription", ""), 32)
    if acq:
        parts.append(f"acq-{acq}")
    try:
        run = int(float(str(metadata.get("SeriesNumber", "")).strip()))
        if run >= 0:
            parts.append(f"run-{run}")
    except ValueError:
        pass
    parts.append(_label(str(metadata.get("Modality") or "").upper(), 16) or "image")
    return "_".join(parts)
