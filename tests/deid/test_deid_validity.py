"""De-identification keeps files valid: dciodvfy finds no error in the output that the
input does not have (errors compared without their values, as scripts/dciodvfy_check.py
does for every shipped file)."""

import importlib.util
import shutil
from pathlib import Path

import pytest

from sendit.deid import DeidOptions, Recipe
from sendit.deid.identifiers import StudyIdentifiers

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("dciodvfy_check", ROOT / "scripts" / "dciodvfy_check.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)

DCIODVFY = shutil.which("dciodvfy")
pytestmark = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) is not installed")

ROOTS = dict(check.data_roots())
#: (package, path in it): what each stands for
FILES = [
    ("pydicom", "CT_small.dcm"),  # CT
    ("pydicom", "MR_small.dcm"),  # MR
    ("pydicom", "test-SR.dcm"),  # Comprehensive SR: content tree, Verifying Observer Sequence
    ("pydicom", "reportsi.dcm"),  # Basic Text SR, Referenced Performed Procedure Step Sequence
    ("pydicom", "examples_overlay.dcm"),  # overlay plane
    ("data_store", "MR-SIEMENS-DICOM-WithOverlays.dcm"),  # overlay planes (pydicom-data)
    ("pydicom", "rtplan.dcm"),  # RT Plan
    ("pydicom", "rtstruct.dcm"),  # RT Structure Set
    ("pydicom", "rtdose.dcm"),  # RT Dose, multi-frame
    ("data_store", "emri_small.dcm"),  # multi-frame MR (Enhanced MR, pydicom-data)
    ("deid_data", "ultrasounds/ultrasound-multiframe.dcm"),  # multi-frame US, reference sequences
    ("data_store", "JPGLosslessP14SV1_1s_1f_8b.dcm"),  # Referenced Study / Performed Procedure Step items
    ("deid_data", "animals/cat.dcm"),  # an animal: Responsible Person/Organization
]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("package,name", FILES, ids=[name for _, name in FILES])
def test_no_new_dciodvfy_error(package, name, tmp_path):
    if package not in ROOTS:
        pytest.skip(f"{package} is not installed")
    src = ROOTS[package] / name
    if not src.exists():
        pytest.skip(f"{package} does not ship {name}")
    ids = StudyIdentifiers(patient_suid="PSUIDVALID", study_suid="SSUIDVALID", jitter=-12)
    result = check.compare(DCIODVFY, src, tmp_path / "out.dcm", ids, DeidOptions(uid_secret=b"validity-secret"))
    assert result is not None, "dciodvfy aborted"
    before, after, new = result
    assert not check.is_damaged(before), "the input should be one dciodvfy reads whole"
    assert not new, "\n".join(sorted(new))


def test_the_comparison_sees_a_new_error(tmp_path):
    """The check itself: an error the scrub would cause is reported, whatever its values."""
    before = [
        "Error - Missing attribute Type 2 Required Element=<Manufacturer> Module=<GeneralEquipment>",
        "Error - Unrecognized enumerated value <PVAL> for value 1 of attribute <Rescale Type>",
    ]
    after = [
        "Error - Unrecognized enumerated value <OTHER> for value 1 of attribute <Rescale Type>",
        "Error - Missing attribute Type 1 Required Element=<OverlayData> Module=<OverlayPlane>",
        "Error - Missing attribute Type 2 Required Element=<Manufacturer> Module=<GeneralEquipment>",
    ]
    assert list(check.new_errors(before, after)) == [
        "Error - Missing attribute Type 1 Required Element=<OverlayData> Module=<OverlayPlane>"
    ]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("recipe", ["deid.dicom", "deid.dicom.ultrasound", "deid.dicom.xray.chest"])
@pytest.mark.parametrize("package,name", FILES, ids=[name for _, name in FILES])
def test_no_new_dciodvfy_error_with_a_shipped_recipe_layered_on(package, name, recipe, tmp_path):
    """deid's own recipes on top of the profile: the output is proven (no identifying value
    of the input in it) and no less valid than the input, pixels cleaned or not."""
    if package not in ROOTS:
        pytest.skip(f"{package} is not installed")
    src = ROOTS[package] / name
    if not src.exists():
        pytest.skip(f"{package} does not ship {name}")
    ids = StudyIdentifiers(patient_suid="PSUIDVALID", study_suid="SSUIDVALID", jitter=-12)
    options = DeidOptions(uid_secret=b"validity-secret", recipe=Recipe.load(recipe))
    result = check.compare(DCIODVFY, src, tmp_path / "out.dcm", ids, options)
    assert result is not None, "dciodvfy aborted"
    before, after, new = result
    assert not new, "\n".join(sorted(new))
