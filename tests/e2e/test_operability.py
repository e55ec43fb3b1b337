"""What an operator sees of the live server: /metrics, the cost line of each request, the
Server-Timing header, /openapi.json and /docs, all behind the key.

Metrics and cost lines are checked against the responses themselves: the tokens a sequence of
requests reports in its `usage` are the tokens the counters and the cost lines add up.
"""

from __future__ import annotations

import base64
import json
from collections import Counter

import httpx
import pytest
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LiveServer
from tests.platforms import sse

CHAT = "gpt-4o-mini"  # the embedded SmolLM2, by its OpenAI alias
EMBEDDINGS = "text-embedding-ada-002"
HI = [{"role": "user", "content": "Say hi."}]


def scrape(http: httpx.Client) -> Counter:
    """Every sample of /metrics, by name and labels."""
    answer = http.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    samples: Counter = Counter()
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def delta(before: Counter, after: Counter, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after[key] - before[key]


def test_metrics_and_cost_lines_add_up_to_the_usage_of_a_known_sequence(server, client, http):
    before = scrape(http)
    plain = client.chat.completions.with_raw_response.create(
        model=CHAT, messages=HI, max_tokens=8, temperature=0
    )
    streamed = client.chat.completions.with_raw_response.create(
        model=CHAT,
        messages=HI,
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(streamed.parse())
    completion = client.completions.with_raw_response.create(
        model=CHAT, prompt="Once upon a time", max_tokens=5, n=2
    )
    embedding = client.embeddings.with_raw_response.create(model=EMBEDDINGS, input=["a", "b c"])
    unknown = http.post("/v1/chat/completions", json={"model": "no-such-model", "messages": HI})
    assert unknown.status_code == 404
    after = scrape(http)

    usages = {
        "plain": (plain, plain.parse().usage),
        "streamed": (streamed, chunks[-1].usage),
        "completion": (completion, completion.parse().usage),
    }
    lines = {
        name: server.cost_line(raw.headers["x-request-id"]) for name, (raw, _) in usages.items()
    }
    for name, (_, usage) in usages.items():
        assert billed(lines[name]["units"]) == {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
        }, name
        assert lines[name]["status"] == 200 and lines[name]["platform"] == "http"
    embedded = server.cost_line(embedding.headers["x-request-id"])
    assert embedded["units"] == {
        "prompt_tokens": embedding.parse().usage.prompt_tokens,
        "inputs": 2,
    }
    missing = server.cost_line(unknown.headers["x-request-id"])
    assert (missing["status"], missing["model"], missing["error"]) == (404, "", "model_not_found")

    chat_model, embedding_model = lines["plain"]["model"], embedded["model"]
    assert chat_model and embedding_model and chat_model != CHAT  # the registry's own names
    chat = {"operation": "createChatCompletion", "model": chat_model}
    completions = {"operation": "createCompletion", "model": chat_model}
    assert delta(before, after, "stratus_requests_total", **chat, status="200") == 2
    assert delta(before, after, "stratus_requests_total", **completions, status="200") == 1
    assert (
        delta(before, after, "stratus_requests_total", operation="createChatCompletion", model="",
              status="404") == 1
    )  # fmt: skip
    for labels, names in ((chat, ("plain", "streamed")), (completions, ("completion",))):
        for unit in ("prompt_tokens", "completion_tokens"):
            expected = sum(getattr(usages[n][1], unit) for n in names)
            assert delta(before, after, f"stratus_{unit}_total", **labels) == expected, unit
    embeddings = {"operation": "createEmbedding", "model": embedding_model}
    assert delta(before, after, "stratus_prompt_tokens_total", **embeddings) == (
        embedding.parse().usage.prompt_tokens
    )
    assert delta(before, after, "stratus_embedding_inputs_total", **embeddings) == 2
    assert delta(before, after, "stratus_time_to_first_token_seconds_count", model=chat_model) == 3
    assert (
        delta(before, after, "stratus_time_per_output_token_seconds_count", model=chat_model) == 3
    )
    assert delta(before, after, "stratus_request_duration_seconds_count", **chat) == 2
    assert delta(before, after, "stratus_queue_wait_seconds_count", model=chat_model) == 3
    assert delta(before, after, "stratus_model_requests_total", model=chat_model,
                 source="memory") >= 2  # fmt: skip
    # Nothing runs or waits any more: the gauges are back where they were.
    for gauge in ("stratus_requests_running", "stratus_requests_waiting"):
        assert delta(before, after, gauge, model=chat_model) == 0


def test_server_timing_says_where_the_time_went(http):
    answer = http.post(
        "/v1/chat/completions", json={"model": CHAT, "messages": HI, "max_tokens": 2}
    )
    spans = dict(part.strip().split(";dur=") for part in answer.headers["server-timing"].split(","))
    assert {"queue", "compute"} <= set(spans) and all(float(v) >= 0 for v in spans.values())


def billed(units: dict) -> dict:
    """A cost line's billed units. Speculative decoding's counts beside them (not billed; there
    when the request drafted: layers/speculation) are checked for sense and left out."""
    drafted = units.get("draft_tokens", 0)
    assert 0 <= units.get("accepted_draft_tokens", 0) <= drafted
    return {k: v for k, v in units.items() if k not in ("draft_tokens", "accepted_draft_tokens")}


def test_responses_and_messages_cost_lines_equal_their_usage(server, http):
    """The two other dialects of the one generation are metered as chat is, by their names."""
    response = http.post(
        "/v1/responses",
        json={"model": CHAT, "input": "Hi", "max_output_tokens": 4, "store": False},
    )
    usage = response.json()["usage"]
    line = server.cost_line(response.headers["x-request-id"])
    assert (line["operation"], line["status"]) == ("createResponse", 200)
    assert billed(line["units"]) == {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
    }
    message = http.post(
        "/v1/messages", json={"model": CHAT, "messages": HI, "max_tokens": 4, "stream": True}
    )
    events = [json.loads(line[6:]) for line in message.text.splitlines() if line[:6] == "data: "]
    line = server.cost_line(message.headers["x-request-id"])
    assert (line["operation"], line["status"]) == ("createMessage", 200)
    assert billed(line["units"]) == {
        "prompt_tokens": events[0]["message"]["usage"]["input_tokens"],
        "completion_tokens": events[-2]["usage"]["output_tokens"],
    }


def test_speech_and_transcription_cost_lines_equal_their_usage(server, http):
    speech = http.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": "The quick brown fox jumps.",
              "stream_format": "sse"},
    )  # fmt: skip
    events = [e for e in sse(speech.text) if e != "[DONE]"]
    done = events[-1]
    assert done["type"] == "speech.audio.done"
    spoken = server.cost_line(speech.headers["x-request-id"])
    assert spoken["units"]["characters"] == len("The quick brown fox jumps.")
    assert round(spoken["units"]["audio_seconds_out"] * 50) == done["usage"]["output_tokens"]

    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    heard = http.post(
        "/v1/audio/transcriptions",
        data={"model": "whisper-1", "stream": "true"},
        files={"file": ("fox.mp3", audio, "audio/mpeg")},
    )
    done = [e for e in sse(heard.text) if e != "[DONE]"][-1]
    assert done["type"] == "transcript.text.done"
    line = server.cost_line(heard.headers["x-request-id"])
    assert round(line["units"]["audio_seconds_in"] * 50) == done["usage"]["input_tokens"]
    assert line["units"]["completion_tokens"] == done["usage"]["output_tokens"]


def test_an_image_cost_line_counts_images_pixels_and_steps(server, http):
    answer = http.post(
        "/v1/images/generations",
        json={"prompt": "a red cat", "size": "64x64", "n": 2, "steps": 2,
              "response_format": "b64_json"},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    line = server.cost_line(answer.headers["x-request-id"])
    assert line["units"] == {"images": 2, "image_pixels": 2 * 64 * 64, "image_steps": 2 * 2}


def test_a_stream_the_client_leaves_is_logged_as_cut(server, http):
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": CHAT, "messages": HI, "max_tokens": 200, "stream": True,
              "ignore_eos": True},
    ) as answer:  # fmt: skip
        request_id = answer.headers["x-request-id"]
        next(answer.iter_lines())
    line = server.cost_line(request_id)
    assert line["error"] == "client_closed_request" and line["status"] == 200
    assert 0 < line["units"]["completion_tokens"] < 200


def test_the_document_is_valid_openapi_and_lists_every_operation(http):
    document = http.get("/openapi.json").json()
    validate(document)
    assert document["openapi"] == "3.1.0"
    operations = {
        op["operationId"] for item in document["paths"].values() for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }  # fmt: skip
    assert {"createChatCompletion", "createTranscription", "listModels", "metrics"} <= operations


@pytest.mark.parametrize(
    "path", ["/openapi.json", "/docs", "/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js",
             "/metrics"]
)  # fmt: skip
def test_docs_and_metrics_need_the_key_and_a_browser_can_log_in(server: LiveServer, path):
    url = server.url + path
    refused = httpx.get(url, timeout=30)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert refused.headers["www-authenticate"].startswith("Basic realm=")
    assert httpx.get(url, auth=("anyone", "wrong"), timeout=30).status_code == 401
    key = server.headers()["Authorization"].removeprefix("Bearer ")
    assert httpx.get(url, auth=("anyone", key), timeout=30).status_code == 200
    assert httpx.get(url, headers=server.headers(), timeout=30).status_code == 200


def test_an_unknown_docs_asset_is_a_404_not_a_file(http):
    for name in ("index.html", "..%2F..%2Fpyproject.toml", "swagger-editor.js"):
        answer = http.get(f"/docs/{name}")
        assert answer.status_code == 404, name
        assert json.loads(answer.text)["error"]["type"] == "invalid_request_error"
