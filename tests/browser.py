"""A headless Chromium driven by Selenium, for the browser end-to-end test.

Debian's `chromium` and `chromedriver` are used as installed (`./dev test` installs them when
missing); nothing is downloaded at test time (Selenium Manager is kept offline). Screenshots go
to test-artifacts/browser/ (or $AIINFN_TEST_ARTIFACTS/browser/) and are kept after the run.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")
FRAME_ERROR_MARKS = ("Content Security Policy", "/services/", "/hub/static/", "/hub/logo")


def artifacts_dir() -> Path:
    root = Path(os.environ.get("AIINFN_TEST_ARTIFACTS", REPO / "test-artifacts"))
    path = root / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


def chrome(profile_dir: Path) -> webdriver.Chrome:
    """A fresh headless Chromium with its own profile (its own cookies: one per user)."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        raise RuntimeError(
            "Debian's chromium and chromedriver are needed: "
            "apt-get install chromium chromium-driver "
            "(./dev test installs them when it runs as root)"
        )
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={profile_dir}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # for hub_frame_problems
    return webdriver.Chrome(service=Service(driver), options=options)


def wait_for(
    condition: Callable[[], T | None], what: str, timeout: float = 60.0, interval: float = 0.5
) -> T:
    """Poll until condition returns something truthy; WebDriver hiccups count as 'not yet'."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except WebDriverException as error:
            last_error = error
        time.sleep(interval)
    raise AssertionError(
        f"timed out waiting for {what}" + (f" (last error: {last_error.msg})" if last_error else "")
    )


def hub_frame_problems(driver: webdriver.Chrome) -> list[str]:
    """What is wrong with a service page's hub frame (aiinfn_hub/services/pages.py): no hub
    navigation bar, a dark-mode toggle that does nothing (its script did not run), or errors in
    the console (a script or style the Content-Security-Policy refused, a file not found)."""
    from selenium.webdriver.common.by import By

    problems = []
    if not driver.find_elements(By.CSS_SELECTOR, "nav.navbar #jupyterhub-logo"):
        problems.append("no hub navigation bar")
    theme = "return document.documentElement.getAttribute('data-bs-theme')"
    before = driver.execute_script(theme)
    toggles = driver.find_elements(By.ID, "dark-theme-toggle")
    if not toggles:
        problems.append("no dark-mode toggle")
    else:
        toggles[0].click()
        after = driver.execute_script(theme)
        if not before or after == before:
            problems.append(f"the dark-mode toggle did nothing ({before!r} -> {after!r})")
        toggles[0].click()
    # The log is the whole session's (JupyterLab in another tab too): only this frame's errors.
    problems.extend(
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"
        and any(mark in entry["message"] for mark in FRAME_ERROR_MARKS)
    )
    return problems
