"""End to end in a real browser: upload the sample photos, run a preview job, view, diagnose, approve.

Runs the real Streamlit server and the real pipeline in a private data folder; screenshots go to tests/_artifacts/.
Deselect with ``-m "not browser"``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from core.jobs.intake import sample_photos

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO_ROOT / "tests" / "_artifacts"
JOB_TIMEOUT_S = float(os.environ.get("PRODUCT_STUDIO_E2E_TIMEOUT", "1500"))
"""A preview run on the sample takes minutes on two shared cores."""

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER}", allow_module_level=True)

from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(studio_data: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "PRODUCT_STUDIO_DATA": str(studio_data), "PRODUCT_STUDIO_MAX_JOBS": "1"}
    env.pop("PRODUCT_STUDIO_WORKER", None)  # the real worker and pipeline
    log = open(studio_data / "streamlit.log", "wb")  # noqa: SIM115 - closed in teardown
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "Home.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError("streamlit did not start:\n" + (studio_data / "streamlit.log").read_text())
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
        log.close()
        _stop_workers(studio_data)


def _stop_workers(root: Path) -> None:
    """Workers run in their own sessions: stop the ones this test's server started, by their recorded ids."""
    from core.jobs.store import Store

    store = Store(root)
    for job in store.list_jobs(("starting", "running")):
        if job.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(job.pid, signal.SIGKILL)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--window-size=1400,1800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver, name: str) -> None:
    time.sleep(1.5)  # let Streamlit finish drawing (elements arrive as the script runs)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _page_text(driver) -> str:
    try:
        return driver.find_element(By.TAG_NAME, "body").text
    except WebDriverException:
        return ""


def _wait_text(driver, text: str, timeout: float = 60) -> None:
    WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: text in _page_text(d),
                                                             message=f"'{text}' never appeared")


def _assert_no_errors(driver, where: str) -> None:
    exceptions = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert not exceptions, f"{where}: exception on the page: {exceptions[0].text[:500]}"
    errors = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]')
    assert not errors, f"{where}: error shown: {errors[0].text[:500]}"


def _fill(driver, label: str, text: str) -> None:
    selector = f'input[aria-label="{label}"], textarea[aria-label="{label}"]'
    field = WebDriverWait(driver, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, selector),
                                            message=f"no field '{label}'")
    field.clear()
    field.send_keys(text)
    field.send_keys(Keys.TAB)  # Streamlit commits a text field when it loses focus


def _click_button(driver, label: str) -> None:
    button = WebDriverWait(driver, 30).until(
        lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button")
                        if b.text.strip() == label and b.is_enabled()), None), message=f"no enabled '{label}' button")
    _click(driver, button)


def _click(driver, element) -> None:
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    time.sleep(0.3)
    try:
        element.click()
    except WebDriverException:  # covered by a toast or still animating: a DOM click does the same
        driver.execute_script("arguments[0].click();", element)


def test_upload_run_view_diagnose_approve(server: str, browser, studio_data: Path, tmp_path: Path) -> None:
    sample = sample_photos()
    if len(sample) < 3:
        pytest.skip("the sample capture is not in assets/sample/images")
    photos = []  # a snapshot, so the test does not depend on the sample staying untouched while it runs
    for path in sample:
        photos.append(tmp_path / "upload" / path.name)
        photos[-1].parent.mkdir(exist_ok=True)
        shutil.copyfile(path, photos[-1])
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    try:
        _journey(server, browser, studio_data, photos)
    except BaseException:
        _shot(browser, "failure")
        (ARTIFACTS / "failure.txt").write_text(_page_text(browser))
        raise


def _check_textured_viewer(driver) -> None:
    """The textured asset rendered in <model-viewer> (served inline by the app): its load event fired and the
    canvas shows something other than the background."""
    assert "Textured asset" in _page_text(driver) and "Download USDZ" in _page_text(driver)
    frame = WebDriverWait(driver, 60).until(
        lambda d: next((f for f in d.find_elements(By.TAG_NAME, "iframe")
                        if "model-viewer" in (f.get_attribute("srcdoc") or "")), None),
        message="no <model-viewer> component on the page")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", frame)
    driver.switch_to.frame(frame)
    try:
        WebDriverWait(driver, 120, poll_frequency=1).until(
            lambda d: d.execute_script("return document.body.dataset.loaded || ''") in ("true", "error"),
            message="<model-viewer> never loaded the asset")
        assert driver.execute_script("return document.body.dataset.loaded") == "true"
        assert driver.execute_script("return document.getElementById('asset').loaded") is True
        time.sleep(3)  # first frames
        png = driver.find_element(By.TAG_NAME, "model-viewer").screenshot_as_png
    finally:
        driver.switch_to.default_content()
    import io

    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float64)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "05b_textured_viewer.png").write_bytes(png)
    background = np.median(pixels.reshape(-1, 3), axis=0)
    drawn = np.abs(pixels - background).max(axis=2) > 30
    assert drawn.mean() > 0.02, f"the model-viewer canvas looks blank ({drawn.mean():.3f} of pixels drawn)"


def _journey(server: str, driver, studio_data: Path, photos: list[Path]) -> None:

    driver.get(server)
    _wait_text(driver, "No finished runs yet")
    _assert_no_errors(driver, "home")
    _shot(driver, "01_home_empty")

    driver.get(f"{server}/New_capture")
    _wait_text(driver, "New capture")
    _fill(driver, "Product name", "Sample bottle <b>bold?</b>")
    _fill(driver, "SKU", "BOTTLE-001")
    upload = driver.find_elements(By.CSS_SELECTOR, 'input[type="file"]')[0]
    upload.send_keys("\n".join(str(p) for p in photos))
    _wait_text(driver, "photos accepted", timeout=300)
    assert f"{len(photos)} of {len(photos)} photos accepted" in _page_text(driver)
    _click(driver, driver.find_element(By.XPATH, "//label[contains(., 'Preview —')]"))
    time.sleep(1)
    _assert_no_errors(driver, "new capture")
    _shot(driver, "02_upload_checked")
    _click_button(driver, "Start")

    WebDriverWait(driver, 60).until(lambda d: "job=" in d.current_url, message="no job id in the URL")
    job_id = driver.current_url.split("job=")[1].split("&")[0]
    _wait_text(driver, "Time left", timeout=60)
    _wait_text(driver, "Now:", timeout=120)
    time.sleep(8)
    _shot(driver, "03_job_running")
    driver.refresh()  # the job survives a reload: the URL brings the page back to it
    _wait_text(driver, "Time left", timeout=60)

    from core.jobs.store import Store

    store = Store(studio_data)
    deadline = time.time() + JOB_TIMEOUT_S
    while time.time() < deadline and not store.get_job(job_id).is_final:
        time.sleep(3)
    job = store.get_job(job_id)
    assert job.status == "done", f"job ended {job.status}: {job.error}"
    _wait_text(driver, "Finished", timeout=60)
    _assert_no_errors(driver, "finished job")
    _shot(driver, "04_job_done")

    driver.get(f"{server}/Viewer?job={job_id}")
    WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"),
                                     message="the 3D view never appeared")
    time.sleep(4)  # let WebGL draw
    _assert_no_errors(driver, "viewer")
    assert "Download GLB" in _page_text(driver)
    _shot(driver, "05_viewer")
    _check_textured_viewer(driver)

    driver.get(f"{server}/Diagnostics?job={job_id}")
    _wait_text(driver, "Time per stage", timeout=120)
    time.sleep(3)
    _assert_no_errors(driver, "diagnostics")
    _shot(driver, "06_diagnostics")
    sfm = driver.find_elements(By.XPATH, "//summary[contains(., 'Placing cameras')]")
    if sfm:
        _click(driver, sfm[0])
        time.sleep(3)
        _shot(driver, "07_diagnostics_sfm")
        heading = driver.find_elements(By.XPATH, "//*[contains(text(), 'Which photos matched which')]")
        if heading:
            driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", heading[0])
            _shot(driver, "07b_diagnostics_matches")
        _click(driver, sfm[0])  # fold it again
    depth = driver.find_elements(By.XPATH, "//summary[contains(., 'Estimating depth')]")
    if depth:
        _click(driver, depth[0])
        time.sleep(4)
        _assert_no_errors(driver, "depth panel")
        _shot(driver, "07c_diagnostics_depth")

    # Approval needs a 3D model; until the pipeline makes a mesh the reviewer can only reject (with a note).
    from core.report.runs import read_manifest

    has_mesh = "mesh.ply" in (read_manifest(store.run_dir(job)).artifacts or {})
    decision = "approved" if has_mesh else "rejected"
    driver.get(f"{server}/Review?job={job_id}")
    _wait_text(driver, "Your decision", timeout=60)
    _fill(driver, "Your name", "E2E Reviewer")
    _fill(driver, "Note (what is good or what must change)", "Checked in the browser test.")
    if not has_mesh:
        assert "cannot be approved" in _page_text(driver)
    _click_button(driver, "Save decision")
    _wait_text(driver, f"Saved: {decision}", timeout=60)
    time.sleep(1)
    _assert_no_errors(driver, "review")
    _shot(driver, "08_review_decided")

    reviews = store.reviews(job_id)
    assert [(r.reviewer, r.decision, r.note) for r in reviews] == [
        ("E2E Reviewer", decision, "Checked in the browser test.")]

    driver.get(server)
    _wait_text(driver, "Recent runs")
    _assert_no_errors(driver, "home with a run")
    _shot(driver, "09_home_with_run")


def test_sticker_upload_theme_result_downloads(server: str, browser, studio_data: Path, tmp_path: Path) -> None:
    """The sticker mode: one photo, a theme from the list, the finished sticker with its theme, the downloads."""
    from test_sticker import subject_photo

    photo = tmp_path / "upload" / "toy.jpg"
    subject_photo(photo, "figure")
    try:
        _sticker_journey(server, browser, studio_data, photo)
    except BaseException:
        _shot(browser, "sticker_failure")
        (ARTIFACTS / "sticker_failure.txt").write_text(_page_text(browser))
        raise


def _sticker_journey(server: str, driver, studio_data: Path, photo: Path) -> None:
    driver.get(f"{server}/New_capture")
    _wait_text(driver, "New capture")
    _fill(driver, "Product name", "Toy sticker")
    driver.find_elements(By.CSS_SELECTOR, 'input[type="file"]')[0].send_keys(str(photo))
    _wait_text(driver, "1 of 1 photos accepted", timeout=300)
    _click(driver, driver.find_element(By.XPATH, "//label[contains(., '3D cartoon sticker from one photo')]"))
    _wait_text(driver, "Theme used:", timeout=60)
    combo = WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.XPATH, "//*[@data-testid='stSelectbox']//input"), message="no theme picker")
    _click(driver, combo)
    combo.send_keys("Retro and Vintage")  # the picker filters its options as one types
    time.sleep(1)
    combo.send_keys(Keys.ENTER)
    _wait_text(driver, "Theme used: Retro and Vintage", timeout=60)
    _assert_no_errors(driver, "sticker mode")
    _shot(driver, "s1_sticker_theme")
    _click_button(driver, "Start")

    WebDriverWait(driver, 60).until(lambda d: "job=" in d.current_url, message="no job id in the URL")
    job_id = driver.current_url.split("job=")[1].split("&")[0]
    from core.jobs.store import Store

    store = Store(studio_data)
    deadline = time.time() + 600
    while time.time() < deadline and not store.get_job(job_id).is_final:
        time.sleep(2)
    job = store.get_job(job_id)
    assert job.status == "done", f"job ended {job.status}: {job.error}"
    assert job.mode == "sticker"
    _wait_text(driver, "Theme: Retro and Vintage", timeout=90)
    _assert_no_errors(driver, "finished sticker job")
    _shot(driver, "s2_sticker_done")

    driver.get(f"{server}/Viewer?job={job_id}")
    WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"),
                                     message="the 3D view never appeared")
    _wait_text(driver, "Download WebP", timeout=60)
    time.sleep(3)
    _assert_no_errors(driver, "sticker viewer")
    text = _page_text(driver)
    for label in ("Download GLB (3D sticker)", "Download PNG (transparent)", "Download WebP (WhatsApp, Telegram)"):
        assert label in text, label
    assert "Theme: Retro and Vintage" in text and "matched the keyword" not in text  # picked by its name
    assert driver.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img'), "the sticker image is not shown"
    _shot(driver, "s3_sticker_viewer")
