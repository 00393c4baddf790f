"""Measure burned-in text found by OCR on the generated corpus (tests/ocr/corpus.py).

Every image goes through sendit's own de-identification (``deidentify_file`` with OCR on,
as a node with ``DEID_OCR=true`` runs it); the output's pixels are compared with the
true boxes of the text burned into the input. Prints:

- recall of identifying boxes: the share whose text pixels were blanked (a box counts as
  blanked when at most 10% of its text pixels survive), and the worst boxes;
- images sent with an identifying box above 16 px the OCR missed (must be none);
- clean images (no text) changed, and held;
- images with text delivered (scrubbed) vs held;
- ms per 512x512 8-bit frame for the OCR decision (frame preparation, reading, deciding), wall
  clock and CPU time (on a shared machine the wall clock counts the waits for the CPU too).

Usage: .venv/bin/python scripts/bench_ocr.py [--seed 0] [--per-kind 12] [--scrub identifying|all]
       [--modalities US,SC,...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom import dcmread

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sendit.deid import DeidOptions, deidentify_file  # noqa: E402
from sendit.deid.identifiers.request import StudyIdentifiers  # noqa: E402
from sendit.deid.ocr import DEFAULT_MODALITIES, OcrOptions, TextUndecided, ocr_image  # noqa: E402
from sendit.deid.proof import identifying_values  # noqa: E402
from tests.ocr.corpus import corpus  # noqa: E402

IDS = StudyIdentifiers(patient_suid="BENCHPATIENT", study_suid="BENCHSTUDY", jitter=-7)
OPTIONS = DeidOptions(uid_secret=b"bench-ocr", retain_long_modified_dates=False)


def surviving(output: np.ndarray, burned) -> float:
    """The share of a box's text pixels not blanked (blanked pixels are 0 in every sample)."""
    x0, y0, x1, y1 = burned.box
    region = output[y0:y1, x0:x1]
    if region.ndim == 3:
        region = region.max(axis=2)
    text = burned.mask
    return float((region[text] != 0).sum()) / max(1, int(text.sum()))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-kind", type=int, default=12, help="synthetic images with text per kind (US, SC, CR)")
    parser.add_argument("--clean-per-kind", type=int, default=4)
    parser.add_argument("--real-seeds", type=int, default=3)
    parser.add_argument("--scrub", default="identifying")
    parser.add_argument("--seed", type=int, default=0, help="another corpus of the same make (0: the first)")
    parser.add_argument(
        "--modalities",
        default="",
        help="DEID_OCR_MODALITIES, comma-separated; default: the default list and every "
        "modality of the corpus (its CT images are read too, as a site listing CT would)",
    )
    args = parser.parse_args()
    samples = corpus(args.per_kind, args.clean_per_kind, args.real_seeds, seed=args.seed)
    modalities = [m for m in args.modalities.split(",") if m.strip()] or sorted(
        set(DEFAULT_MODALITIES) | {str(s.ds.Modality) for s in samples}
    )
    ocr = OcrOptions(modalities=tuple(modalities), scrub=args.scrub)
    boxes = blanked = 0
    missed_big = 0
    worst = []
    text_images = delivered = held_text = 0
    clean_images = clean_changed = clean_held = 0
    own_images = own_changed = own_held = 0  # real images with text of their own, none burned
    frame_ms = []
    frame_cpu_ms: list[float] = []  # CPU time: what the frame costs one CPU, whatever else runs
    with tempfile.TemporaryDirectory() as tmp:
        for sample in samples:
            src, dst = Path(tmp) / f"{sample.name}.dcm", Path(tmp) / f"{sample.name}.out.dcm"
            sample.ds.save_as(src, enforce_file_format=True)
            ds = dcmread(src)
            if ds.Rows == 512 and ds.Columns == 512 and ds.BitsAllocated == 8:
                facts = identifying_values(ds, IDS, OPTIONS)
                start, cpu = time.perf_counter(), time.process_time()
                ocr_image(ds, facts.needles, args.scrub)
                frame_ms.append((time.perf_counter() - start) * 1000)
                frame_cpu_ms.append((time.process_time() - cpu) * 1000)
            try:
                deidentify_file(src, dst, IDS, OPTIONS, require_pixels=True, ocr=ocr)
            except TextUndecided:
                if not sample.has_text and sample.own_text:
                    own_images += 1
                    own_held += 1
                elif sample.has_text:
                    held_text += 1
                    text_images += 1
                else:
                    clean_images += 1
                    clean_held += 1
                continue
            before, after = dcmread(src).pixel_array, dcmread(dst).pixel_array
            if not sample.has_text and sample.own_text:
                own_images += 1
                own_changed += int(not np.array_equal(before, after))
                continue
            if not sample.has_text:
                clean_images += 1
                clean_changed += int(not np.array_equal(before, after))
                continue
            text_images += 1
            delivered += 1
            for burned in sample.burned:
                if not burned.identifying:
                    continue
                boxes += 1
                left = surviving(after, burned)
                if left <= 0.10:
                    blanked += 1
                else:
                    worst.append((left, burned.size, sample.name))
                    if burned.size > 16:
                        missed_big += 1
    print(
        f"corpus (seed {args.seed}): {len(samples)} images ({text_images} with text burned in, {clean_images} without"
        f" text, {own_images} real with text of their own only); scrub={args.scrub}; modalities={','.join(modalities)}"
    )
    print(
        f"identifying boxes blanked (<=10% of text pixels left): {blanked}/{boxes} = {100 * blanked / max(1, boxes):.1f}%"
        " (boxes in delivered images)"
    )
    print(f"images sent with a missed identifying box above 16 px: {missed_big}")
    print(
        f"images with text delivered: {delivered}/{text_images} = {100 * delivered / max(1, text_images):.1f}%;"
        f" held: {held_text}"
    )
    print(
        f"clean images changed: {clean_changed}/{clean_images} = {100 * clean_changed / max(1, clean_images):.1f}%;"
        f" held: {clean_held}"
    )
    print(
        f"real images with text of their own only (not recorded: blanking it may be right): changed {own_changed},"
        f" held {own_held} of {own_images}"
    )
    if frame_ms:
        frame_ms.sort()
        print(
            f"OCR decision per 512x512 8-bit frame: mean {statistics.mean(frame_ms):.0f} ms, "
            f"median {statistics.median(frame_ms):.0f} ms, p95 {frame_ms[int(0.95 * (len(frame_ms) - 1))]:.0f} ms, "
            f"max {frame_ms[-1]:.0f} ms ({len(frame_ms)} frames, one thread, wall clock)"
        )
        frame_cpu_ms.sort()
        print(
            f"  CPU time per frame: mean {statistics.mean(frame_cpu_ms):.0f} ms, median "
            f"{statistics.median(frame_cpu_ms):.0f} ms, p95 {frame_cpu_ms[int(0.95 * (len(frame_cpu_ms) - 1))]:.0f} ms,"
            f" max {frame_cpu_ms[-1]:.0f} ms"
        )
    for left, size, name in sorted(worst, reverse=True)[:10]:
        print(f"  missed: {name} box {size} px high, {100 * left:.0f}% of its text pixels left")
    return 0


if __name__ == "__main__":
    sys.exit(main())
