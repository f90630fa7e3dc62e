"""The dashboard in a real browser: `streamlit run` on 127.0.0.1, loaded in headless Chromium.

Needs Debian's Chromium and its driver (`apt-get install -y chromium chromium-driver`, as CI
does) and Selenium (`pip install -e '.[dev]'`). Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixmo_search import tracking, trial_table
from tests.waiting import scaled, wait_until

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "app" / "dashboard.py"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1200",
)
SERVER_FLAGS = ("--server.address", "127.0.0.1", "--server.headless", "true",
                "--browser.gatherUsageStats", "false")  # fmt: skip
START_S, RENDER_S = 90, 90  # a cold start on a busy 2-core machine takes a while


@pytest.fixture
def dashboard_url(truth_store, tmp_path, free_port) -> Iterator[str]:
    """`streamlit run app/dashboard.py` on a free port of 127.0.0.1, on the one-truth search
    (a conditional param, a tie, an all-pruned value: tests/spaces/one_truth.yaml)."""
    port = free_port
    log = (tmp_path / "streamlit.log").open("w", buffering=1)
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(DASHBOARD), "--server.port", str(port),
         *SERVER_FLAGS],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_TRACKING_URI": truth_store.uri},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, server, tmp_path / "streamlit.log")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=scaled(20))
        log.close()


def wait_until_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    def healthy() -> bool:
        assert server.poll() is None, f"streamlit exited:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return True
        except OSError:  # not listening yet, or not healthy yet
            return False

    wait_until(healthy, START_S, f"streamlit's health check on {url}", interval=0.5)


@pytest.fixture
def browser():
    """Headless Chromium through Selenium, with a fresh profile."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.fail(
            f"{CHROMIUM} or {CHROMEDRIVER} is missing; install them with "
            "`apt-get update && apt-get install -y chromium chromium-driver`"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing; install the dev extra: pip install -e '.[dev]'")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(driver, css: str, *, count: int = 1) -> list:
    """The elements matching `css`, once at least `count` exist (fails after RENDER_S)."""
    from selenium.webdriver.common.by import By

    def found() -> list:
        elements = driver.find_elements(By.CSS_SELECTOR, css)
        return elements if len(elements) >= count else []

    return wait_until(found, RENDER_S, f"{count} element(s) matching {css!r} in the page")


def no_exception(driver) -> None:
    from selenium.webdriver.common.by import By

    shown = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert not shown, shown[0].text


PAGES = {  # url path: the page's heading
    "": "Trials of",
    "tradeoff": "Accuracy vs diversity",
    "cost": "Accuracy vs inference cost",
    "parameters": "Parameters",
    "compare": "Compare trials",
    "ensembles": "Ensembles across trials",
    "robustness": "Robustness to corruptions",
    "ood": "Out-of-distribution detection",
    "promote": "Promote a trial of",
}
CHARTED = {"tradeoff": 1, "cost": 1, "parameters": 1, "robustness": 2, "ood": 2}  # figures
TRUTH_CHARTED = {"tradeoff": 1, "cost": 1, "parameters": 2}  # no corruptions nor OOD set
FIGURES_JS = """return Array.from(document.querySelectorAll('.js-plotly-plot')).map(plot => ({
    names: plot.data.map(trace => trace.name),
    xaxis: plot._fullLayout.xaxis ? plot._fullLayout.xaxis.type : null,
    labels: Array.from(plot.querySelectorAll('.textpoint text')).map(t => t.textContent),
}));"""


def visit(browser, url: str, path: str, heading: str, prefix: str, charted: dict) -> list[dict]:
    """Open a page, wait for its heading, its `charted[path]` charts and its table,
    screenshot it; its figures."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{url}/{path}")
    WebDriverWait(browser, RENDER_S).until(
        lambda d: any(heading in h.text for h in d.find_elements(By.CSS_SELECTOR, "h2"))
    )
    if path in charted:
        wait_for(browser, ".js-plotly-plot .plot-container", count=charted[path])
    if path == "":
        wait_for(browser, '[data-testid="stDataFrame"] canvas')
    time.sleep(1)  # let the charts and the grid paint before the screenshot
    browser.save_screenshot(str(ARTIFACTS / f"{prefix}-{path or 'trials'}.png"))
    no_exception(browser)
    return browser.execute_script(FIGURES_JS)


def test_every_page_of_the_one_truth_search_in_chromium(dashboard_url, browser, truth_store):
    """Every page screenshotted at 1400 px, the width the Trials table is laid out for: its
    test columns and MLflow links in view, M = 1 trials without a mixing block."""
    from selenium.webdriver.common.by import By

    client = tracking.connect(truth_store.uri)
    exp_id = tracking.experiment_id(client, create=False)
    trials = trial_table.trial_record(client, exp_id, truth_store.parent_run_id)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1400, 1000)
    figures = {path: visit(browser, dashboard_url, path, heading, "truth", TRUTH_CHARTED)
               for path, heading in PAGES.items()}  # fmt: skip
    browser.get(dashboard_url)
    (table,) = wait_for(browser, '[data-testid="stDataFrame"]')
    assert table.size["height"] > 35 * len(trials)  # a header and a row per trial
    assert truth_store.name in browser.find_element(By.TAG_NAME, "h2").text
    # the grid's accessible table lists the columns it renders (those in view), in order
    wait_for(browser, '[data-testid="stDataFrame"] th', count=FIRST_IN_VIEW)
    headers = browser.execute_script(HEADERS_JS)
    assert {"MLflow", "test/acc", "test/nll"} <= set(headers[:FIRST_IN_VIEW]), headers
    (tradeoff,) = figures["tradeoff"]
    assert "Pareto front" in tradeoff["names"]
    assert any(name.startswith("—") for name in tradeoff["names"])  # M = 1: no block
    assert any(label.startswith("×") for label in tradeoff["labels"])  # the tied trials


HEADERS_JS = """return Array.from(document.querySelectorAll(
    '[data-testid="stDataFrame"] th')).map(h => h.textContent.trim());"""
FIRST_IN_VIEW = 9  # columns of the Trials grid in view at 1400 px (the truth-trials.png shot)


@pytest.fixture
def repository_dashboard(ensemble_store, tmp_path, free_port) -> Iterator[tuple[str, Path]]:
    """`streamlit run app/dashboard.py` from the repository root, as `make dashboard` runs
    it: app/.streamlit/config.toml (beside the script), not flags, sets the address, toolbar
    and usage stats."""
    log_path = tmp_path / "streamlit.log"
    log = log_path.open("w", buffering=1)
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(DASHBOARD), "--server.port",
         str(free_port), "--server.headless", "true"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_TRACKING_URI": ensemble_store.uri, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{free_port}"
    try:
        wait_until_healthy(url, server, log_path)
        yield url, log_path
    finally:
        server.terminate()
        server.wait(timeout=scaled(20))
        log.close()


def test_every_page_in_chromium_with_mixmo_beside_deep_ensembles(
    repository_dashboard, browser, ensemble_store
):
    from selenium.webdriver.common.by import By

    url, log = repository_dashboard
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    figures = {path: visit(browser, url, path, heading, "walk", CHARTED) for path, heading in
               PAGES.items()}  # fmt: skip
    # app/.streamlit/config.toml's minimal toolbar: no "Deploy" button
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stAppDeployButton"]')

    (cost,) = figures["cost"]
    drawn = {"vanilla (M=1)", "MixMo M=2", "deep ensemble of k vanilla trials"}
    assert drawn <= set(cost["names"])
    assert cost["xaxis"] == "log"  # the inference-cost axis
    assert {"k=2", "k=3"} <= set(cost["labels"])  # the deep-ensemble points, drawn
    assert figures["parameters"][1]["xaxis"] == "category"  # the slice on M, a categorical
    robust_cost, _ = figures["robustness"]  # then accuracy by corruption and severity
    assert "deep ensemble of k vanilla trials" in robust_cost["names"]
    roc, ood_cost = figures["ood"]
    assert "chance" in roc["names"] and ood_cost["xaxis"] == "log"
    text = log.read_text()
    assert f"URL: {url}" in text and "Network URL" not in text  # bound to loopback only
