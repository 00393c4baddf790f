"""python manage.py batch_logs ID: a batch's errors and step log."""

import json

from django.core.management.base import BaseCommand, CommandError

from sendit.apps.main.models import Batch
from sendit.apps.main.plain import plain_error, plain_state


class Command(BaseCommand):
    help = "Print a batch's status, errors and step log (no patient data is ever stored there)."

    def add_arguments(self, parser):
        parser.add_argument("batch_id", type=int)
        parser.add_argument("--json", action="store_true", help="print the raw log as JSON")

    def handle(self, *args, **options):
        try:
            batch = Batch.objects.get(pk=options["batch_id"])
        except Batch.DoesNotExist:
            raise CommandError(f"no batch {options['batch_id']}: the dashboard lists them") from None
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "id": batch.id,
                        "uid": batch.uid,
                        "status": batch.status,
                        "state": plain_state(batch),
                        "has_error": batch.has_error,
                        "errors": batch.errors,
                        "log": batch.log,
                    },
                    indent=2,
                )
            )
            return
        self.stdout.write(
            f"batch {batch.id} {batch.uid}: {batch.status}" + (" (has errors)" if batch.has_error else "")
        )
        self.stdout.write(f"state: {plain_state(batch)}")
        self.stdout.write(
            f"images: {batch.log.get('images', 0)}; destinations: "
            f"{', '.join(batch.log.get('destinations', [])) or 'none'}"
        )
        for name, step in batch.log.get("steps", {}).items():
            extras = " ".join(f"{k}={v}" for k, v in step.items() if k not in ("time", "seconds"))
            self.stdout.write(f"  {step.get('time', '')}  {name:<12} {step.get('seconds', '?')} s  {extras}")
        self.stdout.write(f"errors: {len(batch.errors)}")
        for error in batch.errors:
            self.stdout.write(f"  {error['time']}  [{error['step']}] {plain_error(error, batch.id)}")
        for error in batch.log.get("previous_errors", []):
            self.stdout.write(f"  (before a retry) {error['time']}  [{error['step']}] {error['message']}")
        for entry in batch.log.get("audit", []):
            self.stdout.write(
                f"  (audit) {entry.get('time', '')}  {entry.get('action', '')} from "
                f"{entry.get('origin', '')}: {entry.get('result', '')}"
            )
