"""Recipes (deid format, deid's semantics), their layering over the profile, and the
burned-in pixel decisions. deid itself is the oracle in tests/deid/conformance; these
tests pin what sendit does on top of it."""

import copy
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from sendit.deid import DeidOptions, Recipe, RecipeError, burned_in_reason, deidentify_dataset
from sendit.deid.burned_in import pixel_decision
from sendit.deid.recipe import register_function
from sendit.deid.uids import map_uids

try:
    import deid_data

    DEID_DATA = Path(deid_data.__file__).parent / "data"
except ImportError:  # pragma: no cover
    DEID_DATA = Path("/nonexistent")

SECRET = b"recipe-test-secret"


def ds_with(**values):
    ds = Dataset()
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def scrubbed(ds, ids, text):
    return deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET, recipe=Recipe.from_text(text)))


# -- loading ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["deid.dicom", "deid.dicom.ultrasound", "deid.dicom.xray.chest", "dicom"])
def test_deid_shipped_recipes_load_by_name(name):
    recipe = Recipe.load(name)
    assert recipe.filters
    if name != "deid.dicom.xray.chest":
        assert any(a.field == "endswith:Date" for a in recipe.header)


def test_deid_ultrasound_recipe_regions():
    rules = {rule.title: rule for rule in Recipe.load("deid.dicom.ultrasound").filters["graylist"]}
    assert rules["Blank Image"].coordinates == [[0, "all"]]
    assert rules["Clean Ultrasound Regions"].coordinates == [[1, "from:SequenceOfUltrasoundRegions"]]


def test_ctp_coordinates_become_corners():
    recipe = Recipe.from_text(
        "%filter graylist\nLABEL x\n  equals Modality US\n  ctpcoordinates 10,20,30,40\n"
        "  keepcoordinates 0,0,5,5\n  ctpkeepcoordinates 1,2,3,4"
    )
    assert recipe.filters["graylist"][0].coordinates == [[0, "10,20,40,60"], [1, "0,0,5,5"], [1, "1,2,4,6"]]


@pytest.mark.parametrize(
    "text,line,words",
    [
        ("%header\nFROB PatientName", 2, "not a recipe line"),
        ("%header\nremove PatientName", 2, "capitals"),
        ("%header\nREMOVE startwith:Patient", 2, "unknown field expander"),
        ("%header\nREMOVE contains:(", 2, "regular expression"),
        ("%header\nREPLACE PatientID var:mrn", 2, "unknown variable"),
        ("%header\nREPLACE PatientID func:nope", 2, "unknown function"),
        ("%header\nREPLACE PatientID deid_func:nope", 2, "unknown deid function"),
        ("%header\nADD Rows abc", 2, "not a valid US value"),
        ("%header\n\nJITTER StudyDate", 3, "needs a value"),
        ("%header\nJITTER StudyDate soon", 2, "number of days"),
        ("%header\nADD contains:Date 1", 2, "ADD takes one attribute"),
        ("%header\nREMOVE values:names", 2, "no %values section"),
        ("%values\nFIELD PatientName", 1, "needs a name"),
        ("%filter graylist\nLABEL x\nsmells Modality US", 3, "unknown filter criterion"),
        ("%filter graylist\nLABEL x\ncontains Modality", 3, "needs a field and a value"),
        ("%filter graylist\nLABEL x\ncoordinates 1,2,3", 3, "four numbers"),
        ("%labels\nREMOVE PatientName", 2, "outside %header"),
        ("FORMAT nifti", 1, "only FORMAT dicom"),
        ("%frobs\n", 1, "unknown section"),
    ],
)
def test_recipe_errors_name_the_line(text, line, words):
    with pytest.raises(RecipeError) as caught:
        Recipe.from_text(text)
    assert f"line {line}:" in str(caught.value) and words in str(caught.value)


def test_empty_and_undecodable_recipes(tmp_path):
    with pytest.raises(RecipeError, match="no %header actions and no %filter rules"):
        Recipe.from_text("FORMAT dicom\n# nothing\n")
    path = tmp_path / "latin1.dicom"
    path.write_bytes("%header\nREPLACE InstitutionName Hôpital\n".encode("latin-1"))
    with pytest.raises(RecipeError, match="not UTF-8"):
        Recipe.from_file(path)
    with pytest.raises(RecipeError, match="no such recipe file nor shipped recipe"):
        Recipe.load("deid.dicom.nope")


def test_comments_and_quoted_private_creator():
    recipe = Recipe.from_text(
        '%header\nREPLACE InstitutionName A B # not the value\nKEEP (0033,"MITRA OBJECT UTF8 ATTRIBUTES 1.0",1E)\n'
    )
    assert recipe.header[0].value == "A B"
    assert recipe.header[1].field == '(0033,"MITRA OBJECT UTF8 ATTRIBUTES 1.0",1E)'


def test_misspelt_keyword_is_a_warning_not_silence():
    recipe = Recipe.from_text("%header\nREMOVE PatientsName")
    assert recipe.warnings and "'PatientsName' is no DICOM keyword" in recipe.warnings[0]


# -- deid's semantics --------------------------------------------------------------------
def test_actions_reach_every_depth():
    ds = dcmread(get_testdata_file("rtplan.dcm"))
    Recipe.from_text("%header\nREMOVE ReferencedSOPInstanceUID\nBLANK TreatmentMachineName").apply(ds)
    assert "ReferencedSOPInstanceUID" not in ds.ReferencedRTPlanSequence[0]
    assert ds.BeamSequence[0].TreatmentMachineName in (None, "")


def test_keep_wins_over_remove_and_replace_over_remove():
    ds = ds_with(PatientName="Doe^John", StudyDate="20200102", InstitutionName="MKINST")
    Recipe.from_text(
        "%header\nKEEP PatientName\nREMOVE PatientName\nREMOVE StudyDate\nJITTER StudyDate 2\n"
        "REMOVE InstitutionName\nREPLACE InstitutionName X"
    ).apply(ds)
    assert ds.PatientName == "Doe^John" and ds.StudyDate == "20200104" and ds.InstitutionName == "X"


def test_values_and_fields_lists():
    ds = ds_with(
        PatientName="Cookie^Monster",
        StudyDescription="scan of monster",
        SeriesDescription="plain",
        OperatorsName="Grover",
    )
    Recipe.from_text(
        '%values names\nSPLIT PatientName by="^";minlength=4\n%fields people\nFIELD OperatorsName\n'
        "%header\nREMOVE values:names\nREMOVE fields:people"
    ).apply(ds)
    assert "StudyDescription" not in ds and "PatientName" not in ds and "OperatorsName" not in ds
    assert ds.SeriesDescription == "plain"


def test_conditional_remove_and_deid_functions():
    ds = ds_with(Manufacturer="ACME", StationName="ST1", SeriesInstanceUID="1.2.3.4")
    register_function("never", lambda **_: False)
    Recipe.from_text(
        "%header\nREMOVE Manufacturer func:is_false\nREMOVE StationName func:is_true\n"
        "REMOVE SeriesDescription func:never\n"
        "REPLACE SeriesInstanceUID deid_func:pydicom_uuid prefix=1.2.826.0.1.3680043.10.1."
    ).apply(ds)
    assert ds.Manufacturer == "ACME" and "StationName" not in ds
    assert ds.SeriesInstanceUID.startswith("1.2.826.0.1.3680043.10.1.") and ds.SeriesInstanceUID != "1.2.3.4"


def test_filter_lines_all_hold_and_operators_join_inside_a_line():
    recipe = Recipe.from_text(
        "%filter graylist\nLABEL both\n  equals Modality US\n  || equals Manufacturer ACME\n"
        "LABEL either\n  equals Modality US || equals Manufacturer ACME\n"
    )
    labels = lambda ds: [m.title for m in recipe.detect(ds)]  # noqa: E731
    assert labels(ds_with(Modality="US", Manufacturer="ACME")) == ["both", "either"]
    assert labels(ds_with(Modality="US", Manufacturer="X")) == ["either"]
    assert labels(ds_with(Modality="CT", Manufacturer="X")) == []


# -- layered over the profile ----------------------------------------------------------------
def test_what_the_recipe_names_follows_the_recipe(ids):
    ds = ds_with(
        PatientWeight="80",
        PatientName="Doe^John",
        StudyDate="20200101",
        SeriesDescription="MK KEPT",
        StationName="ST1",
        Modality="CT",
        SeriesInstanceUID="1.2.3.4.5",
    )
    ds.add_new(0x00110010, "LO", "ACME 1")
    ds.add_new(0x00111004, "LO", "private secret")
    scrubbed(
        ds,
        ids,
        "%header\nREPLACE PatientWeight 501\nBLANK 00111004\nKEEP SeriesDescription\n"
        "JITTER StudyDate 3\nREPLACE SeriesInstanceUID func:hashuid\nADD PatientIdentityRemoved NO",
    )
    assert ds.PatientWeight == 501  # the profile would have removed it
    assert ds[0x00111004].value in (None, "", b"")  # blanked, not removed by the profile
    assert ds.SeriesDescription == "MK KEPT"
    assert ds.StudyDate == "20200104"  # the recipe's jitter, not the patient's (-12)
    assert ds.SeriesInstanceUID == map_uids("1.2.3.4.5", SECRET, "2.25.")
    assert ds.PatientIdentityRemoved == "NO"  # what the recipe wrote, not the profile's stamp
    assert ds.PatientName == ids.patient_suid and ds.get("StationName") != "ST1"  # not named: the profile


def test_a_recipe_cannot_make_a_value_survive_by_accident(ids):
    ds = ds_with(PatientName="Doe^John", InstitutionName="MKINST")
    ds.add_new(0x00290010, "LO", "ACME 1")
    ds.add_new(0x00291019, "LO", "not a date 1999")
    recipe = Recipe.from_text("%header\nJITTER PatientName 1\nJITTER 00291019 1\nREPLACE InstitutionName var:jitter")
    applied = recipe.apply(ds, {"jitter": None})
    assert "PatientName" not in ds and 0x00291019 not in ds and "InstitutionName" not in ds
    assert len(applied.notes) == 3 and all("removed" in note for note in applied.notes)
    assert not any("Doe" in note or "1999" in note for note in applied.notes)


def test_remove_inside_sequences_reaches_code_meaning(ids):
    ds = ds_with(Modality="CT")
    item = ds_with(CodeValue="T-A0100", CodingSchemeDesignator="SRT", CodeMeaning="Brain of John Doe")
    ds.AnatomicRegionSequence = Sequence([item])
    scrubbed(ds, ids, "%header\nREMOVE CodeMeaning")
    # emptied, not removed: an IOD may require it (see _spared)
    assert [i.get("CodeMeaning") for i in ds.AnatomicRegionSequence] in ([""], [None])


@pytest.mark.parametrize("name", ["deid.dicom", "deid.dicom.ultrasound"])
def test_shipped_recipes_layered_leave_no_patient_value(name, ids):
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    before = copy.deepcopy(ds)
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET, recipe=Recipe.load(name)))
    text = str(ds)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "InstitutionName"):
        value = str(before.get(keyword, "") or "")
        if len(value) > 3:
            assert value not in text, keyword
    assert ds.PatientID == ids.patient_suid  # ADD PatientID var:entity_id
    assert ds.SOPInstanceUID != before.SOPInstanceUID


# -- burned-in pixels -------------------------------------------------------------------------
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


def test_rules_with_regions_clean_and_rules_without_hold():
    recipe = Recipe.from_text(
        "%filter blacklist\nLABEL screen\n  contains ImageType SCREEN\n"
        "%filter graylist\nLABEL top bar\n  equals Modality US\n  coordinates 0,0,640,40\n"
    )
    decision = pixel_decision(ds_with(Modality="US"), recipe)
    assert decision.hold is None and decision.coordinates == [[0, "0,0,640,40"]]
    assert decision.rules == "graylist: top bar"
    held = pixel_decision(ds_with(Modality="US", ImageType=["DERIVED", "SCREEN"]), recipe)
    assert held.hold == "matched filter rule 'blacklist: screen'" and not held.clean


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


@pytest.mark.skipif(not DEID_DATA.exists(), reason="deid-data is not installed")
@pytest.mark.parametrize("name", ["ultrasounds/GREYSCALE_IMAGE.dcm", "ultrasounds/RGB_IMAGE.dcm"])
def test_deid_ultrasound_recipe_cleans_instead_of_holding(name):
    ds = dcmread(DEID_DATA / name, stop_before_pixels=True)
    decision = pixel_decision(ds, Recipe.load("deid.dicom.ultrasound"))
    assert decision.hold is None and decision.clean
    assert decision.coordinates[0] == [0, "all"]


@pytest.mark.parametrize(
    "name,flagged", [("CT_small.dcm", False), ("MR_small.dcm", False), ("US1_J2KR.dcm", True), ("SC_rgb.dcm", True)]
)
def test_burned_in_on_pydicom_files(name, flagged):
    ds = dcmread(get_testdata_file(name), stop_before_pixels=True)
    assert (burned_in_reason(ds) is not None) is flagged


@pytest.mark.skipif(not DEID_DATA.exists(), reason="deid-data is not installed")
def test_an_image_no_site_rule_matches_meets_the_default_rules():
    """deid.dicom has no rule for this ultrasound, whose header says it carries burned-in
    text: sendit's defaults hold it rather than send it as it is."""
    ds = dcmread(DEID_DATA / "ultrasounds/ultrasound-multiframe.dcm", stop_before_pixels=True)
    recipe = Recipe.load("deid.dicom")
    assert recipe.detect(ds) == []
    assert pixel_decision(ds, recipe).hold == "matched filter rule 'blacklist: BurnedInAnnotation is YES'"
