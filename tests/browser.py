"""A real headless browser (Debian's chromium through Selenium and chromium-driver) for the explorer tests.

CI installs chromium, so a missing browser FAILS the tests; only MASKC_NO_BROWSER=1, set by hand for
a local run without chromium, turns that into a skip.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

BROWSERS = ("chromium", "chromium-browser")
DRIVERS = ("chromedriver",)
#: Where Debian's packages put them, looked in when they are not on PATH.
DEBIAN_BIN = Path("/usr/bin")


def missing(what: str) -> None:
    """Fail the test (CI installs the browser); skip it only when MASKC_NO_BROWSER=1."""
    message = f"{what} not found: the browser tests need it (.ci/run installs it; see README, Set-up)"
    if os.environ.get("MASKC_NO_BROWSER") == "1":
        pytest.skip(f"MASKC_NO_BROWSER=1: {message}")
    pytest.fail(message)


def _which(names: tuple[str, ...], folder: Path) -> str | None:
    for name in names:
        found = shutil.which(name) or (str(folder / name) if (folder / name).exists() else None)
        if found:
            return found
    return None


def browser_paths(
    browsers: tuple[str, ...] = BROWSERS, drivers: tuple[str, ...] = DRIVERS, folder: Path = DEBIAN_BIN
) -> tuple[str, str]:
    """(chromium, chromedriver), or the test fails (skips with MASKC_NO_BROWSER=1) naming what is missing."""
    browser, driver = _which(browsers, folder), _which(drivers, folder)
    if not (browser and driver):
        names = [name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path]
        missing(" and ".join(names) + " (Debian packages chromium and chromium-driver)")
    return str(browser), str(driver)


@contextmanager
def chromium(downloads: Path, width: int = 1500, height: int = 1100) -> Iterator[Any]:
    """A headless chromium session whose downloads land in `downloads`."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("the Python package selenium (installed by the `test` extra)")

    browser, driver_path = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
    ):
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


#: Longest wait for the explorer's page to reach a state (a first analysis at n = 4096 included).
TIMEOUT = 60.0


def wait_for(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """`condition()`'s first true value, polled every 50 ms; AssertionError naming `what` past `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def text(driver: Any, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def idle(driver: Any) -> bool:
    """No request in flight and no debounce pending (the status reads 'ready')."""
    return driver.execute_script("return document.body.dataset.pending === '0'") and text(driver, "status") == "ready"


def settle(driver: Any, timeout: float = TIMEOUT) -> None:
    """Wait until the page has answered every change (past its debounce, no request in flight)."""
    time.sleep(0.5)  # past the page's debounce
    wait_for(lambda: idle(driver), "the page to settle", timeout)
