"""python -m sendit.deid INPUT OUTPUT, run as a process on pydicom's and deid-data's files."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread

from tests.services import make_ct_series

ROOT = Path(__file__).resolve().parent.parent.parent
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
deid_data = pytest.importorskip("deid_data")
COOKIES = Path(deid_data.__file__).parent / "data" / "dicom-cookies"


def run(*args):
    env = {k: v for k, v in os.environ.items() if k not in ("DEID_SECRET", "DJANGO_SETTINGS_MODULE")}
    return subprocess.run(
        [sys.executable, "-m", "sendit.deid", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def tree(folder: Path) -> dict:
    """Every file under a folder with its content hash and modification time."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def header_values(folder: Path) -> set[str]:
    """The identifying values of the inputs, to be found in no output line."""
    values = set()
    for path in folder.rglob("*"):
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        for keyword in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID", "SOPInstanceUID"):
            value = str(ds.get(keyword, "") or "")
            if len(value) >= 6:
                values.add(value)
    return values


@pytest.fixture
def studies(tmp_path):
    """Two patients' CT series, as a scanner would export them (deid-data's images are
    secondary captures, which the burned-in filters hold)."""
    folder = tmp_path / "in"
    make_ct_series(folder / "a", 3, patient_id="PHI-CLI-0001", patient_name="Secret^One", rows=32, columns=32)
    make_ct_series(folder / "b" / "c", 2, patient_id="PHI-CLI-0002", patient_name="Secret^Two", rows=32, columns=32)
    return folder


def test_every_file_is_written_and_the_input_left_alone(tmp_path, studies):
    before = tree(studies)
    result = run(studies, tmp_path / "out", "--secret", "a-test-secret-0123456789")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PHI-CLI" not in result.stdout and "Secret" not in result.stdout
    written = sorted((tmp_path / "out").rglob("*.dcm"))
    inputs = [p for p in studies.rglob("*") if p.is_file()]
    assert len(written) == len(inputs) and f"{len(inputs)} written, 0 held" in result.stdout
    originals = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in inputs}
    for path in written:
        ds = dcmread(path)
        assert ds.SOPInstanceUID not in originals and path.stem == ds.SOPInstanceUID
        assert path.parent.name == ds.SeriesInstanceUID and path.parent.parent.name == ds.StudyInstanceUID
        assert ds.PatientIdentityRemoved == "YES"
        assert all(ds.PatientID != o.PatientID for o in originals.values())
    assert tree(studies) == before


def test_the_same_secret_gives_the_same_output(tmp_path, studies):
    run(studies, tmp_path / "a", "--secret", "same-secret-0123456789", "--quiet")
    run(studies, tmp_path / "b", "--secret", "same-secret-0123456789", "--quiet")
    assert tree(tmp_path / "a").keys() == tree(tmp_path / "b").keys()
    other = run(studies, tmp_path / "c", "--secret", "another-secret-0123456789", "--quiet")
    assert other.returncode == 0 and not set(tree(tmp_path / "a")) & set(tree(tmp_path / "c"))


def test_deid_data_images_that_may_show_text_are_held(tmp_path):
    """deid-data's cookies are secondary captures without BurnedInAnnotation NO: held, as a node holds them."""
    result = run(COOKIES, tmp_path / "out", "--secret", "a-test-secret-0123456789")
    assert result.returncode == 1
    inputs = sorted(p.name for p in COOKIES.glob("*.dcm"))
    assert [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("HELD")] == [
        f"HELD {name}" for name in inputs
    ]
    assert "matched filter rule" in result.stdout
    assert f"0 written, {len(inputs)} held" in result.stdout
    assert not list((tmp_path / "out").rglob("*.dcm"))
    assert not [value for value in header_values(COOKIES) if value in result.stdout + result.stderr]


def test_pydicom_files_held_with_their_reason_never_a_value(tmp_path):
    before = tree(PYDICOM_FILES)
    result = run(PYDICOM_FILES, tmp_path / "out", "--secret", "a-test-secret-0123456789", "--recipe", "deid.dicom")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    held = [line for line in result.stdout.splitlines() if line.startswith("HELD ")]
    wrote = [line for line in result.stdout.splitlines() if line.startswith("WROTE ")]
    assert held and wrote
    assert "HELD README.txt: not a DICOM file" in result.stdout
    assert "HELD MR_truncated.dcm: the pixel data is truncated" in result.stdout
    assert any("burned-in" in line for line in held)
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"{len(wrote)} written, {len(held)} held")
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == len(wrote)
    assert not list((tmp_path / "out").glob(".sendit-deid-*"))
    leaked = [value for value in header_values(PYDICOM_FILES) if value in out]
    assert not leaked
    assert tree(PYDICOM_FILES) == before


def test_help_and_refusals(tmp_path):
    helped = run("--help")
    assert helped.returncode == 0 and "INPUT_FOLDER" in helped.stdout and "--recipe" in helped.stdout
    broken = tmp_path / "broken.recipe"
    broken.write_text("FORMAT dicom\n%header\nNONSENSE line here\n")
    refused = run(COOKIES, tmp_path / "out", "--recipe", broken)
    assert refused.returncode == 2 and "recipe" in refused.stderr
    assert not (tmp_path / "out").exists()
    inside = run(tmp_path, tmp_path / "out")
    assert inside.returncode == 2 and "must not contain" in inside.stderr


def test_no_django_is_set_up(tmp_path, studies):
    probe = (
        "import runpy, sys\nsys.argv = ['sendit.deid', sys.argv[1], sys.argv[2], '--quiet', '--secret', "
        "'x-0123456789']\ntry:\n    runpy.run_module('sendit.deid', run_name='__main__')\nexcept SystemExit:\n"
        "    pass\nfrom django.conf import settings\nprint('configured', settings.configured)\n"
        "print('apps', 'django.apps.registry' in sys.modules and __import__('django').apps.apps.ready)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(studies), str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
    )
    assert "apps False" in result.stdout, result.stdout + result.stderr
