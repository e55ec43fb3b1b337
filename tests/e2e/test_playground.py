"""The playground at / in a real headless browser (tests/browser.py), against the live server
with its keys: every panel does its job through the public OpenAI paths, Stop really stops, a
wrong key shows the API's 401, and the page is usable from the keyboard with labelled controls.
Each panel's screenshot is left in test-artifacts/playground/.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.browser import ARTIFACTS, console_errors, requires_browser, start_browser
from tests.conftest import LiveServer

pytestmark = requires_browser
SHOTS = ARTIFACTS / "playground"
COUNTING = "Write the numbers from 1 to 1000, one per line."
INTERACTIVE = {"button", "textbox", "combobox", "checkbox", "spinbutton", "tab", "link"}


@pytest.fixture(scope="module")
def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


def key_of(server: LiveServer) -> str:
    return server.headers()["Authorization"].removeprefix("Bearer ")


def open_page(browser, server: LiveServer, key: str | None, tab: str = "chat") -> None:
    """The page, freshly loaded with `key` already saved in this browser (as a returning
    visitor has it), showing `tab`."""
    browser.get(f"{server.url}/#{tab}")
    if key is None:
        browser.execute_script("localStorage.removeItem('stratus-api-key')")
    else:
        browser.execute_script("localStorage.setItem('stratus-api-key', arguments[0])", key)
    browser.refresh()
    wait_for(browser, lambda: browser.execute_script("return document.body.dataset.ready"))
    browser.get_log("browser")  # only what happens from here on counts


def wait_for(browser, condition: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        error = browser.execute_script("return document.getElementById('error').textContent")
        assert time.monotonic() < deadline, f"timed out; the page says: {error!r}"
        time.sleep(0.1)


def fill(browser, element_id: str, text: str) -> None:
    element = browser.find_element("id", element_id)
    element.clear()
    element.send_keys(text)


def shot(browser, name: str) -> None:
    browser.save_screenshot(str(SHOTS / f"{name}.png"))


def idle(server: LiveServer, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(f"{server.url}/health", headers=server.headers(), timeout=10).json()
        if health["active"] == 0 and health["waiting"] == 0:
            return True
        time.sleep(0.1)
    return False


def test_the_page_is_served_with_its_policy_and_loads_without_console_errors(browser, server):
    answer = httpx.get(f"{server.url}/", timeout=30)  # open: the page holds only code
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert httpx.get(f"{server.url}/playground/chat.js").headers["cache-control"] == "no-cache"
    assert httpx.get(f"{server.url}/playground/..%2Fhttp.py").status_code == 404
    open_page(browser, server, key_of(server))
    models = wait_for(browser, lambda: browser.execute_script(
        "return [...document.querySelectorAll('#models option')].map(o => o.value)"))  # fmt: skip
    assert "gpt-4o-mini" in models
    assert browser.find_element("id", "error").get_attribute("hidden") is not None
    assert not console_errors(browser)


def test_a_chat_streams_into_the_page(browser, server):
    open_page(browser, server, key_of(server))
    browser.execute_script(
        """window.updates = 0;
        new MutationObserver(() => window.updates++).observe(
            document.getElementById('chat-log'),
            {childList: true, subtree: true, characterData: true});"""
    )
    browser.find_element("id", "chat-system").clear()  # greedy, it counts (see below)
    fill(browser, "chat-max-tokens", "40")
    fill(browser, "chat-temperature", "0")
    fill(browser, "chat-message", COUNTING)
    browser.find_element("id", "chat-send").click()
    wait_for(browser, lambda: browser.execute_script(
        "const a = document.querySelector('.message.assistant .content');"
        "return a && a.dataset.done === 'true'"))  # fmt: skip
    answer = browser.find_element("css selector", ".message.assistant .content").text
    assert len(answer) > 10, answer
    # Before it finished, the answer was updated many times, once per arriving chunk or so.
    assert browser.execute_script("return window.updates") >= 3
    assert not console_errors(browser)
    shot(browser, "chat")


def test_a_chat_can_send_an_image_to_a_vision_model(browser, server, tmp_path):
    from PIL import Image

    picture = tmp_path / "red.png"
    Image.new("RGB", (120, 80), (200, 30, 40)).save(picture)
    open_page(browser, server, key_of(server))
    fill(browser, "chat-model", "gpt-4-vision-preview")  # tiny-vlm, generated on first use
    fill(browser, "chat-max-tokens", "8")
    fill(browser, "chat-message", "What is in this image?")
    browser.find_element("id", "chat-image").send_keys(str(picture))
    browser.find_element("id", "chat-send").click()
    wait_for(browser, lambda: browser.execute_script(
        "const a = document.querySelector('.message.assistant .content');"
        "return a && a.dataset.done === 'true'"), timeout=180)  # fmt: skip
    assert browser.find_element("id", "error").get_attribute("hidden") is not None
    shown = browser.find_element("css selector", ".message.user img.attached")
    assert browser.execute_script("return arguments[0].naturalWidth", shown) == 120
    # Sent: the file input is cleared for the next message; the conversation keeps the image.
    assert browser.find_element("id", "chat-image").get_attribute("value") == ""
    assert not console_errors(browser)
    shot(browser, "chat-image")


def test_stop_ends_the_generation_and_frees_the_slot(browser, server):
    open_page(browser, server, key_of(server))
    # Greedy and without a system prompt, SmolLM2 counts on for hundreds of tokens (with the
    # default system prompt it answers in one line): Stop comes while it generates.
    browser.find_element("id", "chat-system").clear()
    fill(browser, "chat-temperature", "0")
    fill(browser, "chat-max-tokens", "2000")
    fill(browser, "chat-message", COUNTING)
    browser.find_element("id", "chat-send").click()
    wait_for(browser, lambda: len(browser.find_element(
        "css selector", ".message.assistant .content").text) > 10)  # fmt: skip
    browser.find_element("id", "chat-stop").click()
    stopped = "return document.querySelector('.message.assistant .content').dataset.stopped"
    wait_for(browser, lambda: browser.execute_script(stopped))
    assert idle(server, timeout=5), "the generation still holds its slot after Stop"
    assert browser.find_element("id", "chat-send").is_enabled()


def test_speech_plays_and_can_be_downloaded(browser, server):
    open_page(browser, server, key_of(server), "speech")
    fill(browser, "speech-input", "Hello from the playground. This is a test of streaming speech.")
    browser.find_element("css selector", "#speech-form button[type=submit]").click()
    duration = wait_for(browser, lambda: browser.execute_script(
        "const a = document.getElementById('speech-audio');"
        "return isFinite(a.duration) && a.duration > 0 ? a.duration : 0"))  # fmt: skip
    assert duration > 1.0
    link = browser.find_element("id", "speech-download")
    wait_for(browser, link.is_displayed)
    assert link.get_attribute("download") == "speech.mp3"
    assert not console_errors(browser)
    shot(browser, "speech")


def test_an_uploaded_file_is_transcribed(browser, server, tmp_path):
    sentence = "The quick brown fox jumps over the lazy dog."
    audio = httpx.post(
        f"{server.url}/v1/audio/speech",
        headers=server.headers(),
        json={"model": "tts-1", "voice": "alloy", "input": sentence, "response_format": "mp3"},
        timeout=120,
    )
    path = tmp_path / "fox.mp3"
    path.write_bytes(audio.content)
    open_page(browser, server, key_of(server), "transcription")
    browser.find_element("id", "transcription-file").send_keys(str(path))
    browser.find_element("css selector", "#transcription-form button[type=submit]").click()
    wait_for(browser, lambda: browser.find_elements("css selector", "#transcription-segments li"))
    text = browser.find_element("id", "transcription-segments").text.lower()
    assert "quick" in text and "fox" in text and "dog" in text
    assert "0:00.0" in text  # each segment with its start and end
    shot(browser, "transcription")


def test_a_recording_from_the_microphone_is_sent_for_transcription(browser, server):
    open_page(browser, server, key_of(server), "transcription")
    browser.execute_script(
        """window.sent = [];
        const original = window.fetch;
        window.fetch = (url, options) => {
            window.sent.push(String(url));
            return original(url, options);
        };"""
    )
    record = browser.find_element("id", "transcription-record")
    record.click()
    wait_for(browser, lambda: record.text.startswith("Stop recording"))
    time.sleep(1.5)  # the fake microphone's tone
    record.click()
    wait_for(browser, lambda: browser.execute_script(
        "return document.getElementById('transcription-segments').getAttribute('aria-busy')"
        " === 'false'"))  # fmt: skip
    assert any(url.endswith("/v1/audio/transcriptions") for url in browser.execute_script(
        "return window.sent"))  # fmt: skip
    assert browser.find_element("id", "error").get_attribute("hidden") is not None


def test_model_output_is_rendered_as_text_never_as_html(browser, server):
    open_page(browser, server, key_of(server))
    hostile = (
        'Hi <img src=x onerror="window.pwned=1"> **bold** `<b>code</b>`\n\n'
        '```\n<script>window.pwned=1</script>\n```\n- <a href="javascript:x">item</a>'
    )
    html = browser.execute_async_script(
        """const [text, done] = arguments;
        import('./playground/markdown.js').then((markdown) => {
            const into = document.createElement('div');
            markdown.render(text, into);
            document.body.append(into);
            done(into.innerHTML);
        });""",
        hostile,
    )
    assert "<img" not in html and "<script" not in html and "<a " not in html
    assert "&lt;img" in html and "<strong>bold</strong>" in html and "<pre><code>" in html
    assert browser.execute_script("return window.pwned === undefined")


def test_an_image_appears_with_the_requested_size(browser, server):
    open_page(browser, server, key_of(server), "images")
    fill(browser, "images-size", "64x64")
    fill(browser, "images-seed", "7")
    browser.find_element("css selector", "#images-form button[type=submit]").click()
    size_shown = (
        "const i = document.querySelector('#images-gallery img');"
        "return i && i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null"
    )
    size = wait_for(browser, lambda: browser.execute_script(size_shown))
    assert size == [64, 64]
    shot(browser, "images")


def test_embeddings_make_a_similarity_matrix(browser, server):
    open_page(browser, server, key_of(server), "embeddings")
    browser.find_element("css selector", "#embeddings-form button[type=submit]").click()
    matrix = "#embeddings-matrix tbody td"
    cells = wait_for(browser, lambda: browser.find_elements("css selector", matrix))
    values = [float(cell.text) for cell in cells]
    assert len(values) == 9 and values[0] == values[4] == values[8] == 1.0
    # The two sentences about cats are closer to each other than to the stock market.
    assert values[1] > values[2]
    shot(browser, "embeddings")


def test_rerank_lists_the_documents_best_first(browser, server):
    open_page(browser, server, key_of(server), "rerank")
    browser.find_element("css selector", "#rerank-form button[type=submit]").click()
    rows = "#rerank-results tbody tr"
    found = wait_for(browser, lambda: browser.find_elements("css selector", rows))
    cells = [[cell.text for cell in row.find_elements("css selector", "td")] for row in found]
    assert [c[0] for c in cells] == ["1", "2", "3"]
    assert cells[0][2] == "A kitten rests on a warm rug."  # the one about cats
    scores = [float(c[1]) for c in cells]
    assert scores == sorted(scores, reverse=True)
    used = browser.find_element("css selector", "#rerank-model-used").text
    assert used == "Ranked by all-minilm-l6-v2 (bi-encoder, cosine)"
    shot(browser, "rerank")


def test_tokenize_lists_each_token_with_its_piece(browser, server):
    open_page(browser, server, key_of(server), "tokenize")
    browser.find_element("css selector", "#tokenize-form button[type=submit]").click()
    items = "#tokenize-tokens li"
    found = wait_for(browser, lambda: browser.find_elements("css selector", items))
    pieces = [json.loads(item.text.split(" ", 1)[1]) for item in found]
    assert "".join(pieces) == "Hello, world!"
    count = browser.find_element("css selector", "#tokenize-count").text
    assert count == f"{len(found)} tokens"
    shot(browser, "tokenize")


def test_a_wrong_key_shows_the_401_message(browser, server):
    open_page(browser, server, "wrong-key")
    message = wait_for(browser, lambda: browser.find_element("id", "error").text)
    assert message.startswith("401: Incorrect API key provided.")
    assert "invalid_api_key" in message
    shot(browser, "wrong-key")


def accessibility_tree(browser) -> list[dict]:
    browser.execute_cdp_cmd("Accessibility.enable", {})
    return browser.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]


def test_every_control_has_a_name_in_the_accessibility_tree(browser, server):
    for tab in ("chat", "speech", "transcription", "images", "embeddings"):
        open_page(browser, server, key_of(server), tab)
        unnamed = []
        roles = set()
        for node in accessibility_tree(browser):
            role = node.get("role", {}).get("value")
            if node.get("ignored") or role not in INTERACTIVE:
                continue
            roles.add(role)
            if not node.get("name", {}).get("value", "").strip():
                unnamed.append((role, node.get("backendDOMNodeId")))
        assert not unnamed, f"{tab}: controls without a name: {unnamed}"
        assert {"button", "tab", "textbox"} <= roles, tab


def test_the_page_works_from_the_keyboard_alone(browser, server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(browser, server, key_of(server))
    keys = ActionChains(browser)

    def focused() -> str:
        return browser.execute_script("return document.activeElement.id")

    reached = []
    for _ in range(30):  # Tab through the page from its start
        keys.send_keys(Keys.TAB).perform()
        reached.append(focused())
        if focused() == "chat-message":
            break
    assert "tab-chat" in reached and "chat-message" in reached, reached
    # The tabs: arrows move between them, and the panel follows.
    browser.find_element("id", "tab-chat").send_keys(Keys.ARROW_RIGHT)
    assert focused() == "tab-speech"
    assert browser.find_element("id", "panel-speech").is_displayed()
    browser.find_element("id", "tab-speech").send_keys(Keys.ARROW_LEFT)
    assert focused() == "tab-chat" and browser.find_element("id", "panel-chat").is_displayed()
    # A message typed and sent with Ctrl+Enter, no mouse.
    message = browser.find_element("id", "chat-message")
    message.send_keys("Say hi.")
    message.send_keys(Keys.CONTROL, Keys.ENTER)
    wait_for(browser, lambda: browser.execute_script(
        "const a = document.querySelector('.message.assistant .content');"
        "return a && a.dataset.done === 'true'"))  # fmt: skip
    assert browser.find_element("css selector", ".message.user .content").text == "Say hi."
