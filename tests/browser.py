"""A real headless browser (Debian's chromium through Selenium and chromium-driver) for the explorer tests.

CI installs chromium, so a missing browser FAILS the tests; only MASKC_NO_BROWSER=1, set by hand for
a local run without chromium, turns that into a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

#: Where Debian's packages put the browser and its driver (looked up on PATH first).
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)


def _which(names: tuple[str, ...], fallback: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return fallback if Path(fallback).exists() else None


def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver); fails the test when either is missing, unless MASKC_NO_BROWSER=1."""
    browser = _which(BROWSERS, "/usr/bin/chromium")
    driver = _which(DRIVERS, "/usr/bin/chromedriver")
    if browser and driver:
        return browser, driver
    missing = " and ".join(name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path)
    message = (
        f"{missing} not found: install Debian's `chromium` and `chromium-driver` "
        "(apt-get install -y chromium chromium-driver), as .ci/run does"
    )
    if os.environ.get("MASKC_NO_BROWSER") == "1":
        pytest.skip(f"MASKC_NO_BROWSER=1: {message}")
    pytest.fail(message)


@contextmanager
def chromium(downloads: Path, width: int = 1500, height: int = 1100) -> Iterator[Any]:
    """A headless chromium session whose downloads land in `downloads`."""
    pytest.importorskip("selenium") if os.environ.get("MASKC_NO_BROWSER") == "1" else None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        yield driver
    finally:
        driver.quit()
