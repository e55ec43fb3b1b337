"""Chat with tools, JSON and logprobs on the fake engine: the answer's shape whatever the
tokens, the grammar handed to the engine, and the deprecated functions API."""

from __future__ import annotations

import json

import pytest

from common.errors import InvalidRequest
from common.protocol import parse_request
from common.protocol.chat import ChatCompletion, ChatCompletionRequest
from handlers.text.chat import create_chat_completion
from tests.unit.fakes import FakeTextModel, fake_store

HELLO = [{"role": "user", "content": "weather?"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


def pieces(text: str, size: int = 3) -> list[bytes]:
    data = text.encode()
    return [data[i : i + size] for i in range(0, len(data), size)]


def fake(pieces: list[bytes]) -> FakeTextModel:
    return FakeTextModel(pieces, context_length=1024)


def chat(model: FakeTextModel, **fields):
    fields.setdefault("messages", HELLO)
    request = parse_request(ChatCompletionRequest, {"model": "gpt-4", **fields})
    return create_chat_completion(request, fake_store(model))


def test_a_call_is_a_tool_call_with_null_content():
    model = fake(pieces("Sure.\n" + CALL))
    answer = chat(model, tools=[TOOL])
    assert isinstance(answer, ChatCompletion)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Sure.\n"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    assert "start: TEXT | TEXT? calls" in model.grammars[0]
    only_call = chat(fake(pieces(CALL)), tools=[TOOL], tool_choice="required")
    assert only_call.choices[0].message.content is None
    assert json.loads(only_call.to_json())["choices"][0]["message"]["content"] is None


def test_streamed_calls_name_once_then_argument_fragments():
    chunks = list(chat(fake(pieces(CALL, 2)), tools=[TOOL], stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant" and deltas[0].content is None
    calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
    assert calls[0].id and calls[0].function.name == "get_weather"
    assert all(c.id is None and c.function.name is None for c in calls[1:])
    assert "".join(c.function.arguments for c in calls) == '{"city": "Oslo"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_stops_apply_to_text_not_to_calls():
    text = 'It is "Oslo".\n' + CALL
    answer = chat(fake(pieces(text)), tools=[TOOL], stop=['"'])
    assert answer.choices[0].message.content == "It is "
    assert answer.choices[0].finish_reason == "stop"
    call_only = chat(fake(pieces(CALL)), tools=[TOOL], stop=['"'])
    assert json.loads(call_only.choices[0].message.tool_calls[0].function.arguments)


def test_the_legacy_functions_api_answers_with_function_call():
    answer = chat(fake(pieces(CALL)), functions=[TOOL["function"]])
    choice = answer.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.tool_calls is None
    assert choice.message.function_call.name == "get_weather"
    dumped = json.loads(answer.to_json())["choices"][0]["message"]
    assert "tool_calls" not in dumped and dumped["function_call"]["name"] == "get_weather"


def test_json_mode_and_schemas_become_grammars():
    model = fake([b"{}"])
    chat(model, response_format={"type": "json_object"})
    chat(
        model,
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "x",
                "schema": {"type": "object", "properties": {"a": {"enum": [1, 2]}}},
            },
        },
    )
    chat(model, response_format={"type": "text"})
    assert '%json {"type": "object"' in model.grammars[0]
    assert '"enum": [1, 2]' in model.grammars[1]
    assert model.grammars[2] is None


def test_tool_choice_none_is_plain_chat():
    model = fake(pieces("hello"))
    answer = chat(model, tools=[TOOL], tool_choice="none")
    assert answer.choices[0].message.content == "hello" and model.grammars == [None]


def test_logprobs_go_with_their_text():
    answer = chat(fake([b"a", b"b"]), logprobs=True, top_logprobs=1)
    entries = answer.choices[0].logprobs.content
    assert [e.token for e in entries] == ["a", "b"]
    assert entries[0].top_logprobs[0].token == "a" and entries[0].bytes == [97]


@pytest.mark.parametrize(
    "fields,param",
    [
        ({"tools": [TOOL], "response_format": {"type": "json_object"}}, "response_format"),
        ({"functions": [TOOL["function"]], "tool_choice": "auto"}, "functions"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].name"),
    ],
)
def test_conflicting_fields_are_400s(fields, param):
    with pytest.raises(InvalidRequest) as caught:
        chat(fake([b"x"]), **fields)
    assert caught.value.param == param


def test_a_call_repeated_whole_is_not_sent_and_ends_the_answer():
    other = CALL.replace("Oslo", "Oslo, Norway")
    model = fake(pieces(f"{CALL}\n{other}\n{CALL}\n{CALL}"))
    answer = chat(model, tools=[TOOL], tool_choice="required")
    calls = answer.choices[0].message.tool_calls
    assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Oslo", "Oslo, Norway"]
    assert answer.choices[0].finish_reason == "tool_calls"
    # A call that only starts like an earlier one is sent, once it differs.
    streamed = chat(fake(pieces(f"{CALL}\n{other}")), tools=[TOOL], stream=True)
    names = [
        d.tool_calls[0].function.name
        for c in streamed
        if c.choices and (d := c.choices[0].delta).tool_calls and d.tool_calls[0].id
    ]
    assert names == ["get_weather", "get_weather"]


def test_a_call_cut_by_the_budget_is_left_out_of_a_whole_answer():
    text = f"{CALL}\n{CALL.replace('Oslo', 'Bergen')}"
    cut = len(pieces(text)) - 9  # inside "Bergen"
    answer = chat(fake(pieces(text)), tools=[TOOL], tool_choice="required", max_tokens=cut)
    choice = answer.choices[0]
    assert choice.finish_reason == "length"
    assert [json.loads(c.function.arguments) for c in choice.message.tool_calls] == [
        {"city": "Oslo"}
    ]


def test_a_stop_sequence_inside_the_reasoning_does_not_end_the_answer():
    from layers.reasoning import THINK

    model = fake(pieces("I think. STOP? No.</think>The answer. STOP here"))
    model.reasoning, model.reasoning_opens = THINK, True
    for stream in (False, True):
        answer = chat(model, stop=["STOP"], stream=stream)
        if stream:
            deltas = [c.choices[0].delta for c in answer if c.choices]
            content = "".join(d.content or "" for d in deltas)
            thought = "".join(d.reasoning_content or "" for d in deltas)
        else:
            message = answer.choices[0].message
            content, thought = message.content, message.reasoning_content
        assert thought == "I think. STOP? No."
        assert content == "The answer. "
