"""Anthropic's Messages API with the real model and the official anthropic SDK: text, stops, the
max_tokens ceiling, streams (the SDK's and the raw events), a tool-use loop, count_tokens, a
request shaped as Claude Code sends it, and bad input in Anthropic's error envelope."""

from __future__ import annotations

import json

import anthropic
import httpx
import jsonschema
import pytest

from tests.conftest import API_KEYS

ASK = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
# Any English text reaches one of these within a few tokens: a long answer ends early.
EARLY_STOPS = ["a", "e", "i", "o", "u", " ", "\n", "."]
# What Claude Code 2.1 sends besides its messages (its tools cut to two, its system prompt short).
CLAUDE_CODE = {
    "system": [
        {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
        {"type": "text", "text": "Answer briefly.", "cache_control": {"type": "ephemeral"}},
    ],
    "tools": [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 8},
        {
            "name": "Bash",
            "description": "Executes a bash command.",
            "input_schema": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The command to execute"},
                    "timeout": {"type": "number"},
                    "run_in_background": {"type": "boolean"},
                },
                "required": ["command"],
                "additionalProperties": False,
            },
        },
        WEATHER,
    ],
    "thinking": {"type": "adaptive", "display": "omitted"},
    "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "metadata": {"user_id": "user_0123_account__session_4567"},
}
HEADERS = {
    "x-api-key": API_KEYS[0],
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
}


@pytest.fixture(scope="module")
def claude(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=API_KEYS[0], max_retries=0, timeout=120)


def create(claude: anthropic.Anthropic, **kwargs):
    kwargs.setdefault("model", "gpt-4")
    kwargs.setdefault("messages", ASK)
    kwargs.setdefault("max_tokens", 16)
    # The SDK no longer names temperature (Anthropic's newest models refuse it); Stratus takes it.
    kwargs.setdefault("extra_body", {"temperature": 0})
    return claude.messages.create(**kwargs)


def raw_events(response: httpx.Response) -> list[tuple[str, dict]]:
    """(event name, data) of each server-sent event; the name must be the data's type."""
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.strip("\n").split("\n\n"):
        name_line, data_line = block.split("\n")
        name, data = name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert name == data["type"], block
        events.append((name, data))
    return events


def test_a_text_answer(claude):
    message = create(claude)
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == "gpt-4"
    assert message.stop_reason in ("end_turn", "max_tokens")
    [block] = message.content
    assert block.type == "text" and block.text
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 16
    assert message.usage.cache_read_input_tokens == 0
    again = create(claude)
    assert again.content[0].text == block.text  # temperature 0 is reproducible


def test_a_tiny_max_tokens_ends_with_max_tokens(claude):
    message = create(claude, max_tokens=1)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 1


def test_max_tokens_far_above_the_context_is_a_ceiling(claude):
    # 32000 is Claude Code's; the context holds 2048. Cut to the room left, never a 400.
    message = create(claude, max_tokens=32000, stop_sequences=EARLY_STOPS, timeout=120)
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence in EARLY_STOPS
    text = "".join(block.text for block in message.content)
    assert not any(stop in text for stop in EARLY_STOPS)


def test_the_sdk_stream_joins_to_its_final_message(claude):
    with claude.messages.stream(
        model="gpt-4", messages=ASK, max_tokens=16, extra_body={"temperature": 0}
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == final.content[0].text
    assert final.content[0].text == create(claude).content[0].text  # streamed or not, the same
    assert final.usage.output_tokens > 0 and final.stop_reason in ("end_turn", "max_tokens")


def test_raw_events_are_named_ordered_and_indexed(server):
    body = {"model": "gpt-4", "messages": ASK, "max_tokens": 16, "temperature": 0,
            "stream": True, **CLAUDE_CODE}  # fmt: skip
    response = httpx.post(f"{server.url}/v1/messages?beta=true", json=body, headers=HEADERS,
                          timeout=120)  # fmt: skip
    assert response.status_code == 200
    events = raw_events(response)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] > 0
    open_index, next_index = None, 0
    for name, data in events[2:-2]:
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, next_index = data["index"], next_index + 1
            assert data["content_block"]["type"] in ("text", "tool_use")
        elif name == "content_block_delta":
            assert data["index"] == open_index
            assert data["delta"]["type"] in ("text_delta", "input_json_delta")
        else:
            assert name == "content_block_stop" and data["index"] == open_index
            open_index = None
    assert open_index is None
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens", "tool_use")
    assert delta["usage"]["output_tokens"] > 0
    assert "[DONE]" not in response.text


def test_a_tool_use_loop(claude):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    # One call: the grammar makes it in 30 tokens, then ends the answer (with parallel calls
    # allowed a small model may go on to the budget).
    one = {"type": "any", "disable_parallel_tool_use": True}
    called = create(claude, messages=ask, tools=[WEATHER], tool_choice=one, max_tokens=40)
    assert called.stop_reason == "tool_use"
    [call] = [block for block in called.content if block.type == "tool_use"]
    assert call.id.startswith("toolu_") and call.name == "get_weather"
    jsonschema.validate(call.input, WEATHER["input_schema"])
    history = [
        *ask,
        {"role": "assistant", "content": [block.model_dump() for block in called.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 24 degrees."}
        ]},
    ]  # fmt: skip
    answer = create(claude, messages=history, tools=[WEATHER], max_tokens=24)
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert answer.content


def test_count_tokens_equals_the_message_s_input_tokens(claude):
    fields = {"model": "gpt-4", "messages": ASK, "system": CLAUDE_CODE["system"],
              "tools": CLAUDE_CODE["tools"]}  # fmt: skip
    counted = claude.messages.count_tokens(**fields)
    message = create(claude, **fields, max_tokens=1)
    assert counted.input_tokens == message.usage.input_tokens > 0


def test_a_claude_code_request_is_answered(server):
    body = {"model": "gpt-4", "messages": ASK, "max_tokens": 16, "temperature": 0,
            **CLAUDE_CODE}  # fmt: skip
    response = httpx.post(f"{server.url}/v1/messages?beta=true", json=body, headers=HEADERS,
                          timeout=120)  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"


def anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert set(body) <= {"type", "error", "request_id"}
    return body["error"]["message"]


def test_bad_input_is_refused_in_anthropic_s_envelope(server, claude):
    url = f"{server.url}/v1/messages"
    missing = httpx.post(url, json={"model": "gpt-4", "messages": ASK}, headers=HEADERS)
    assert "max_tokens" in anthropic_error(missing, 400, "invalid_request_error")
    with pytest.raises(anthropic.BadRequestError) as caught:
        create(claude, messages=[{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_nope", "content": "42"}]}])  # fmt: skip
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert caught.value.body["error"]["message"].startswith("messages.0.content.0.tool_use_id")
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}  # fmt: skip
    with pytest.raises(anthropic.BadRequestError) as caught:
        create(claude, messages=[{"role": "user", "content": [image]}])
    # gpt-4 has no projector: the image is refused by its place.
    assert "messages.0.content.0: " in caught.value.body["error"]["message"]
    assert "does not read images" in caught.value.body["error"]["message"]
    wrong = anthropic.Anthropic(base_url=server.url, api_key="wrong-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        create(wrong)
    assert caught.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as caught:
        create(claude, model="claude-no-such-model")
    assert caught.value.body["error"]["type"] == "not_found_error"
    hosted = httpx.post(url, json={"model": "gpt-4", "messages": ASK, "max_tokens": 5,
                                   "mcp_servers": [{"type": "url", "url": "https://x",
                                                    "name": "x"}]}, headers=HEADERS)  # fmt: skip
    assert "mcp_servers" in anthropic_error(hosted, 400, "invalid_request_error")
    counted = httpx.post(f"{url}/count_tokens", json={"model": "nope", "messages": ASK},
                         headers=HEADERS)  # fmt: skip
    anthropic_error(counted, 404, "not_found_error")


TIME = {
    "name": "get_time",
    "description": "Get the current time in a timezone",
    "input_schema": {"type": "object", "properties": {"timezone": {"type": "string"}}},
}


def test_forced_calls_end_with_only_the_keys_their_schemas_list(claude):
    """`any` with two tools at temperature 1 (each call's object closed by its grammar: a small
    model used to add invented keys until max_tokens)."""
    listed = {t["name"]: set(t["input_schema"]["properties"]) for t in (WEATHER, TIME)}
    asks = ["What's the weather in Paris?", "What time is it in Tokyo?", "Weather in Oslo?"]
    for i in range(9):
        message = create(
            claude,
            max_tokens=200,
            extra_body={"temperature": 1.0},
            tools=[WEATHER, TIME],
            tool_choice={"type": "any"},
            messages=[{"role": "user", "content": asks[i % len(asks)]}],
        )
        assert message.stop_reason == "tool_use", message.content
        for call in (block for block in message.content if block.type == "tool_use"):
            assert set(call.input) <= listed[call.name]
