"""sendit.deid.pixels against deid's own DicomCleaner, on images nobody here made.

The oracle is deid 0.4.13: for each of its shipped recipes (and one recipe written
here whose boxes cross the edges of every image), ``has_burned_pixels`` gives the
coordinates, ``DicomCleaner`` (detect + clean) gives the cleaned array, and the
file sendit writes must read back to exactly that array. The images are deid-data's
and pydicom's test files (pydicom's own and pydicom-data's), every encoding they
come in.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.data.data_manager import DATA_ROOT, external_data_sources
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGExtended12Bit

deid_utils = pytest.importorskip("deid.config.utils")
deid_pixels = pytest.importorskip("deid.dicom.pixels")
deid_data = pytest.importorskip("deid_data")

from sendit.deid.pixels import (  # noqa: E402
    BLANK,
    KEEP,
    blanks_everything,
    clean_file,
    clean_pixels,
    keep_mask,
    keeps_everything,
    resolve_regions,
    result_coordinates,
)

ROOT = Path(__file__).resolve().parents[2]
DEID_DATA = Path(deid_data.__file__).parent / "data"
#: xray.chest first: it gives no coordinates, so every file is checked once as a plain round trip
SHIPPED_RECIPES = ("dicom.xray.chest", "dicom", "dicom.ultrasound")
#: pydicom files above this many samples are left to the named tests (deid's cleaner
#: makes several full-size copies of each); deid-data's images are all taken
MAX_SAMPLES = 4_000_000

#: a recipe whose boxes cross the edges of every test image, in every form deid parses
EDGE_RECIPE = """FORMAT dicom

%filter graylist

LABEL Boxes across the edges
  present Rows
  coordinates 0,0,40,6
  ctpcoordinates 2,8,25,9
  keepcoordinates 5,2,12,14
  coordinates 30,20,100000,100000
  keepcoordinates 60,60,70,75
"""


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def _samples(ds) -> int:
    """Rows x Columns x frames x samples, as the header says (a malformed frame count is 1)."""
    frames = str(ds.get("NumberOfFrames") or 1)
    frames = int(frames) if frames.isdigit() else 1
    return int(ds.Rows) * int(ds.Columns) * frames * int(ds.get("SamplesPerPixel") or 1)


def _images() -> list[tuple[str, Path]]:
    """(label, path) of every test image with Pixel Data: deid-data's, then pydicom's."""
    roots = [("deid-data", DEID_DATA, None), ("pydicom", Path(DATA_ROOT) / "test_files", MAX_SAMPLES)]
    roots += [(name, Path(source.data_path), MAX_SAMPLES) for name, source in external_data_sources().items()]
    found = []
    for package, root, cap in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.suffix in (".py", ".pyc", ".md", ".txt", ".json", ".zip", ".gz", ".bz2", ".xz"):
                continue
            try:
                ds = _quiet(dcmread, path, stop_before_pixels=True)
                if "Rows" not in ds or "Columns" not in ds or not ds.get("file_meta", {}).get("TransferSyntaxUID"):
                    continue
                if cap is not None and _samples(ds) > cap:
                    continue
            except Exception:
                continue
            found.append((f"{package}/{path.relative_to(root)}", path))
    return found


IMAGES = _images()


def _coordinates(path: Path, recipe: str) -> list:
    return result_coordinates(_quiet(deid_pixels.has_burned_pixels, str(path), deid=recipe))


def _shipped_cases() -> list:
    """(recipe, image) once for each distinct pair of image and coordinates."""
    cases, seen = [], set()
    for name in SHIPPED_RECIPES:
        recipe = deid_utils.get_deid(name)
        for label, path in IMAGES:
            try:
                key = (path, repr(_coordinates(path, recipe)))
            except Exception:
                key = (path, name)  # deid cannot read it: checked below that neither cleans it
            if key not in seen:
                seen.add(key)
                cases.append(pytest.param(name, path, id=f"{name}:{label}"))
    return cases


@pytest.fixture(scope="session")
def edge_recipe(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("recipe") / "deid.edges"
    path.write_text(EDGE_RECIPE)
    return str(path)


def deid_cleaned(path: Path, recipe: str, tmp_path: Path) -> np.ndarray:
    """deid's own cleaned array: DicomCleaner.detect then clean."""
    cleaner = deid_pixels.DicomCleaner(deid=recipe, output_folder=str(tmp_path / "deid"))
    _quiet(cleaner.detect, str(path))
    cleaned = _quiet(cleaner.clean)
    assert cleaned is not None, "deid gave no array"
    return cleaned


def sendit_cleaned(path: Path, recipe: str, tmp_path: Path):
    """The file sendit writes for ``path`` under ``recipe``, read back."""
    out = tmp_path / "sendit.dcm"
    _quiet(clean_file, path, out, _coordinates(path, recipe))
    return _quiet(dcmread, out)


def _pydicom_writes(path: Path) -> bool:
    """Whether bare pydicom reads ``path`` and writes it back, as it was read."""
    try:
        _quiet(dcmread(path).save_as, io.BytesIO())
    except Exception:
        return False
    return True


def assert_matches_deid(path: Path, recipe: str, tmp_path: Path):
    """Clean ``path`` both ways; the written file must read back to deid's array. Returns it."""
    try:
        expected = deid_cleaned(path, recipe, tmp_path)
    except Exception as exc:  # deid (pydicom) cannot decode it: sendit must refuse it too
        with pytest.raises(Exception):  # noqa: B017 (whatever deid's decoder raised, sendit must refuse too)
            sendit_cleaned(path, recipe, tmp_path)
        pytest.skip(f"deid cannot clean it either ({type(exc).__name__})")
    try:
        ds = sendit_cleaned(path, recipe, tmp_path)
    except Exception:
        if not _pydicom_writes(path):
            pytest.skip("pydicom cannot write the file back even untouched")
        raise
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    ours = _quiet(lambda: ds.pixel_array)
    assert ours.shape == expected.shape
    np.testing.assert_array_equal(ours, expected)
    return ds


@pytest.mark.parametrize(("recipe_name", "path"), _shipped_cases())
def test_shipped_recipes_clean_like_deid(recipe_name, path, tmp_path):
    assert_matches_deid(path, deid_utils.get_deid(recipe_name), tmp_path)


@pytest.mark.parametrize("path", [pytest.param(p, id=label) for label, p in IMAGES])
def test_boxes_across_the_edges_clean_like_deid(path, edge_recipe, tmp_path):
    assert_matches_deid(path, edge_recipe, tmp_path)


def test_shipped_recipes_give_real_boxes():
    """The comparison above covers rules with boxes, keeps and from:, not only 'all'."""
    ultrasound = deid_utils.get_deid("dicom.ultrasound")
    seen = {
        (value, coordinate if isinstance(coordinate, str) else "list")
        for _, path in IMAGES
        for value, coordinate in _coordinates(path, ultrasound)
    }
    assert (BLANK, "all") in seen and (KEEP, "list") in seen
    default = deid_utils.get_deid("dicom")
    boxes = [c for _, path in IMAGES for v, c in _coordinates(path, default) if v == BLANK and c != "all"]
    assert boxes


# --- named cases ------------------------------------------------------------------


def _testdata(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return Path(path)


def _original(path: Path) -> np.ndarray:
    return _quiet(lambda: dcmread(path).pixel_array)


@pytest.mark.parametrize("name", ["emri_small.dcm", "emri_small_RLE.dcm", "SC_rgb_rle_16bit_2frame.dcm"])
def test_multiframe_every_frame_is_cleaned(name, edge_recipe, tmp_path):
    path = _testdata(name)
    ds = assert_matches_deid(path, edge_recipe, tmp_path)
    original, ours = _original(path), ds.pixel_array
    assert int(ds.NumberOfFrames) == original.shape[0] > 1
    keep = keep_mask(ds.Rows, ds.Columns, resolve_regions(ds, _coordinates(path, edge_recipe)))
    assert not keep.all() and keep.any()
    for frame in range(original.shape[0]):
        assert not ours[frame][~keep].any()
        np.testing.assert_array_equal(ours[frame][keep], original[frame][keep])


def test_multiframe_ultrasound_keeps_its_regions(tmp_path):
    """deid-data's cine loop: 'all' blanked, then the ultrasound region kept, in all 30 frames."""
    path = DEID_DATA / "ultrasounds" / "ultrasound-multiframe.dcm"
    recipe = deid_utils.get_deid("dicom.ultrasound")
    ds = assert_matches_deid(path, recipe, tmp_path)
    regions = resolve_regions(ds, _coordinates(path, recipe))
    assert [value for value, _ in regions] == [BLANK, KEEP]
    (x0, y0, x1, y1) = regions[1][1]
    ours, original = ds.pixel_array, _original(path)
    np.testing.assert_array_equal(ours[:, y0:y1, x0:x1], original[:, y0:y1, x0:x1])
    assert not ours[:, :y0].any() and not ours[:, y1:].any() and not ours[:, :, :x0].any()


@pytest.mark.parametrize("name", ["SC_rgb.dcm", "color-pl.dcm", "US1_UNCR.dcm", "SC_rgb_expb_16bit.dcm"])
def test_rgb(name, edge_recipe, tmp_path):
    path = _testdata(name)
    source = _quiet(dcmread, path, stop_before_pixels=True)
    ds = assert_matches_deid(path, edge_recipe, tmp_path)
    assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
    # little-endian native data is cleaned where it lies (color-pl.dcm stays in planes);
    # anything pydicom had to convert is written interleaved
    native_le = source.file_meta.TransferSyntaxUID.is_little_endian
    assert ds.PlanarConfiguration == (source.PlanarConfiguration if native_le else 0)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_bigendian.dcm", "693_UNCI.dcm", "JPEG2000.dcm"])
def test_signed_16_bit(name, edge_recipe, tmp_path):
    path = _testdata(name)
    ds = assert_matches_deid(path, edge_recipe, tmp_path)
    original = _original(path)
    assert ds.PixelRepresentation == 1 and ds.BitsAllocated == 16 and ds.pixel_array.dtype == np.int16
    keep = keep_mask(ds.Rows, ds.Columns, resolve_regions(ds, _coordinates(path, edge_recipe)))
    if (original[keep] < 0).any():
        assert (ds.pixel_array[keep] < 0).any()


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG1_J2KR.dcm"])
def test_monochrome1(name, edge_recipe, tmp_path):
    ds = assert_matches_deid(_testdata(name), edge_recipe, tmp_path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"


@pytest.mark.parametrize(
    ("name", "photometric"),
    [
        ("SC_rgb_jpeg_dcmtk.dcm", "RGB"),  # JPEG baseline, YBR_FULL
        ("examples_ybr_color.dcm", "RGB"),  # JPEG baseline, YBR_FULL_422, 30 frames
        ("JPGExtended.dcm", "MONOCHROME2"),
        ("SC_rgb_jpeg_gdcm.dcm", "RGB"),  # JPEG lossless
        ("JPEG2000.dcm", "MONOCHROME2"),
        ("US1_J2KR.dcm", "RGB"),  # JPEG 2000, YBR_RCT
        ("MR_small_RLE.dcm", "MONOCHROME2"),
        ("OBXXXX1A_rle_2frame.dcm", "PALETTE COLOR"),
        ("MR_small_jpeg_ls_lossless.dcm", "MONOCHROME2"),
        ("SC_ybr_full_422_uncompressed.dcm", "RGB"),  # native YBR: pydicom converts
    ],
)
def test_compressed_and_ybr_become_native(name, photometric, edge_recipe, tmp_path):
    path = _testdata(name)
    source = _quiet(dcmread, path)
    ds = assert_matches_deid(path, edge_recipe, tmp_path)
    assert ds.PhotometricInterpretation == photometric
    if ds.SamplesPerPixel > 1:
        assert ds.PlanarConfiguration == 0
    assert "PixelData" in ds and not ds["PixelData"].is_undefined_length
    expected = ds.Rows * ds.Columns * int(ds.get("NumberOfFrames", 1)) * ds.SamplesPerPixel * ds.BitsAllocated // 8
    assert len(ds.PixelData) == expected + expected % 2
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        assert keyword not in ds
    if source.file_meta.TransferSyntaxUID in (JPEGBaseline8Bit, JPEGExtended12Bit):
        assert ds.LossyImageCompression == "01"


def test_palette_cleans_indices_and_big_endian_luts_are_swapped(edge_recipe, tmp_path):
    (tmp_path / "le").mkdir()
    (tmp_path / "be").mkdir()
    little = sendit_cleaned(_testdata("OBXXXX1A.dcm"), edge_recipe, tmp_path / "le")
    big = assert_matches_deid(_testdata("OBXXXX1A_expb.dcm"), edge_recipe, tmp_path / "be")
    assert big.PhotometricInterpretation == "PALETTE COLOR"
    np.testing.assert_array_equal(big.pixel_array, little.pixel_array)
    for colour in ("Red", "Green", "Blue"):
        keyword = f"{colour}PaletteColorLookupTableData"
        assert big[keyword].value == little[keyword].value
        assert (
            big[f"{colour}PaletteColorLookupTableDescriptor"].value
            == little[f"{colour}PaletteColorLookupTableDescriptor"].value
        )


def test_bit_packed_stays_bit_packed(edge_recipe, tmp_path):
    ds = assert_matches_deid(_testdata("liver.dcm"), edge_recipe, tmp_path)
    assert ds.BitsAllocated == 1
    assert len(ds.PixelData) == -(-ds.Rows * ds.Columns * int(ds.NumberOfFrames) // 8)


def test_box_partly_outside_is_clipped_like_numpy(tmp_path):
    path = _testdata("CT_small.dcm")
    recipe = tmp_path / "deid.outside"
    recipe.write_text(
        "FORMAT dicom\n\n%filter graylist\n\nLABEL Off the corner\n  present Rows\n  coordinates 100,90,5000,4000\n"
    )
    ds = assert_matches_deid(path, str(recipe), tmp_path)
    original, ours = _original(path), ds.pixel_array
    assert original.shape == (128, 128)
    assert not ours[90:, 100:].any()
    np.testing.assert_array_equal(ours[:90], original[:90])
    np.testing.assert_array_equal(ours[:, :100], original[:, :100])


STRADDLING_RECIPE = """FORMAT dicom

%filter graylist

LABEL Keeps that start before the blanks
  present Rows
  coordinates 30,20,60,50
  keepcoordinates 25,15,40,30
  coordinates 50,10,55,25
  keepcoordinates 0,45,100000,48
"""


@pytest.mark.parametrize("name", ["CT_small.dcm", "SC_rgb.dcm", "emri_small.dcm", "OBXXXX1A_rle.dcm"])
def test_keep_boxes_that_start_before_the_blank_ones(name, tmp_path):
    """Boxes are applied in order on deid's mask, whichever side of each other they start."""
    recipe = tmp_path / "deid.straddling"
    recipe.write_text(STRADDLING_RECIPE)
    assert_matches_deid(_testdata(name), str(recipe), tmp_path)


def test_native_pixels_are_copied_once(edge_recipe):
    """Native little-endian data: one writable copy, cleaned in place, is the new value."""
    import tracemalloc

    ds = _quiet(dcmread, _testdata("RG1_UNCR.dcm"))
    size = len(ds.PixelData)
    regions = resolve_regions(ds, [[BLANK, "0,0,1000,300"], [KEEP, "10,10,20,20"]])
    tracemalloc.start()
    try:
        clean_pixels(ds, regions)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size <= peak < 1.2 * size


# --- resolve_regions and the predicates ---------------------------------------------


def test_from_sequence_of_ultrasound_regions_matches_deid():
    path = DEID_DATA / "ultrasounds" / "ultrasound-multiframe.dcm"
    ds = _quiet(dcmread, path, stop_before_pixels=True)
    ours = resolve_regions(ds, [[KEEP, "from:SequenceOfUltrasoundRegions"]])
    deids = deid_pixels.detect.extract_coordinates(ds, "from:SequenceOfUltrasoundRegions")
    assert deids and ours == resolve_regions(ds, [[KEEP, deids]])
    region = ds.SequenceOfUltrasoundRegions[0]
    assert ours[0] == (
        KEEP,
        (
            region.RegionLocationMinX0,
            region.RegionLocationMinY0,
            region.RegionLocationMaxX1,
            region.RegionLocationMaxY1,
        ),
    )
    ct = _quiet(dcmread, _testdata("CT_small.dcm"), stop_before_pixels=True)
    assert resolve_regions(ct, [[KEEP, "from:SequenceOfUltrasoundRegions"]]) == []  # absent: no box, as in deid


def test_all_is_the_whole_image():
    ds = _quiet(dcmread, _testdata("US1_UNCR.dcm"), stop_before_pixels=True)
    regions = resolve_regions(ds, [[BLANK, "ALL"], [KEEP, ["1,2,3,4", " 5,6,7,8 "]]])
    assert regions == [(BLANK, (0, 0, ds.Columns, ds.Rows)), (KEEP, (1, 2, 3, 4)), (KEEP, (5, 6, 7, 8))]
    assert blanks_everything(ds, regions[:1]) and not keeps_everything(ds, regions[:1])
    assert not blanks_everything(ds, regions) and not keeps_everything(ds, regions)
    assert keeps_everything(ds, []) and keeps_everything(ds, [(BLANK, (0, 0, 0, ds.Rows))])
    assert keeps_everything(ds, [(BLANK, (ds.Columns, 0, ds.Columns + 9, 9))])  # wholly outside


@pytest.mark.parametrize(
    "coordinates",
    [
        [[0, "1,2,3"]],
        [[0, "1,2,3,4,5"]],
        [[0, "a,b,c,d"]],
        [[0, "1.5,2,3,4"]],
        [[0, "-1,0,10,10"]],
        [[0, "10,0,5,10"]],
        [[0, "0,10,10,5"]],
        [[2, "0,0,1,1"]],
        [[True, "0,0,1,1"]],
        [[0, 12]],
        [[0, ["0,0,1,1", None]]],
        [[0]],
        ["0,0,1,1"],
        [[0, "from:"]],
        [[0, "from:NoSuchSequence"]],  # a misspelt keyword would silently blank nothing
    ],
)
def test_bad_coordinates_raise(coordinates):
    ds = _quiet(dcmread, _testdata("CT_small.dcm"), stop_before_pixels=True)
    with pytest.raises(ValueError):
        resolve_regions(ds, coordinates)


def test_no_pixel_data_raises():
    ds = _quiet(dcmread, _testdata("CT_small.dcm"), stop_before_pixels=True)
    with pytest.raises(ValueError, match="Pixel Data"):
        clean_pixels(ds, [(BLANK, (0, 0, 1, 1))])


def test_keeps_everything_leaves_values_and_gives_native(tmp_path):
    path = _testdata("MR_small_jp2klossless.dcm")
    ds = _quiet(dcmread, path)
    original = _quiet(lambda: ds.pixel_array.copy())
    clean_pixels(ds, [])
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    np.testing.assert_array_equal(ds.pixel_array, original)


# --- dciodvfy -------------------------------------------------------------------------


def _dciodvfy_check():
    spec = importlib.util.spec_from_file_location("dciodvfy_check", ROOT / "scripts" / "dciodvfy_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DCIODVFY_FILES = [
    ("pydicom", "CT_small.dcm"),
    ("pydicom", "MR_small_implicit.dcm"),
    ("pydicom", "MR_small_bigendian.dcm"),
    ("pydicom", "SC_rgb_jpeg_dcmtk.dcm"),
    ("pydicom", "examples_ybr_color.dcm"),
    ("pydicom", "JPEG2000.dcm"),
    ("pydicom", "SC_rgb_rle_16bit_2frame.dcm"),
    ("pydicom", "OBXXXX1A_expb_2frame.dcm"),
    ("pydicom", "liver.dcm"),
    ("pydicom", "color-pl.dcm"),
    ("pydicom", "SC_ybr_full_422_uncompressed.dcm"),
    ("pydicom", "bad_sequence.dcm"),  # its SOP Instance UID is not a UID: the file meta keeps its own
    ("deid-data", "ultrasounds/ultrasound-multiframe.dcm"),
    ("deid-data", "dicom-cookies/image1.dcm"),
]


@pytest.mark.parametrize(("package", "name"), DCIODVFY_FILES, ids=[n for _, n in DCIODVFY_FILES])
def test_dciodvfy_reports_no_new_errors(package, name, edge_recipe, tmp_path):
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    check = _dciodvfy_check()
    path = DEID_DATA / name if package == "deid-data" else _testdata(name)
    syntax = _quiet(dcmread, path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if syntax.is_compressed and not get_decoder(syntax).is_available:
        pytest.skip(f"no installed decoder reads {syntax.name} (JPEG lossless needs GDCM or the GPL's libjpeg)")
    out = tmp_path / "out.dcm"
    regions = _quiet(clean_file, path, out, _coordinates(path, edge_recipe))
    assert regions
    before, after = check.dciodvfy_errors(dciodvfy, path), check.dciodvfy_errors(dciodvfy, out)
    assert before is not None and after is not None, "dciodvfy aborted"
    assert not check.new_errors(before, after), after
