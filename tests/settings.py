"""Test settings: the real settings, pointed at throw-away folders and a real database.

The database is PostgreSQL when it answers on 127.0.0.1:5432 (this machine kind runs
it), else SQLite; DATABASE_URL in the environment wins.
"""

import os
import socket
import tempfile


def _answers(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


_tmp = tempfile.mkdtemp(prefix="sendit-tests-")
os.environ.setdefault("LOCKDOWN_ENABLED", "false")
os.environ.setdefault("DATA_FOLDER", os.path.join(_tmp, "data"))
os.environ.setdefault("MEDIA_ROOT", os.path.join(_tmp, "media"))
os.environ.setdefault("DEID_SECRET", "test-site-secret-0123456789abcdefghij")
os.environ.setdefault("SECRET_KEY", "test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("SEND_RETRIES", "2")
os.environ.setdefault("SEND_BACKOFF", "0.1")
if "DATABASE_URL" not in os.environ and _answers("127.0.0.1", 5432):
    os.environ["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/sendit"
# A cache of this run's own (the default is under the checkout's var/, which runs share).
os.environ.setdefault("CACHE_URL", "file://" + os.path.join(_tmp, "cache"))
# Worker processes the tests start share the test database through this variable.
os.environ.setdefault("SENDIT_TEST_SQLITE", os.path.join(_tmp, "test.sqlite3"))
os.makedirs(os.environ["DATA_FOLDER"], exist_ok=True)

from sendit.config import prepare  # noqa: E402
from sendit.settings import *  # noqa: E402,F401,F403

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # A file, not memory, so that a worker process can share the test database.
    DATABASES["default"]["TEST"]["NAME"] = os.environ["SENDIT_TEST_SQLITE"]  # noqa: F405
prepare(CONFIG)  # noqa: F405
