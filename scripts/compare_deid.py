#!/usr/bin/env python
"""Compare sendit's de-identification with other open-source tools.

Generates N synthetic 512x512 16-bit CT files whose PHI attributes (top level,
nested sequences, private tags) carry unique marker values, de-identifies them
with sendit and, when importable, with deid (pydicom/deid), dicognito and
dicom-anonymizer, then counts markers that survive in each tool's output bytes
and the time per image. A bare pydicom read+write of the same files is timed
too, for the sendit/bare ratio (target: at most 1.3).

    .venv/bin/python scripts/compare_deid.py [-n 50] [--dir PARENT] [--keep DIR]

Files are written under /dev/shm (memory) when it exists, so the figures are the
tools' own work: on a shared machine, a disk's writeback stalls land on whichever
tool happens to be writing. ``--dir /tmp`` measures on disk instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sendit.deid import DeidOptions, deidentify_file  # noqa: E402
from sendit.deid.identifiers import StudyIdentifiers  # noqa: E402

ROOT = "1.2.826.0.1.3680043.10.543."  # marker UIDs live under this root


def _item(**values) -> Dataset:
    ds = Dataset()
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def make_ct(index: int, pixels: bytes) -> tuple[Dataset, list[bytes]]:
    """One synthetic CT; returns it with the marker byte strings it carries."""
    m = f"M{index:04d}"
    date = f"19{50 + index % 40:02d}{1 + index % 12:02d}{1 + index % 27:02d}"
    uid = lambda n: f"{ROOT}{index}.{n}"  # noqa: E731
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid(1)
    ds.file_meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid(1)
    ds.StudyInstanceUID = uid(2)
    ds.SeriesInstanceUID = uid(3)
    ds.FrameOfReferenceUID = uid(4)
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.StudyTime = "101010"
    ds.AccessionNumber = f"{m}ACC"
    ds.Modality = "CT"
    ds.Manufacturer = "SYNTH"
    ds.InstitutionName = f"{m}INSTNAME"
    ds.InstitutionAddress = f"{m}INSTADDR"
    ds.ReferringPhysicianName = f"{m}REFPHYS^DR"
    ds.StationName = f"{m}STATION"
    ds.StudyDescription = f"{m}STUDYDESC"
    ds.SeriesDescription = f"{m}SERIESDESC"
    ds.PerformingPhysicianName = f"{m}PERFPHYS"
    ds.OperatorsName = f"{m}OPERATOR"
    ds.PatientName = f"{m}PATNAME^GIVEN"
    ds.PatientID = f"{m}PATID"
    ds.IssuerOfPatientID = f"{m}ISSUER"
    ds.PatientBirthDate = "19" + date[2:]
    ds.PatientSex = "O"
    ds.OtherPatientIDs = f"{m}OTHERID"
    ds.PatientAddress = f"{m}PATADDR"
    ds.PatientTelephoneNumbers = f"{m}PHONE"
    ds.AdditionalPatientHistory = f"{m}HISTORY"
    ds.PatientComments = f"{m}PATCOMMENT"
    ds.DeviceSerialNumber = f"{m}SERIAL"
    ds.ProtocolName = f"{m}PROTOCOL"
    ds.StudyID = f"{m}STUDYID"
    ds.RequestingPhysician = f"{m}REQPHYS"
    ds.ImageComments = f"{m}IMGCOMMENT"
    ds.ReferencedStudySequence = Sequence(
        [_item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1", ReferencedSOPInstanceUID=uid(5))]
    )
    ds.RequestAttributesSequence = Sequence(
        [
            _item(
                RequestedProcedureID=f"{m}REQPROCID",
                ScheduledProcedureStepID=f"{m}SPSID",
                ReferencedStudySequence=Sequence(
                    [
                        _item(
                            ReferencedSOPInstanceUID=uid(6),
                            PersonIdentificationCodeSequence=Sequence(
                                [_item(CodeValue="X", CodingSchemeDesignator="L", CodeMeaning=f"{m}DEEPNAME")]
                            ),
                        )
                    ]
                ),
            )
        ]
    )
    ds.OtherPatientIDsSequence = Sequence([_item(PatientID=f"{m}SEQPATID", IssuerOfPatientID=f"{m}SEQISSUER")])
    ds.add_new(0x00091010, "LO", "SYNTH PRIVATE")
    ds.add_new(0x00091011, "LO", f"{m}PRIVATE")
    ds.add_new(0x00091012, "PN", f"{m}PRIVNAME")
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.ImagePositionPatient = [0, 0, -index]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.InstanceNumber = index + 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 512
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.PixelData = pixels
    markers = [m.encode()]  # every text marker starts with M0000
    markers += [uid(n).encode() for n in range(1, 7)]
    markers.append(date.encode())
    return ds, markers


def generate(folder: Path, count: int) -> list[tuple[Path, list[bytes]]]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        pixels = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16).tobytes()
        ds, markers = make_ct(i, pixels)
        path = folder / f"ct{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append((path, markers))
    return files


def count_survivors(path: Path, markers: list[bytes]) -> int:
    """Occurrences of marker strings (text markers each counted) in the output bytes."""
    data = path.read_bytes()
    text_marker = markers[0]
    return data.count(text_marker) + sum(1 for m in markers[1:] if m in data)


# -- tools -----------------------------------------------------------------
def tool_bare():
    def run(src, dst):
        dcmread(src).save_as(dst)

    return run


def tool_sendit():
    options = DeidOptions(uid_secret=b"compare-secret")
    ids = StudyIdentifiers("PSUID", "SSUID", -17)

    def run(src, dst):
        deidentify_file(src, dst, ids, options)

    return run


def tool_sendit_recipe():
    """sendit with deid's own default recipe layered on the profile (STUDY_DEID=deid.dicom)."""
    from sendit.deid import Recipe

    options = DeidOptions(uid_secret=b"compare-secret", recipe=Recipe.load("deid.dicom"))
    ids = StudyIdentifiers("PSUID", "SSUID", -17)

    def run(src, dst):
        deidentify_file(src, dst, ids, options)

    return run


def tool_deid():
    from deid.config import DeidRecipe
    from deid.dicom import get_identifiers, replace_identifiers

    recipe = DeidRecipe()  # deid's default dicom recipe

    def run(src, dst):
        items = get_identifiers([str(src)])
        parsed = replace_identifiers(dicom_files=[str(src)], deid=recipe, ids=items, save=False, remove_private=True)
        parsed[0].save_as(dst)

    return run


def tool_dicognito():
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer()

    def run(src, dst):
        ds = dcmread(src)
        anonymizer.anonymize(ds)
        ds.save_as(dst)

    return run


def tool_dicom_anonymizer():
    from dicomanonymizer import anonymize_dicom_file

    def run(src, dst):
        anonymize_dicom_file(str(src), str(dst), delete_private_tags=True)

    return run


def output_folder(work: Path, tool: str) -> Path:
    return work / "output" / tool.replace(" ", "_").replace("+", "")


TOOLS = {
    "bare pydicom read+write": tool_bare,
    "sendit": tool_sendit,
    "sendit + deid.dicom recipe": tool_sendit_recipe,
    "deid": tool_deid,
    "dicognito": tool_dicognito,
    "dicom-anonymizer": tool_dicom_anonymizer,
}


def default_parent() -> Path | None:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=50, help="number of synthetic CT files (default 50)")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds, best is reported (default 5)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=default_parent(),
        help="where the work folder is made (default /dev/shm when writable)",
    )
    parser.add_argument("--keep", type=Path, help="keep inputs and outputs in this folder")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="compare-deid-", dir=args.dir))
    print(f"working in {work}")
    (work / "input").mkdir(parents=True, exist_ok=True)
    try:
        files = generate(work / "input", args.n)
        planted = sum(count_survivors(p, m) for p, m in files)
        runners = {}
        for name, factory in TOOLS.items():
            try:
                runners[name] = factory()
            except ImportError:
                runners[name] = None
        best = {name: float("inf") for name, run in runners.items() if run}
        # Rounds interleave the tools so that disk and cache noise hits them alike. Every
        # round writes new files, as the node does: on ext4, renaming over (or truncating)
        # an existing file forces its data out early (auto_da_alloc), a cost that depends
        # on how a tool writes rather than on what it does.
        for _ in range(args.rounds):
            for name, run in runners.items():
                if run is None:
                    continue
                target = output_folder(work, name)
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                start = time.perf_counter()
                for path, _markers in files:
                    run(path, target / path.name)
                best[name] = min(best[name], (time.perf_counter() - start) / len(files))
        print(f"{args.n} synthetic 512x512 16-bit CT files, {planted} planted markers in total")
        print(f"{'tool':<26}{'markers surviving':>19}{'ms/image':>11}")
        for name, run in runners.items():
            if run is None:
                print(f"{name:<26}{'not installed':>19}")
                continue
            target = output_folder(work, name)
            survived = sum(count_survivors(target / p.name, m) for p, m in files)
            shown = "-" if name.startswith("bare") else f"{survived}/{planted}"
            print(f"{name:<26}{shown:>19}{best[name] * 1000:>11.2f}")
        ratio = best["sendit"] / best["bare pydicom read+write"]
        print(f"sendit / bare pydicom time ratio: {ratio:.2f} (target <= 1.3)")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
