"""python manage.py cleanup --older-than DAYS: forget finished batches' audit logs."""
from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from sendit.apps.main.models import Batch


class Command(BaseCommand):
    help = "Delete DONE batches without errors last changed more than DAYS ago (their images are long gone)."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=int, required=True, metavar="DAYS")
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args, **options):
        cutoff = timezone.now() - timedelta(days=options["older_than"])
        old = Batch.objects.filter(status="DONE", has_error=False, modify_date__lt=cutoff)
        count = old.count()
        if not options["dry_run"]:
            old.delete()
        self.stdout.write(f"{'would delete' if options['dry_run'] else 'deleted'} {count} finished batch(es) "
                          f"older than {options['older_than']} days")
