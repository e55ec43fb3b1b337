"""/docs in a real headless browser: Debian's chromium, driven by Selenium through chromedriver.

The page must load its script and style from the server itself (no CDN: these machines are
offline), fetch /openapi.json, and list every operation. A browser sends the key the way a
person's would: HTTP Basic, which the server asks for (here set as a header through the
DevTools protocol, since headless Chrome shows no login dialog).
"""

from __future__ import annotations

import pytest

from adapters.operations import OPERATIONS
from tests.browser import console_errors, requires_browser, send_basic_auth, start_browser

pytestmark = requires_browser


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


def test_the_docs_page_renders_every_operation_from_the_servers_own_files(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    key = server.headers()["Authorization"].removeprefix("Bearer ")
    send_basic_auth(browser, key)
    browser.get(f"{server.url}/docs")
    WebDriverWait(browser, 60).until(
        ready.presence_of_element_located((By.CSS_SELECTOR, ".opblock-summary-path"))
    )
    # Swagger UI gives each operation's block the id operations-TAG-OPERATIONID.
    shown = {
        block.get_attribute("id").rsplit("-", 1)[-1]
        for block in browser.find_elements(By.CSS_SELECTOR, ".opblock")
    }
    expected = {operation.name for operation in OPERATIONS} | {"metrics", "health", "openapi"}
    assert expected <= shown, f"missing: {sorted(expected - shown)}"
    paths = {e.text.replace("\u200b", "") for e in browser.find_elements(
        By.CSS_SELECTOR, ".opblock-summary-path")}  # fmt: skip
    assert {"/chat/completions", "/audio/transcriptions", "/metrics"} <= paths
    assert "Stratus" in browser.find_element(By.CSS_SELECTOR, ".info .title").text
    # Everything came from the server: no request left for another host.
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)"
    )
    assert origins and set(origins) == {server.url}, origins
    assert not console_errors(browser)


def test_without_the_key_the_page_shows_nothing_of_the_api(browser, server):
    send_basic_auth(browser, "wrong-key")
    browser.get(f"{server.url}/docs")  # a 401 asking for a login, which nobody gives
    assert "chat/completions" not in browser.page_source
    assert "swagger" not in browser.page_source.lower()
