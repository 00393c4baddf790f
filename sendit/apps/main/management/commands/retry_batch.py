"""python manage.py retry_batch ID: resume a batch from where it stopped (the page's "Retry what failed")."""

from django.core.management.base import BaseCommand, CommandError

from sendit.apps.main import actions
from sendit.apps.main.models import Batch
from sendit.apps.main.plain import plain_state


class Command(BaseCommand):
    help = (
        "Resume a batch: re-import set-aside files, then redo only what is missing (the same as the "
        "batch page's \"Retry what failed\"; written to the batch's audit log)."
    )

    def add_arguments(self, parser):
        parser.add_argument("batch_id", type=int)

    def handle(self, *args, **options):
        try:
            batch = Batch.objects.get(pk=options["batch_id"])
        except Batch.DoesNotExist:
            raise CommandError(f"no batch {options['batch_id']}: the dashboard lists them") from None
        if not (batch.has_error or batch.status != "DONE"):
            self.stdout.write(f"batch {batch.id} {batch.uid}: nothing to retry ({plain_state(batch)})")
            return
        try:
            step = actions.retry(batch, actions.command_origin("retry_batch"))
        except actions.BatchInUse:
            raise CommandError("a worker is working on this batch; retry when it has finished") from None
        self.stdout.write(
            f"batch {batch.id} {batch.uid}: queued {step or 'nothing: no step has work left'}"
            + ("; a worker takes it from the queue (make run and docker compose start one)" if step else "")
        )
