"""python manage.py cleanup --older-than DAYS: forget finished batches' audit logs."""

from django.core.management.base import BaseCommand

from sendit.apps.main import actions


class Command(BaseCommand):
    help = (
        "Delete DONE batches without errors last changed more than DAYS ago (their images are long gone); "
        "each is written to the sendit.audit log first."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=int, required=True, metavar="DAYS")
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args, **options):
        count = actions.forget_finished(
            options["older_than"], actions.command_origin("cleanup"), dry_run=options["dry_run"]
        )
        self.stdout.write(
            f"{'would delete' if options['dry_run'] else 'deleted'} {count} finished batch(es) "
            f"older than {options['older_than']} days"
        )
