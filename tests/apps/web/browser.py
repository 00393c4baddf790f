"""A whole node, its web page and headless Chromium, for the browser tests and the screenshots.

`tour(node, site, driver, shots)` is the walk both tests/apps/web/test_browser.py and
scripts/screenshots.py take: a wrong password, the right one, a batch going from NEW to
DONE on the dashboard without a reload, a batch page, an image with its preview, the
settings page and the API docs. It asserts what it sees and saves a PNG per step.
Plain Python (no pytest) so the script can use it too.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from tests.node import ROOT, Node
from tests.services import free_port, make_ct_series, stop_process, wait_for

PASSWORD = "e2e-lockdown-password"
PATIENT_ID, PATIENT_NAME = "PHI-WEB-0042", "Zyxwvut^Qwerty"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


def browser_available():
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


def make_node(tmp, orthanc):
    """A node sending to `orthanc`, locked with PASSWORD (not started yet)."""
    return Node(
        tmp,
        "sqlite",
        "filesystem",
        workers=2,
        ORTHANC_URL=orthanc.url,
        ORTHANC_PORT=orthanc.dicom_port,
        LOCKDOWN_ENABLED="true",
        LOCKDOWN_PASSWORDS=PASSWORD,
        API_TOKENS="e2e-token-0123456789abcdefghijklmnopqrstuv",
        SEND_TO_GOOGLE="false",
        SENDIT_LOG_LEVEL="INFO",
    )


class Site:
    """`manage.py runserver` for a node's settings (static files through WhiteNoise)."""

    def __init__(self, node):
        self.node = node
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout=30):
        log = open(self.node.tmp / "web.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload", "--insecure"],
            cwd=ROOT,
            env=self.node.env,
            stdout=log,
            stderr=log,
        )
        if not wait_for(self._answers, timeout, interval=0.2):
            raise RuntimeError("runserver did not answer; see web.log")
        return self

    def _answers(self):
        try:
            with urllib.request.urlopen(self.url + "/static/main/sendit.css", timeout=2):
                return True
        except OSError:
            return False

    def stop(self):
        stop_process(self.proc)


def chrome(width=1280, height=900):
    """Headless Debian Chromium through /usr/bin/chromedriver, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="sendit-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver._sendit_profile = profile
    return driver


def quit_chrome(driver):
    try:
        driver.quit()
    finally:
        shutil.rmtree(getattr(driver, "_sendit_profile", ""), ignore_errors=True)


def import_now(node, folder):
    """Import a folder in a one-off process: the batch is NEW and its next step waits in the broker."""
    code = f"from sendit.apps.main.tasks.import_dicom import import_dicomdir; import_dicomdir({str(folder)!r})"
    subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=ROOT,
        env=node.env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def live_attr(driver, selector, name):
    """An attribute read in one script call (the live part of the page is replaced every few seconds)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
        selector,
        name,
    )


def full_page(driver, path):
    """A screenshot of the whole page height."""
    height = driver.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, min(max(height + 120, 600), 4000))
    driver.save_screenshot(str(path))


def click_through(driver, element, timeout=30):
    """Click something that loads a new page and wait until that page is in: a find right after a
    bare click() can still see the old page, or no page at all, while the browser navigates."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    wait = WebDriverWait(driver, timeout)
    wait.until(expected_conditions.staleness_of(old))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def tour(node, site, driver, shots):
    """Walk the site; returns what it observed. `node` must be migrated but not started."""
    from selenium.webdriver.common.by import By

    shots = Path(shots)
    shots.mkdir(parents=True, exist_ok=True)
    seen = {}

    # A study imported while no worker runs: its batch waits as NEW.
    make_ct_series(node.data / "ST-000001", 6, patient_id=PATIENT_ID, patient_name=PATIENT_NAME)
    import_now(node, node.data / "ST-000001")

    # The lockdown: a wrong password is refused, the right one lets in.
    driver.get(site.url + "/")
    assert driver.find_element(By.ID, "lockdown-form")
    driver.find_element(By.ID, "id_password").send_keys("not the password")
    click_through(driver, driver.find_element(By.CSS_SELECTOR, "#lockdown-form button"))
    error = driver.find_element(By.ID, "password-error").text
    assert "Incorrect password" in error, error
    seen["wrong_password"] = error
    driver.save_screenshot(str(shots / "login-refused.png"))
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    click_through(driver, driver.find_element(By.CSS_SELECTOR, "#lockdown-form button"))
    row = '#batches tr[data-batch="ST-000001"]'
    assert wait_for(lambda: live_attr(driver, row, "data-status"), timeout=10) == "NEW"
    driver.execute_script("window.__sendit_marker = 'same page';")
    driver.save_screenshot(str(shots / "dashboard-new.png"))

    # Start the worker and the watcher: the dashboard follows the batch to DONE by itself.
    node.start()
    statuses = []

    def status():
        value = live_attr(driver, row, "data-status")
        if value and (not statuses or statuses[-1] != value):
            statuses.append(value)
        return value == "DONE"

    assert wait_for(status, timeout=120), (statuses, node.logs()[-3000:])
    assert driver.execute_script("return window.__sendit_marker") == "same page"  # no reload
    seen["statuses"] = ["NEW"] + [s for s in statuses if s != "NEW"]

    # A second study dropped into the data folder, with a file that is not DICOM: the good
    # images are delivered and the batch keeps them, with an error to look at.
    make_ct_series(node.data / "ST-000002.tmp1", 3, patient_id=PATIENT_ID, patient_name=PATIENT_NAME, seed=1)
    (node.data / "ST-000002.tmp1" / "notes.txt").write_text("not DICOM")
    (node.data / "ST-000002.tmp1").rename(node.data / "ST-000002")
    row2 = '#batches tr[data-batch="ST-000002"]'
    assert wait_for(lambda: live_attr(driver, row2, "data-status") == "DONEPROCESSING", timeout=120), node.logs()[
        -3000:
    ]
    watcher = driver.execute_script("return document.getElementById('watcher').innerText")
    assert "running" in watcher and "not running" not in watcher, watcher
    driver.save_screenshot(str(shots / "dashboard.png"))

    # The batch page: images per destination, the error, the steps, the actions.
    click_through(driver, driver.find_element(By.LINK_TEXT, "ST-000002"))
    assert "Batch ST-000002" in driver.find_element(By.TAG_NAME, "h1").text
    assert "not a DICOM file" in driver.find_element(By.ID, "errors").text
    assert len(driver.find_elements(By.CSS_SELECTOR, "#images .pill.ok")) == 3
    assert driver.find_elements(By.ID, "retry") and driver.find_elements(By.ID, "resend")
    full_page(driver, shots / "batch.png")
    driver.set_window_size(1280, 900)

    # An image: the de-identified header and the preview.
    click_through(driver, driver.find_element(By.CSS_SELECTOR, "#images a"))
    preview = driver.find_element(By.ID, "preview")
    assert wait_for(
        lambda: driver.execute_script(
            "const i = document.getElementById('preview'); return i.complete && i.naturalWidth > 0"
        ),
        timeout=10,
    )
    seen["preview_width"] = driver.execute_script("return arguments[0].naturalWidth", preview)
    header = driver.find_element(By.ID, "header").text
    assert "PatientIdentityRemoved" in header
    full_page(driver, shots / "image.png")
    driver.set_window_size(1280, 900)

    # The done batch's page, the settings page and the API's Swagger page.
    driver.get(site.url + "/")
    click_through(driver, driver.find_element(By.LINK_TEXT, "ST-000001"))
    assert "delivered and cleaned up" in driver.page_source
    assert driver.find_elements(By.CSS_SELECTOR, '#steps tr[data-step="cleanup"]')
    full_page(driver, shots / "batch-done.png")
    driver.set_window_size(1280, 900)
    driver.get(site.url + "/settings/")
    assert PASSWORD not in driver.page_source and "e2e-token" not in driver.page_source
    full_page(driver, shots / "settings.png")
    driver.set_window_size(1280, 900)
    driver.get(site.url + "/api/docs/")
    assert wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock"), timeout=20)
    driver.save_screenshot(str(shots / "api-docs.png"))

    # The same dashboard on a phone.
    driver.set_window_size(390, 844)
    driver.get(site.url + "/")
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 400
    full_page(driver, shots / "dashboard-phone.png")
    driver.set_window_size(1280, 900)

    # Nothing identifying on any page we saw.
    for url in ("/", "/settings/", f"/batches/{_batch_id(driver, site, 'ST-000002')}/"):
        driver.get(site.url + url)
        assert PATIENT_ID not in driver.page_source and "Zyxwvut" not in driver.page_source
    return seen


def _batch_id(driver, site, name):
    from selenium.webdriver.common.by import By

    driver.get(site.url + "/")
    href = driver.find_element(By.LINK_TEXT, name).get_attribute("href")
    return href.rstrip("/").rsplit("/", 1)[-1]
