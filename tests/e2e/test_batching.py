"""Continuous batching on the live server: concurrent requests share the engine, and each gets
exactly what it gets alone."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

MODEL = "gpt-4"
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"  # the embedded model counts on for hundreds of tokens

# Different prompts and sampling settings, each with its own chain in the engine.
REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("chat", {"messages": [{"role": "user", "content": "Write a story about a cat."}]}),
    (
        "chat",
        {
            "messages": [{"role": "user", "content": "List five fruits."}],
            "presence_penalty": 1.0,
            "frequency_penalty": 0.5,
        },
    ),
    (
        "chat",
        {
            "messages": [{"role": "user", "content": "Describe the sea at night."}],
            "temperature": 0.9,
            "top_p": 0.9,
            "seed": 11,
        },
    ),
    (
        "chat",
        {
            "messages": [{"role": "user", "content": "Give me a person as JSON."}],
            "response_format": {"type": "json_object"},
        },
    ),
    ("completions", {"prompt": COUNTING, "logprobs": 2, "logit_bias": {"28": -100}}),
]


def _stream(http: httpx.Client, kind: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A streamed request's text, usage, finish reason and the times its chunks arrived."""
    body = {"model": MODEL, "temperature": 0, "max_tokens": 40, "stream": True, **body, **extra}
    body["stream_options"] = {"include_usage": True}
    path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
    result: dict[str, Any] = {"text": "", "times": [], "usage": None, "finish": None}
    with http.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            response.read()
            return {"status": response.status_code, "error": response.json()["error"]}
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            result["usage"] = chunk.get("usage") or result["usage"]
            for choice in chunk["choices"]:
                piece = choice["delta"].get("content") if kind == "chat" else choice["text"]
                if piece:
                    result["text"] += piece
                    result["times"].append(time.monotonic())
                result["finish"] = choice.get("finish_reason") or result["finish"]
    result["status"] = 200
    return result


def _answer(result: dict[str, Any]) -> tuple:
    return result["status"], result["text"], result["usage"], result["finish"]


def test_concurrent_streams_each_get_what_they_get_alone(http, wait_idle):
    alone = [_stream(http, kind, body) for kind, body in REQUESTS]
    assert all(r["status"] == 200 and r["text"] for r in alone)
    too_long = ("completions", {"prompt": "word " * 3000})
    with ThreadPoolExecutor(len(REQUESTS) + 1) as pool:
        together = list(pool.map(lambda r: _stream(http, *r), [*REQUESTS, too_long]))
    refused = together.pop()
    # The context-length error stays with its own request.
    assert refused["status"] == 400 and refused["error"]["code"] == "context_length_exceeded"
    for kind_body, one, batched in zip(REQUESTS, alone, together, strict=True):
        assert _answer(batched) == _answer(one), kind_body
    wait_idle()


def test_choices_run_side_by_side_and_match_a_single_choice(http):
    body = {"model": MODEL, "messages": REQUESTS[0][1]["messages"], "max_tokens": 24}
    single = http.post("/v1/chat/completions", json={**body, "temperature": 0}).json()
    several = http.post("/v1/chat/completions", json={**body, "temperature": 0, "n": 3}).json()
    texts = [c["message"]["content"] for c in several["choices"]]
    assert texts == [single["choices"][0]["message"]["content"]] * 3
    assert several["usage"]["prompt_tokens"] == single["usage"]["prompt_tokens"]
    assert several["usage"]["completion_tokens"] == 3 * single["usage"]["completion_tokens"]


def test_a_client_leaving_mid_batch_frees_its_slot_and_the_others_finish(server, http, wait_idle):
    wait_idle()
    body = {"prompt": COUNTING, "max_tokens": 60}
    alone = _stream(http, "completions", body)
    assert alone["usage"]["completion_tokens"] == 60

    def leave_early() -> int:
        payload = {"model": MODEL, "temperature": 0, "stream": True, **body, "max_tokens": 400}
        with httpx.Client(base_url=server.url, headers=server.headers(), timeout=60) as own:
            with own.stream("POST", "/v1/completions", json=payload) as response:
                lines = response.iter_lines()
                return sum(1 for _, line in zip(range(6), lines, strict=False) if line)

    with ThreadPoolExecutor(3) as pool:
        stayers = [pool.submit(_stream, http, "completions", body) for _ in range(2)]
        leaver = pool.submit(leave_early)
        assert leaver.result() > 0
        for stayer in stayers:
            assert _answer(stayer.result()) == _answer(alone)
    wait_idle()  # the leaver's slot is free: nothing runs or waits


def test_a_long_prompt_joining_does_not_freeze_running_streams(http, wait_idle):
    wait_idle()
    running: dict[str, Any] = {}
    started = threading.Event()

    def stream_on() -> None:
        result = _stream(http, "completions", {"prompt": COUNTING, "max_tokens": 160})
        running.update(result)

    thread = threading.Thread(target=stream_on)
    thread.start()
    # The long prompt (about 1,500 tokens: two dozen blocks) joins once the stream runs.
    deadline = time.monotonic() + 60
    while not started.is_set() and time.monotonic() < deadline:
        health = http.get("/health").json()
        if health["active"]:
            started.set()
        time.sleep(0.05)
    time.sleep(0.5)
    joined = time.monotonic()
    long = http.post(
        "/v1/completions",
        json={"model": MODEL, "prompt": "word " * 1500, "max_tokens": 1, "temperature": 0},
    )
    prefill = (joined, time.monotonic())
    thread.join(120)
    assert long.status_code == 200, long.text
    assert running["usage"]["completion_tokens"] == 160
    during = [t for t in running["times"] if prefill[0] <= t <= prefill[1]]
    if len(during) < 2:
        pytest.fail(f"the running stream got {len(during)} tokens while the prompt was evaluated")
    gaps = [b - a for a, b in zip(during, during[1:], strict=False)]
    # Frozen, the stream would wait the whole evaluation; interleaved, one block's worth.
    assert max(gaps) < 0.5 * (prefill[1] - prefill[0]), (max(gaps), prefill[1] - prefill[0])
