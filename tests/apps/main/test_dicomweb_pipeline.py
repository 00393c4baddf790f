"""The pipeline end to end with SEND_TO_DICOMWEB: a study dropped in the data folder arrives
de-identified in a DICOMweb server (Orthanc with its DICOMweb plugin)."""

import io

import pydicom
import pytest

from sendit.apps.main.models import Batch
from sendit.apps.main.tasks import import_dicomdir
from tests.services import make_ct_series

pytestmark = pytest.mark.django_db(transaction=True)
PHI_ID, PHI_NAME = "PHI-DICOMWEB-777", "Secret^Webpatient"


def test_a_study_arrives_de_identified_in_the_dicomweb_server(node, data_folder, dicomweb_server, settings):
    settings.SEND_TO_ORTHANC = False
    settings.SEND_TO_DICOMWEB = True
    settings.DICOMWEB_URL = dicomweb_server.dicomweb_url
    originals = make_ct_series(data_folder / "DW1", 3, rows=64, columns=64, patient_id=PHI_ID, patient_name=PHI_NAME)
    original_uids = {str(pydicom.dcmread(p).SOPInstanceUID) for p in originals}
    import_dicomdir(str(data_folder / "DW1"))
    batch = Batch.objects.get(uid="DW1")
    assert batch.status == "DONE" and not batch.has_error, batch.errors
    assert batch.log["destinations"] == ["dicomweb"]
    assert batch.log["deliveries"] == {"dicomweb": {"stored": 3}}
    stored = [
        pydicom.dcmread(io.BytesIO(dicomweb_server.get_bytes(f"/instances/{i}/file")))
        for i in dicomweb_server.instances()
    ]
    assert len(stored) == 3
    for ds in stored:
        assert ds.PatientID != PHI_ID and str(ds.PatientName) != PHI_NAME
        assert ds.SOPInstanceUID not in original_uids
        assert PHI_ID.encode() not in ds.to_json().encode() and b"Webpatient" not in ds.to_json().encode()
    assert len(node.instances()) == 0  # SEND_TO_ORTHANC off: nothing went to the plain Orthanc
