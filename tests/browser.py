"""A real headless browser for the page tests: Debian's chromium, driven by Selenium through
Debian's chromedriver (no browser download is possible here). `make test` installs both where
apt-get can; elsewhere the tests that need them are skipped, and say why."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
requires_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no chromium/chromedriver here (apt-get install chromium chromium-driver; "
    "`make test` installs them where it can)",
)
# Screenshots the page tests leave behind, for a person to look at.
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def start_browser(width: int = 1200, height: int = 1000) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--autoplay-policy=no-user-gesture-required",
        # A fake microphone (a tone), granted without asking: recording can be tested.
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def send_basic_auth(driver: Any, password: str) -> None:
    """Every request of the browser carries HTTP Basic with `password` (the key), as a person's
    browser would after its login dialog (headless Chrome shows none)."""
    token = base64.b64encode(f"browser:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
    )


def console_errors(driver: Any) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
