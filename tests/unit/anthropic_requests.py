"""Anthropic Messages requests for the unit tests: a conversation, a tool, and the fake engine
answering them."""

from __future__ import annotations

import pytest

from common.errors import InvalidRequest
from common.protocol import parse_request
from common.protocol.messages import Message, MessageCreateRequest
from handlers.text.messages import create_message
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
