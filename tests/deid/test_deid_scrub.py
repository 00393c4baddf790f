"""Behaviour of the scrub beyond single table rows: depth, private tags, stamping."""

import io

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from sendit.deid import DeidOptions, deidentify_dataset
from sendit.deid.scrub import is_safe_descriptor
from sendit.deid.uids import map_uid

SECRET = b"scrub-secret"


def item(**values):
    ds = Dataset()
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def base():
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.1"
    ds.file_meta.SourceApplicationEntityTitle = "MKSOURCEAE"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4.1"
    ds.StudyInstanceUID = "1.2.3.4.2"
    ds.SeriesInstanceUID = "1.2.3.4.3"
    ds.PatientName = "MKDOE^JOHN"
    ds.PatientID = "MKMRN123"
    ds.AccessionNumber = "MKACC"
    ds.StudyDate = "20200315"
    ds.Modality = "CT"
    ds.Rows = 2
    return ds


def test_nested_sequences_three_deep(ids):
    ds = base()
    ds.ReferencedImageSequence = Sequence(  # X/Z/U*: items kept, UIDs mapped
        [
            item(
                ReferencedSOPInstanceUID="1.2.3.4.9",
                SourceImageSequence=Sequence(
                    [
                        item(
                            ReferencedSOPClassUID=CTImageStorage,
                            ReferencedImageSequence=Sequence(
                                [item(ReferencedSOPInstanceUID="1.2.3.4.1", ContentDate="20200316",
                                      PersonName="MKDEEP^NAME", ReferringPhysicianName="MKREF")]
                            ),
                        )
                    ]
                ),
            )
        ]
    )
    ds.ReferencedStudySequence = Sequence([item(ReferencedSOPInstanceUID="1.2.3.4.8")])  # X/Z: emptied
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET))
    level1 = ds.ReferencedImageSequence[0]
    level2 = level1.SourceImageSequence[0]
    level3 = level2.ReferencedImageSequence[0]
    assert level1.ReferencedSOPInstanceUID == map_uid("1.2.3.4.9", SECRET)
    assert level2.ReferencedSOPClassUID == CTImageStorage
    # the reference to this very instance still points at it after mapping
    assert level3.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert level3.ContentDate == "20200304"  # shifted by -12 days
    assert "MKDEEP" not in str(level3.PersonName)
    assert "MKREF" not in str(level3.get("ReferringPhysicianName", ""))
    assert len(ds.ReferencedStudySequence) == 0


def test_private_tags_removed_everywhere(ids):
    ds = base()
    block = ds.private_block(0x0009, "MK VENDOR", create=True)
    block.add_new(0x01, "LO", "MKPRIVATE")
    ds.ReferencedStudySequence = Sequence([item(ReferencedSOPInstanceUID="1.2.3.4.9")])
    inner = ds.ReferencedStudySequence[0].private_block(0x0011, "MK INNER", create=True)
    inner.add_new(0x02, "LO", "MKPRIVINNER")
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET))
    assert not any(elem.tag.is_private for elem in ds.iterall())


def test_safe_private_kept_only_with_option(ids):
    def make():
        ds = base()
        siemens = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
        siemens.add_new(0x0C, "IS", "1000")  # B_value: safe
        siemens.add_new(0x10, "LO", "MKUNSAFE")  # not on the list
        return ds

    scrubbed = deidentify_dataset(make(), ids, DeidOptions(uid_secret=SECRET))
    assert not any(elem.tag.is_private for elem in scrubbed)

    kept = deidentify_dataset(make(), ids, DeidOptions(uid_secret=SECRET, retain_safe_private=True))
    block = kept.private_block(0x0019, "SIEMENS MR HEADER")
    assert block[0x0C].value == "1000"
    assert 0x00191010 + 0x00 not in kept or kept[0x00191010].value != "MKUNSAFE"
    assert all("MKUNSAFE" not in str(e.value) for e in kept)
    assert any(c.CodeValue == "113111" for c in kept.DeidentificationMethodCodeSequence)


def test_overlays_and_curves(ids):
    ds = base()
    for group in (0x6000, 0x6002):
        ds.add_new((group, 0x0010), "US", 2)  # OverlayRows: geometry, kept
        ds.add_new((group, 0x3000), "OW", b"\x01\x02")  # OverlayData: removed
        ds.add_new((group, 0x4000), "LT", "MKOVERLAYCOMMENT")  # removed
    ds.add_new(0x50000005, "US", 1)  # CurveDimensions
    ds.add_new(0x50023000, "OB", b"MKCURVE\x00")  # CurveData
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET))
    for group in (0x6000, 0x6002):
        assert (group << 16 | 0x0010) in ds
        assert (group << 16 | 0x3000) not in ds
        assert (group << 16 | 0x4000) not in ds
    assert not any(0x5000 <= (tag >> 16) <= 0x50FF for tag in ds.keys())


def test_attributes_outside_the_table(ids):
    ds = base()
    ds.ImageType = ["ORIGINAL", "PRIMARY"]  # not in the table: kept
    ds.SliceThickness = "1.25"  # geometry: kept
    ds.add_new(0x00181012, "DA", "20200301")  # DateOfSecondaryCapture is in the table
    ds.add_new(0x00404050, "DT", "20200301120000")  # PerformedProcedureStepEndDateTime
    ds.add_new(0x00321032, "PN", "MKREQUESTING")  # RequestingPhysician
    ds.add_new(0x00080016, "UI", CTImageStorage)  # well-known: never mapped
    ds.add_new(0x00400E01, "ST", "kept")  # not in table
    ds.add_new(0x0040A124, "UI", "1.2.3.99")  # in table: U
    ds.add_new(0x00209164, "UI", "1.2.3.98")  # DimensionOrganizationUID: in table
    ds.add_new(0x00181002, "UI", "1.2.3.97")  # DeviceUID: in table
    ds.add_new(0x00700101, "DS", "1")
    ds.add_new(0x00189445, "UI", "1.2.3.96")  # not in table -> mapped anyway
    ds.add_new(0x00189446, "PN", "MKNAME")  # unknown-to-table PN -> replaced
    ds.add_new(0x00189447, "DA", "20200102")
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET))
    assert ds.ImageType == ["ORIGINAL", "PRIMARY"] and ds.SliceThickness == "1.25"
    assert ds.SOPClassUID == CTImageStorage
    assert ds[0x00189445].value == map_uid("1.2.3.96", SECRET)
    assert ds[0x00404050].value == "20200218120000"
    for elem in ds.iterall():
        assert "MK" not in str(elem.value), elem.tag


def test_dates_removed_without_modified_dates_option(ids):
    ds = base()
    ds.ContentDate = "20200101"
    ds.AcquisitionDateTime = "20200101101010"
    ds.add_new(0x00189447, "DA", "20200102")  # a date the table does not list
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET, retain_long_modified_dates=False))
    assert ds.StudyDate == ""  # Z
    assert ds.ContentDate == "19000101"  # Z/D -> dummy
    assert ds.AcquisitionDateTime == "19000101000000"  # X/Z/D -> dummy
    assert ds[0x00189447].value == ""
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"


def test_stamping_and_file_meta(ids):
    ds = base()
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET, retain_device_identity=True))
    assert ds.PatientID == ids.patient_suid
    assert ds.PatientName == ids.patient_suid
    assert ds.AccessionNumber == ids.study_suid
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113109", "113107"] or set(codes) == {"113100", "113107", "113109"}
    assert all(c.CodingSchemeDesignator == "DCM" for c in ds.DeidentificationMethodCodeSequence)
    assert "Basic Application Confidentiality Profile" in ds.DeidentificationMethod
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == map_uid("1.2.3.4.1", SECRET)
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert dcmread(io.BytesIO(buf.getvalue())).PatientID == ids.patient_suid


def test_retain_uids_keeps_every_uid(ids):
    ds = base()
    ds.ReferencedStudySequence = Sequence([item(ReferencedSOPInstanceUID="1.2.3.4.9")])
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET, retain_uids=True))
    assert ds.SOPInstanceUID == "1.2.3.4.1"
    assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID == "1.2.3.4.9"
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4.1"


@pytest.mark.parametrize(
    "text,safe",
    [
        ("AX T1 POST", True),
        ("CT HEAD W/O", True),
        ("JOHN'S SCAN", False),  # patient's given name
        ("DOE follow-up", False),  # family name, any case
        ("MRN 12345678", False),  # long digit run
        ("call me@host", False),
        ("", True),
    ],
)
def test_descriptor_cleaning(text, safe):
    assert is_safe_descriptor(text, ("john", "doe")) is safe


def test_clean_descriptors_option(ids):
    ds = base()
    ds.PatientName = "DOE^JOHN"
    ds.StudyDescription = "CT HEAD"
    ds.SeriesDescription = "John Doe follow-up"
    ds.ImageComments = "free text is never kept"
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET, clean_descriptors=True))
    assert ds.StudyDescription == "CT HEAD"
    assert "SeriesDescription" not in ds  # basic X
    assert "ImageComments" not in ds
    assert any(c.CodeValue == "113105" for c in ds.DeidentificationMethodCodeSequence)
    assert "StudyDescription" not in deidentify_dataset(base_with_desc(), ids, DeidOptions(uid_secret=SECRET))


def base_with_desc():
    ds = base()
    ds.StudyDescription = "CT HEAD"
    return ds


def test_invalid_date_is_emptied(ids):
    ds = base()
    ds.StudyDate = "2020-13-45"
    ds.AcquisitionDateTime = "notadate"
    ds.add_new(0x00080030, "TM", "99:99")  # StudyTime
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET))
    assert ds.StudyDate == ""
    assert ds.AcquisitionDateTime == ""
    assert ds.StudyTime == ""


def test_messages_never_carry_values(ids, caplog):
    ds = base()
    ds.StudyDate = "MKBADDATE"
    caplog.clear()
    with caplog.at_level("DEBUG"):
        deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET))
    assert "MK" not in caplog.text
    assert "00080020" in caplog.text
