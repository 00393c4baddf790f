#!/usr/bin/env python
"""Regenerate the screenshots of docs/interface.md (docs/img/*.png).

Runs a whole throw-away node (its own SQLite database, filesystem broker, Celery worker,
watcher), a private Orthanc, `manage.py runserver` and headless Chromium, and takes the
same walk as the browser test (tests/apps/web/browser.py). Needs Debian's orthanc,
chromium and chromium-driver. Usage: .venv/bin/python scripts/screenshots.py [OUT_DIR]
"""

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.apps.web.browser import Site, chrome, make_node, quit_chrome, tour  # noqa: E402
from tests.services import Orthanc  # noqa: E402


def main(out):
    tmp = Path(tempfile.mkdtemp(prefix="sendit-screenshots-"))
    orthanc = Orthanc(tmp / "orthanc")
    orthanc.start()
    node = make_node(tmp / "node", orthanc)
    site = driver = None
    try:
        node.manage("migrate", "--noinput")
        site = Site(node).start()
        driver = chrome()
        seen = tour(node, site, driver, out)
    finally:
        if driver:
            quit_chrome(driver)
        if site:
            site.stop()
        node.stop()
        orthanc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"screenshots in {out}: statuses seen on the dashboard {seen['statuses']}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img")
