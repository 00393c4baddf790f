"""Fixtures of the web and API tests: batches and images written straight to the database."""

import shutil
from pathlib import Path

import pytest
from django.utils import timezone
from pydicom.data import get_testdata_file

from sendit.apps.main.models import Batch, Hold, Image
from sendit.apps.main.pipeline import HOLD

PASSWORD = "correct horse battery staple"
TOKEN = "test-api-token-0123456789abcdefghijklmn"


@pytest.fixture
def make_batch(settings, data_folder):
    """make_batch(uid, status=..., images=[(status, testfile or None, destinations, flagged)])."""
    media = Path(settings.MEDIA_ROOT)

    def make(uid="ST-000001", status="NEW", images=(), errors=(), log=None, has_error=None):
        batch = Batch.objects.create(
            uid=uid,
            status=status,
            errors=list(errors),
            log=log or {},
            has_error=bool(errors) if has_error is None else has_error,
        )
        for i, spec in enumerate(images):
            spec = tuple(spec) + (None, {}, "")[len(spec) - 1 :]
            image_status, source, destinations, flagged = spec[:4]
            kind = "deid" if image_status in ("DONEPROCESSING", "SENT", "DONE") else "raw"
            relative = f"batches/{batch.id}/{kind}/{i:04d}.dcm"
            if source:
                target = media / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source if Path(str(source)).is_absolute() else get_testdata_file(source), target)
            hold = Hold.NONE if not flagged else Hold.DEID if flagged.startswith(HOLD) else Hold.BURNED_IN
            Image.objects.create(
                batch=batch,
                uid=f"2.25.{1000 + i}",
                status=image_status,
                image=relative,
                destinations=destinations or {},
                hold=hold,
                flagged=flagged or "",
            )
        return batch

    return make


@pytest.fixture
def locked(settings):
    """Lockdown on with one password and one API token."""
    settings.LOCKDOWN_ENABLED = True
    settings.LOCKDOWN_PASSWORDS = (PASSWORD,)
    settings.API_TOKENS = (TOKEN,)
    return settings


@pytest.fixture
def step_log():
    now = timezone.now().isoformat()
    return {
        "images": 2,
        "destinations": ["orthanc"],
        "steps": {
            "import": {"time": now, "seconds": 0.5, "images": 2},
            "identifiers": {"time": now, "seconds": 0.1, "provider": "local"},
            "deidentify": {"time": now, "seconds": 1.25, "images": 2},
            "send": {"time": now, "seconds": 2.0, "images": 2, "destinations": "orthanc"},
        },
    }
