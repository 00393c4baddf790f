"""python manage.py retry_batch ID: resume a batch from where it stopped."""
from django.core.management.base import BaseCommand, CommandError

from sendit.apps.main.models import Batch
from sendit.apps.main.retry import BatchInUse, retry_batch


class Command(BaseCommand):
    help = "Resume a batch: re-import set-aside files, then redo only what is missing."

    def add_arguments(self, parser):
        parser.add_argument("batch_id", type=int)

    def handle(self, *args, **options):
        try:
            batch = Batch.objects.get(pk=options["batch_id"])
        except Batch.DoesNotExist:
            raise CommandError("no such batch") from None
        try:
            step = retry_batch(batch)
        except BatchInUse:
            raise CommandError("a worker is working on this batch; retry when it has finished") from None
        self.stdout.write(f"batch {batch.id}: queued {step or 'nothing: no step has work left'}")
