"""Where the DICOM files the test-data packages ship are: pydicom's own test files,
pydicom-data (module data_store) and deid-data (module deid_data), all in the venv.

`shipped_files()` lists every data file of them (not code), DICOM or not, for the
"every shipped file unmodified" run; `base_files()` the ones the fuzzer mutates: files
pydicom reads as Part 10 files, not deflated, not too large.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

#: (label, module, folder inside the module)
PACKAGES = (
    ("pydicom", "pydicom", "data/test_files"),
    ("pydicom-data", "data_store", "data"),
    ("deid-data", "deid_data", "data"),
)
_NOT_DATA = {".py", ".pyc", ".pyo"}
DEFLATED = "1.2.840.10008.1.2.1.99"


def roots() -> list[tuple[str, Path]]:
    """(label, folder) of every installed test-data package."""
    found = []
    for label, module, sub in PACKAGES:
        try:
            mod = __import__(module)
        except ImportError:
            continue
        folder = Path(mod.__file__).parent / sub
        if folder.is_dir():
            found.append((label, folder))
    return found


@functools.lru_cache(maxsize=1)
def shipped_files() -> tuple[tuple[str, Path], ...]:
    """(label, path) of every data file the packages ship, in a stable order."""
    files = []
    for label, root in roots():
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.suffix in _NOT_DATA or "__pycache__" in path.parts:
                continue
            files.append((f"{label}/{path.relative_to(root)}", path))
    return tuple(files)


@dataclass(frozen=True)
class Base:
    """A shipped file the fuzzer starts from, and what it has."""

    label: str
    path: Path
    size: int
    implicit: bool
    little: bool
    encapsulated: bool  # compressed pixel data in fragments
    pixels: bool


@functools.lru_cache(maxsize=8)
def base_files(max_bytes: int = 512 * 1024) -> tuple[Base, ...]:
    """Shipped files pydicom reads as Part 10 files (preamble and file meta), not deflated,
    at most `max_bytes`: the ones mutations start from."""
    import pydicom
    from pydicom.uid import UID

    bases = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, path in shipped_files():
            size = os.path.getsize(path)
            if size > max_bytes or size < 140:
                continue
            try:
                with open(path, "rb") as fp:
                    if fp.read(132)[128:] != b"DICM":
                        continue
                ds = pydicom.dcmread(path, stop_before_pixels=False)
                syntax = UID(ds.file_meta.TransferSyntaxUID)
            except Exception:
                continue
            if syntax == DEFLATED or not syntax.is_transfer_syntax or syntax.is_private:
                continue
            bases.append(
                Base(
                    label,
                    path,
                    size,
                    syntax.is_implicit_VR,
                    syntax.is_little_endian,
                    syntax.is_compressed and "PixelData" in ds,
                    "PixelData" in ds,
                )
            )
    return tuple(bases)
