"""POST /v1/responses and the stored responses, with the official `openai` SDK and raw SSE,
against the live server; answers checked against OpenAI's own spec."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import API_KEYS, LiveServer
from tests.openai_spec import _document, check

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
GREEDY = {"temperature": 0, "max_output_tokens": 16}


def sse_events(response: httpx.Response) -> list[tuple[str, dict]]:
    """(event name, data) of every event of a named-event stream."""
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
            name = None
    return events


def stream_schema(event_type: str) -> str:
    """The spec's schema of a streamed event, by its `type`."""
    document = _document("openapi.yaml")
    schemas = document["components"]["schemas"]
    for ref in schemas["ResponseStreamEvent"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[-1]
        if event_type in schemas[name]["properties"]["type"].get("enum", []):
            return name
    raise AssertionError(f"no schema for {event_type}")


def test_a_text_response_is_openais_response_object(http: httpx.Client):
    answer = http.post("/v1/responses", json={"model": "gpt-4", "input": "Say hi", **GREEDY})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    check("Response", body)
    assert body["status"] in ("completed", "incomplete")
    message = body["output"][0]
    assert message["type"] == "message" and message["content"][0]["type"] == "output_text"
    assert message["content"][0]["text"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["output_tokens"] <= 16


def test_max_output_tokens_cut_is_incomplete(client: openai.OpenAI):
    response = client.responses.create(
        model="gpt-4",
        input="Write a long story about a dragon.",
        temperature=0,
        max_output_tokens=3,
    )
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3
    assert response.output[0].status == "incomplete"


def test_streamed_events_follow_openais_grammar(http: httpx.Client):
    body = {"model": "gpt-4", "input": "Say hello", "stream": True, **GREEDY}
    with http.stream("POST", "/v1/responses", json=body) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = sse_events(answer)
    types = [data["type"] for _, data in events]
    assert all(name == data["type"] for name, data in events)  # `event:` equals data.type
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert types[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert types[-4:-1] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert types[-1] in ("response.completed", "response.incomplete")
    for _, data in events:
        check(stream_schema(data["type"]), data)
    text_deltas = [d for _, d in events if d["type"] == "response.output_text.delta"]
    assert all(d["obfuscation"] for d in text_deltas)  # padded by default, as OpenAI's
    deltas = "".join(d["delta"] for d in text_deltas)
    final = events[-1][1]["response"]
    assert final["output"][0]["content"][0]["text"] == deltas
    item_id = final["output"][0]["id"]
    assert {d.get("item_id") for _, d in events if "item_id" in d} == {item_id}
    assert all(d.get("output_index", 0) == 0 for _, d in events)


def test_the_sdk_stream_helper_gets_the_final_response(client: openai.OpenAI):
    with client.responses.stream(
        model="gpt-4", input="Say OK.", temperature=0, max_output_tokens=200
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == "".join(deltas) != ""


def test_parse_fills_a_pydantic_model(client: openai.OpenAI):
    class City(BaseModel):
        name: str
        population: int

    parsed = client.responses.parse(
        model="gpt-4",
        input="A city as JSON.",
        text_format=City,
        temperature=0,
        max_output_tokens=60,
    )
    assert isinstance(parsed.output_parsed, City)


def test_a_two_turn_function_call_loop_without_storing(client: openai.OpenAI):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.responses.create(
        model="gpt-4",
        input=question,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        store=False,
        temperature=0,
        max_output_tokens=40,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    assert first.status == "completed"
    second = client.responses.create(
        model="gpt-4",
        input=[
            *question,
            calls[0].model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny"},
        ],
        tools=[WEATHER],
        store=False,
        **GREEDY,
    )
    assert second.output_text
    with pytest.raises(openai.NotFoundError):  # store: false keeps nothing
        client.responses.retrieve(second.id)


def test_streamed_calls_have_argument_events(http: httpx.Client):
    body = {
        "model": "gpt-4",
        "input": "Weather in Oslo?",
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "stream": True,
        "store": False,
        "temperature": 0,
        "max_output_tokens": 40,
        "stream_options": {"include_obfuscation": False},
    }
    with http.stream("POST", "/v1/responses", json=body) as answer:
        events = [data for _, data in sse_events(answer)]
    for data in events:
        check(stream_schema(data["type"]), data)
    types = [data["type"] for data in events]
    assert types.count("response.output_item.added") == 1  # a named choice: one call
    deltas = [d["delta"] for d in events if d["type"] == "response.function_call_arguments.delta"]
    assert not any("obfuscation" in d for d in events)
    done = next(d for d in events if d["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == "".join(deltas) and done["name"] == "get_weather"
    final = events[-1]["response"]
    assert final["output"][0]["arguments"] == done["arguments"]


def test_previous_response_id_continues_a_stored_conversation(client: openai.OpenAI):
    first = client.responses.create(
        model="gpt-4", input="My name is Ada.", instructions="Be brief.", **GREEDY
    )
    second = client.responses.create(
        model="gpt-4", input="What is my name?", previous_response_id=first.id, **GREEDY
    )
    assert second.previous_response_id == first.id
    # The earlier turn is in the prompt: more input tokens than the question alone.
    alone = client.responses.create(model="gpt-4", input="What is my name?", store=False, **GREEDY)
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
    assert client.responses.retrieve(second.id).output_text == second.output_text
    items = client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"]
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError) as gone:
        client.responses.create(
            model="gpt-4", input="Again?", previous_response_id=first.id, **GREEDY
        )
    assert gone.value.body["param"] == "previous_response_id"


def test_a_response_is_readable_only_with_the_key_that_made_it(
    client: openai.OpenAI, server: LiveServer
):
    mine = client.responses.create(model="gpt-4", input="A secret.", **GREEDY)
    other = openai.OpenAI(base_url=server.v1, api_key=API_KEYS[1], max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(
            model="gpt-4", input="Go on.", previous_response_id=mine.id, **GREEDY
        )
    assert client.responses.retrieve(mine.id).id == mine.id  # still there for its owner


def test_tools_stratus_cannot_run_are_skipped_and_namespaces_offer_their_functions(
    client: openai.OpenAI,
):
    namespace = {
        "type": "namespace",
        "name": "crm",
        "description": "Customer records",
        "tools": [{**WEATHER, "name": "lookup"}],
    }
    response = client.responses.create(
        model="gpt-4",
        input="Look up Paris.",
        store=False,
        temperature=0,
        max_output_tokens=40,
        tools=[{"type": "web_search"}, {"type": "local_shell"}, namespace],
        tool_choice="required",
        parallel_tool_calls=False,
    )
    call = response.output[0]
    assert call.type == "function_call"
    assert (call.namespace, call.name) == ("crm", "lookup")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]},
            "input[0].call_id",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "x"}]}]},
            "input[0].content[0].type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"type": "reasoning", "summary": [], "encrypted_content": "forged"}]},
            "input[0].encrypted_content",
        ),
        ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "input[0].type"),
        ({"input": [{"role": "wizard", "content": "hi"}]}, "input[0].role"),
        ({"input": "hi", "previous_response_id": "resp_unknown"}, "previous_response_id"),
        ({"input": "hi", "background": True}, "background"),
        ({"input": "hi", "include": ["file_search_call.results"]}, "include"),
        (
            {
                "input": "hi",
                "tool_choice": {"type": "function", "name": "nope"},
                "tools": [WEATHER],
            },
            "tool_choice",
        ),
        (
            {
                "input": "hi",
                "text": {
                    "format": {"type": "json_schema", "name": "x", "schema": {"type": "strnig"}}
                },
            },
            "text.format.schema",
        ),
    ],
)
def test_bad_input_is_refused_naming_its_place(http: httpx.Client, body: dict, param: str):
    answer = http.post("/v1/responses", json={"model": "gpt-4", **body})
    assert answer.status_code in (400, 404), answer.text
    error = answer.json()["error"]
    assert error["param"] == param, error


def test_logprobs_when_included(http: httpx.Client):
    body = {
        "model": "gpt-4",
        "input": "Say hi",
        "include": ["message.output_text.logprobs"],
        "top_logprobs": 2,
        **GREEDY,
    }
    answer = http.post("/v1/responses", json=body).json()
    check("Response", answer)
    part = answer["output"][0]["content"][0]
    assert len(part["logprobs"]) == answer["usage"]["output_tokens"]
    assert all(len(entry["top_logprobs"]) == 2 for entry in part["logprobs"])
    assert "".join(entry["token"] for entry in part["logprobs"]) == part["text"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/responses", {"model": "gpt-4", "input": "x" * 100_000}),
        ("/v1/messages", {"model": "gpt-4", "max_tokens": 4,
                          "messages": [{"role": "user", "content": "x" * 100_000}]}),
    ],
)  # fmt: skip
def test_oversized_bodies_are_413_in_the_dialects_envelope(http: httpx.Client, path, body):
    answer = http.post(path, json=body)  # over the test server's 64 KiB
    assert answer.status_code == 413
    error = answer.json()["error"]
    if path == "/v1/messages":
        assert answer.json()["type"] == "error" and error["type"] == "request_too_large"
    else:
        assert error["code"] == "payload_too_large"
