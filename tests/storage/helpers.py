"""Shared test data for the storage tests."""

import pydicom
from pydicom.data import get_testdata_file

from sendit.storage import SendItem
from tests.services import make_ct_series


def sample_files(folder, n_ct=4, patient_id="SUID1"):
    """pydicom's CT_small and MR_small plus n_ct generated 512x512 CT images."""
    paths = [get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")]
    paths += make_ct_series(folder, n_ct, patient_id=patient_id)
    return paths


def items_for(paths):
    return [SendItem.from_file(p) for p in paths]


def pixel_bytes(data_or_path):
    import io

    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    return pydicom.dcmread(src).PixelData
