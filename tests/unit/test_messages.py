"""Anthropic's Messages API on the fake engine: turns from blocks, tool choices, the events a
generation renders as (order and indices), stops, the max_tokens ceiling, the error envelope;
and through the gateway in-process, read by the real anthropic SDK."""

from __future__ import annotations

import asyncio
import json

import anthropic
import httpx2
import pytest

from adapters.http import create_app
from common.errors import (
    InternalError,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ServerStopping,
    StratusError,
    Unauthorized,
)
from common.protocol import parse_request
from common.protocol.messages import (
    Message,
    MessageCountTokensRequest,
    MessageCreateRequest,
    error_body,
)
from common.settings import Settings
from handlers.conversation import events
from handlers.messages import (
    _Blocks,
    count_message_tokens,
    create_message,
    message_plan,
    message_turns,
)
from layers.text import ChatTurn, ToolCall
from tests.unit.fakes import FakeTextModel, fake_store

HELLO = [{"role": "user", "content": "weather?"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]},
}  # fmt: skip
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


def pieces(text: str, size: int = 3) -> list[bytes]:
    data = text.encode()
    return [data[i : i + size] for i in range(0, len(data), size)]


def request(**fields) -> MessageCreateRequest:
    body = {"model": "gpt-4", "max_tokens": 100, "messages": HELLO, **fields}
    return parse_request(MessageCreateRequest, body)


def message(model: FakeTextModel, **fields):
    return create_message(request(**fields), fake_store(model))


def refused(**fields) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        result = message(FakeTextModel([b"x"], context_length=1024), **fields)
        if not isinstance(result, Message):
            next(result)
    return caught.value


# The conversation


def test_system_blocks_tool_use_and_tool_results_become_turns():
    body = request(
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Use tools."}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Let me see.", "signature": "c2ln"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather",
                 "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "rain"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "no such city"}]},
                {"type": "text", "text": "And tomorrow?", "cache_control": {"type": "ephemeral"}},
            ]},
        ],
    )  # fmt: skip
    assert message_turns(body) == [
        ChatTurn("system", "Be brief.\n\nUse tools."),
        ChatTurn("user", "weather?"),
        ChatTurn(
            "assistant",
            "Checking.",  # the thinking is left out
            (
                ToolCall("toolu_1", "get_weather", '{"city": "Oslo"}'),
                ToolCall("toolu_2", "get_weather", '{"city": "Rome"}'),
            ),
        ),
        ChatTurn("tool", "rain", (), "toolu_1", "get_weather"),
        ChatTurn("tool", "Error: no such city", (), "toolu_2", "get_weather"),
        ChatTurn("user", "And tomorrow?"),
    ]


def test_an_assistant_message_of_thinking_alone_is_left_out():
    body = request(
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [{"type": "thinking", "thinking": "hm", "signature": ""}],
            },
            {"role": "user", "content": "well?"},
        ],
        system="Be brief.",
    )
    assert [turn.role for turn in message_turns(body)] == ["system", "user", "user"]


@pytest.mark.parametrize(
    ("messages", "param", "text"),
    [
        ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9",
                                        "content": "x"}]}],
         "messages[0].content[0].tool_use_id", "answers no tool call"),
        ([{"role": "user", "content": [{"type": "text", "text": "see"},
                                       {"type": "image", "source": {"type": "base64"}}]}],
         "messages[0].content[1].type", "reads text only"),
        ([{"role": "user", "content": [{"type": "document", "source": {}}]}],
         "messages[0].content[0].type", "reads text only"),
        ([{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                             "input": {}}]},
          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                        "content": [{"type": "image", "source": {}}]}]}],
         "messages[1].content[0].content[0].type", "reads text only"),
        ([{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                        "input": {}}]}],
         "messages[0].content[0].type", "belongs in an assistant message"),
    ],
)  # fmt: skip
def test_blocks_a_text_model_cannot_take_are_refused_by_name(messages, param, text):
    error = refused(messages=messages)
    assert error.param == param and text in error.message


def test_missing_fields_and_hosted_features_are_refused_by_name():
    cases = [
        ({"max_tokens": None}, "max_tokens"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"temperature": 1.5}, "temperature"),
        ({"mcp_servers": [{"type": "url", "url": "https://x"}]}, "mcp_servers"),
        ({"container": "container_1"}, "container"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]},
         "messages[0].content[0]"),
        ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
        ({"stop_sequences": [""]}, "stop_sequences[0]"),
    ]  # fmt: skip
    for fields, param in cases:
        body = {"model": "gpt-4", "max_tokens": 10, "messages": HELLO, **fields}
        body = {k: v for k, v in body.items() if v is not None}
        with pytest.raises(InvalidRequest) as caught:
            parse_request(MessageCreateRequest, body)
        assert caught.value.param == param, fields
    # Accepted as Claude Code sends them: empty hosted features, thinking, effort, metadata.
    request(
        thinking={"type": "adaptive", "display": "omitted"},
        output_config={"effort": "high"},
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        metadata={"user_id": "user_abc"},
        mcp_servers=[],
        service_tier="auto",
    )
    request(thinking={"type": "enabled", "budget_tokens": 2048})
    request(thinking={"type": "disabled"})


# Tools


def test_custom_tools_are_offered_and_server_tools_skipped(caplog):
    tools = [{"type": "bash_20250124", "name": "bash"}, WEATHER,
             {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
             {"type": "custom", **WEATHER, "name": "other"}]  # fmt: skip
    with caplog.at_level("INFO", logger="stratus.messages"):
        plan = message_plan(request(tools=tools))
    assert [tool.name for tool in plan.tools] == ["get_weather", "other"]
    assert plan.mode == "auto" and not plan.single_call
    assert "bash_20250124" in caplog.text and "web_search_20250305" in caplog.text


@pytest.mark.parametrize(
    ("choice", "mode", "names", "single"),
    [
        ({"type": "auto"}, "auto", ["get_weather", "other"], False),
        ({"type": "any"}, "required", ["get_weather", "other"], False),
        ({"type": "any", "disable_parallel_tool_use": True}, "required",
         ["get_weather", "other"], True),
        ({"type": "tool", "name": "other"}, "required", ["other"], True),
        ({"type": "none"}, "none", [], False),
    ],
)  # fmt: skip
def test_tool_choice_maps_onto_the_plan(choice, mode, names, single):
    plan = message_plan(request(tools=[WEATHER, {**WEATHER, "name": "other"}], tool_choice=choice))
    assert plan.mode == mode
    assert [tool.name for tool in plan.tools] == names
    assert plan.single_call == single


def test_tool_errors_name_anthropic_fields():
    bad_schema = {**WEATHER, "input_schema": {"type": "array"}}
    assert refused(tools=[bad_schema]).param == "tools[0].input_schema"
    assert refused(tools=[WEATHER, WEATHER]).param == "tools[1].name"
    error = refused(tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"})
    assert error.param == "tool_choice"
    assert refused(tool_choice={"type": "any"}).param == "tool_choice"  # no tools


def test_a_call_is_a_tool_use_block_and_streams_as_input_json():
    model = FakeTextModel(pieces("Sure.\n" + CALL), context_length=1024)
    answer = message(model, tools=[WEATHER])
    assert isinstance(answer, Message)
    assert answer.stop_reason == "tool_use"
    text, call = answer.content
    assert text.type == "text" and text.text == "Sure.\n"
    assert call.type == "tool_use" and call.id.startswith("toolu_")
    assert call.name == "get_weather" and call.input == {"city": "Oslo"}
    streamed = list(message(FakeTextModel(pieces(CALL), context_length=1024), tools=[WEATHER],
                            tool_choice={"type": "any"}, stream=True))  # fmt: skip
    assert [(e.type, getattr(e, "index", None)) for e in streamed[:3]] == [
        ("message_start", None),
        ("ping", None),
        ("content_block_start", 0),
    ]
    assert streamed[2].content_block.model_dump() == {
        "type": "tool_use",
        "id": streamed[2].content_block.id,
        "name": "get_weather",
        "input": {},
    }
    deltas = [e.delta for e in streamed if e.type == "content_block_delta"]
    assert {d.type for d in deltas} == {"input_json_delta"}
    assert json.loads("".join(d.partial_json for d in deltas)) == {"city": "Oslo"}
    assert [e.type for e in streamed[-3:]] == [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert streamed[-2].delta.stop_reason == "tool_use"


def test_a_call_cut_by_max_tokens_keeps_what_its_input_had():
    limited = message(FakeTextModel(pieces(CALL, 1), context_length=1024), tools=[WEATHER],
                      tool_choice={"type": "any"}, max_tokens=CALL.index("Oslo") + 2)  # fmt: skip
    assert limited.stop_reason == "max_tokens"
    [call] = limited.content
    assert call.input == {"city": "Os"}


# Text, stops, budget


def test_a_text_answer_streamed_and_not():
    answer = message(FakeTextModel([b"he", b"llo"]))
    assert answer.model_dump() == {
        "id": answer.id, "type": "message", "role": "assistant", "model": "gpt-4",
        "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": answer.usage.input_tokens, "output_tokens": 2,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }  # fmt: skip
    assert answer.id.startswith("msg_")
    streamed = list(message(FakeTextModel([b"he", b"llo"]), stream=True))
    assert [(e.type, getattr(e, "index", None)) for e in streamed] == [
        ("message_start", None), ("ping", None), ("content_block_start", 0),
        ("content_block_delta", 0), ("content_block_delta", 0), ("content_block_stop", 0),
        ("message_delta", None), ("message_stop", None),
    ]  # fmt: skip
    start = streamed[0].message
    assert start.content == [] and start.stop_reason is None
    assert start.usage.input_tokens == answer.usage.input_tokens
    assert start.usage.output_tokens == 0
    assert streamed[-2].usage.output_tokens == 2
    assert (
        count_message_tokens(
            parse_request(MessageCountTokensRequest, {"model": "gpt-4", "messages": HELLO}),
            fake_store(FakeTextModel([])),
        ).input_tokens
        == answer.usage.input_tokens
    )


def test_a_stop_sequence_is_named_and_never_sent():
    answer = message(FakeTextModel(pieces("one, two, three")), stop_sequences=["zz", "two"])
    assert answer.stop_reason == "stop_sequence" and answer.stop_sequence == "two"
    assert answer.content[0].text == "one, "
    streamed = list(message(FakeTextModel(pieces("one, two")), stop_sequences=["two"], stream=True))
    assert streamed[-2].delta.model_dump() == {
        "stop_reason": "stop_sequence",
        "stop_sequence": "two",
    }


def test_max_tokens_is_a_ceiling_cut_to_the_context():
    model = FakeTextModel([b"x"] * 100, context_length=64)
    answer = message(model, max_tokens=32000)
    assert answer.stop_reason == "max_tokens"
    assert answer.usage.input_tokens + answer.usage.output_tokens == 64
    small = message(FakeTextModel([b"x"] * 10), max_tokens=3)
    assert small.stop_reason == "max_tokens" and small.content[0].text == "xxx"


def test_an_empty_answer_has_no_blocks():
    answer = message(FakeTextModel([]))
    assert answer.content == [] and answer.stop_reason == "end_turn"


# Rendering


def render(*produced: events.Event) -> list:
    blocks = _Blocks()
    rendered = [e for event in produced for e in blocks.render(event)]
    return rendered + list(blocks.close())


def test_thinking_text_and_calls_are_blocks_in_order():
    rendered = render(
        events.ReasoningDelta(0, "Hmm."),
        events.ReasoningDelta(0, " Yes."),
        events.TextDelta(0, "I'll call."),
        events.TextDelta(0, ""),
        events.CallStarted(0, 0, "toolu_a", "f"),
        events.ArgumentsDelta(0, 0, '{"a": '),
        events.ArgumentsDelta(0, 0, "1}"),
        events.CallDone(0, 0, "toolu_a", "f", '{"a": 1}'),
        events.CallStarted(0, 1, "toolu_b", "g"),
        events.CallDone(0, 1, "toolu_b", "g", "{}"),
        events.TextDelta(0, "Done."),
    )
    shapes = [(e.type, e.index, getattr(e, "delta", getattr(e, "content_block", None)).type
               if e.type != "content_block_stop" else None) for e in rendered]  # fmt: skip
    assert shapes == [
        ("content_block_start", 0, "thinking"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"),
        ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None),
        ("content_block_start", 3, "tool_use"),
        ("content_block_stop", 3, None),
        ("content_block_start", 4, "text"),
        ("content_block_delta", 4, "text_delta"),
        ("content_block_stop", 4, None),
    ]
    assert rendered[3].delta.signature == ""
    assert rendered[0].content_block.model_dump() == {
        "type": "thinking",
        "thinking": "",
        "signature": "",
    }


# Errors


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InvalidRequest("bad"), "invalid_request_error"),
        (Unauthorized("no"), "authentication_error"),
        (ModelNotFound("m"), "not_found_error"),
        (PayloadTooLarge("big"), "request_too_large"),
        (Overloaded("busy"), "rate_limit_error"),
        (InternalError("r1"), "api_error"),
        (ServerStopping("bye"), "overloaded_error"),
        (RequestTimeout("late"), "timeout_error"),
        (type("Gone", (StratusError,), {"status": 499})("gone"), "invalid_request_error"),
        (type("Bad", (StratusError,), {"status": 502})("bad gateway"), "api_error"),
        (type("Busy", (StratusError,), {"status": 529})("busy"), "overloaded_error"),
    ],
)
def test_error_body_is_anthropics_envelope(error, kind):
    body = error_body(error)
    assert body == {"type": "error", "error": {"type": kind, "message": body["error"]["message"]}}
    assert body["error"]["message"]


def test_error_body_names_the_field_in_the_message():
    answered = InvalidRequest(
        "messages[1].content[0].tool_use_id 'x' answers no tool call.",
        param="messages[1].content[0].tool_use_id",
    )
    assert error_body(answered)["error"]["message"] == (
        "messages.1.content.0.tool_use_id 'x' answers no tool call."
    )
    assert (
        error_body(InvalidRequest("Must be 1 or less.", param="temperature"))["error"]["message"]
        == "temperature: Must be 1 or less."
    )


# Through the gateway, read by the anthropic SDK


def test_the_sdk_reads_the_gateway_s_messages_and_errors(tmp_path):
    model = FakeTextModel(pieces("Hello there."), context_length=1024)
    app = create_app(Settings(cache_dir=tmp_path, api_key="k"), fake_store(model))

    async def scenario():
        # The SDK's own HTTP package (httpx2, httpx's successor) over the app in-process.
        transport = httpx2.ASGITransport(app=app)
        http = httpx2.AsyncClient(transport=transport, base_url="http://t")
        client = anthropic.AsyncAnthropic(
            base_url="http://t", api_key="k", http_client=http, max_retries=0
        )
        body = {"model": "gpt-4", "max_tokens": 32000, "messages": HELLO}
        created = await client.messages.create(**body, timeout=60)  # else "stream, please"
        async with client.messages.stream(**body) as stream:
            texts = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        counted = await client.messages.count_tokens(model="gpt-4", messages=HELLO)
        headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
        streamed = {**body, "stream": True}
        raw = await http.post("/v1/messages?beta=true", json=streamed, headers=headers)
        errors = []
        for call in (
            lambda: client.messages.create(model="gpt-4", max_tokens=5, messages=[
                {"role": "user", "content": [{"type": "image", "source": {
                    "type": "base64", "media_type": "image/png", "data": "AA=="}}]}]),
            lambda: client.messages.create(model="nope", max_tokens=5, messages=HELLO),
            lambda: anthropic.AsyncAnthropic(base_url="http://t", api_key="wrong",
                                             http_client=http, max_retries=0
                                             ).messages.create(**body, timeout=60),
        ):  # fmt: skip
            with pytest.raises(anthropic.APIStatusError) as caught:
                await call()
            errors.append((caught.value.status_code, caught.value.body))
        await http.aclose()
        return created, texts, final, counted, raw, errors

    created, texts, final, counted, raw, errors = asyncio.run(scenario())
    assert created.content[0].text == "Hello there." and created.stop_reason == "end_turn"
    assert "".join(texts) == final.content[0].text == "Hello there."
    assert counted.input_tokens == created.usage.input_tokens == final.usage.input_tokens
    lines = raw.text.split("\n\n")
    assert lines[0].startswith("event: message_start\ndata: {")
    assert lines[1] == 'event: ping\ndata: {"type":"ping"}'
    assert "[DONE]" not in raw.text and raw.text.endswith('data: {"type":"message_stop"}\n\n')
    image, unknown, wrong_key = errors
    assert image[0] == 400 and image[1]["error"]["type"] == "invalid_request_error"
    assert image[1]["error"]["message"].startswith("messages.0.content.0.type: ")
    assert unknown[0] == 404 and unknown[1]["error"]["type"] == "not_found_error"
    assert wrong_key[0] == 401 and wrong_key[1] == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
    }


def test_a_system_message_in_the_conversation_is_a_system_turn():
    """Claude Code's mid-conversation-tool-changes beta puts its environment there."""
    from common.protocol import parse_request
    from common.protocol.messages import MessageCountTokensRequest
    from handlers.messages import message_turns

    request = parse_request(
        MessageCountTokensRequest,
        {
            "model": "m",
            "system": "You help.",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "system", "content": [{"type": "text", "text": "cwd: /tmp"}]},
                {"role": "user", "content": "Go"},
            ],
        },
    )
    turns = message_turns(request)
    assert [(t.role, t.content) for t in turns] == [
        ("system", "You help."),
        ("user", "Hi"),
        ("system", "cwd: /tmp"),
        ("user", "Go"),
    ]
