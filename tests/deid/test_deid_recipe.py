"""Recipes (deid format) and burned-in annotation filters."""

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from sendit.deid import DeidOptions, Recipe, RecipeError, burned_in_reason, deidentify_dataset

DEID_DATA = Path(__file__).resolve().parents[2] / ".venv/lib/python3.11/site-packages/deid_data/data"
try:
    import deid_data

    DEID_DATA = Path(deid_data.__file__).parent / "data"
except ImportError:  # pragma: no cover
    pass

RECIPE = r"""
FORMAT dicom

# a comment
%filter blacklist
LABEL Dose report
contains SeriesDescription (?i)dose + equals Modality CT
|| contains ImageType SCREEN

%filter whitelist
LABEL Clean CT
equals Modality CT + equals BurnedInAnnotation NO

%filter graylist
LABEL Odd manufacturer
equals Manufacturer ACME
  + missing BurnedInAnnotation

%header
ADD PatientIdentityRemoved YES
ADD ClinicalTrialSponsorName var:study_suid
REPLACE StationName REPLACED
REPLACE DeviceSerialNumber NEVERADDED
REMOVE Modality
BLANK InstitutionName
KEEP SeriesDescription
JITTER (0008,0021) 10
JITTER AcquisitionDate
"""


def ds_with(**values):
    ds = Dataset()
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def test_parse_recipe():
    recipe = Recipe.from_text(RECIPE)
    assert set(recipe.filters) == {"blacklist", "whitelist", "graylist"}
    rule = recipe.filters["blacklist"][0]
    assert rule.label == "Dose report" and len(rule.terms) == 3
    assert [a.action for a in recipe.header] == ["ADD", "ADD", "REPLACE", "REPLACE", "REMOVE", "BLANK", "KEEP",
                                                  "JITTER", "JITTER"]
    assert recipe.keep_tags() == {0x0008103E, 0x00080021, 0x00080022}


@pytest.mark.parametrize(
    "text",
    ["%header\nFROB PatientName", "%header\nREMOVE NotAKeyword", "%filter graylist\ncontains Modality US",
     "%filter graylist\nLABEL x\nsmells Modality US", "FORMAT nifti", "%labels\n", "REMOVE PatientName",
     "%header\nJITTER StudyDate soon", "%filter graylist\nLABEL x\ncontains Modality ("],
)
def test_recipe_errors(text):
    with pytest.raises(RecipeError):
        Recipe.from_text(text)


def test_header_actions_after_profile(ids):
    ds = ds_with(StationName="ST1", InstitutionName="MKINST", Modality="CT", SeriesDescription="MK KEPT 1",
                 SeriesDate="20200101", AcquisitionDate="20200101", StudyDate="20200101")
    recipe = Recipe.from_text(RECIPE)
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=b"k", recipe=recipe))
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.ClinicalTrialSponsorName == ids.study_suid
    assert ds.StationName == "REPLACED"  # profile dummy (X/Z/D), then REPLACE
    assert "DeviceSerialNumber" not in ds
    assert "Modality" not in ds
    assert ds.InstitutionName == ""  # profile Z, recipe BLANK keeps it empty
    assert ds.SeriesDescription == "MK KEPT 1"  # KEEP: profile would have removed it
    assert ds.SeriesDate == "20200111"  # JITTER 10 days of the original
    assert ds.AcquisitionDate == "20191220"  # JITTER by the patient's jitter (-12)
    assert ds.StudyDate == "20191220"  # profile shift


def test_filters_order():
    recipe = Recipe.from_text(RECIPE)
    assert burned_in_reason(ds_with(Modality="CT", SeriesDescription="DOSE info"), recipe) == (
        "matched filter rule 'blacklist: Dose report'"
    )
    assert burned_in_reason(ds_with(Modality="MR", ImageType=["DERIVED", "SCREEN"]), recipe) is not None
    assert burned_in_reason(ds_with(Modality="CT", BurnedInAnnotation="NO", Manufacturer="ACME"), recipe) is None
    assert burned_in_reason(ds_with(Modality="MR", Manufacturer="acme"), recipe) == (
        "matched filter rule 'graylist: Odd manufacturer'"
    )
    assert burned_in_reason(ds_with(Modality="MR", Manufacturer="acme", BurnedInAnnotation="NO"), recipe) is None


def test_recipe_from_file(tmp_path):
    path = tmp_path / "r.dicom"
    path.write_text(RECIPE)
    assert len(Recipe.from_file(path).header) == 9


@pytest.mark.parametrize(
    "values,flagged",
    [
        ({"Modality": "CT", "BurnedInAnnotation": "YES"}, "BurnedInAnnotation is YES"),
        ({"Modality": "US"}, "ultrasound"),
        ({"Modality": "US", "BurnedInAnnotation": "NO"}, None),
        ({"Modality": "OT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "secondary capture"),
        ({"Modality": "OT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7.4"}, "secondary capture"),
        ({"Modality": "OT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7", "BurnedInAnnotation": "NO"}, None),
        ({"Modality": "CT", "ConversionType": "WSD"}, "ConversionType"),
        ({"Modality": "CT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}, None),
        ({"Modality": "CT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.77"}, None),
    ],
)
def test_default_burned_in_rules(values, flagged):
    reason = burned_in_reason(ds_with(**values))
    if flagged is None:
        assert reason is None
    else:
        assert reason is not None and flagged in reason


def test_recipe_without_filters_uses_defaults():
    recipe = Recipe.from_text("%header\nREMOVE Modality")
    assert burned_in_reason(ds_with(Modality="US"), recipe) is not None


@pytest.mark.skipif(not DEID_DATA.exists(), reason="deid-data is not installed")
@pytest.mark.parametrize(
    "name,flagged",
    [
        ("ultrasounds/GREYSCALE_IMAGE.dcm", True),
        ("ultrasounds/RGB_IMAGE.dcm", True),
        ("ultrasounds/ultrasound-multiframe.dcm", True),
        ("dicom-cookies/image1.dcm", True),  # secondary capture
        ("humans/ctbrain1.dcm", True),  # secondary capture of a CT
        ("animals/cat.dcm", False),  # DX with BurnedInAnnotation NO
    ],
)
def test_burned_in_on_deid_data(name, flagged):
    ds = dcmread(DEID_DATA / name, stop_before_pixels=True)
    assert (burned_in_reason(ds) is not None) is flagged


@pytest.mark.parametrize("name,flagged", [("CT_small.dcm", False), ("MR_small.dcm", False),
                                          ("US1_J2KR.dcm", True), ("SC_rgb.dcm", True)])
def test_burned_in_on_pydicom_files(name, flagged):
    ds = dcmread(get_testdata_file(name), stop_before_pixels=True)
    assert (burned_in_reason(ds) is not None) is flagged
