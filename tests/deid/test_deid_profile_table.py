"""Every attribute of Table E.1-1: a marker goes in, the table's action comes out."""

import io
import re

import pytest
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from sendit.deid import DeidOptions, deidentify_dataset
from sendit.deid.dates import shift_value
from sendit.deid.profile import load_table
from sendit.deid.uids import map_uid

SECRET = b"table-secret"
UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
DATE_VRS = {"DA", "DT", "TM"}
STAMPED = {0x00100020, 0x00100010, 0x00080050}  # PatientID, PatientName, AccessionNumber
ALL_ON = dict(
    retain_long_modified_dates=True,
    retain_patient_characteristics=True,
    retain_device_identity=True,
    retain_institution_identity=True,
    clean_descriptors=True,
    retain_uids=True,
    retain_safe_private=True,
)
COLUMNS = {
    "retain_safe_private": "rtnSafePrivOpt",
    "retain_uids": "rtnUIDsOpt",
    "retain_device_identity": "rtnDevIdOpt",
    "retain_institution_identity": "rtnInstIdOpt",
    "retain_patient_characteristics": "rtnPatCharsOpt",
    "retain_long_modified_dates": "rtnLongModifDatesOpt",
    "clean_descriptors": "cleanDescOpt",
}


def concrete_tags(row):
    """Tags to test for a row (repeating groups get two groups each)."""
    tag = row["tag"]
    if tag == "50xxxxxx":
        return [0x50003000, 0x50020005]  # CurveData, CurveDimensions
    if tag.startswith("60xx"):
        return [0x60000000 | int(tag[4:], 16), 0x60020000 | int(tag[4:], 16)]
    return [int(tag, 16)]


def marker(vr, tag):
    # letters only (0->A .. F->P): a digit run would look like an id to the cleaner
    text = "MK" + "".join(chr(ord("A") + int(c, 16)) for c in f"{tag:08X}")
    return {
        "AE": text,
        "AS": "042Y",
        "CS": text,
        "DA": "19770412",
        "DT": "19770412101010.123456+0100",
        "TM": "101010.5",
        "DS": "42.42",
        "IS": "4242",
        "PN": f"{text}^MARK",
        "UI": f"1.2.826.0.1.3680043.10.999.{tag}",
        "UR": f"http://{text.lower()}.example/x",
        "US": 4242,
        "SS": 4242,
        "UL": 4242,
        "SL": 4242,
        "UV": 4242,
        "SV": 4242,
        "FL": 42.5,
        "FD": 42.5,
        "AT": 0x00100010,
    }.get(vr, b"MKMK" if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN") else text)


#: Referenced Study Sequence (X/Z), Referenced Performed Procedure Step Sequence (X/Z/D):
#: their items hold only references, kept with the UIDs mapped
REFERENCE_SEQUENCES = {"00081110", "00081111"}


def expected_action(row, vr, flags):
    """The action the profile must apply, restated from PS3.15 and docs/deidentify.md."""
    opts = row.get("options", {})
    basic = row["basic"]

    def resolve_basic():
        if len(basic) == 1:
            return basic
        if basic == "X/Z/U*" or row["tag"] in REFERENCE_SEQUENCES:
            return "U"
        if "D" in basic:
            return "Z" if (vr == "SQ" and basic == "X/Z/D") else "D"
        return "Z"

    if vr in DATE_VRS:
        if flags.get("retain_long_modified_dates") and "rtnLongModifDatesOpt" in opts:
            return "shift"
        return resolve_basic()
    chosen = {opts[COLUMNS[f]] for f, on in flags.items() if on and COLUMNS[f] in opts}
    if "K" in chosen:
        return "K"
    if "C" in chosen:
        # short descriptors are kept when they look safe; free text and the
        # rest fall back to the Basic Profile action
        if vr in ("LO", "SH", "CS", "UC", "AE", "SQ"):
            return "C"
    return resolve_basic()


ROWS = [r for r in load_table() if r["tag"] not in ("private",)]
CASES = [(row, tag) for row in ROWS for tag in concrete_tags(row)]


def build(tag, vr):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    if vr == "SQ":
        item = Dataset()
        item.CodeValue = "MKSEQCODE"  # not PHI, not in the table: survives recursion
        item.CodingSchemeDesignator = "99MK"
        item.PersonName = "MKINNER^NAME"  # PHI inside: always replaced
        ds[tag] = DataElement(tag, "SQ", Sequence([item]))
    elif tag >> 16 == 2:
        ds.file_meta[tag] = DataElement(tag, vr, marker(vr, tag))
        ds.SOPInstanceUID = marker(vr, tag)
    else:
        ds[tag] = DataElement(tag, vr, marker(vr, tag))
    return ds


def roundtrip(ds):
    """Write and read back (explicit VR LE) to prove the values are encodable."""
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=False, little_endian=True)
    buf.seek(0)
    return dcmread(buf, force=True)


def vr_of(tag):
    vr = dictionary_VR(tag)
    return vr.split(" or ")[0]


@pytest.mark.parametrize("flags", [{"retain_long_modified_dates": True}, ALL_ON], ids=["default", "all-options"])
@pytest.mark.parametrize("row,tag", CASES, ids=[f"{t:08X}-{r['name']}" for r, t in CASES])
def test_table_attribute(row, tag, flags, ids):
    vr = vr_of(tag)
    ds = build(tag, vr)
    original = marker(vr, tag)
    options = DeidOptions(uid_secret=SECRET, **flags)
    deidentify_dataset(ds, ids, options)
    if tag >> 16 not in (0, 2):
        ds = roundtrip(ds)
    action = expected_action(row, vr, flags)

    if tag >> 16 == 2:  # Media Storage SOP Instance UID follows the new SOPInstanceUID
        meta = ds.file_meta.MediaStorageSOPInstanceUID
        assert meta == (original if action == "K" else map_uid(original, SECRET))
        return
    if tag >> 16 == 0:  # command elements never belong in a stored instance
        assert tag not in ds
        return
    if tag in STAMPED:
        assert str(ds[tag].value) == (ids.study_suid if tag == 0x00080050 else ids.patient_suid)
        return
    if action == "X":
        assert tag not in ds
        return
    assert tag in ds, f"{action} must keep the attribute present"
    value = ds[tag].value
    if vr == "SQ":
        if action == "Z":
            assert len(value) == 0
        elif action == "D":  # items kept, every code, name and text in them a dummy
            assert len(value) == 1
            assert value[0].CodeValue == value[0].CodingSchemeDesignator == "ANONYMIZED"
            assert str(value[0].PersonName) == "ANONYMIZED"
        else:  # items kept, scrubbed by the same table
            assert len(value) == 1
            assert value[0].CodeValue == "MKSEQCODE"
            assert "MKINNER" not in str(value[0].PersonName)
        return
    if action == "K":
        assert _same(value, original)
    elif action == "Z":
        assert value in ("", None, b"") or (hasattr(value, "__len__") and len(value) == 0)
    elif action == "shift":
        text = value if isinstance(value, str) else str(value)
        assert text == shift_value(vr, original, ids.jitter)
        if vr != "TM":
            assert text != original
    elif action == "U" or (action == "D" and vr == "UI"):
        assert value == map_uid(original, SECRET)
        assert UID_RE.match(value) and len(value) <= 64 and value != original
    elif action == "D":
        assert not _same(value, original)
        if vr in ("OB", "OW", "UN"):
            assert value in (b"", None)
        else:
            assert value not in ("", None)
    elif action == "C":  # clean: a plain marker without identifying values is kept
        assert _same(value, original)
    else:  # pragma: no cover
        pytest.fail(f"unexpected action {action}")


def _same(value, original):
    if isinstance(original, bytes):
        return value == original
    return str(value) == str(original)


def test_every_table_row_is_covered():
    table = load_table()
    assert len(table) == 621
    tags = {r["tag"] for r in table}
    assert {"private", "50xxxxxx", "60xx3000", "60xx4000"} <= tags
    assert len(CASES) == 620 + 3  # 617 single tags + two tags per wildcard row


def _values(ds) -> list[str]:
    """Every value of ``ds`` (file meta included) at every depth, as text."""
    found = []
    for dataset in (ds, getattr(ds, "file_meta", None) or Dataset()):
        for elem in dataset.iterall():
            if elem.VR != "SQ" and elem.value not in (None, "", b""):
                found.append(elem.value.decode("latin-1") if isinstance(elem.value, bytes) else str(elem.value))
    return found


@pytest.mark.parametrize("recipe", ["deid.dicom", "deid.dicom.ultrasound", "deid.dicom.xray.chest"])
def test_no_value_the_profile_replaces_survives_a_shipped_recipe(recipe, ids):
    """Every table attribute whose Basic Profile action takes its value away (X, Z, D, U),
    with one of deid's own recipes layered on: the value is in no element of the output."""
    from sendit.deid import Recipe

    options = DeidOptions(uid_secret=SECRET, recipe=Recipe.load(recipe), retain_long_modified_dates=False)
    checked = 0
    for row, tag in CASES:
        vr = vr_of(tag)
        if tag >> 16 in (0, 2) or vr == "SQ":
            continue
        action = expected_action(row, vr, {"retain_long_modified_dates": False})
        original = marker(vr, tag)
        if action not in ("X", "Z", "D", "U") or not isinstance(original, str) or len(original) < 6:
            continue
        ds = build(tag, vr)
        deidentify_dataset(ds, ids, options)
        assert not any(original in value for value in _values(ds)), f"{tag:08X} {row['name']} survived"
        checked += 1
    assert checked > 300
