"""Tool calls in each family's own format, end to end with the official SDK: the calls come back
whole and valid, streamed in OpenAI's shape, and no marker of any format reaches `content`.

Two kinds of model (tests/conftest.py): the embedded SmolLM2 weights under a family's chat
template (the markers are plain text to its vocabulary), and tiny random-weight models with a
family's real vocabulary (tests/vocab_models.py), where the markers are special tokens, so the
grammar names them as tokens (`<[id]>`) and the engine keeps their text for the parser. Random
weights write nonsense, but the grammar holds it to the tool's schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema
import openai
import pytest

from tests.conftest import VOCAB_MISSING

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather in a city for some days",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
# Qwen3-Coder writes a string argument as raw text, which its grammar does not bound (maxLength
# is not enforced there) and SmolLM2 never ends: a choice of cities ends it.
CITY_CHOICE = {"type": "string", "enum": ["Paris", "Oslo", "Lima"]}
TIME = {"type": "function", "function": {"name": "get_time"}}  # no description, no parameters
ASK = [{"role": "user", "content": "What is the weather in Paris for the next three days?"}]
# Every format's markers: none may be left in an answer's text.
MARKERS = (
    "<tool_call>",
    "</tool_call>",
    "[TOOL_CALLS]",
    "<|python_tag|>",
    "<｜tool▁",
    "<|channel|>",
    "<|message|>",
    "<|constrain|>",
    "<|call|>",
    "<function=",
    "<parameter=",
)
MISTRAL_ID = re.compile(r"^[A-Za-z0-9]{9}$")

needs_vocab = pytest.mark.skipif(VOCAB_MISSING is not None, reason=str(VOCAB_MISSING))
FAMILIES = ["llama3-chat", "nemo-chat", "gptoss-chat", "coder-chat"]
VOCAB = [
    pytest.param(name, marks=needs_vocab)
    for name in ("llama31-vocab", "nemo-vocab", "r1-vocab", "qwen25-vocab")
]
MODELS = [*FAMILIES, *VOCAB]
MISTRAL = ["nemo-chat", pytest.param("nemo-vocab", marks=needs_vocab)]
# DeepSeek R1's template opens a thinking block that random weights never close: thinking off,
# so that the calls come at once.
EXTRA = {"r1-vocab": {"reasoning_effort": "none"}}


def tools_for(model: str) -> list[dict]:
    if model != "coder-chat":
        return [WEATHER, TIME]
    weather = json.loads(json.dumps(WEATHER))
    weather["function"]["parameters"]["properties"]["city"] = CITY_CHOICE
    return [weather, TIME]


def chat(client: openai.OpenAI, model: str, **kwargs):
    kwargs.setdefault("messages", ASK)
    # The grammar ends a lone call well before; random weights may spend a token a character.
    kwargs.setdefault("max_tokens", 96)
    return client.chat.completions.create(
        model=model, temperature=0, **EXTRA.get(model, {}), **kwargs
    )


def at_once(*work: Callable[[], Any]) -> list[Any]:
    """The results of a few requests sent together: each model serves two at once (batched in
    one engine; at temperature 0 a neighbour changes nothing), so the pair costs about one."""
    with ThreadPoolExecutor(len(work)) as pool:
        return [future.result() for future in [pool.submit(w) for w in work]]


def assert_no_markers(text: str | None) -> None:
    leaked = [marker for marker in MARKERS if marker in (text or "")]
    assert not leaked, f"markers {leaked} in the answer's text: {text!r}"


def assert_valid_calls(model: str, message, tools: list[dict]) -> list[tuple[str, str]]:
    """Each call whole: a known name, arguments that are JSON valid against its schema, an id
    in the family's form. Returns (name, arguments) of each."""
    assert not message.content, f"text beside the calls: {message.content!r}"
    assert message.tool_calls
    schemas = {t["function"]["name"]: t["function"].get("parameters") for t in tools}
    for call in message.tool_calls:
        assert call.type == "function" and call.function.name in schemas
        arguments = json.loads(call.function.arguments)
        schema = schemas[call.function.name] or {"type": "object", "maxProperties": 0}
        jsonschema.validate(arguments, schema)
        if model.startswith("nemo-"):
            assert MISTRAL_ID.match(call.id), call.id  # Mistral's templates insist on these
        else:
            assert call.id.startswith("call_"), call.id
    return [(c.function.name, c.function.arguments) for c in message.tool_calls]


def streamed_calls(client: openai.OpenAI, model: str, **kwargs) -> list[tuple[str, str]]:
    """The calls a stream sends, checked delta by delta against OpenAI's shape: a call's first
    delta has its id, type and name, the later ones only argument fragments."""
    calls: dict[int, dict] = {}
    reasons, content = [], []
    for chunk in chat(client, model, stream=True, **kwargs):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content.append(choice.delta.content or "")
        reasons.append(choice.finish_reason)
        for delta in choice.delta.tool_calls or []:
            sent = delta.model_dump(exclude_unset=True)
            if delta.index not in calls:
                assert set(sent) == {"index", "id", "type", "function"}, sent
                assert sent["type"] == "function" and sent["function"]["name"]
                calls[delta.index] = {**sent, "arguments": sent["function"].get("arguments", "")}
            else:
                assert set(sent) == {"index", "function"}, sent
                assert set(sent["function"]) == {"arguments"}, sent
                calls[delta.index]["arguments"] += sent["function"]["arguments"]
    assert [r for r in reasons if r] == ["tool_calls"]
    assert not "".join(content), "nothing of a call leaks into content"
    assert list(calls) == list(range(len(calls)))
    return [(c["function"]["name"], c["arguments"]) for c in calls.values()]


@pytest.mark.parametrize("model", MODELS)
def test_required_gives_whole_calls_streamed_or_not(client: openai.OpenAI, model: str):
    tools = tools_for(model)
    body = {"tools": tools, "tool_choice": "required", "parallel_tool_calls": False}
    answer, streamed = at_once(
        lambda: chat(client, model, **body), lambda: streamed_calls(client, model, **body)
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    whole = assert_valid_calls(model, choice.message, tools)
    assert len(whole) == 1
    assert streamed == whole  # temperature 0: the same calls, in fragments


@pytest.mark.parametrize("model", MODELS)
def test_a_named_tool_is_the_one_called(client: openai.OpenAI, model: str):
    tools = tools_for(model)
    body = {
        "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    answer, streamed = at_once(
        lambda: chat(client, model, **body), lambda: streamed_calls(client, model, **body)
    )
    assert answer.choices[0].finish_reason == "tool_calls"
    whole = assert_valid_calls(model, answer.choices[0].message, tools)
    assert [name for name, _ in whole] == ["get_weather"]
    assert streamed == whole


@pytest.mark.parametrize("model", MODELS)
def test_auto_and_none_answer_without_markers(client: openai.OpenAI, model: str):
    tools = tools_for(model)
    auto, none = (
        answer.choices[0]
        for answer in at_once(
            lambda: chat(client, model, tools=tools, tool_choice="auto", max_tokens=12),
            lambda: chat(client, model, tools=tools, tool_choice="none", max_tokens=12),
        )
    )
    if auto.message.tool_calls:
        assert_valid_calls(model, auto.message, tools)
    else:
        assert auto.finish_reason in ("stop", "length")
    assert_no_markers(auto.message.content)
    assert none.message.tool_calls is None and none.finish_reason in ("stop", "length")
    assert_no_markers(none.message.content)


@pytest.mark.parametrize("model", MODELS)
def test_an_earlier_call_and_its_result_render_in_the_family_template(
    client: openai.OpenAI, model: str
):
    """A conversation with a call (with an id of another model's form) and its result, to
    be answered (Mistral's templates refuse a user turn right after a result)."""
    call = {
        "id": "call_abc",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 3}'},
    }
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "Sunny, 24 degrees"},
    ]
    tools = tools_for(model)
    answer, alone = at_once(
        lambda: chat(client, model, messages=history, tools=tools, max_tokens=2),
        lambda: chat(client, model, tools=tools, max_tokens=1),
    )
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert_no_markers(answer.choices[0].message.content)
    # The call and its result were in the prompt.
    assert answer.usage.prompt_tokens > alone.usage.prompt_tokens + 10


@pytest.mark.parametrize("model", MISTRAL)
def test_mistral_calls_have_its_ids_and_any_id_is_taken_back(client: openai.OpenAI, model: str):
    first = chat(client, model, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)
    message = first.choices[0].message
    assert_valid_calls(model, message, [WEATHER])
    call = message.tool_calls[0]

    def answer_with(call_id: str):
        sent = {
            **message.model_dump(exclude_none=True),
            "tool_calls": [{**call.model_dump(), "id": call_id}],
        }
        return chat(
            client,
            model,
            messages=[
                *ASK,
                sent,
                {"role": "tool", "tool_call_id": call_id, "content": "Sunny, 24 degrees"},
            ],
            tools=[WEATHER],
            max_tokens=2,
        )

    # Its own id, and an OpenAI-style one, mapped to nine alphanumerics for the template.
    for follow in at_once(lambda: answer_with(call.id), lambda: answer_with("call_abc")):
        assert follow.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_harmony_channels_never_reach_content(client: openai.OpenAI):
    """GPT-OSS's answers come in channels: their headers are never text, streamed or not, and
    thinking (the analysis channel) is reasoning_content."""

    def both(**extra):
        return at_once(
            lambda: chat(client, "gptoss-chat", max_tokens=24, **extra),
            lambda: list(chat(client, "gptoss-chat", max_tokens=24, stream=True, **extra)),
        )

    for answer, chunks in (both(), both(tools=[WEATHER], tool_choice="auto")):
        whole = answer.choices[0].message
        assert_no_markers(whole.content)
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        content = "".join(d.content or "" for d in deltas)
        reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
        assert_no_markers(content)
        assert_no_markers(reasoning)
        assert content == (whole.content or "")
        assert reasoning == ((whole.model_extra or {}).get("reasoning_content") or "")


@pytest.mark.parametrize("model", [pytest.param("nemo-vocab", marks=needs_vocab),
                                   pytest.param("r1-vocab", marks=needs_vocab)])  # fmt: skip
def test_markers_that_are_special_tokens_reach_the_parser(client: openai.OpenAI, model: str):
    """`[TOOL_CALLS]` and DeepSeek's `<｜tool▁...｜>` are control tokens in these vocabularies,
    whose text llama.cpp leaves out of the output unless the engine keeps it: no call would
    come back without it. Parallel calls, each one whole (the budget may cut the last)."""
    answer = chat(client, model, tools=[WEATHER, TIME], tool_choice="required", max_tokens=160)
    choice = answer.choices[0]
    assert choice.finish_reason in ("tool_calls", "length")
    assert_valid_calls(model, choice.message, [WEATHER, TIME])


@needs_vocab
def test_markers_that_are_special_tokens_are_generated_as_tokens(client: openai.OpenAI):
    """The grammar names a marker that is a special token as that token (`<[id]>`), as the
    model was trained to write it: DeepSeek R1's call of a tool without parameters is 16
    tokens so, where the same text spelled in text tokens is 71."""
    answer = chat(
        client,
        "r1-vocab",
        tools=[TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    [call] = answer.choices[0].message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_time", "{}")
    assert answer.usage.completion_tokens < 30


def deep_schema(depth: int) -> dict:
    schema: dict = {"type": "string", "maxLength": 8}
    for level in range(depth):
        schema = {"type": "object", "properties": {f"k{level}": schema}, "required": [f"k{level}"]}
    return schema


ODD_TOOLS = {
    "a name OpenAI refuses": {"name": "get.weather:now", "parameters": {"type": "object"}},
    "a 64-character name": {"name": "f" * 64, "parameters": {"type": "object"}},
    "a deep schema": {"name": "deep", "parameters": deep_schema(8)},
    "markers in its text": {
        "name": "marked",
        "description": "<tool_call>[TOOL_CALLS]<|channel|><function=x>{{ raise_exception('x') }}",
        "parameters": {
            "type": "object",
            "properties": {"s": {"type": "string", "description": "</parameter>", "enum": ["a"]}},
        },
    },
    # GPT-OSS's template adds a default to text with `+`: a number there fails it.
    "a default of another type": {
        "name": "defaults",
        "parameters": {
            "type": "object",
            "properties": {"o": {"oneOf": [{"type": "string"}, {"type": "integer"}], "default": 1}},
        },
    },
}


@pytest.mark.parametrize("model", MODELS)
def test_odd_tools_are_answered_or_refused_never_a_server_error(http, model: str):
    def send(function: dict):
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "Go"}],
            "tools": [{"type": "function", "function": function}],
            "tool_choice": "required",
            "max_tokens": 2,  # the template and the grammar are what is tried here
            "temperature": 0,
            **EXTRA.get(model, {}),
        }
        return http.post("/v1/chat/completions", json=body)

    for case, function in ODD_TOOLS.items():
        response = send(function)
        assert response.status_code in (200, 400), (case, response.text)
        if response.status_code == 400:
            message = response.json()["error"]["message"]
            assert "Traceback" not in message and "jinja" not in message.lower(), message
        else:
            assert_no_markers(response.json()["choices"][0]["message"].get("content"))
