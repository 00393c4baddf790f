"""python manage.py watcher_stop: stop the watcher daemon."""

from django.core.management.base import BaseCommand, CommandError

from sendit.apps.watcher import daemon


class Command(BaseCommand):
    help = "Stop the watcher daemon."

    def handle(self, *args, **options):
        if not daemon.stop():
            raise CommandError("the watcher is not running (no live pid in the pid file)")
        self.stdout.write("watcher stopped")
