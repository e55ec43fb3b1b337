"""One test matrix: the same requests through every platform give the same answers.

http        the gateway under uvicorn (the session's live server)
lambda      Mangum with real API Gateway / Function URL event shapes (tests/events/)
runpod      the RunPod worker's handler, called with jobs
runpod-api  the RunPod SDK's local test API (`--rp_serve_api`): /runsync, /run + /stream
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import pytest

from adapters.aws_lambda import make_handler
from adapters.runpod_worker import Worker, normalize_job
from adapters.runtime import build_store
from common.errors import InvalidRequest
from common.image_urls import S3ImageUrls
from common.settings import Settings
from tests.conftest import API_KEYS, IMAGE_BUCKET
from tests.processes import free_port, running, runpod_local_api

EVENTS = Path(__file__).parent.parent / "events"
PLATFORMS = ["http", "lambda", "runpod", "runpod-api"]
AUTHENTICATED = ["http", "lambda"]  # RunPod authenticates jobs itself, before the worker


@dataclass
class Answer:
    status: int
    body: Any = None  # the JSON object of a plain answer
    events: list[Any] | None = None  # the decoded events of a stream, "[DONE]" included
    audio: bytes | None = None  # a binary answer

    @property
    def stream_text(self) -> str:
        chunks = [e for e in self.events if e != "[DONE]"]
        return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


def sse(text: str) -> list[Any]:
    events = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def from_http(status: int, content_type: str, content: bytes) -> Answer:
    if content_type.startswith("audio/"):
        return Answer(status, audio=content)
    if content_type.startswith("text/event-stream"):
        return Answer(status, events=sse(content.decode()))
    return Answer(status, json.loads(content))


def from_job_outputs(outputs: list[Any]) -> Answer:
    if isinstance(outputs[0], str):
        return Answer(200, events=sse("".join(outputs)))
    if "content_type" in outputs[0]:  # streamed audio: parts in order
        assert len({output["content_type"] for output in outputs}) == 1
        return Answer(200, audio=b"".join(base64.b64decode(o["data"]) for o in outputs))
    [output] = outputs
    return Answer(output.get("status", 200) if "error" in output else 200, output)


class Platforms:
    def __init__(
        self, server, in_process_settings: Settings, runpod_api: str, image_urls: S3ImageUrls
    ) -> None:
        self.server = server
        self.settings = in_process_settings
        self.store = store = build_store(in_process_settings)  # the Lambda app's and the worker's
        # Off HTTP, image URLs are presigned S3 URLs (moto's, through the proxy).
        self.lambda_handler = make_handler(in_process_settings, store, image_urls=image_urls)
        self.worker = Worker(store, image_urls=image_urls)
        self.runpod_api_url = runpod_api
        self.runpod_loop = asyncio.new_event_loop()

    def call(self, platform: str, method: str, path: str, body=None, query=None, key=API_KEYS[0]):
        return getattr(self, "via_" + platform.replace("-", "_"))(
            method, path, body, query or {}, key
        )

    def via_http(self, method, path, body, query, key) -> Answer:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        r = httpx.request(
            method,
            f"{self.server.url}{path}",
            json=body,
            params=query,
            headers=headers,
            timeout=120,
        )
        return from_http(r.status_code, r.headers["content-type"], r.content)

    def via_lambda(self, method, path, body, query, key) -> Answer:
        # A real HTTP API (v2) event, with this request's method, path, query, body and key.
        event = copy.deepcopy(json.loads((EVENTS / "apigw_http_v2_chat_stream.json").read_text()))
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["requestContext"]["http"]["method"] = method
        event["rawQueryString"] = urlencode(query)
        event["headers"].pop("content-length")
        if key:
            event["headers"]["authorization"] = f"Bearer {key}"
        else:
            event["headers"].pop("authorization")
        event["body"] = base64.b64encode(json.dumps(body).encode()).decode() if body else None
        event["isBase64Encoded"] = body is not None
        response = self.lambda_handler(event, None)
        content = response["body"].encode()
        if response.get("isBase64Encoded"):
            content = base64.b64decode(content)
        return from_http(response["statusCode"], response["headers"]["content-type"], content)

    def via_runpod(self, method, path, body, query, key) -> Answer:
        job = {
            "id": "job-1",
            "input": {"route": f"{path}?{urlencode(query)}", "method": method, "body": body},
        }

        async def outputs() -> list[Any]:
            return [output async for output in self.worker.handle(job)]

        # Its own loop: asyncio.run() would unset the thread's loop, which Mangum relies on.
        return from_job_outputs(self.runpod_loop.run_until_complete(outputs()))

    def via_runpod_api(self, method, path, body, query, key) -> Answer:
        job = {
            "input": {
                "openai_route": f"{path}?{urlencode(query)}" if query else path,
                "openai_input": body or {},
            }
        }
        if method == "GET" and body:
            job = {"input": {"route": path, "method": method, "body": body}}
        result = httpx.post(f"{self.runpod_api_url}/runsync", json=job, timeout=120).json()
        assert result["status"] == "COMPLETED", result
        return from_job_outputs(result["output"])


@pytest.fixture(scope="module")
def platforms(server, s3, tmp_path_factory):
    env = {
        **os.environ,
        **s3.env,
        "STRATUS_MODELS": str(server.registry),
        "STRATUS_LOG_LEVEL": "warning",
        "STRATUS_CACHE_DIR": str(tmp_path_factory.mktemp("runpod-cache")),
        "STRATUS_IMAGE_BUCKET": f"{IMAGE_BUCKET}/runpod",
    }
    port = free_port()
    command = runpod_local_api(port)
    settings = Settings(
        api_key=",".join(API_KEYS),
        models=server.registry,
        cache_dir=tmp_path_factory.mktemp("lambda-cache"),
    )
    s3_client = s3.client(direct=False)
    image_urls = S3ImageUrls(lambda: s3_client, IMAGE_BUCKET, "in-process/", ttl=600)
    with running(command, f"http://127.0.0.1:{port}/docs", env):
        platforms = Platforms(server, settings, f"http://127.0.0.1:{port}", image_urls)
        yield platforms
        platforms.runpod_loop.close()


CHAT = {
    "model": "gpt-4",
    "messages": [{"role": "user", "content": "Hello!"}],
    "max_tokens": 8,
    "temperature": 0,
}


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
def test_speech_is_audio_everywhere(platforms, platform):
    import io

    import av

    text = "Hello there. This is the second sentence, streamed."
    body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav"}
    answer = platforms.call(platform, "POST", "/v1/audio/speech", body)
    assert answer.status == 200
    with av.open(io.BytesIO(answer.audio)) as container:
        stream = container.streams.audio[0]
        seconds = sum(f.samples for f in container.decode(stream)) / stream.rate
    assert 1.5 < seconds < 6.0


IMAGE = {"prompt": "A cute baby sea otter", "size": "64x64", "seed": 11}


@pytest.fixture(scope="module")
def reference_images(platforms) -> Answer:
    return platforms.call("http", "POST", "/v1/images/generations", {**IMAGE, "n": 2,
                          "response_format": "b64_json"})  # fmt: skip


@pytest.mark.parametrize("platform", PLATFORMS)
def test_images_are_the_same_everywhere(platforms, reference_images, platform):
    body = {**IMAGE, "n": 2, "response_format": "b64_json"}
    answer = platforms.call(platform, "POST", "/v1/images/generations", body)
    assert answer.status == 200, answer.body
    assert answer.body["data"] == reference_images.body["data"]  # the same PNG bytes


@pytest.mark.parametrize("platform", PLATFORMS)
def test_image_urls_work_everywhere(platforms, reference_images, platform):
    """The gateway serves its own; Lambda and RunPod answer presigned S3 URLs."""
    answer = platforms.call(platform, "POST", "/v1/images/generations", {**IMAGE, "n": 2})
    assert answer.status == 200, answer.body
    for item, reference in zip(answer.body["data"], reference_images.body["data"], strict=True):
        if platform == "http":
            assert item["url"].startswith(f"{platforms.server.url}/generated-images/")
        else:
            assert f"/{IMAGE_BUCKET}/" in item["url"] and "X-Amz-Signature=" in item["url"]
        png = httpx.get(item["url"], timeout=30).content
        assert png == base64.b64decode(reference["b64_json"])


def test_image_urls_off_http_without_a_bucket_are_a_clear_400(platforms):
    bare = copy.copy(platforms)  # the same store, adapters as they are built with no bucket
    bare.lambda_handler = make_handler(platforms.settings, platforms.store)
    bare.worker = Worker(platforms.store)
    for platform in ("lambda", "runpod"):
        answer = bare.call(platform, "POST", "/v1/images/generations", IMAGE)
        assert answer.status == 400, (platform, answer.body)
        assert answer.body["error"]["param"] == "response_format"
        assert "b64_json" in answer.body["error"]["message"]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_models_are_the_same_everywhere(platforms, platform):
    answer = platforms.call(platform, "GET", "/v1/models", query={"filter": "^gpt-4"})
    assert answer.status == 200 and answer.body["object"] == "list"
    ids = {m["id"] for m in answer.body["data"]}
    assert ids == {"gpt-4", "gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "gpt-4o-mini-tts"}


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


def test_a_multipart_upload_through_lambda(platforms, http):
    speech = {"model": "tts-1", "input": "Hello there.", "voice": "alloy", "response_format": "mp3"}
    audio = http.post("/v1/audio/speech", json=speech).content
    upload = httpx.Request(
        "POST", "http://x/v1/audio/transcriptions", files={"file": ("hello.mp3", audio)},
        data={"model": "whisper-1"},
    )  # fmt: skip
    event = copy.deepcopy(json.loads((EVENTS / "apigw_http_v2_chat_stream.json").read_text()))
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/v1/audio/transcriptions"
    event["headers"]["content-type"] = upload.headers["content-type"]
    event["headers"]["content-length"] = str(len(upload.read()))
    event["body"] = base64.b64encode(upload.read()).decode()  # API Gateway base64-encodes it
    response = platforms.lambda_handler(event, None)
    assert response["statusCode"] == 200, response["body"]
    assert "hello" in json.loads(response["body"])["text"].lower()


def test_audio_in_runpod_jobs_as_base64_or_url(platforms, http, tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    speech = {"model": "tts-1", "input": "Hello there.", "voice": "alloy", "response_format": "mp3"}
    audio = http.post("/v1/audio/speech", json=speech).content
    (tmp_path / "hello.mp3").write_bytes(audio)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    files = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{files.server_address[1]}"
    try:
        for file in (base64.b64encode(audio).decode(), f"{url}/hello.mp3"):
            body = {"model": "whisper-1", "file": file}
            answer = platforms.call("runpod", "POST", "/v1/audio/transcriptions", body)
            assert answer.status == 200 and "hello" in answer.body["text"].lower(), answer.body
        for file, status in (("not base64!", 400), (f"{url}/missing.mp3", 400)):
            body = {"model": "whisper-1", "file": file}
            answer = platforms.call("runpod", "POST", "/v1/audio/transcriptions", body)
            assert answer.status == status and answer.body["error"]["param"] == "file"
    finally:
        files.shutdown()
