"""End to end in headless Chromium: a locked node, a batch from NEW to DONE, pages and preview.

Screenshots go to test-artifacts/browser/ (scripts/screenshots.py makes the docs' copies).
"""

import shutil
from pathlib import Path

import pytest

from tests.apps.web.browser import Site, browser_available, chrome, make_node, quit_chrome, tour

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not browser_available(), reason="chromium or chromedriver is not installed"),
]

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "browser"


def test_the_site_in_a_browser(tmp_path, orthanc_server):
    orthanc_server.clear()
    node = make_node(tmp_path, orthanc_server)
    node.manage("migrate", "--noinput")
    site = Site(node).start()
    driver = chrome()
    try:
        seen = tour(node, site, driver, ARTIFACTS)
    finally:
        quit_chrome(driver)
        site.stop()
        node.stop()
    assert seen["statuses"][0] == "NEW" and seen["statuses"][-1] == "DONE"
    assert "Incorrect password" in seen["wrong_password"]
    assert seen["preview_width"] == 512
    assert len(orthanc_server.instances()) == 9
    for name in (
        "login-refused",
        "dashboard-new",
        "dashboard",
        "batch",
        "image",
        "settings",
        "api-docs",
        "dashboard-phone",
    ):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 5000
    shutil.rmtree(tmp_path, ignore_errors=True)
