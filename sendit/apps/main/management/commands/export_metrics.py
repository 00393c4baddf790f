"""python manage.py export_metrics: a TSV of processing times per batch."""

import csv
from pathlib import Path

from django.core.management.base import BaseCommand
from django.utils import timezone

from sendit.apps.main.metrics import batch_row
from sendit.apps.main.models import Batch


class Command(BaseCommand):
    help = "Write sendit-process-time-YYYY-MM-DD.tsv: one line per batch with its step times."

    def add_arguments(self, parser):
        parser.add_argument("--output-dir", default=".")

    def handle(self, *args, **options):
        path = Path(options["output_dir"]) / f"sendit-process-time-{timezone.now():%Y-%m-%d}.tsv"
        rows = [batch_row(b) for b in Batch.objects.order_by("id")]
        with open(path, "w", newline="") as handle:
            if rows:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
                writer.writeheader()
                writer.writerows(rows)
        self.stdout.write(f"wrote {len(rows)} batches to {path}")
