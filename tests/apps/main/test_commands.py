"""The operator's management commands, on batches that really went through the pipeline."""

import csv
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from sendit.apps.main.models import Batch
from sendit.apps.main.tasks import import_dicomdir
from tests.services import make_ct_series

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def two_batches(node, data_folder):
    make_ct_series(data_folder / "GOOD", 2, patient_id="PHI-MRN-1")
    import_dicomdir(str(data_folder / "GOOD"))
    (data_folder / "BAD").mkdir()
    (data_folder / "BAD" / "x.txt").write_text("no")
    import_dicomdir(str(data_folder / "BAD"))
    return Batch.objects.get(uid="GOOD"), Batch.objects.get(uid="BAD")


def test_batch_logs(two_batches):
    good, bad = two_batches
    out = run("batch_logs", str(good.id))
    assert f"batch {good.id} GOOD: DONE" in out and "deidentify" in out and "errors: 0" in out
    assert "PHI-MRN" not in out
    out = run("batch_logs", str(bad.id))
    assert "(has errors)" in out and "[import] a file could not be imported: not a DICOM file" in out
    with pytest.raises(CommandError, match="no batch 999999: the dashboard lists them"):
        run("batch_logs", "999999")


def test_export_metrics(two_batches, tmp_path):
    out = run("export_metrics", "--output-dir", str(tmp_path))
    name = f"sendit-process-time-{timezone.now():%Y-%m-%d}.tsv"
    assert "wrote 2 batches" in out
    rows = list(csv.DictReader(open(tmp_path / name), delimiter="\t"))
    good = next(r for r in rows if r["batch"] == "GOOD")
    assert good["status"] == "DONE" and good["images"] == "2" and float(good["total_seconds"]) > 0


def test_summary_metrics(two_batches):
    out = run("summary_metrics")
    assert '"batches": 2' in out and '"batches_with_errors": 1' in out and '"images_imported": 2' in out


def test_cleanup_older_than(two_batches):
    good, bad = two_batches
    assert "deleted 0" in run("cleanup", "--older-than", "7")
    Batch.objects.update(modify_date=timezone.now() - timezone.timedelta(days=10))
    assert "would delete 1" in run("cleanup", "--older-than", "7", "--dry-run")
    assert "deleted 1" in run("cleanup", "--older-than", "7")
    assert list(Batch.objects.values_list("uid", flat=True)) == ["BAD"]  # errors are kept


def test_retry_batch_command(two_batches, data_folder):
    good, bad = two_batches
    (data_folder / "BAD.err" / "x.txt").unlink()  # a person removed the bad file
    # The emptied NAME.err is removed, not imported (an import of nothing would queue no next step).
    assert "queued nothing: no step has work left" in run("retry_batch", str(bad.id))
    bad.refresh_from_db()
    assert not bad.has_error and bad.log["previous_errors"]
    assert not (data_folder / "BAD.err").exists()
