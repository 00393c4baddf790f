"""Behaviour of the scrub beyond single table rows: depth, private tags, stamping."""

import io

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from sendit.deid import DeidOptions, Recipe, deidentify_dataset, deidentify_file
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
                                [
                                    item(
                                        ReferencedSOPInstanceUID="1.2.3.4.1",
                                        ContentDate="20200316",
                                        PersonName="MKDEEP^NAME",
                                        ReferringPhysicianName="MKREF",
                                    )
                                ]
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
    # X/Z, but only references inside: the item stays, its UID mapped
    assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID == map_uid("1.2.3.4.8", SECRET)


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


OVERLAY_GROUPS = list(range(0x6000, 0x601F, 2))


def add_overlay(ds, group, data=True):
    """An overlay plane (PS3.3 C.9.2) in ``group``: every Type 1 element, and its data."""
    ds.add_new((group, 0x0010), "US", 2)  # OverlayRows
    ds.add_new((group, 0x0011), "US", 8)  # OverlayColumns
    ds.add_new((group, 0x0022), "LO", "MKOVERLAYDESC")  # OverlayDescription
    ds.add_new((group, 0x0040), "CS", "G")  # OverlayType
    ds.add_new((group, 0x0050), "SS", [1, 1])  # OverlayOrigin
    ds.add_new((group, 0x0100), "US", 1)  # OverlayBitsAllocated
    ds.add_new((group, 0x0102), "US", 0)  # OverlayBitPosition
    if data:
        ds.add_new((group, 0x3000), "OW", b"\x01\x02")  # OverlayData: removed by the profile
    ds.add_new((group, 0x4000), "LT", "MKOVERLAYCOMMENT")  # OverlayComments: removed


def test_overlays_and_curves(ids):
    """Overlay Data removed: its whole group goes, not only (60xx,3000) (a group without
    its Type 1 data is invalid), for every overlay group 6000-601E."""
    ds = base()
    for group in OVERLAY_GROUPS:
        add_overlay(ds, group)
    ds.add_new(0x50000005, "US", 1)  # CurveDimensions
    ds.add_new(0x50023000, "OB", b"MKCURVE\x00")  # CurveData
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET))
    assert not any(0x6000 <= (tag >> 16) <= 0x60FF for tag in ds.keys())
    assert not any(0x5000 <= (tag >> 16) <= 0x50FF for tag in ds.keys())
    assert ds.Rows == 2  # the image itself is untouched


def test_overlay_group_written_without_any_of_its_elements(ids, tmp_path):
    ds = base()
    add_overlay(ds, 0x6000)
    add_overlay(ds, 0x6004, data=False)  # overlay in the pixel data's unused bits (retired)
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    out = tmp_path / "out.dcm"
    deidentify_file(src, out, ids, DeidOptions(uid_secret=SECRET))
    after = dcmread(out)
    assert [tag for tag in after.keys() if tag >> 16 in (0x6000, 0x6004)] == []
    assert b"MKOVERLAY" not in out.read_bytes()


def test_a_kept_overlay_keeps_its_group(ids):
    ds = base()
    add_overlay(ds, 0x6000)
    add_overlay(ds, 0x6002)
    recipe = Recipe.from_text("FORMAT dicom\n%header\nKEEP (6000,3000)\n")
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET, recipe=recipe))
    assert ds[0x60003000].value == b"\x01\x02" and ds[0x60000010].value == 2
    assert not any(tag >> 16 == 0x6002 for tag in ds.keys())


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
    assert 0x00189445 not in ds and 0x00189447 not in ds  # no dictionary knows them: removed
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
    assert 0x00189447 not in ds  # no dictionary knows it: removed
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


# -- sequences with a dummy action: nothing they hold survives ---------------------------
def code(value, meaning, scheme="99MK"):
    return item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def person_identification(marker):
    """A Person Identification Macro item whose code is a person's id (PS3.3 10.1)."""
    return item(
        PersonIdentificationCodeSequence=Sequence([code(f"{marker}ID", f"{marker}DOE^JANE", f"{marker}SCHEME")]),
        InstitutionName=f"{marker}HOSPITAL",
    )


def report(ds):
    """An SR content tree: the person's id two levels deep, and every kind of leaf."""
    ds.ContentSequence = Sequence(
        [
            item(
                RelationshipType="CONTAINS",
                ValueType="CONTAINER",
                ContinuityOfContent="SEPARATE",
                ConceptNameCodeSequence=Sequence([code("MKC1", "MKFINDINGS")]),
                ContentSequence=Sequence(
                    [
                        item(
                            RelationshipType="HAS OBS CONTEXT",
                            ValueType="CODE",
                            ConceptNameCodeSequence=Sequence([code("MKC2", "MKPERSON OBSERVER")]),
                            ConceptCodeSequence=Sequence([code("MKPATIENTID2", "MKSMITH^JOHN")]),
                        ),
                        item(RelationshipType="CONTAINS", ValueType="TEXT", TextValue="MKFREE TEXT ABOUT JOHN"),
                        item(RelationshipType="HAS OBS CONTEXT", ValueType="PNAME", PersonName="MKSMITH^JOHN"),
                        item(
                            RelationshipType="CONTAINS",
                            ValueType="NUM",
                            MeasuredValueSequence=Sequence(
                                [
                                    item(
                                        NumericValue="4242",
                                        MeasurementUnitsCodeSequence=Sequence([code("MKmm", "MKmm", "UCUM")]),
                                    )
                                ]
                            ),
                        ),
                        item(RelationshipType="CONTAINS", ValueType="DATETIME", DateTime="20200101101010"),
                        item(RelationshipType="CONTAINS", ValueType="UIDREF", UID="1.2.3.4.77"),
                        item(
                            RelationshipType="CONTAINS",
                            ValueType="IMAGE",
                            ReferencedSOPSequence=Sequence(
                                [
                                    item(
                                        ReferencedSOPClassUID=CTImageStorage,
                                        ReferencedSOPInstanceUID="1.2.3.4.1",
                                        ReferencedFrameNumber="3",
                                    )
                                ]
                            ),
                        ),
                    ]
                ),
            ),
        ]
    )


ALL_BUT_INSTITUTION = dict(
    retain_long_modified_dates=True,
    retain_patient_characteristics=True,
    retain_device_identity=True,
    clean_descriptors=True,
    retain_uids=True,
    retain_safe_private=True,
)


@pytest.mark.parametrize("flags", [{}, ALL_BUT_INSTITUTION], ids=["default", "all-options"])
def test_codes_names_and_text_in_dummied_sequences_leave_nothing(flags, ids, tmp_path):
    ds = base()
    ds.OperatorIdentificationSequence = Sequence([person_identification("MKOP")])  # X/D
    ds.VerifyingObserverSequence = Sequence(
        [
            item(  # D
                VerifyingObserverName="MKVERIFIER^ANN",
                VerifyingOrganization="MKORG",
                VerificationDateTime="20200101",
                VerifyingObserverIdentificationCodeSequence=Sequence([code("MKVOID", "MKVERIFIER")]),
            )
        ]
    )
    ds.ReferencedImageSequence = Sequence(
        [
            item(  # U: items scrubbed by the table, and deeper...
                ReferencedSOPClassUID=CTImageStorage,
                ReferencedSOPInstanceUID="1.2.3.4.9",
                PersonIdentificationCodeSequence=Sequence([code("MKDEEPID", "MKDEEP^NAME")]),
            )
        ]
    )  # ...a D again
    report(ds)
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    out = tmp_path / "out.dcm"
    deidentify_file(src, out, ids, DeidOptions(uid_secret=SECRET, **flags))
    data = out.read_bytes()
    assert b"MK" not in data  # no code value, meaning, designator, name, text or number left
    assert b"4242" not in data and b"20200101" not in data

    after = dcmread(out)
    # the structure stays: every item, and the enumerated values that make it
    operator = after.OperatorIdentificationSequence[0]
    assert operator.PersonIdentificationCodeSequence[0].CodeValue == "ANONYMIZED"
    assert operator.PersonIdentificationCodeSequence[0].CodeMeaning == "ANONYMIZED"
    assert operator.InstitutionName == "ANONYMIZED"
    verifier = after.VerifyingObserverSequence[0]
    assert verifier.VerifyingObserverName == "ANONYMIZED" and verifier.VerifyingOrganization == "ANONYMIZED"
    assert verifier.VerificationDateTime == "19000101000000"
    assert len(verifier.VerifyingObserverIdentificationCodeSequence) == 0  # Z in the table
    assert after.ReferencedImageSequence[0].PersonIdentificationCodeSequence[0].CodeValue == "ANONYMIZED"
    root = after.ContentSequence[0]
    assert (root.RelationshipType, root.ValueType, root.ContinuityOfContent) == ("CONTAINS", "CONTAINER", "SEPARATE")
    children = root.ContentSequence
    assert [c.ValueType for c in children] == ["CODE", "TEXT", "PNAME", "NUM", "DATETIME", "UIDREF", "IMAGE"]
    assert children[0].ConceptCodeSequence[0].CodeValue == "ANONYMIZED"
    assert children[0].ConceptCodeSequence[0].CodingSchemeDesignator == "ANONYMIZED"
    assert children[1].TextValue == "ANONYMIZED"
    assert children[2].PersonName == "ANONYMIZED"
    assert children[3].MeasuredValueSequence[0].NumericValue == 0
    assert children[4].DateTime == "19000101000000"
    reference = children[6].ReferencedSOPSequence[0]
    assert reference.ReferencedSOPClassUID == CTImageStorage
    assert reference.ReferencedFrameNumber == 3
    if flags.get("retain_uids"):
        assert children[5].UID == "1.2.3.4.77" and reference.ReferencedSOPInstanceUID == "1.2.3.4.1"
    else:  # mapped like every other UID: the reference still points at this very instance
        assert children[5].UID == map_uid("1.2.3.4.77", SECRET)
        assert reference.ReferencedSOPInstanceUID == after.SOPInstanceUID == map_uid("1.2.3.4.1", SECRET)


def test_a_dummied_value_keeps_its_multiplicity_and_an_empty_one_stays_empty(ids):
    ds = base()
    ds.ContentSequence = Sequence(
        [
            item(
                ValueType="TEXT",
                RelationshipType="CONTAINS",
                TextValue="",
                ReferencedWaveformChannels=[1, 2],
                ReferencedTimeOffsets=["1.5", "2.5"],
            )
        ]
    )
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET))
    leaf = ds.ContentSequence[0]
    assert leaf.TextValue == ""
    assert list(leaf.ReferencedWaveformChannels) == [1, 2]  # binary numbers: structure, kept
    assert list(leaf.ReferencedTimeOffsets) == [0, 0]


def test_recipe_keep_wins_inside_a_dummied_sequence(ids):
    ds = base()
    report(ds)
    recipe = Recipe.from_text("FORMAT dicom\n%header\nKEEP TextValue\n")
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET, recipe=recipe))
    assert ds.ContentSequence[0].ContentSequence[1].TextValue == "MKFREE TEXT ABOUT JOHN"
    assert ds.ContentSequence[0].ContentSequence[2].PersonName == "ANONYMIZED"


# -- references kept where an IOD needs an item -----------------------------------------
@pytest.mark.parametrize("keyword", ["ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence"])
def test_reference_sequences_keep_their_items_with_mapped_uids(keyword, ids, tmp_path):
    ds = base()
    setattr(
        ds,
        keyword,
        Sequence([item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1", ReferencedSOPInstanceUID="1.2.3.4.55")]),
    )
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    out = tmp_path / "out.dcm"
    deidentify_file(src, out, ids, DeidOptions(uid_secret=SECRET))
    (reference,) = getattr(dcmread(out), keyword)
    assert reference.ReferencedSOPClassUID == "1.2.840.10008.3.1.2.3.1"  # a class: never mapped
    assert reference.ReferencedSOPInstanceUID == map_uid("1.2.3.4.55", SECRET)
    assert b"1.2.3.4.55" not in out.read_bytes()


# -- animals: Responsible Person/Organization are Type 2C ------------------------------
@pytest.mark.parametrize("species", ["description", "code", "none", "empty"])
def test_responsible_person_of_an_animal_is_emptied_not_removed(species, ids, tmp_path):
    ds = base()
    ds.ResponsiblePerson = "MKOWNER^JANE"
    ds.ResponsibleOrganization = "MKFARM"
    if species == "description":
        ds.PatientSpeciesDescription = "Felis catus"
    elif species == "code":
        ds.PatientSpeciesCodeSequence = Sequence([code("448169003", "domestic cat", "SCT")])
    elif species == "empty":
        ds.PatientSpeciesDescription = ""
        ds.PatientSpeciesCodeSequence = Sequence()
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    out = tmp_path / "out.dcm"
    deidentify_file(src, out, ids, DeidOptions(uid_secret=SECRET))  # read raw, as the node does
    after = dcmread(out)
    assert b"MKOWNER" not in out.read_bytes() and b"MKFARM" not in out.read_bytes()
    if species in ("description", "code"):
        assert after.ResponsiblePerson == "" and after.ResponsibleOrganization == ""
    else:
        assert "ResponsiblePerson" not in after and "ResponsibleOrganization" not in after
    # the next (human) file of the run is not affected by the cached animal profile
    human = deidentify_dataset(base_with_responsible(), ids, DeidOptions(uid_secret=SECRET))
    assert "ResponsiblePerson" not in human


def base_with_responsible():
    ds = base()
    ds.ResponsiblePerson = "MKOWNER^JANE"
    return ds


# -- file meta and DICOMDIR -------------------------------------------------------------
def test_media_storage_instance_uid_is_mapped_without_a_sop_instance_uid(ids):
    ds = base()
    del ds.SOPInstanceUID
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=SECRET))
    assert ds.file_meta.MediaStorageSOPInstanceUID == map_uid("1.2.3.4.1", SECRET)
    kept = base()
    del kept.SOPInstanceUID
    deidentify_dataset(kept, ids, DeidOptions(uid_secret=SECRET, retain_uids=True))
    assert kept.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4.1"


def test_dicomdir_keeps_its_group_length_and_the_keys_its_records_require(ids, tmp_path):
    from pydicom.data import get_testdata_file

    src = get_testdata_file("DICOMDIR")
    before = dcmread(src)
    out = tmp_path / "DICOMDIR"
    deidentify_file(src, out, ids, DeidOptions(uid_secret=SECRET))
    after = dcmread(out)
    assert "FileMetaInformationGroupLength" in after.file_meta
    assert after.file_meta.MediaStorageSOPInstanceUID == map_uid(before.file_meta.MediaStorageSOPInstanceUID, SECRET)
    studies = [r for r in after.DirectoryRecordSequence if r.DirectoryRecordType == "STUDY"]
    assert studies
    for record in studies:
        assert record.StudyID == "ANONYMIZED"  # Type 1 in a STUDY record: Z would empty it
        assert "StudyDescription" in record and record.StudyDescription == ""  # Type 2: X would remove it
    originals = {r.StudyID for r in before.DirectoryRecordSequence if r.DirectoryRecordType == "STUDY"}
    assert not originals & {r.StudyID for r in studies}
    # outside a DICOMDIR the table's own actions stand
    plain = base()
    plain.StudyID, plain.StudyDescription = "MKSTUDY", "MKDESC"
    deidentify_dataset(plain, ids, DeidOptions(uid_secret=SECRET))
    assert plain.StudyID == "" and "StudyDescription" not in plain


# -- sequences scrubbed on their bytes: the same result as parsed ----------------------
def _flat(ds):
    """Every element at every depth as (tag, VR, value), sequences by their item count."""
    out = []
    for elem in ds.iterall():
        value = len(elem.value) if elem.VR == "SQ" else elem.value
        out.append((elem.tag, elem.VR, value if not isinstance(value, list) else tuple(value)))
    return out


def _both_ways(make, options, monkeypatch):
    fast = deidentify_dataset(make(), IDS, options)
    with monkeypatch.context() as patch:
        patch.setattr("sendit.deid.scrub._scrub_raw_items", lambda raw, run: None)
        slow = deidentify_dataset(make(), IDS, options)
    return fast, slow


IDS = None  # set by the fixture below, for _both_ways


@pytest.fixture(autouse=True)
def _ids_for_both_ways(ids):
    global IDS
    IDS = ids


def _raw_file(tmp_path, ds, syntax):
    path = tmp_path / "raw.dcm"
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
    return lambda: dcmread(path)


def _references():
    ds = base()
    ds.ReferencedStudySequence = Sequence(
        [item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1", ReferencedSOPInstanceUID="1.2.3.4.55")]
    )
    ds.ReferencedImageSequence = Sequence(
        [
            item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID="1.2.3.4.1", ReferencedFrameNumber="2"),
            item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID="1.2.3.4.56"),
        ]
    )
    ds.ReferencedPerformedProcedureStepSequence = Sequence(
        [item(ReferencedSOPInstanceUID="1.2.3.4.57", InstanceCreationDate="20200101")]
    )  # a date: parsed
    ds.SourceImageSequence = Sequence([item(ReferencedSOPInstanceUID="1.2.3.4.58", InstitutionAddress="MKSTREET")])
    ds.CTExposureSequence = Sequence([item(KVP="120", ExposureTimeInms=12.5)])  # not in the table: unchanged
    return ds


@pytest.mark.parametrize(
    "syntax",
    [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian],
    ids=["implicit", "explicit", "big-endian"],
)
@pytest.mark.parametrize("retain_uids", [False, True])
def test_reference_sequences_on_their_bytes_match_the_parsed_scrub(syntax, retain_uids, tmp_path, monkeypatch):
    make = _raw_file(tmp_path, _references(), syntax)
    options = DeidOptions(uid_secret=SECRET, retain_uids=retain_uids)
    fast, slow = _both_ways(make, options, monkeypatch)
    # what was scrubbed on its bytes is still raw: written back without pydicom's encoder
    assert fast.get_item(0x00081140).is_raw and fast.get_item(0x00081110).is_raw
    assert fast.get_item(0x00082112).is_raw and fast.get_item(0x00189321).is_raw
    assert not fast.get_item(0x00081111).is_raw  # a date inside: parsed and scrubbed as a dataset
    assert _flat(fast) == _flat(slow)
    assert fast.ReferencedImageSequence[0].ReferencedSOPInstanceUID == fast.SOPInstanceUID
    assert "InstitutionAddress" not in fast.SourceImageSequence[0]  # removed (X) on the bytes too


@pytest.mark.filterwarnings("ignore")
def test_every_pydicom_file_scrubs_alike_on_bytes_and_parsed(monkeypatch):
    from pydicom.data import get_testdata_files

    used = []
    real = __import__("sendit.deid.scrub", fromlist=["_scrub_raw_items"])._scrub_raw_items

    def counting(raw, run):
        new = real(raw, run)
        used.append(new is not None)
        return new

    compared = 0
    for path in sorted(get_testdata_files()):
        try:
            dcmread(path)
        except Exception:
            continue
        for options in (DeidOptions(uid_secret=SECRET), DeidOptions(uid_secret=SECRET, retain_uids=True)):
            with monkeypatch.context() as patch:
                patch.setattr("sendit.deid.scrub._scrub_raw_items", counting)
                fast, slow = _both_ways(lambda: dcmread(path), options, monkeypatch)
            assert _flat(fast) == _flat(slow), path
            compared += 1
    assert compared > 100 and sum(used) > 50


def test_items_written_in_implicit_vr_inside_an_explicit_file_are_parsed(tmp_path, monkeypatch):
    """Some writers switch to implicit VR inside sequences; pydicom notices, so the bytes path
    must not read them as explicit (it would miss the UIDs)."""
    import struct

    def implicit_element(tag, value):
        value += b"\0" * (len(value) % 2)
        return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value

    body = implicit_element(0x00081150, b"1.2.840.10008.3.1.2.3.1") + implicit_element(0x00081155, b"1.2.3.4.55")
    item_bytes = struct.pack("<HHL", 0xFFFE, 0xE000, len(body)) + body
    ds = base()
    path = tmp_path / "switch.dcm"
    ds.save_as(path, enforce_file_format=True)
    sequence = struct.pack("<HH2sHL", 0x0008, 0x1110, b"SQ", 0, len(item_bytes)) + item_bytes
    data = path.read_bytes()
    # (0008,1110) goes after (0008,0060) Modality, the last group 0008 element of base()
    modality = data.index(struct.pack("<HH2s", 0x0008, 0x0060, b"CS"))
    end = modality + 8 + struct.unpack_from("<H", data, modality + 6)[0]
    path.write_bytes(data[:end] + sequence + data[end:])
    fast, slow = _both_ways(lambda: dcmread(path), DeidOptions(uid_secret=SECRET), monkeypatch)
    assert fast.ReferencedStudySequence[0].ReferencedSOPInstanceUID == map_uid("1.2.3.4.55", SECRET)
    assert _flat(fast) == _flat(slow)


def test_a_public_tag_no_dictionary_knows_is_removed(ids):
    """Fuzzing's find: PatientAddress moved by one bit to (0010,1048), kept as unknown."""
    ds = Dataset()
    ds.PatientID = "P1"
    ds.add_new(0x00101048, "LO", "12 FLIPPED STREET")
    ds.add_new(0x60000010, "US", 8)  # OverlayRows: a repeating group the dictionary knows
    ds.add_new(0x60003000, "OW", b"\0" * 8)
    deidentify_dataset(ds, ids, DeidOptions(uid_secret=b"s"))
    assert 0x00101048 not in ds
