#!/usr/bin/env python
"""What cleaning burned-in pixels costs, against bare pydicom, measured in one run.

For one file (default: pydicom-data's 693_UNCI.dcm, 512x512 16-bit signed, native),
each round times, from the same bytes in memory to a new buffer in memory (so that
disk writeback does not land on one side):

* bare: ``dcmread`` + ``save_as``, nothing changed;
* clean: ``dcmread`` + ``resolve_regions`` + ``clean_pixels`` + ``save_as``;
* clean_pixels alone (resolve_regions + clean_pixels on a freshly read dataset).

Rounds alternate bare and clean, and the medians are printed: the ratio clean / bare,
and the milliseconds per frame that cleaning adds and that clean_pixels takes.

    .venv/bin/python scripts/bench_pixels.py [--file PATH] [--rounds N] [--coordinates X0,Y0,X1,Y1 ...]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import warnings
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sendit.deid.pixels import clean_pixels, resolve_regions  # noqa: E402

#: a banner across the top and a strip along the bottom, as deid.dicom's rules name them
DEFAULT_COORDINATES = ["0,0,512,110", "0,480,512,512"]


def bare(raw: bytes) -> None:
    ds = dcmread(io.BytesIO(raw))
    ds.save_as(io.BytesIO(), enforce_file_format=True)


def clean(raw: bytes, coordinates: list) -> None:
    ds = dcmread(io.BytesIO(raw))
    clean_pixels(ds, resolve_regions(ds, coordinates))
    ds.save_as(io.BytesIO(), enforce_file_format=True)


def clean_only(raw: bytes, coordinates: list) -> float:
    """Seconds of resolve_regions + clean_pixels alone."""
    ds = dcmread(io.BytesIO(raw))
    start = time.perf_counter()
    clean_pixels(ds, resolve_regions(ds, coordinates))
    return time.perf_counter() - start


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", help="a DICOM file (default: pydicom-data's 693_UNCI.dcm)")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument(
        "--coordinates",
        nargs="+",
        default=DEFAULT_COORDINATES,
        metavar="X0,Y0,X1,Y1",
        help="boxes to blank (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    path = args.file or get_testdata_file("693_UNCI.dcm", download=False)
    if path is None:
        print("693_UNCI.dcm is not installed (pip install pydicom-data), or pass --file", file=sys.stderr)
        return 2
    raw = Path(path).read_bytes()
    coordinates = [[0, box] for box in args.coordinates]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(io.BytesIO(raw), stop_before_pixels=True)
        frames = int(ds.get("NumberOfFrames") or 1)
        for _ in range(5):  # warm up: imports, decoder plugins, caches
            bare(raw)
            clean(raw, coordinates)
        bare_s, clean_s, only_s = [], [], []
        for _ in range(args.rounds):
            bare_s.append(timed(bare, raw))
            clean_s.append(timed(clean, raw, coordinates))
            only_s.append(clean_only(raw, coordinates))
    b, c, o = (statistics.median(values) * 1000 for values in (bare_s, clean_s, only_s))
    print(
        f"file: {Path(path).name}  {ds.Rows}x{ds.Columns}  {ds.BitsAllocated}-bit  {frames} frame(s)  "
        f"{ds.file_meta.TransferSyntaxUID.name}  rounds: {args.rounds}"
    )
    print(f"bare pydicom read+write:   {b:7.3f} ms")
    print(f"read+clean+write:          {c:7.3f} ms")
    print(f"ratio clean / bare:        {c / b:7.2f}")
    print(f"cleaning adds per frame:   {(c - b) / frames:7.3f} ms")
    print(f"clean_pixels per frame:    {o / frames:7.3f} ms  (target < 5 ms for 512x512 16-bit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
