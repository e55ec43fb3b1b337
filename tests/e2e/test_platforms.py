"""One test matrix: the same requests through every platform give the same answers (text,
embeddings, models, errors, auth, the platforms' own request shapes). The platforms are in
tests/platforms.py; audio and images are in test_platforms_media.py."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from adapters.runpod_worker import normalize_job
from common.errors import InvalidRequest
from tests.conftest import API_KEYS
from tests.platforms import AUTHENTICATED, CHAT, EVENTS, PLATFORMS, Answer, from_job_outputs


@pytest.fixture(scope="module")
def reference(platforms) -> Answer:
    return platforms.call("http", "POST", "/v1/chat/completions", CHAT)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_chat_is_the_same_everywhere(platforms, reference, platform):
    answer = platforms.call(platform, "POST", "/v1/chat/completions", CHAT)
    assert answer.status == 200, answer.body
    assert answer.body["object"] == "chat.completion"
    assert answer.body["choices"] == reference.body["choices"]
    assert answer.body["usage"] == reference.body["usage"]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_streamed_chat_is_the_same_everywhere(platforms, reference, platform):
    answer = platforms.call(platform, "POST", "/v1/chat/completions", {**CHAT, "stream": True})
    assert answer.status == 200
    assert answer.events[-1] == "[DONE]"
    assert answer.stream_text == reference.body["choices"][0]["message"]["content"]
    assert len({e["id"] for e in answer.events[:-1]}) == 1


TOOLS_CHAT = {
    **CHAT,
    "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
    "max_tokens": 60,
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 30}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
            },
        }
    ],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "logprobs": True,
}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_tools_and_structured_output_are_the_same_everywhere(platforms, platform):
    expected = platforms.call("http", "POST", "/v1/chat/completions", TOOLS_CHAT)
    answer = platforms.call(platform, "POST", "/v1/chat/completions", TOOLS_CHAT)
    assert answer.status == 200, answer.body
    [call] = answer.body["choices"][0]["message"]["tool_calls"]
    [reference] = expected.body["choices"][0]["message"]["tool_calls"]
    assert call["function"] == reference["function"]
    assert json.loads(call["function"]["arguments"])["city"]
    assert answer.body["choices"][0]["finish_reason"] == "tool_calls"
    assert answer.body["system_fingerprint"] == expected.body["system_fingerprint"]

    streamed = platforms.call(
        platform, "POST", "/v1/chat/completions", {**TOOLS_CHAT, "stream": True}
    )
    deltas = [e["choices"][0]["delta"] for e in streamed.events[:-1] if e["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert arguments == reference["function"]["arguments"]

    # Closed: an open object lets a small model add properties until max_tokens cuts a string.
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    body = {
        **CHAT,
        "max_tokens": 30,
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    }
    structured = platforms.call(platform, "POST", "/v1/chat/completions", body)
    assert isinstance(json.loads(structured.body["choices"][0]["message"]["content"])["ok"], bool)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_completions_are_the_same_everywhere(platforms, platform):
    body = {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": "The capital of France is",
        "max_tokens": 6,
        "temperature": 0,
    }
    answer = platforms.call(platform, "POST", "/v1/completions", body)
    expected = platforms.call("http", "POST", "/v1/completions", body)
    assert (
        answer.status == 200
        and answer.body["choices"][0]["text"] == expected.body["choices"][0]["text"]
    )


@pytest.mark.parametrize("platform", PLATFORMS)
def test_embeddings_are_the_same_everywhere(platforms, platform):
    body = {
        "model": "text-embedding-3-small",
        "input": ["The food was delicious", "hi"],
        "encoding_format": "base64",
        "dimensions": 32,
    }
    answer = platforms.call(platform, "POST", "/v1/embeddings", body)
    expected = platforms.call("http", "POST", "/v1/embeddings", body)
    assert answer.status == 200 and answer.body["usage"] == expected.body["usage"]
    import base64

    def decoded(a: Answer):
        return [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in a.body["data"]]

    for mine, reference_vector in zip(decoded(answer), decoded(expected), strict=True):
        np.testing.assert_allclose(mine, reference_vector, atol=1e-6)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_tokenize_is_the_same_everywhere(platforms, platform):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
    answer = platforms.call(platform, "POST", "/tokenize", body)
    expected = platforms.call("http", "POST", "/tokenize", body)
    assert answer.status == 200 and answer.body == expected.body
    tokens = {"model": "gpt-4o", "tokens": answer.body["tokens"]}
    back = platforms.call(platform, "POST", "/detokenize", tokens)
    assert back.status == 200 and back.body["content"].endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_rerank_is_the_same_everywhere(platforms, platform):
    body = {"query": "capital of France", "documents": ["Bananas.", "Paris is in France."]}
    for path in ("/v1/rerank", "/v2/rerank"):
        answer = platforms.call(platform, "POST", path, body)
        expected = platforms.call("http", "POST", path, body)
        assert answer.status == 200 and answer.body["results"] == expected.body["results"]
        assert [r["index"] for r in answer.body["results"]] == [1, 0]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_models_are_the_same_everywhere(platforms, platform):
    answer = platforms.call(platform, "GET", "/v1/models", query={"filter": "^gpt-4"})
    assert answer.status == 200 and answer.body["object"] == "list"
    ids = {m["id"] for m in answer.body["data"]}
    assert ids == {
        "gpt-4", "gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "gpt-4o-mini-tts", "gpt-4-vision-preview"
    }  # fmt: skip


@pytest.mark.parametrize("platform", PLATFORMS)
def test_errors_are_the_same_everywhere(platforms, platform):
    answer = platforms.call(
        platform, "POST", "/v1/chat/completions", {**CHAT, "model": "no-such-model"}
    )
    assert answer.status == 404
    assert (
        answer.body["error"]["code"] == "model_not_found"
        and answer.body["error"]["param"] == "model"
    )
    invalid = platforms.call(platform, "POST", "/v1/chat/completions", {**CHAT, "temperature": 9})
    assert invalid.status == 400 and invalid.body["error"]["param"] == "temperature"
    unknown = platforms.call(platform, "GET", "/v1/nothing")
    assert unknown.status == 404 and set(unknown.body["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }


@pytest.mark.parametrize("platform", AUTHENTICATED)
def test_auth_is_the_same_everywhere(platforms, platform):
    assert platforms.call(platform, "GET", "/v1/models", key=None).status == 401
    assert platforms.call(platform, "GET", "/v1/models", key="wrong").status == 401
    assert platforms.call(platform, "GET", "/v1/models", key=API_KEYS[1]).status == 200


@pytest.mark.parametrize("name", sorted(p.stem for p in EVENTS.glob("*.json")))
def test_real_lambda_events_as_they_are(platforms, name):
    response = platforms.lambda_handler(json.loads((EVENTS / f"{name}.json").read_text()), None)
    assert response["statusCode"] == 200, response["body"]
    if "stream" in name:
        assert response["headers"]["content-type"].startswith("text/event-stream")
        assert response["body"].endswith("data: [DONE]\n\n")  # buffered by Mangum, still SSE
    else:
        assert json.loads(response["body"])["object"] in ("chat.completion", "list")


def test_runpod_run_then_stream(platforms):
    job = {
        "input": {"openai_route": "/v1/chat/completions", "openai_input": {**CHAT, "stream": True}}
    }
    started = httpx.post(f"{platforms.runpod_api_url}/run", json=job, timeout=30).json()
    streamed = httpx.post(f"{platforms.runpod_api_url}/stream/{started['id']}", timeout=120).json()
    assert streamed["status"] == "COMPLETED"
    answer = from_job_outputs([part["output"] for part in streamed["stream"]])
    assert answer.events[-1] == "[DONE]" and answer.stream_text


@pytest.mark.parametrize(
    ("job_input", "expected"),
    [
        ({"openai_route": "/v1/models", "openai_input": {}}, ("GET", "/v1/models", None, {})),
        ({"openai_route": "/v1/models?filter=x"}, ("GET", "/v1/models", None, {"filter": "x"})),
        (
            {"openai_route": "/v1/completions", "openai_input": {"a": 1}},
            ("POST", "/v1/completions", {"a": 1}, {}),
        ),
        ({"route": "/v1/models", "method": "get"}, ("GET", "/v1/models", None, {})),
        ({"route": "/v1/edits", "body": {"b": 2}}, ("POST", "/v1/edits", {"b": 2}, {})),
    ],
)
def test_runpod_job_shapes_normalise(job_input, expected):
    request = normalize_job(job_input)
    assert (request.method, request.path, request.body, dict(request.query)) == expected


@pytest.mark.parametrize(
    "job_input", [None, [], {"prompt": "hi"}, {"route": "v1/models"}, {"openai_route": 5}]
)
def test_runpod_bad_job_shapes_are_400(job_input):
    with pytest.raises(InvalidRequest):
        normalize_job(job_input)


RESPONSE = {"model": "gpt-4", "input": "Hello!", "max_output_tokens": 8, "temperature": 0}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_responses_are_the_same_everywhere(platforms, platform):
    expected = platforms.call("http", "POST", "/v1/responses", {**RESPONSE, "store": False})
    answer = platforms.call(platform, "POST", "/v1/responses", RESPONSE)
    assert answer.status == 200, answer.body
    assert answer.body["output"][0]["content"] == expected.body["output"][0]["content"]
    assert answer.body["usage"] == expected.body["usage"]
    streamed = platforms.call(platform, "POST", "/v1/responses", {**RESPONSE, "stream": True})
    assert [e["sequence_number"] for e in streamed.events] == list(range(len(streamed.events)))
    final = streamed.events[-1]["response"]
    assert final["output"][0]["content"] == expected.body["output"][0]["content"]
    # What this platform stored, it reads back (its own store: a volume or a bucket).
    stored = platforms.call(platform, "GET", f"/v1/responses/{answer.body['id']}")
    assert stored.status == 200 and stored.body["id"] == answer.body["id"]
    follow = {**RESPONSE, "previous_response_id": answer.body["id"], "store": False}
    assert platforms.call(platform, "POST", "/v1/responses", follow).status == 200


@pytest.mark.parametrize("platform", PLATFORMS)
def test_conversations_work_everywhere(platforms, platform):
    first = [{"type": "message", "role": "user", "content": "My name is Ada."}]
    made = platforms.call(platform, "POST", "/v1/conversations", {"items": first})
    assert made.status == 200 and made.body["id"].startswith("conv_"), made.body
    turn = {**RESPONSE, "conversation": made.body["id"], "store": False}
    answer = platforms.call(platform, "POST", "/v1/responses", turn)
    assert answer.status == 200 and answer.body["conversation"] == {"id": made.body["id"]}
    items = platforms.call(platform, "GET", f"/v1/conversations/{made.body['id']}/items")
    assert items.status == 200 and len(items.body["data"]) == 3
    gone = platforms.call(platform, "DELETE", f"/v1/conversations/{made.body['id']}")
    assert gone.status == 200 and gone.body["deleted"] is True


@pytest.mark.parametrize("platform", PLATFORMS)
def test_responses_errors_are_the_same_everywhere(platforms, platform):
    bad = {**RESPONSE, "input": [{"type": "function_call_output", "call_id": "x", "output": "y"}]}
    answer = platforms.call(platform, "POST", "/v1/responses", bad)
    assert answer.status == 400
    assert answer.body["error"]["param"] == "input[0].call_id"
    missing = platforms.call(platform, "GET", "/v1/responses/resp_nothing_here")
    assert missing.status == 404 and missing.body["error"]["code"] == "response_not_found"
