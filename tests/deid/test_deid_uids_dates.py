"""UID mapping and date shifting."""

import re

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from sendit.deid import DeidOptions, deidentify_dataset
from sendit.deid.dates import InvalidDate, shift_value
from sendit.deid.identifiers import LocalProvider, build_request, extract_identifiers
from sendit.deid.uids import check_root, map_uid

UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
SAMPLES = ["1.2.3", "1.2.840.113619.2.55.3.604688119.969.1268071029.320", "9" * 60, "1.2.3.4.5.6.7.8.9.0"]


@pytest.mark.parametrize("root", ["2.25.", "1.2.826.0.1.3680043.10.999.", "1.2.3"])
@pytest.mark.parametrize("uid", SAMPLES)
def test_uid_format(uid, root):
    root = check_root(root)
    new = map_uid(uid, b"k", root)
    assert new.startswith(root) and new != uid
    assert len(new) <= 64 and UID_RE.match(new)


def test_uid_stable_and_keyed():
    a = DeidOptions(uid_secret=b"same")
    b = DeidOptions(uid_secret=b"same", clean_descriptors=True)
    assert map_uid("1.2.3", a.uid_secret, a.uid_root) == map_uid("1.2.3", b.uid_secret, b.uid_root)
    assert map_uid("1.2.3", b"same") != map_uid("1.2.3", b"other")
    assert map_uid("1.2.3", b"same") != map_uid("1.2.4", b"same")
    assert map_uid(CTImageStorage, b"same") == CTImageStorage
    assert map_uid(ExplicitVRLittleEndian, b"same") == ExplicitVRLittleEndian


def test_bad_roots_rejected():
    for root in ("1.02.3.", "abc", "1." + "1" * 45 + "."):
        with pytest.raises(ValueError):
            check_root(root)


def _instance(sop, ref, frame):
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.FrameOfReferenceUID = frame
    ref_item = Dataset()
    ref_item.ReferencedSOPClassUID = CTImageStorage
    ref_item.ReferencedSOPInstanceUID = ref
    ds.ReferencedImageSequence = [ref_item]
    return ds


def test_references_preserved_between_instances(ids):
    first = _instance("1.2.3.10", "1.2.3.11", "1.2.3.99")
    second = _instance("1.2.3.11", "1.2.3.10", "1.2.3.99")
    deidentify_dataset(first, ids, DeidOptions(uid_secret=b"k"))
    deidentify_dataset(second, ids, DeidOptions(uid_secret=b"k"))
    assert first.ReferencedImageSequence[0].ReferencedSOPInstanceUID == second.SOPInstanceUID
    assert second.ReferencedImageSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert first.FrameOfReferenceUID == second.FrameOfReferenceUID != "1.2.3.99"


@pytest.mark.parametrize(
    "vr,value,days,expected",
    [
        ("DA", "20200301", -1, "20200229"),
        ("DA", "20200101", -12, "20191220"),
        ("DA", "2020.01.10", -1, "20200109"),
        ("DA", "20200101\\20200201", -1, "20191231\\20200131"),
        ("DT", "20200301101112.123456+0100", -1, "20200229101112.123456+0100"),
        ("DT", "20200301", -1, "20200229"),
        ("DT", "2020", -1, "2019"),
        ("DT", "202003", -1, "202002"),
        ("TM", "101112.5", -12, "101112.5"),
        ("TM", "10:11:12", -12, "10:11:12"),
        ("DA", "", -3, ""),
    ],
)
def test_shift_value(vr, value, days, expected):
    assert shift_value(vr, value, days) == expected


@pytest.mark.parametrize(
    "vr,value",
    [
        ("DA", "20201301"),
        ("DA", "2020-01-01"),
        ("DA", "yesterday"),
        ("DT", "2020130101"),
        ("TM", "251010"),
        ("DA", "20200101\\bad"),
    ],
)
def test_invalid_dates(vr, value):
    with pytest.raises(InvalidDate) as info:
        shift_value(vr, value, -1)
    assert value not in str(info.value)


def test_two_studies_same_patient_same_shift():
    provider = LocalProvider(b"site")
    identities = [
        {"patient_id": "MRN7", "accession": "A1", "study_date": "20200110", "study_uid": "1.1"},
        {"patient_id": "MRN7", "accession": "A2", "study_date": "20200120", "study_uid": "1.2"},
    ]
    response = provider.identify(build_request(identities))
    shifted = []
    for identity in identities:
        ids = extract_identifiers(response, identity["patient_id"], identity["accession"])
        ds = Dataset()
        ds.StudyDate = identity["study_date"]
        ds.AcquisitionDateTime = identity["study_date"] + "083000.25"
        deidentify_dataset(ds, ids, DeidOptions(uid_secret=b"k"))
        assert ds.AcquisitionDateTime.endswith("083000.25")  # DT keeps its time
        shifted.append(ds.StudyDate)
    from datetime import date

    d1, d2 = (date(int(s[:4]), int(s[4:6]), int(s[6:])) for s in shifted)
    assert (d2 - d1).days == 10  # the interval between the studies survives
    assert shifted[0] != "20200110"
