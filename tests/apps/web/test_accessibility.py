"""axe-core in headless Chromium: no serious or critical violation on any page.

axe is the repository's copy (tests/vendor/axe-core, from npm's axe-core package), injected
into each page by the test: no CDN, nothing served by the node. The pages are those of a
locked node with a de-identified batch kept on the node (no destination) and a batch with
an error: the password form, the dashboard, both batch pages, an image page, the delete
confirmation, the settings page and the API's Swagger page.
"""

import json
from pathlib import Path

import pytest

from tests.apps.web.browser import (
    PASSWORD,
    Site,
    browser_available,
    chrome,
    click_through,
    live_attr,
    quit_chrome,
)
from tests.node import Node
from tests.services import make_ct_series, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not browser_available(), reason="chromium or chromedriver is not installed"),
]

AXE = Path(__file__).resolve().parents[2] / "vendor" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "accessibility"


def axe_violations(driver) -> list[dict]:
    """axe's serious and critical violations on the page loaded (WCAG 2.x A/AA and best practice)."""
    driver.execute_script(AXE.read_text())
    driver.set_script_timeout(60)
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(JSON.stringify(r.violations))).catch(e => done(JSON.stringify([{id: 'axe-error',"
        " impact: 'critical', help: String(e), nodes: []}])));"
    )
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n.get("target") for n in v["nodes"]][:5]}
        for v in json.loads(result)
        if v.get("impact") in ("serious", "critical")
    ]


def test_no_serious_or_critical_violation_on_any_page(tmp_path):
    from selenium.webdriver.common.by import By

    node = Node(
        tmp_path,
        "sqlite",
        "filesystem",
        workers=1,
        LOCKDOWN_ENABLED="true",
        LOCKDOWN_PASSWORDS=PASSWORD,
        SEND_TO_ORTHANC="false",
        SEND_TO_GOOGLE="false",
    ).start()
    make_ct_series(node.data / "ST-A11Y.tmp1", 2, rows=64, columns=64)
    (node.data / "ST-A11Y.tmp1" / "notes.txt").write_text("not DICOM")
    (node.data / "ST-A11Y.tmp1").rename(node.data / "ST-A11Y")
    site = Site(node).start()
    driver = chrome()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    found = {}
    try:
        driver.get(site.url + "/")
        found["password form"] = axe_violations(driver)
        driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
        click_through(driver, driver.find_element(By.CSS_SELECTOR, "#lockdown-form button"))
        row = '#batches tr[data-batch="ST-A11Y"]'
        assert wait_for(lambda: live_attr(driver, row, "data-status") == "DONEPROCESSING", timeout=120), node.logs()[
            -3000:
        ]
        found["dashboard"] = axe_violations(driver)
        click_through(driver, driver.find_element(By.LINK_TEXT, "ST-A11Y"))
        batch_url = driver.current_url
        found["batch"] = axe_violations(driver)
        click_through(driver, driver.find_element(By.CSS_SELECTOR, "#images a"))
        found["image"] = axe_violations(driver)
        # The header table's UIDs wrap inside their cell: the page is no wider than the window
        # and no row is taller than a few lines.
        widest = driver.execute_script("return document.documentElement.scrollWidth")
        tallest = driver.execute_script(
            "return Math.max(...[...document.querySelectorAll('#header tr')].map(r => r.offsetHeight))"
        )
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.save_screenshot(str(ARTIFACTS / "image.png"))
        assert widest <= driver.execute_script("return window.innerWidth"), widest
        rows = driver.execute_script("return document.querySelectorAll('#header tr').length")
        assert tallest < 60 and height < rows * 45 + 1500, (tallest, height, rows)
        driver.get(batch_url + "delete/")
        found["delete"] = axe_violations(driver)
        driver.get(site.url + "/settings/")
        found["settings"] = axe_violations(driver)
        driver.get(site.url + "/api/docs/")
        assert wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock"), timeout=30)
        found["api docs"] = axe_violations(driver)
        driver.save_screenshot(str(ARTIFACTS / "api-docs.png"))
        lang = driver.execute_script("return document.documentElement.lang")
        back = driver.find_elements(By.ID, "back-to-sendit")
        back_href = back[0].get_attribute("href") if back else ""
        # 200% zoom (a 640 px wide window at the same CSS size): still no serious violation.
        driver.set_window_size(640, 900)
        driver.get(site.url + "/")
        found["dashboard at 200%"] = axe_violations(driver)
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 660
    finally:
        quit_chrome(driver)
        site.stop()
        node.stop()
    (ARTIFACTS / "violations.json").write_text(json.dumps(found, indent=2))
    bad = {page: violations for page, violations in found.items() if violations}
    assert not bad, json.dumps(bad, indent=2)
    assert lang == "en" and back and back_href.rstrip("/") == site.url
