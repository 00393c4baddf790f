"""python manage.py dicom_receiver: receive studies over DICOM (C-STORE) into DATA_FOLDER."""

import signal
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from sendit.receiver import ReceiverConfig, serve


class Command(BaseCommand):
    help = (
        "Run the DICOM receiver (C-STORE SCP) in the foreground: each study arrives into "
        "DATA_FOLDER as NAME.tmprecv and is renamed NAME for the watcher once no image of it "
        "has arrived for RECEIVER_STUDY_SETTLE_SECONDS. Ctrl-C or SIGTERM stops it."
    )

    def handle(self, *args, **options):
        config = ReceiverConfig(
            data_folder=Path(settings.DATA_FOLDER),
            key=settings.DEID_SECRET.encode(),
            ae_title=settings.RECEIVER_AET,
            port=int(settings.RECEIVER_PORT),
            bind=settings.RECEIVER_BIND,
            allowed_aets=tuple(settings.RECEIVER_ALLOWED_AETS),
            settle=float(settings.RECEIVER_STUDY_SETTLE_SECONDS),
            max_associations=int(settings.RECEIVER_MAX_ASSOCIATIONS),
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        from sendit.apps.main.destinations import RECEIVER_PUBLISH_SECONDS, publish_receiver

        serve(config, stop, report=publish_receiver, report_every=RECEIVER_PUBLISH_SECONDS)
