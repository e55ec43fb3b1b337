"""Tools with the real model and the official SDK: every tool_choice, streamed deltas in OpenAI's
exact shape, a two-turn loop, the deprecated functions API, LangChain, and every bad input."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tests.openai_spec import check
from tests.platforms import sse

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "The current time"},
}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]
SCHEMAS = {t["function"]["name"]: t["function"].get("parameters") for t in (WEATHER, TIME)}


def chat(client, **kwargs):
    kwargs.setdefault("model", "gpt-4")
    kwargs.setdefault("messages", ASK)
    kwargs.setdefault("temperature", 0)
    kwargs.setdefault("max_tokens", 120)
    return client.chat.completions.create(**kwargs)


def assert_valid_calls(message) -> None:
    assert message.content is None
    assert message.tool_calls
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        arguments = json.loads(call.function.arguments)
        schema = SCHEMAS[call.function.name] or {"type": "object", "maxProperties": 0}
        jsonschema.validate(arguments, schema)


def test_required_makes_the_model_call_a_tool(client):
    answer = chat(client, tools=[WEATHER, TIME], tool_choice="required")
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert_valid_calls(choice.message)
    check("CreateChatCompletionResponse", answer.model_dump(exclude_unset=True))


def test_a_call_that_meets_its_budget_is_closed_not_cut(client):
    """A long argument at temperature 1 with 48 tokens (some 30 are the call's own): the string
    is closed in time (layers/closing), so every choice is a whole call, reported as one."""
    note = {
        "type": "function",
        "function": {
            "name": "take_note",
            "parameters": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            },
        },
    }
    ask = [{"role": "user", "content": "Take a long, detailed note on the history of Paris."}]
    answer = chat(
        client,
        messages=ask,
        tools=[note],
        tool_choice="required",
        max_tokens=48,
        temperature=1.0,
        seed=7,
        n=4,
    )
    for choice in answer.choices:
        assert choice.finish_reason == "tool_calls", choice
        (call,) = choice.message.tool_calls
        assert isinstance(json.loads(call.function.arguments)["text"], str)
    assert answer.usage.completion_tokens <= 4 * 47


def test_a_named_function_is_the_one_called(client):
    for name in ("get_weather", "get_time"):
        answer = chat(
            client,
            tools=[WEATHER, TIME],
            tool_choice={"type": "function", "function": {"name": name}},
            parallel_tool_calls=False,
        )
        message = answer.choices[0].message
        assert_valid_calls(message)
        assert [c.function.name for c in message.tool_calls] == [name]
        if name == "get_time":
            assert message.tool_calls[0].function.arguments == "{}"


def test_auto_gives_text_or_valid_calls_at_any_temperature(client):
    for seed in range(4):
        answer = chat(client, tools=[WEATHER, TIME], temperature=1.0, seed=seed, max_tokens=80)
        choice = answer.choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            assert_valid_calls(choice.message)
        else:
            assert "<tool_call>" not in (choice.message.content or "")
            assert choice.finish_reason in ("stop", "length")


def test_none_and_no_tools_answer_in_text(client):
    plain = chat(client, max_tokens=20)
    none = chat(client, tools=[WEATHER], tool_choice="none", max_tokens=20)
    for answer in (plain, none):
        assert answer.choices[0].message.tool_calls is None
        assert answer.choices[0].message.content
    assert none.choices[0].message.content == plain.choices[0].message.content


def test_parallel_calls_off_means_one_call(client):
    answer = chat(client, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False)
    assert len(answer.choices[0].message.tool_calls) == 1


def test_the_sdk_stream_helper_assembles_intact_calls(client):
    with client.chat.completions.stream(
        model="gpt-4",
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice="required",
        temperature=0,
        max_tokens=120,
    ) as stream:
        final = stream.get_final_completion()
    streamed = final.choices[0].message
    whole = chat(client, tools=[WEATHER, TIME], tool_choice="required").choices[0].message
    assert [(c.function.name, c.function.arguments) for c in streamed.tool_calls] == [
        (c.function.name, c.function.arguments) for c in whole.tool_calls
    ]
    assert_valid_calls(streamed)
    assert final.choices[0].finish_reason == "tool_calls"


def test_streamed_tool_call_deltas_have_openai_shape(http):
    body = {
        "model": "gpt-4",
        "messages": ASK,
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "temperature": 0,
        "max_tokens": 120,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    events = sse(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        check("CreateChatCompletionStreamResponse", chunk)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    first, rest = calls[0][0], [c[0] for c in calls[1:]]
    assert set(first) == {"index", "id", "type", "function"}
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert len(rest) >= 2, "arguments are streamed in fragments, not at the end"
    for delta in rest:
        assert set(delta) == {"index", "function"} and set(delta["function"]) == {"arguments"}
    arguments = json.loads("".join(d["function"]["arguments"] for d in rest))
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    assert not any(d.get("content") for d in deltas), "nothing of the call leaks into content"
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert [r for r in reasons if r] == ["tool_calls"]
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_a_two_turn_tool_loop(client):
    first = chat(client, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 degrees celsius"},
    ]
    second = chat(client, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=40)
    assert second.choices[0].message.content
    assert second.choices[0].finish_reason in ("stop", "length")
    # The call and its result are in the prompt the model saw.
    alone = chat(client, max_tokens=1).usage.prompt_tokens
    assert second.usage.prompt_tokens > alone + 20


def test_the_deprecated_functions_api(client):
    answer = chat(
        client,
        functions=[WEATHER["function"]],
        function_call={"name": "get_weather"},
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.tool_calls is None and choice.message.content is None
    assert choice.message.function_call.name == "get_weather"
    jsonschema.validate(json.loads(choice.message.function_call.arguments), SCHEMAS["get_weather"])
    # The answer to it, as the deprecated API sends it back, reaches the model.
    follow = chat(
        client,
        messages=[
            *ASK,
            choice.message.model_dump(exclude_none=True),
            {"role": "function", "name": "get_weather", "content": "Sunny"},
        ],
        functions=[WEATHER["function"]],
        function_call="none",
        max_tokens=10,
    )
    assert follow.choices[0].message.content


def test_langchain_bind_tools_and_structured_output(server):
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel, Field

    llm = ChatOpenAI(
        model="gpt-4o",  # LangChain uses json_schema only for models it knows support it
        base_url=server.v1,
        api_key="test-key",
        temperature=0,
        max_tokens=120,
        max_retries=0,
    )

    class GetWeather(BaseModel):
        """Get the current weather in a city."""

        city: str = Field(max_length=40)

    bound = llm.bind_tools([GetWeather], tool_choice="GetWeather")
    reply = bound.invoke([HumanMessage("What is the weather like in Paris?")])
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "GetWeather"
    assert isinstance(reply.tool_calls[0]["args"]["city"], str)

    class Person(BaseModel):
        name: str = Field(max_length=30)
        age: int = Field(ge=0, le=120)

    for method in ("json_schema", "function_calling"):
        person = llm.with_structured_output(Person, method=method).invoke("Invent a person.")
        assert isinstance(person, Person)


BAD = [
    (
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
    ),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    (
        {"tools": [{"type": "function", "function": {"name": "has space"}}]},
        "tools[0].function.name",
    ),
    (
        {
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}
            ]
        },
        "tools[0].function.parameters",
    ),
    (
        {
            "tools": [
                TIME,
                {
                    "type": "function",
                    "function": {
                        "name": "g",
                        "parameters": {"type": "object", "properties": {"a": {"type": "nonsense"}}},
                    },
                },
            ]
        },
        "tools[1].function.parameters",
    ),
    (
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {
                            "type": "object",
                            "if": {"required": ["a"]},
                            "then": {"required": ["b"]},
                        },
                    },
                }
            ]
        },
        "tools[0].function.parameters",
    ),
    ({"tools": [TIME, TIME]}, "tools[1].function.name"),
    ({"tools": [TIME], "functions": [TIME["function"]]}, "functions"),
    (
        {"messages": [*ASK, {"role": "tool", "tool_call_id": "call_x", "content": "hi"}]},
        "messages[1].tool_call_id",
    ),
    ({"messages": [*ASK, {"role": "tool", "content": "hi"}]}, "messages[1].tool_call_id"),
]


@pytest.mark.parametrize("fields,param", BAD, ids=[p for _, p in BAD])
def test_bad_tool_requests_are_400s_naming_the_param(http, fields, param):
    body = {"model": "gpt-4", "messages": ASK, "max_tokens": 5, **fields}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"


def test_unsupported_schema_keywords_are_named(http):
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {"type": "object", "dependentRequired": {"a": ["b"]}},
        },
    }
    body = {"model": "gpt-4", "messages": ASK, "tools": [tool]}
    error = http.post("/v1/chat/completions", json=body).json()["error"]
    assert "dependentRequired" in error["message"]


def test_sdk_raises_bad_request_for_unknown_tool_choice(client):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "x"}})
    assert caught.value.body["param"] == "tool_choice"


def test_cut_by_max_tokens_inside_a_call_is_length(http):
    body = {
        "model": "gpt-4",
        "messages": ASK,
        "tools": [WEATHER],
        "tool_choice": "required",
        "max_tokens": 6,
        "temperature": 0,
    }
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] == "length"


def test_tools_stay_out_of_the_way_of_a_plain_httpx_client(server):
    # A tool conversation sent by a client that is not the SDK (plain JSON, arguments as text).
    with httpx.Client(base_url=server.v1, headers=server.headers(), timeout=120) as raw:
        body = {
            "model": "gpt-4",
            "messages": [
                *ASK,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "Rain"},
            ],
            "tools": [WEATHER],
            "max_tokens": 10,
        }
        assert raw.post("/chat/completions", json=body).status_code == 200


def test_a_template_that_takes_tools_renders_them_itself(client):
    # tools-template-chat: the same model file with a template that reads `tools`.
    answer = chat(
        client,
        model="tools-template-chat",
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
    )
    assert_valid_calls(answer.choices[0].message)
    default = chat(client, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)
    assert answer.usage.prompt_tokens != default.usage.prompt_tokens
    call = answer.choices[0].message.tool_calls[0]
    follow = chat(
        client,
        model="tools-template-chat",
        messages=[
            *ASK,
            answer.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny"},
        ],
        tools=[WEATHER],
        max_tokens=30,
    )
    assert follow.choices[0].finish_reason in ("stop", "length", "tool_calls")
