"""python manage.py watcher_start [--foreground]: watch DATA_FOLDER for finished study folders."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sendit.apps.watcher import daemon


class Command(BaseCommand):
    help = "Start the watcher daemon on DATA_FOLDER (pid file, watcher.out and watcher.err logs)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--foreground",
            action="store_true",
            help="run in the foreground (containers, make run) instead of as a daemon",
        )

    def handle(self, *args, **options):
        pid = daemon.running_pid()
        if pid:
            raise CommandError(f"the watcher is already running (pid {pid})")
        if options["foreground"]:
            daemon.run_in_foreground()
            return
        pid = daemon.daemonize()
        mode = "polling" if settings.WATCHER_POLLING else "inotify"
        self.stdout.write(f"watcher started (pid {pid}), watching {settings.DATA_FOLDER} ({mode})")
