import gc, time
import pytest
from tests.services import make_ct_series
from sendit.apps.main.tasks import import_dicomdir
pytestmark = pytest.mark.django_db(transaction=True)

@pytest.mark.parametrize("freeze", [False, True, False, True])
def test_profile(node, data_folder, freeze):
    folder = data_folder / "P1"
    make_ct_series(folder, 300, patient_id="X1")
    if freeze:
        gc.freeze()
    print("\nfreeze", freeze, gc.get_count(), gc.get_freeze_count())
    import_dicomdir(str(folder))
    gc.unfreeze()
