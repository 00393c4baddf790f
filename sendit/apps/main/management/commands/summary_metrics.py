"""python manage.py summary_metrics: totals and rates."""

import json

from django.core.management.base import BaseCommand

from sendit.apps.main.metrics import summary


class Command(BaseCommand):
    help = "Print totals (batches by status, images, errors) and processing rates."

    def handle(self, *args, **options):
        self.stdout.write(json.dumps(summary(), indent=2))
