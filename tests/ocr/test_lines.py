"""Finding lines of text without reading, reading them scaled, and the decision on lines
(sendit/deid/ocr.py). The corpus's measured figures are scripts/bench_ocr.py's."""

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.ocr.corpus import FONT_FILES, background, corpus

pytest.importorskip("tesserocr")
from sendit.deid import ocr  # noqa: E402


def font(size):
    return ImageFont.truetype(FONT_FILES[0], size) if Path(FONT_FILES[0]).is_file() else ImageFont.load_default(size)


def burned(kind, text, size, at=(60, 400), light=True):
    """A 512x512 frame of ``kind`` (corpus backgrounds) as a viewer shows it, ``text`` drawn in it."""
    ds, pixels, ink = background(kind, random.Random(11))
    grey = pixels if pixels.dtype == np.uint8 else (pixels.astype(np.float32) / 16).astype(np.uint8)
    image = Image.fromarray(grey.copy())
    draw = ImageDraw.Draw(image)
    draw.text(at, text, fill=250 if light else 5, font=font(size))
    return np.asarray(image), draw.textbbox(at, text, font=font(size))


def needle(value, kind="the patient's id", date=False, name=False):
    return (value, kind, False, False, date, name)


def test_pieces_are_8_connected():
    mask = np.zeros((10, 12), bool)
    mask[1:3, 1:3] = True
    mask[3, 3] = True  # touches the square at a corner: the same piece
    mask[6:9, 8] = True
    pieces = sorted(map(tuple, ocr._pieces(mask)))
    assert pieces == [(1, 1, 4, 4, 5), (8, 6, 9, 9, 3)]


@pytest.mark.parametrize("kind,light,at", [("US", True, (20, 20)), ("SC", False, (60, 400)), ("CR", False, (60, 400)),
                                           ("CR", True, (300, 250))])
def test_small_text_is_found_as_one_line(kind, light, at):
    # (small text over the speckle of the fan itself is not always found: docs/deidentify.md)
    grey, (x0, y0, x1, y1) = burned(kind, "A7581660", 10, at=at, light=light)
    assert y1 - y0 <= 9  # text Tesseract does not find in the whole frame
    lines = ocr.find_lines(grey)
    assert any(ocr._covered((x0, y0, x1, y1), line.box) >= 0.9 for line in lines)
    found = [line for line in lines if ocr._covered((x0, y0, x1, y1), line.box) >= 0.9]
    assert found[0].polarity == ("light" if light else "dark")


def test_a_speckled_fan_without_text_is_left_alone():
    ds, pixels, _ = background("US", random.Random(5))
    assert len(ocr.find_lines(pixels)) <= 3  # speckle is not lines of letters
    forms = ocr.patterns([needle(b"A7581660", "the accession number"), needle(b"19600102", "a date", date=True)])
    decision = ocr.decide(ocr.read_frame(pixels), forms)
    assert not decision.blank and decision.hold is None


def test_small_text_is_read_scaled_and_matched():
    grey, (x0, y0, x1, y1) = burned("US", "A7581660", 11, at=(20, 20))
    words = ocr.read_frame(grey)
    decision = ocr.decide(words, ocr.patterns([needle(b"A7581660", "the accession number")]))
    assert decision.blank and decision.hold is None
    blanked = np.zeros(grey.shape, bool)
    for _, (bx0, by0, bx1, by1) in decision.regions(*grey.shape):
        blanked[by0:by1, bx0:bx1] = True
    ink = grey[y0:y1, x0:x1] > 128
    assert ink.sum() > 30 and blanked[y0:y1, x0:x1][ink].all()


def test_a_value_read_in_part_matches_but_a_decoy_does_not():
    forms = ocr.patterns([needle(b"NAKAMURA^OLUWASEUN", "the patient's name", name=True),
                          needle(b"A1085238", "the accession number")])
    assert ocr._part_of("kamur", forms)  # of NAKAMURA
    assert ocr._part_of(ocr.canonical("A108"), forms)  # of the accession number
    assert not ocr._part_of("naka", ocr.patterns([needle(b"NAKAMURAOLUWASEUN")]))  # under half of it
    assert not ocr._part_of("liver", forms)
    assert not ocr._part_of("mur", forms)  # 3 characters: too short to say


def test_a_matched_word_blanks_its_whole_line():
    line = (10, 10, 200, 30)
    words = [ocr.TextBox(0, (10, 10, 90, 30), "A8699", 92.0, (0, 1), line),
             ocr.TextBox(0, (300, 10, 360, 30), "LIVER", 95.0, (0, 2), (300, 10, 360, 30))]
    decision = ocr.decide(words, ocr.patterns([needle(b"A8699117", "the accession number")]))
    assert [w.text for w in decision.blank] == ["A8699"]
    (_, box), = decision.regions(512, 512)
    assert box[0] <= 10 and box[2] >= 200  # the part read, and the rest of its line


def test_a_tall_doubtful_line_holds_a_small_one_or_a_sure_one_does_not():
    forms = ocr.patterns([needle(b"12345678")])

    def word(text, height, confidence):
        return ocr.TextBox(0, (10, 10, 120, 10 + height), text, confidence, (0, 1))

    assert ocr.decide([word("xq7Zr", 20, 30.0)], forms).hold is not None
    assert ocr.decide([word("xq7Zr", 12, 30.0)], forms).hold is None  # small: let go
    assert ocr.decide([word("LIVER", 20, 90.0)], forms).hold is None  # read with confidence: a decoy
    matched = ocr.decide([word("12345678", 20, 30.0)], forms)
    assert matched.blank and matched.hold is None  # identifying: blanked, not held


def test_of_two_overlapping_readings_in_opposite_polarities_the_better_stays():
    light, dark = ocr.Line((0, 0, 100, 20), "light"), ocr.Line((2, 0, 98, 20), "dark")
    words = [ocr.TextBox(0, (0, 0, 100, 20), "GARCIA", 93.0, (0, 0)),
             ocr.TextBox(0, (2, 0, 50, 20), "~;", 10.0, (0, 1))]
    assert [w.text for w in ocr._one_polarity(words, [light, dark])] == ["GARCIA"]


def test_otsu_splits_two_levels():
    pixels = np.array([[10] * 50 + [200] * 50], np.uint8)
    assert 10 <= ocr._otsu(pixels) < 200


def test_the_corpus_is_seeded_and_draws_from_each_image_s_own_header():
    first, again, other = corpus(2, 1, 1, seed=0), corpus(2, 1, 1, seed=0), corpus(2, 1, 1, seed=1)
    assert [s.name for s in first] == [s.name for s in again]
    assert [b.text for s in first for b in s.burned] == [b.text for s in again for b in s.burned]
    assert [b.text for s in first for b in s.burned] != [b.text for s in other for b in s.burned]
    for sample in first:
        ids = [b.text for b in sample.burned if b.identifying]
        if ids and sample.ds.Rows >= 256:  # (a 128x128 image has no room for all of them)
            assert str(sample.ds.AccessionNumber) in ids
            assert any(str(sample.ds.PatientID) in t for t in ids)
    assert all(not s.has_text for s in first if s.own_text and s.name.endswith("-clean"))
