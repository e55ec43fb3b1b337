"""Calling the same request through every platform, as a client of each would.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from adapters.aws_lambda import make_handler
from adapters.runpod_worker import make_worker
from adapters.runtime import build_store
from common.image_urls import ImageUrls
from common.settings import Settings

EVENTS = Path(__file__).parent / "events"
PLATFORMS = ["http", "lambda", "runpod", "runpod-api"]
AUTHENTICATED = ["http", "lambda"]  # RunPod authenticates jobs itself, before the worker
DEFAULT = object()  # call(): the key the platforms were made with
CHAT = {  # a chat every platform answers alike
    "model": "gpt-4",
    "messages": [{"role": "user", "content": "Hello!"}],
    "max_tokens": 8,
    "temperature": 0,
}


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
    """The data of every event; a named event's `event:` line must equal its data's type."""
    events = []
    for block in text.split("\n\n"):
        name = None
        if block.startswith("event: "):
            head, _, block = block.partition("\n")
            name = head.removeprefix("event: ")
        if block.startswith("data: "):
            data = block.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
            assert name is None or events[-1]["type"] == name, block
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
    if isinstance(output.get("error"), str):  # a failed request (a Response has "error": null)
        return from_job_error(output["error"])
    return Answer(200, output)


def from_job_error(error: str) -> Answer:
    """A failed job's error: the JSON of OpenAI's envelope and the HTTP status beside it."""
    envelope = json.loads(error)
    return Answer(envelope["status"], envelope)


def from_job_result(result: dict) -> Answer:
    """What RunPod records for a job: {"output": [...]}, or a failed job's {"error": ...}."""
    if "error" in result:
        return from_job_error(result["error"])
    return from_job_outputs(result["output"])


class Platforms:
    def __init__(
        self,
        server,
        in_process_settings: Settings,
        runpod_api: str,
        image_urls: ImageUrls,
        api_key: str,
    ) -> None:
        self.server = server
        self.api_key = api_key
        self.settings = in_process_settings
        self.store = store = build_store(in_process_settings)  # the Lambda app's and the worker's
        # Off HTTP, image URLs are presigned S3 URLs (moto's, through the proxy).
        self.lambda_handler = make_handler(in_process_settings, store, image_urls=image_urls)
        self.worker = make_worker(in_process_settings, store, image_urls=image_urls)
        self.runpod_api_url = runpod_api
        self.runpod_loop = asyncio.new_event_loop()

    def call(self, platform: str, method: str, path: str, body=None, query=None, key=DEFAULT):
        """`key`: the platforms' own by default; None sends none."""
        key = self.api_key if key is DEFAULT else key
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
        if method not in ("GET", "POST") or (method == "GET" and body):
            # worker-vllm's openai_route shape says no method: POST with a body, else GET
            job = {"input": {"route": path, "method": method, "body": body}}
        result = httpx.post(f"{self.runpod_api_url}/runsync", json=job, timeout=120).json()
        assert result["status"] == "COMPLETED", result
        return from_job_outputs(result["output"])
