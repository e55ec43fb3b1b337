"""Anthropic's Messages API answers on the fake engine: the events a generation renders as
(order and indices), stops, the max_tokens ceiling, the error envelope; and through the gateway
in-process, read by the real anthropic SDK. (Requests: test_messages_request.py.)"""

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
    error_body,
)
from common.settings import Settings
from handlers.text.conversation import events
from handlers.text.messages import (
    _Blocks,
    count_message_tokens,
)
from tests.unit.anthropic_requests import CALL, HELLO, WEATHER, message, pieces
from tests.unit.fakes import FakeTextModel, fake_store


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
        events.ToolCallStarted(0, 0, "toolu_a", "f"),
        events.ArgumentsDelta(0, 0, '{"a": '),
        events.ArgumentsDelta(0, 0, "1}"),
        events.CallDone(0, 0, "toolu_a", "f", '{"a": 1}'),
        events.ToolCallStarted(0, 1, "toolu_b", "g"),
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
    # An image sent to a model without a projector: refused by its place.
    assert image[1]["error"]["message"].startswith("messages.0.content.0: ")
    assert "does not read images" in image[1]["error"]["message"]
    assert unknown[0] == 404 and unknown[1]["error"]["type"] == "not_found_error"
    assert wrong_key[0] == 401 and wrong_key[1] == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
    }
