"""No patient data in logs, errors or pages, with DEBUG logging on."""

import json
import subprocess
import sys

import pydicom
import pytest

from tests.node import ROOT, Node
from tests.services import make_ct_series

pytestmark = pytest.mark.e2e

PHI = {
    "PatientName": "Kowalczyk^Bartholomew^Quincy",
    "PatientID": "MRN99887766",
    "PatientBirthDate": "19431127",
    "AccessionNumber": "ACCX55443322",
    "OtherPatientIDs": "SSN-123-45-6789",
    "PatientAddress": "742 Evergreen Terrace",
    "ReferringPhysicianName": "Zoidberg^John",
    "InstitutionName": "Saint Hieronymus Clinic",
    "PatientTelephoneNumbers": "555-0199-7788",
}
NON_ASCII = "Żółć^Gęślą"


def phi_study(folder, n):
    paths = make_ct_series(folder, n, patient_id=PHI["PatientID"], patient_name=PHI["PatientName"])
    for i, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        for key, value in PHI.items():
            setattr(ds, key, value)
        if i == 0:
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.PatientName = NON_ASCII
        ds.save_as(path)
    # A file name that carries patient data, and a broken file so error paths run too.
    (folder / f"{PHI['PatientID']}_Kowalczyk.dcm").write_bytes(b"DICM" + PHI["PatientID"].encode())
    return paths


def test_no_phi_in_logs_errors_or_pages(tmp_path, orthanc_server):
    orthanc_server.clear()
    with Node(
        tmp_path,
        "sqlite",
        "filesystem",
        workers=1,
        ORTHANC_URL=orthanc_server.url,
        SENDIT_LOG_LEVEL="DEBUG",
        WATCHER_SETTLE_SECONDS=0.5,
    ) as node:
        node.kill_worker()
        node.start_worker(loglevel="DEBUG")
        phi_study(node.data / "PHI1.tmp1", 4)
        (node.data / "PHI1.tmp1").rename(node.data / "PHI1")
        clean = node.data / "PHI2.tmp1"
        phi_study(clean, 3)
        (clean / f"{PHI['PatientID']}_Kowalczyk.dcm").unlink()
        clean.rename(node.data / "PHI2")
        assert node.wait(
            lambda: (
                node.batches().get("PHI2", ("",))[0] == "DONE"
                and node.batches().get("PHI1", ("",))[0] == "DONEPROCESSING"
            ),
            timeout=120,
        ), node.batches()
        pages = subprocess.run(
            [
                sys.executable,
                "-c",
                "import django,sys;django.setup();from django.test import Client;"
                "from sendit.apps.main.models import Batch;c=Client(HTTP_HOST='127.0.0.1');"
                "out=[c.get('/').content.decode()]+[c.get(f'/batches/{b.id}/').content.decode() for b in Batch.objects.all()]"
                "+[c.get('/api/batches/').content.decode()];"
                "assert all(len(p) > 200 for p in out), out;sys.stdout.write(chr(10).join(out))",
            ],
            cwd=ROOT,
            env=node.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert pages.returncode == 0, pages.stderr[-2000:]
        errors = json.dumps([e for (e,) in node.query("SELECT errors FROM main_batch")])
        logs = node.logs()
        assert "DEBUG" in logs  # the DEBUG level was really on
        worlds = {"logs": logs, "errors": errors, "pages": pages.stdout}
        values = list(PHI.values()) + [
            NON_ASCII,
            "Kowalczyk",
            "Bartholomew",
            "Evergreen",
            "Hieronymus",
            "Zoidberg",
            "99887766",
            "1943",
        ]
        found = {(where, v) for where, text in worlds.items() for v in values if v in text}
        assert not found, found
        # The same check over each log file by name (LOG_DIR, worker.log, watcher.out/err).
        assert {p.name for p in node.log_files()} >= {"worker.log", "watcher.out", "sendit.log"}
