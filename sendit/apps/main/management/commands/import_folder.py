"""python manage.py import_folder PATH: queue one finished study folder by hand."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from sendit.apps.main.tasks import import_dicomdir


class Command(BaseCommand):
    help = "Queue one finished folder (inside DATA_FOLDER) for import."

    def add_arguments(self, parser):
        parser.add_argument("path")

    def handle(self, *args, **options):
        path = Path(options["path"]).resolve()
        if not path.is_dir():
            raise CommandError("not a folder")
        import_dicomdir.delay(str(path))
        self.stdout.write(f"queued {path.name}")
