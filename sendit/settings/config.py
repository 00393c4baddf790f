"""Pipeline settings of sendit.

Every UPPERCASE name in this module can be overridden by an environment variable of
the same name: booleans as true/false (also 1/0, yes/no), numbers as digits, lists as
comma-separated values. The defaults below run a node on this machine alone.
"""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = str(BASE_DIR / "var")

# Where finished study folders arrive (the seed maps ./data to /data in the container).
DATA_FOLDER = str(BASE_DIR / "data")
# Where imported images wait while they are processed and sent.
MEDIA_ROOT = str(BASE_DIR / "var" / "media")

DATABASE_URL = "sqlite:///" + str(BASE_DIR / "var" / "sendit.sqlite3")
# kombu's filesystem transport needs no server; use redis://host:6379/0 in production.
CELERY_BROKER_URL = "filesystem://"
# Django's cache, shared by every process of the node (the password and token throttle,
# /healthz's destination answers): redis://..., file:///path or locmem:// (one process
# only). Empty: the Redis broker when CELERY_BROKER_URL is one, else a folder in VAR_DIR.
CACHE_URL = ""

# De-identification. DEIDENTIFY=false sends data as it arrived and the status page says so.
DEIDENTIFY = True
# True: identifiers come from Stanford's DASHER API; False: from the built-in local provider.
DEIDENTIFY_RESTFUL = False
SOM_STUDY = "test"
DASHER_URL = "https://api.rit.stanford.edu/identifiers/api"
DASHER_TIMEOUT = 30
DASHER_RETRIES = 4
DASHER_BACKOFF = 0.5
# Local provider: jitter range in days, never zero.
LOCAL_JITTER_MIN = -30
LOCAL_JITTER_MAX = -1
# A recipe in deid's format applied with deid's semantics before the PS3.15 profile (which
# takes every attribute the recipe does not name): a file, or one of deid's shipped recipes
# by name (deid.dicom, deid.dicom.ultrasound, deid.dicom.xray.chest); empty for none.
STUDY_DEID = ""
# Site functions for a recipe's func:NAME values, as name=package.module:callable entries.
DEID_FUNCTIONS = []
DEID_UID_ROOT = "2.25."
DEID_RETAIN_LONG_MODIFIED_DATES = True
DEID_RETAIN_PATIENT_CHARACTERISTICS = False
DEID_RETAIN_DEVICE_IDENTITY = False
DEID_RETAIN_INSTITUTION_IDENTITY = False
DEID_CLEAN_DESCRIPTORS = False
DEID_RETAIN_UIDS = False
DEID_RETAIN_SAFE_PRIVATE = False
# Reserved for pixel scrubbing; not implemented, so true behaves like false and says so.
ANONYMIZE_PIXELS = False
# Burned-in text found by OCR (docs/deidentify.md): Tesseract reads the pixels of images of
# these modalities ("DOC": secondary captures and documents, whatever their modality) and of
# any image a filter rule flags; text matching the image's identifying values is blanked
# ("all": every word), undecided text holds the image. OCR_QUEUE: the Celery queue of the
# de-identification of batches with such images ("": the default queue).
DEID_OCR = False
DEID_OCR_MODALITIES = ["US", "SC", "OT", "XA", "DX", "CR", "DOC"]
DEID_OCR_SCRUB = "identifying"
# With DEID_OCR: also send, once the OCR has scrubbed them, images a graylist-type filter rule
# holds for suspected text (a blacklist rule always holds). Off: the OCR scrubs the images it
# reads and held images stay held for a person (measured recall is below what replaces review).
DEID_OCR_RELEASE = False
OCR_QUEUE = ""

# Import limits, checked before a file's values are trusted (docs/errors.md): the largest
# file accepted (checked before it is read), and how deep sequences may nest (Orthanc 1.10's
# DICOM parser crashes at about 50; real files seldom pass 6).
MAX_FILE_BYTES = 4 * 1024 ** 3
MAX_SEQUENCE_DEPTH = 16

# Storage: Orthanc.
SEND_TO_ORTHANC = True
ORTHANC_TRANSPORT = "rest"  # "rest" (HTTP POST /instances) or "dicom" (C-STORE)
ORTHANC_URL = "http://127.0.0.1:8042"
ORTHANC_USERNAME = ""
ORTHANC_IPADDRESS = "127.0.0.1"
ORTHANC_PORT = 4242
ORTHANC_AET = "ORTHANC"
SENDIT_AET = "SENDIT"

# How the REST transport verifies receipt: "series" (POST's Success/AlreadyStored, then one
# GET /series/{id} per series lists every instance) or "md5" (also one MD5 GET per file).
ORTHANC_VERIFY = "series"

# Storage: a DICOMweb server (STOW-RS, verified by QIDO-RS): DICOMWEB_URL is the service
# root, e.g. http://host:8042/dicom-web or a Cloud Healthcare API .../dicomWeb URL.
# DICOMWEB_AUTH: none, basic (DICOMWEB_USERNAME + DICOMWEB_PASSWORD, a secret), bearer
# (DICOMWEB_TOKEN, a secret) or google (Application Default Credentials).
SEND_TO_DICOMWEB = False
DICOMWEB_URL = ""
DICOMWEB_AUTH = "none"
DICOMWEB_USERNAME = ""
# Instances per STOW-RS request (requests are also split so that SEND_WORKERS run at once).
DICOMWEB_INSTANCES_PER_REQUEST = 25

# Storage: Google Cloud Storage.
SEND_TO_GOOGLE = False
GOOGLE_CLOUD_STORAGE = "som-pacs"
GOOGLE_PROJECT_NAME = ""
GOOGLE_STORAGE_COLLECTION = "sendit"
GOOGLE_STORAGE_FORMAT = "dicom"
GOOGLE_APPLICATION_CREDENTIALS = ""
STORAGE_EMULATOR_HOST = ""
# Google Datastore: one entity per study and per series, keyed by pseudonymous UIDs.
GOOGLE_DATASTORE = False
GOOGLE_DATASTORE_STUDY_KIND = "Study"
GOOGLE_DATASTORE_SERIES_KIND = "Series"
GOOGLE_DATASTORE_FIELDS = ("Modality,BodyPartExamined,SeriesDescription,StudyDate,Manufacturer,"
                           "ManufacturerModelName,SliceThickness,PixelSpacing")
GOOGLE_DATASTORE_NAMESPACE = ""
DATASTORE_EMULATOR_HOST = ""

# Sending: retries with exponential backoff, capped.
SEND_RETRIES = 5
SEND_BACKOFF = 1.0
SEND_BACKOFF_MAX = 30.0
# Parallel uploads (REST and Cloud Storage) and the time allowed for one request or C-STORE.
SEND_WORKERS = 8
SEND_TIMEOUT = 60
# DICOM transport: parallel associations per round (1 = one association per batch), and the
# largest PDU we accept (0 = no limit).
ORTHANC_DICOM_ASSOCIATIONS = 4
SENDIT_MAX_PDU = 0

# Watcher.
WATCHER_POLLING = False  # true on NFS and bind mounts where inotify sees nothing
WATCHER_POLL_INTERVAL = 2.0
# Seconds a finished folder must stay quiet before it is queued (covers a plain mkdir).
WATCHER_SETTLE_SECONDS = 1.0
WATCHER_PID_FILE = str(BASE_DIR / "var" / "watcher.pid")
WATCHER_LOG_DIR = str(BASE_DIR / "var")
WATCHER_LOG_MAX_BYTES = 5 * 1024 * 1024
WATCHER_LOG_BACKUPS = 3

# DICOM receiver (python manage.py dicom_receiver; docs/receiver.md): a C-STORE SCP that
# writes each study into DATA_FOLDER as NAME.tmp... and renames it to NAME once no image of
# it has arrived for RECEIVER_STUDY_SETTLE_SECONDS. RECEIVER_ALLOWED_AETS: calling AE titles
# accepted (empty: any). RECEIVER_MAX_ASSOCIATIONS: simultaneous associations.
RECEIVER_AET = "SENDIT"
RECEIVER_PORT = 11112
RECEIVER_BIND = "127.0.0.1"
RECEIVER_ALLOWED_AETS = []
RECEIVER_STUDY_SETTLE_SECONDS = 10.0
RECEIVER_MAX_ASSOCIATIONS = 10

# The watcher re-queues folders and batches left waiting longer than SWEEP_AFTER_SECONDS
# (a broker restart, a killed worker), checking every SWEEP_INTERVAL seconds.
SWEEP_INTERVAL = 60.0
SWEEP_AFTER_SECONDS = 900

# How long a batch's lease lasts without renewal (seconds): a worker on another host takes
# over a dead worker's batches about this long after its death. While a step works, a
# heartbeat renews the lease every LEASE_HEARTBEAT_SECONDS (at most a third of the lease);
# the lease of a dead process on the same machine is taken over at once. Workers also look
# for lapsed leases every LEASE_HEARTBEAT_SECONDS, and when they start.
BATCH_LEASE_SECONDS = 60
LEASE_HEARTBEAT_SECONDS = 15.0

# Redis broker: seconds before a task a worker took but never acknowledged (the worker was
# killed) is delivered again. Keep it longer than the longest step; the sweeper above
# covers what a broker restart loses.
BROKER_VISIBILITY_TIMEOUT = 3600

# The seed spelled ORTHANC_PORT as ORTHAC_PORT: accept both.
_ALIASES = {"ORTHAC_PORT": "ORTHANC_PORT"}


def _coerce(name, default, raw):
    """Turn an environment string into the type of the default value."""
    if isinstance(default, bool):
        value = raw.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name} must be true or false")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, (list, tuple)):
        return type(default)(v.strip() for v in raw.split(",") if v.strip())
    return raw


def override_from_environment(namespace, environ=os.environ):
    """Apply environment overrides to the UPPERCASE names of a settings namespace."""
    for alias, name in _ALIASES.items():
        if alias in environ and name not in environ:
            namespace[name] = _coerce(name, namespace[name], environ[alias])
    for name, default in list(namespace.items()):
        if name.isupper() and not name.startswith("_") and name in environ:
            namespace[name] = _coerce(name, default, environ[name])


override_from_environment(globals())
