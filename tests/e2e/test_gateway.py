"""The HTTP gateway: SSE framing, errors in the envelope, auth, queueing, client disconnects."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from tests.conftest import API_KEYS, MAX_BODY_BYTES, MAX_QUEUE

CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello!"}]}
# ignore_eos keeps the model generating until max_tokens: a long, busy stream on demand.
LONG_STREAM = {**CHAT, "stream": True, "max_tokens": 1500, "ignore_eos": True}
OTHER_MODEL = {"model": "text-embedding-ada-002", "input": "hello"}


def assert_envelope(response: httpx.Response, status: int, code=None, param=None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def test_raw_sse_framing(http):
    with http.stream(
        "POST", "/v1/chat/completions", json={**CHAT, "stream": True, "max_tokens": 6}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") and "\n" not in e for e in events[:-1])
    assert {p["id"] for p in payloads} == {payloads[0]["id"]}
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert payloads[-1]["choices"][0]["delta"] == {}


def test_unprefixed_paths_work_like_v1(http):
    assert http.get("/models").json()["object"] == "list"
    response = http.post("/chat/completions", json={**CHAT, "max_tokens": 2})
    assert response.json()["object"] == "chat.completion"


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b'{"model": "gpt-4", "messages": [', {"content-type": "application/json"}, 400, None),
        (b"\xff\xfe", {"content-type": "application/json"}, 400, None),
        (b"[1, 2]", {"content-type": "application/json"}, 400, None),
        (b"[" * 100_000, {"content-type": "application/json"}, 413, None),
        (b"[" * 20_000 + b"]" * 20_000, {"content-type": "application/json"}, 400, None),
        (
            b'{"model": "gpt-4", "messages": [{"role": "user", "content": "\\ud800"}]}',
            {"content-type": "application/json"},
            400,
            None,
        ),
        (
            b"model=gpt-4",
            {"content-type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
        (
            b"x" * (MAX_BODY_BYTES + 1),
            {"content-type": "application/json"},
            413,
            "payload_too_large",
        ),
    ],
)
def test_malformed_bodies_get_the_envelope(http, content, headers, status, code):
    response = http.post("/v1/chat/completions", content=content, headers=headers)
    assert_envelope(response, status, code=code)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": CHAT["messages"]}, "model"),
        ({"model": "gpt-4"}, "messages"),
        ({**CHAT, "temperature": 3}, "temperature"),
        ({**CHAT, "n": 0}, "n"),
        ({**CHAT, "max_tokens": -1}, "max_tokens"),
        ({**CHAT, "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({**CHAT, "stream": "maybe"}, "stream"),
        ({**CHAT, "stop": "x" * 2000}, "stop"),
        (
            {**CHAT, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0]",
        ),
    ],
)
def test_validation_errors_name_the_param(http, body, param):
    assert_envelope(http.post("/v1/chat/completions", json=body), 400, param=param)


def test_unknown_fields_are_ignored(http):
    response = http.post(
        "/v1/chat/completions", json={**CHAT, "max_tokens": 2, "frobnicate": {"x": 1}}
    )
    assert response.status_code == 200


def test_unknown_model_route_and_method(http, client):
    body = {**CHAT, "model": "no-such-model"}
    assert_envelope(
        http.post("/v1/chat/completions", json=body), 404, code="model_not_found", param="model"
    )
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x")
    assert_envelope(http.get("/v1/nothing-here"), 404)
    assert_envelope(http.delete("/v1/chat/completions"), 405)


def test_auth(server):
    url = f"{server.v1}/models"
    assert_envelope(httpx.get(url), 401, code="invalid_api_key")
    assert_envelope(httpx.get(url, headers={"Authorization": "Bearer wrong"}), 401)
    assert_envelope(httpx.post(f"{server.v1}/chat/completions", json=CHAT), 401)
    assert httpx.get(url, headers={"Authorization": f"Bearer {API_KEYS[1]}"}).status_code == 200
    assert httpx.get(url, headers={"x-api-key": API_KEYS[0]}).status_code == 200
    # Open, for load balancers; what runs and what is loaded only with a key.
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    wrong = httpx.get(f"{server.url}/health", headers={"Authorization": "Bearer wrong"})
    assert wrong.json() == {"status": "ok"}
    detailed = httpx.get(f"{server.url}/health", headers=server.headers()).json()
    assert set(detailed) == {"status", "active", "waiting", "loaded"}
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.v1, api_key="wrong", max_retries=0).models.list()


def test_client_disconnect_stops_generation(http, wait_idle):
    with http.stream("POST", "/v1/chat/completions", json=LONG_STREAM) as response:
        lines = response.iter_lines()
        for _ in range(4):
            next(lines)
        assert http.get("/health").json()["active"] == 1
    # 1500 tokens take ~15 s; a stopped generation frees the slot at once.
    assert wait_idle(timeout=3.0) < 3.0


def test_a_full_queue_gets_429_and_waiting_requests_finish(server, http, wait_idle):
    """While a chat runs, requests for another model wait (two engines would fight over the
    cores) in a bounded queue; beyond it, 429."""
    results: list[int] = []

    def waiting_request() -> None:
        r = httpx.post(
            f"{server.v1}/embeddings",
            json=OTHER_MODEL,
            headers=server.headers(),
            timeout=60,
        )
        results.append(r.status_code)

    with http.stream("POST", "/v1/chat/completions", json=LONG_STREAM) as busy:
        lines = busy.iter_lines()  # kept: a dropped iterator closes the connection
        next(lines)
        waiters = [threading.Thread(target=waiting_request) for _ in range(MAX_QUEUE)]
        for t in waiters:
            t.start()
        deadline = time.monotonic() + 20  # a busy machine: the waiters may take seconds
        while (waiting := http.get("/health").json()["waiting"]) < MAX_QUEUE:
            assert time.monotonic() < deadline, f"only {waiting} of {MAX_QUEUE} queued"
            time.sleep(0.05)
        # An unknown model is answered at once, not queued behind the running model.
        unknown = http.post("/v1/embeddings", json={**OTHER_MODEL, "model": "no-such"}, timeout=10)
        assert_envelope(unknown, 404, code="model_not_found")
        overflow = http.post("/v1/embeddings", json=OTHER_MODEL)
        error = assert_envelope(overflow, 429, code="rate_limit_exceeded")
        assert overflow.headers["retry-after"] == "1" and error["type"] == "rate_limit_error"
    for t in waiters:
        t.join(30)
    assert results == [200] * MAX_QUEUE
    wait_idle()


def test_error_during_stream_setup_is_a_status_not_an_event(http):
    body = {**CHAT, "stream": True, "messages": [{"role": "user", "content": "word " * 2500}]}
    response = http.post("/v1/chat/completions", json=body)
    assert_envelope(response, 400, code="context_length_exceeded")


def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_clients_host(server):
    response = httpx.post(
        f"{server.url}/v1/chat/completions/",
        json=CHAT,
        headers={**server.headers(), "Host": "attacker.example"},
    )
    assert response.status_code == 404 and "location" not in response.headers
    assert_envelope(response, 404)


def test_a_client_that_leaves_a_plain_request_stops_it(server, http, wait_idle):
    long_plain = {**LONG_STREAM, "stream": False}
    with httpx.Client(base_url=server.url, headers=server.headers(), timeout=2) as impatient:
        with pytest.raises(httpx.TimeoutException):
            impatient.post("/v1/chat/completions", json=long_plain)
    # 1500 tokens take ~15 s or more; a generation nobody waits for stops within a token.
    assert wait_idle(timeout=4.0) < 4.0


def test_a_client_that_leaves_the_queue_is_never_run(server, http, wait_idle):
    with http.stream("POST", "/v1/chat/completions", json=LONG_STREAM) as busy:
        lines = busy.iter_lines()  # kept: a dropped iterator closes the connection
        next(lines)
        with httpx.Client(base_url=server.url, headers=server.headers(), timeout=1) as queued:
            with pytest.raises(httpx.TimeoutException):
                queued.post("/v1/chat/completions", json={**LONG_STREAM, "stream": False})
        deadline = time.monotonic() + 3
        while http.get("/health").json()["waiting"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert http.get("/health").json()["waiting"] == 0  # out of the queue at once
    assert wait_idle(timeout=4.0) < 4.0  # and not run after the stream above
