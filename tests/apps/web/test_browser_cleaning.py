"""Headless Chromium on the image page of an ultrasound that deid's ultrasound recipe cleans:
before de-identification (no worker yet) and after it, the page shows the cleaned preview
with the blanked box outlined red and the kept region green, and names the rules.

Screenshots go to test-artifacts/browser/ (image-cleaned-before.png, image-cleaned.png).
"""

import shutil
from pathlib import Path

import pytest

from tests.apps.web.browser import Site, browser_available, chrome, click_through, full_page, import_now, quit_chrome
from tests.node import Node
from tests.services import wait_for

deid_data = pytest.importorskip("deid_data")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not browser_available(), reason="chromium or chromedriver is not installed"),
]

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "browser"
ULTRASOUND = Path(deid_data.__file__).parent / "data" / "ultrasounds" / "RGB_IMAGE.dcm"
RULES = "graylist: Blank Image; graylist: Clean Ultrasound Regions"

# The colour of the preview's pixel at (x, y), read from the <img> in the page through a canvas.
PIXEL = """
const img = document.getElementById('preview');
const canvas = document.createElement('canvas');
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
const context = canvas.getContext('2d');
context.drawImage(img, 0, 0);
return Array.from(context.getImageData(arguments[0], arguments[1], 1, 1).data.slice(0, 3));
"""


def look(driver):
    """What the image page shows of the cleaning: preview size, outline and blanked colours, rules."""
    from selenium.webdriver.common.by import By

    assert wait_for(
        lambda: driver.execute_script(
            "const i = document.getElementById('preview'); return i && i.complete && i.naturalWidth > 0"
        ),
        timeout=10,
    )
    boxes = driver.find_element(By.ID, "cleaning-boxes").text
    return {
        "width": driver.execute_script("return document.getElementById('preview').naturalWidth"),
        "rules": driver.find_element(By.ID, "cleaning-rules").text,
        "boxes": boxes,
        # RGB_IMAGE: all blanked (red edge), region (0, 60)-(1008, 764) kept (green edge)
        "corner": driver.execute_script(PIXEL, 500, 0),
        "kept_edge": driver.execute_script(PIXEL, 500, 60),
        "blanked": driver.execute_script(PIXEL, 500, 30),
        "title": driver.find_element(By.CSS_SELECTOR, "#cleaning h2").text,
    }


def test_the_image_page_shows_the_outlined_cleaned_preview(tmp_path):
    node = Node(
        tmp_path,
        "sqlite",
        "filesystem",
        STUDY_DEID="deid.dicom.ultrasound",
        SEND_TO_ORTHANC="false",
        SEND_TO_GOOGLE="false",
        SENDIT_LOG_LEVEL="INFO",
    )
    node.manage("migrate", "--noinput")
    folder = node.data / "US-1"
    folder.mkdir()
    shutil.copy(ULTRASOUND, folder / ULTRASOUND.name)
    import_now(node, folder)  # no worker yet: the image waits, not de-identified
    site = Site(node).start()
    driver = chrome()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        from selenium.webdriver.common.by import By

        driver.get(site.url + "/")
        click_through(driver, driver.find_element(By.LINK_TEXT, "US-1"))
        batch_url = driver.current_url
        click_through(driver, driver.find_element(By.CSS_SELECTOR, "#images a"))
        image_url = driver.current_url
        assert "Not yet de-identified" in driver.page_source and not driver.find_elements(By.ID, "header")
        before = look(driver)
        full_page(driver, ARTIFACTS / "image-cleaned-before.png")
        driver.set_window_size(1280, 900)

        node.start()  # the worker de-identifies and cleans; nothing to send to
        assert wait_for(
            lambda: driver.get(batch_url) or "DONEPROCESSING" in driver.find_element(By.ID, "status").text, timeout=120
        ), node.logs()[-3000:]
        cleaned = driver.find_element(By.CSS_SELECTOR, "#images td.cleaned").text
        counts = driver.find_element(By.ID, "pixels-cleaned").text
        driver.get(image_url)
        assert "PatientIdentityRemoved" in driver.find_element(By.ID, "header").text
        after = look(driver)
        full_page(driver, ARTIFACTS / "image-cleaned.png")
    finally:
        quit_chrome(driver)
        site.stop()
        node.stop()
    assert before["title"] == "Pixels to be cleaned" and after["title"] == "Pixels cleaned"
    assert cleaned == RULES and counts == f"1 image cleaned by {RULES}"
    for seen in (before, after):
        assert seen["width"] == 1024 and seen["rules"] == RULES
        assert "blanked (red): x 0 to 1024, y 0 to 768" in seen["boxes"]
        assert "kept (green): x 0 to 1008, y 60 to 764" in seen["boxes"]
        assert seen["corner"] == [255, 0, 0] and seen["kept_edge"] == [0, 255, 0]
        assert seen["blanked"] == [0, 0, 0]  # the band above the kept region: blanked, black
    shutil.rmtree(tmp_path, ignore_errors=True)
