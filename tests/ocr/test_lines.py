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


def test_pieces_with_seeds_are_those_holding_one():
    mask = np.zeros((10, 12), bool)
    mask[1:3, 1:3] = True
    mask[6:9, 8] = True
    seeds = np.zeros_like(mask)
    seeds[7, 8] = True
    assert [tuple(p) for p in ocr._pieces(mask, seeds)] == [(8, 6, 9, 9, 3)]


@pytest.mark.parametrize(
    "kind,light,at",
    [
        ("US", True, (20, 20)),
        ("SC", False, (60, 400)),
        ("CR", False, (60, 400)),
        ("CR", True, (300, 250)),
        ("US", True, (200, 250)),
        ("US", True, (300, 300)),
    ],
)
def test_small_text_is_found_as_one_line(kind, light, at):
    # on the fan too (its speckle as bright as the blended strokes of small text): the
    # strokes are taken down to a lower level from their extreme pixels (hysteresis)
    grey, (x0, y0, x1, y1) = burned(kind, "A7581660", 10, at=at, light=light)
    assert y1 - y0 <= 9  # text Tesseract does not find in the whole frame
    lines = ocr.find_lines(grey)
    assert any(ocr._covered((x0, y0, x1, y1), line.box) >= 0.9 for line in lines)
    found = [line for line in lines if ocr._covered((x0, y0, x1, y1), line.box) >= 0.9]
    assert found[0].polarity == ("light" if light else "dark")


def test_a_speckled_fan_without_text_is_left_alone():
    ds, pixels, _ = background("US", random.Random(5))
    assert len(ocr.find_lines(pixels)) <= 3  # speckle is not lines of letters
    brighter = np.where(pixels > 0, np.clip(pixels.astype(np.int16) + 55, 0, 255), 0).astype(np.uint8)
    assert len(ocr.find_lines(brighter)) <= 3  # nor when it reaches the frame's extreme value
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
    forms = ocr.patterns(
        [needle(b"NAKAMURA^OLUWASEUN", "the patient's name", name=True), needle(b"A1085238", "the accession number")]
    )
    assert ocr._part_of("kamur", forms) == (2, 7, 8)  # of NAKAMURA: where it lies in it
    assert ocr._part_of(ocr.canonical("A108"), forms) == (0, 4, 8)  # of the accession number
    assert ocr._part_of("naka", ocr.patterns([needle(b"NAKAMURAOLUWASEUN")])) is None  # under half of it
    assert ocr._part_of("liver", forms) is None
    assert ocr._part_of("mur", forms) is None  # 3 characters: too short to say


def test_a_matched_word_blanks_its_whole_line():
    line = (10, 10, 200, 30)
    words = [
        ocr.TextBox(0, (10, 10, 90, 30), "A8699", 92.0, (0, 1), line),
        ocr.TextBox(0, (300, 10, 360, 30), "LIVER", 95.0, (0, 2), (300, 10, 360, 30)),
    ]
    decision = ocr.decide(words, ocr.patterns([needle(b"A8699117", "the accession number")]))
    assert [w.text for w in decision.blank] == ["A8699"]
    boxes = [box for _, box in decision.regions(512, 512)]
    assert min(b[0] for b in boxes) <= 10 and max(b[2] for b in boxes) >= 200  # the part read, the rest of its line
    assert not any(b[2] > 300 for b in boxes)  # LIVER stays


def test_the_rest_of_a_value_read_in_part_is_blanked_too():
    # "A8699" read of "A8699117", the line found ending with it: the 3 characters not read
    # lie to its right, about as wide as those read (16 px each here)
    words = [ocr.TextBox(0, (100, 10, 180, 30), "A8699", 92.0, (0, 1), (100, 10, 180, 30))]
    decision = ocr.decide(words, ocr.patterns([needle(b"A8699117", "the accession number")]))
    right = max(box[2] for _, box in decision.regions(512, 512))
    assert 180 + 3 * 16 <= right <= 180 + 5 * 16 + 8
    assert min(box[0] for _, box in decision.regions(512, 512)) >= 100 - 8  # nothing missing on the left
    # "KAMUR" of "NAKAMURA": two characters before it, one after
    words = [ocr.TextBox(0, (200, 10, 250, 30), "KAMUR", 92.0, (0, 1), (200, 10, 250, 30))]
    decision = ocr.decide(words, ocr.patterns([needle(b"NAKAMURA^JOHN", "the patient's name", name=True)]))
    boxes = [box for _, box in decision.regions(512, 512)]
    assert min(b[0] for b in boxes) <= 200 - 2 * 10 and max(b[2] for b in boxes) >= 250 + 10


def test_lines_found_next_to_a_blanked_one_in_its_row_are_blanked():
    # a name found as three lines, one of them read: the other two are blanked with it,
    # a line below and one far along the row are not
    found = [
        (0, (10, 100, 60, 112)),
        (0, (66, 100, 120, 112)),
        (0, (126, 101, 170, 112)),
        (0, (10, 130, 60, 142)),
        (0, (400, 100, 450, 112)),
    ]
    words = [ocr.TextBox(0, (66, 100, 120, 112), "KAMUR", 90.0, (0, 1), (66, 100, 120, 112))]
    decision = ocr.decide(words, ocr.patterns([needle(b"NAKAMURA^JOHN", "the patient's name", name=True)]), lines=found)
    assert sorted(box for _, box in decision.also if box in [b for _, b in found]) == [found[0][1], found[2][1]]
    assert decision.record()["blanked"] == 1 and len(decision.record()["blanked_boxes"]) >= 3
    untouched = ocr.decide(
        [ocr.TextBox(0, (66, 100, 120, 112), "LIVER", 90.0, (0, 1), (66, 100, 120, 112))],
        ocr.patterns([needle(b"NAKAMURA^JOHN", "the patient's name", name=True)]),
        lines=found,
    )
    assert not untouched.blank and not untouched.also and not untouched.regions(512, 512)


def test_long_numbers_are_blanked_short_ones_and_words_are_not():
    forms = ocr.patterns([needle(b"A7581660", "the accession number")])

    def words(*texts):
        return [ocr.TextBox(0, (10 + 60 * i, 10, 60 + 60 * i, 24), t, 90.0, (0, i)) for i, t in enumerate(texts)]

    decision = ocr.decide(words("43453313", "12:41:07", "GAIN 50", "12 cm", "C5-1", "LIVER"), forms)
    assert [w.text for w in decision.blank] == ["43453313", "12:41:07"]


def test_a_match_in_the_losing_polarity_is_blanked_but_its_noise_never_holds():
    light, dark = ocr.Line((200, 80, 350, 114), "light"), ocr.Line((210, 93, 333, 114), "dark")
    words = [
        ocr.TextBox(0, (215, 85, 300, 112), "Prey", 0.0, (0, 0), light.box),
        ocr.TextBox(0, (212, 93, 330, 114), "2015/06/D", 0.0, (0, 1), dark.box),
    ]
    kept, shadows = ocr._one_polarity(words, [light, dark])
    assert [w.text for w in kept] == ["Prey"] and [w.text for w in shadows] == ["2015/06/D"]
    assert all(w.shadow for w in shadows)
    forms = ocr.patterns([needle(b"20150614", "the study date", date=True)])
    decision = ocr.decide(kept + shadows, forms)
    assert [w.text for w in decision.blank] == ["2015/06/D"]
    assert decision.hold is None  # "Prey" lies over the date blanked: nothing left to doubt
    noise = ocr.decide(kept + [ocr.TextBox(0, (212, 93, 330, 114), "xqzv", 0.0, (0, -2), dark.box, True)], forms)
    assert noise.hold is not None and [w.text for w in noise.undecided] == ["Prey"]


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
    words = [
        ocr.TextBox(0, (0, 0, 100, 20), "GARCIA", 93.0, (0, 0)),
        ocr.TextBox(0, (2, 0, 50, 20), "~;", 10.0, (0, 1)),
    ]
    kept, shadows = ocr._one_polarity(words, [light, dark])
    assert [w.text for w in kept] == ["GARCIA"] and [w.text for w in shadows] == ["~;"]


def test_text_over_speckle_is_read_with_the_specks_taken_out():
    grey, (x0, y0, x1, y1) = burned("US", "41298433", 24, at=(150, 300))
    words = ocr.read_frame(grey)
    decision = ocr.decide(words, ocr.patterns([needle(b"41298433")]))
    assert decision.blank and decision.hold is None


def test_a_guess_read_in_a_blob_does_not_hold_one_in_a_wide_line_does():
    forms = ocr.patterns([needle(b"12345678")])
    blob = ocr.TextBox(0, (100, 100, 126, 120), "wee", 15.0, (0, 1), (98, 98, 128, 122))
    line = ocr.TextBox(0, (100, 100, 126, 120), "wee", 15.0, (0, 1), (98, 98, 200, 122))
    assert ocr.decide([blob], forms).hold is None
    assert ocr.decide([line], forms).hold is not None


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


def test_a_tall_line_read_only_in_part_is_blanked_whole():
    # ctbrain1's 22 px accession number, found as one line but read confidently in part as
    # "81!": too short to be a part of a value, and most of the line not read
    line = (153, 248, 309, 270)
    words = [ocr.TextBox(0, (174, 248, 223, 270), "81!", 66.0, (0, 1), (181, 248, 215, 270))]
    decision = ocr.decide(words, ocr.patterns([needle(b"A8199292", "the accession number")]), lines=[(0, line)])
    assert line in [box for _, box in decision.also] and decision.hold is None
    x0, _, x1, _ = max(decision.regions(512, 512), key=lambda r: r[1][2] - r[1][0])[1]
    assert x0 <= 153 and x1 >= 309
    assert decision.record()["blanked"] == 0  # no word matched: the line is blanked as text not read


def test_a_tall_line_read_as_nothing_is_blanked_a_small_one_is_not():
    forms = ocr.patterns([needle(b"A8199292", "the accession number")])
    assert [box for _, box in ocr.decide([], forms, lines=[(0, (100, 100, 200, 120))]).also] == [(100, 100, 200, 120)]
    assert not ocr.decide([], forms, lines=[(0, (100, 100, 200, 116))]).also  # 16 px: not
    # the words of the losing polarity (noise between the letters) account for nothing
    shadow = ocr.TextBox(0, (100, 100, 200, 120), "eee", 20.0, (0, -1), (100, 100, 200, 120), True)
    assert ocr.decide([shadow], forms, lines=[(0, (100, 100, 200, 120))]).also


def test_a_tall_line_read_whole_stays_spaces_and_edges_are_not_text_not_read():
    forms = ocr.patterns([needle(b"A8199292", "the accession number")])
    line = (244, 340, 320, 362)  # "kVp 80": a space between its words, a pixel or two at its ends
    words = [
        ocr.TextBox(0, (245, 340, 273, 362), "kVp", 94.0, (0, 7), line),
        ocr.TextBox(0, (280, 341, 318, 362), "80", 94.0, (0, 7), line),
    ]
    decision = ocr.decide(words, forms, lines=[(0, line)])
    assert not decision.also and not decision.blank and decision.hold is None
    # the same line with a letter's width at its end not read is blanked
    decision = ocr.decide(
        words[:1] + [ocr.TextBox(0, (280, 341, 300, 362), "8", 94.0, (0, 7), line)], forms, lines=[(0, line)]
    )
    assert [box for _, box in decision.also] == [line]


def test_a_line_blanked_as_not_read_blanks_the_lines_next_to_it_and_holds_nothing():
    # "Homer Simpson", 31 px: "Homi" and "fson" read (no part of a value), the middle not
    forms = ocr.patterns([needle(b"SIMPSON^HOMER", "the patient's name", name=True)])
    words = [
        ocr.TextBox(0, (170, 245, 225, 268), "Homi", 95.0, (0, 5), (170, 245, 225, 268)),
        ocr.TextBox(0, (359, 244, 415, 268), "fson", 72.0, (0, 10), (365, 250, 416, 268)),
    ]
    found = [(0, (173, 240, 263, 268)), (0, (289, 240, 413, 285)), (0, (170, 245, 225, 268)), (0, (365, 250, 416, 268))]
    decision = ocr.decide(words, forms, lines=found)
    blanked = np.zeros((456, 510), bool)
    for _, (x0, y0, x1, y1) in decision.regions(456, 510):
        blanked[y0:y1, x0:x1] = True
    assert blanked[250:265, 170:263].all() and blanked[250:265, 289:413].all()
    assert decision.hold is None
