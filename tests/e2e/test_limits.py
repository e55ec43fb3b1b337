"""Limits no client can get past: deadlines, work caps, body caps as bytes arrive, audio duration,
on the HTTP gateway and through RunPod jobs (the same application, translated).

Deadlines are tried on a second gateway in this process (uvicorn on a free port) that shares the
session's in-process model store: the same loaded models, a deadline of a second or two.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from adapters.http import create_app
from adapters.runpod_worker import Worker, make_worker
from tests.conftest import API_KEYS, MAX_AUDIO_SECONDS, MAX_BODY_BYTES
from tests.e2e.test_gateway import CHAT, LONG_STREAM, assert_envelope
from tests.platforms import from_job_outputs
from tests.processes import free_port
from tests.unit.test_audio_decode import silence

DEADLINE = 1.5
LONG_PLAIN = {**LONG_STREAM, "stream": False}


@dataclass
class Strict:
    """A gateway and a RunPod worker with a short deadline and a queue of one."""

    url: str
    worker: Worker
    loop: asyncio.AbstractEventLoop

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEYS[0]}"}

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/health", headers=self.headers()).json()

    def wait_idle(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            health = self.health()
            if health["active"] == 0 and health["waiting"] == 0:
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"still busy after {timeout}s: {health}")

    def job(self, route: str, body: Any = None, method: str = "POST") -> list[Any]:
        job = {"id": "j", "input": {"route": route, "method": method, "body": body}}

        async def outputs() -> list[Any]:
            return [output async for output in self.worker.handle(job)]

        return self.loop.run_until_complete(outputs())


@pytest.fixture(scope="module")
def strict(platforms) -> Iterator[Strict]:
    settings = platforms.settings.model_copy(
        update={
            "request_timeout": DEADLINE,
            "max_queue": 1,
            "max_body_bytes": 8 * 1024 * 1024,
            "max_audio_seconds": 600,
        }
    )
    app = create_app(settings, platforms.store)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    loop = asyncio.new_event_loop()
    yield Strict(f"http://127.0.0.1:{port}", make_worker(settings, platforms.store), loop)
    server.should_exit = True
    thread.join(10)
    loop.close()


# --- deadlines ---------------------------------------------------------------------------------


def test_a_plain_request_past_its_deadline_gets_a_timeout_error(strict):
    started = time.monotonic()
    response = httpx.post(
        f"{strict.url}/v1/chat/completions", json=LONG_PLAIN, headers=strict.headers(), timeout=60
    )
    assert_envelope(response, 504, code="request_timeout")
    assert time.monotonic() - started < 30  # 1500 tokens would take longer than this
    assert strict.wait_idle(2.0) < 2.0


def test_a_stream_past_its_deadline_ends_with_an_error_event_then_done(strict):
    with httpx.stream(
        "POST",
        f"{strict.url}/v1/chat/completions",
        json=LONG_STREAM,
        headers=strict.headers(),
        timeout=60,
    ) as response:
        assert response.status_code == 200
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]"
    assert '"request_timeout"' in events[-2] and '"error"' in events[-2]
    assert '"chat.completion.chunk"' in events[0]  # it streamed before the deadline
    assert strict.wait_idle(2.0) < 2.0


def test_the_deadline_stops_drawing_and_transcribing(strict, http):
    drawing = {"prompt": "a long drawing", "size": "256x256", "n": 4, "steps": 150, "seed": 1}
    response = httpx.post(
        f"{strict.url}/v1/images/generations", json=drawing, headers=strict.headers(), timeout=60
    )
    assert_envelope(response, 504, code="request_timeout")
    assert strict.wait_idle(3.0) < 3.0
    text = " ".join(f"This is sentence {n} of a long text to transcribe." for n in range(20))
    speech = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "mp3"}
    audio = http.post("/v1/audio/speech", json=speech).content  # over a minute
    response = httpx.post(
        f"{strict.url}/v1/audio/transcriptions",
        files={"file": ("long.mp3", audio)},
        data={"model": "whisper-1"},
        headers=strict.headers(),
        timeout=60,
    )
    assert_envelope(response, 504, code="request_timeout")
    assert strict.wait_idle(3.0) < 3.0


def test_the_deadline_through_runpod(strict):
    timed_out = from_job_outputs(strict.job("/v1/chat/completions", LONG_PLAIN))
    assert timed_out.status == 504 and timed_out.body["error"]["code"] == "request_timeout"
    streamed = from_job_outputs(strict.job("/v1/chat/completions", LONG_STREAM))
    assert streamed.events[-1] == "[DONE]"
    assert streamed.events[-2]["error"]["code"] == "request_timeout"
    [health] = strict.job("/health", method="GET")
    assert health["active"] == 0 and health["waiting"] == 0


# --- RunPod jobs get the gateway's admission, caps and cancellation --------------------------


def test_runpod_jobs_queue_and_overflow_with_429(strict):
    async def scenario() -> tuple[list[Any], list[Any]]:
        # Long enough to hold the engine while the others arrive (~0.6 s here: its prompt is
        # cached to the token), short enough to finish within the deadline.
        long = {"route": "/v1/chat/completions", "body": {**LONG_STREAM, "max_tokens": 60}}
        # Another model's jobs wait while the chat runs (one engine at a time).
        short = {
            "route": "/v1/embeddings",
            "body": {"model": "text-embedding-ada-002", "input": "hello"},
        }
        holding = strict.worker.handle({"id": "a", "input": long})
        first = await anext(holding)  # running: its model holds the engine
        waiting = asyncio.ensure_future(_collect(strict.worker.handle({"id": "b", "input": short})))
        await asyncio.sleep(0.1)  # queued: the queue holds one
        overflow = await _collect(strict.worker.handle({"id": "c", "input": short}))
        rest = [first] + [output async for output in holding]
        return overflow, [rest, await waiting]

    overflow, (held, waited) = strict.loop.run_until_complete(scenario())
    refused = from_job_outputs(overflow)
    assert refused.status == 429 and refused.body["error"]["code"] == "rate_limit_exceeded"
    assert from_job_outputs(held).events[-1] == "[DONE]"
    # The queued job ran once the engine was free, or, on a slow machine, was answered when its
    # short deadline passed (waiting, or loading its model).
    waited_answer = from_job_outputs(waited)
    assert waited_answer.status == 200 or waited_answer.status == 504, waited_answer


LONG_WORK = {
    "chat-stream": ("/v1/chat/completions", LONG_STREAM),
    "chat": ("/v1/chat/completions", LONG_PLAIN),
    "completions": (
        "/v1/completions",
        {"model": "gpt-4", "prompt": "Once", "max_tokens": 1500, "ignore_eos": True},
    ),
    # 2048 inputs of ~100 tokens: minutes of encoding on a CPU
    "embeddings": (
        "/v1/embeddings",
        {"model": "text-embedding-ada-002", "input": ["word " * 100] * 2048},
    ),
}


@pytest.mark.parametrize("kind", [*LONG_WORK, "transcriptions"])
def test_a_cancelled_runpod_job_stops_its_work_on_every_endpoint(platforms, http, kind):
    """On the session's worker (no short deadline): what stops the work is the cancellation,
    as RunPod cancels a job: its handler's generator is closed, or its task cancelled."""
    worker, loop = platforms.worker, platforms.runpod_loop
    if kind == "transcriptions":
        text = " ".join(f"This is sentence {n} of a long text to transcribe." for n in range(20))
        speech = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "mp3"}
        audio = base64.b64encode(http.post("/v1/audio/speech", json=speech).content).decode()
        route, body = "/v1/audio/transcriptions", {"model": "whisper-1", "file": audio}
    else:
        route, body = LONG_WORK[kind]
    job = {"id": kind, "input": {"route": route, "body": body}}
    # Loaded first (a model load is not interrupted): one small request of the same model.
    small = {**body, "input": "hi"} if kind == "embeddings" else {**body, "max_tokens": 1}
    if kind != "transcriptions":
        platforms.call("runpod", "POST", route, {k: v for k, v in small.items() if k != "stream"})

    async def cancel() -> None:
        if body.get("stream"):
            outputs = worker.handle(job)
            await anext(outputs)
            await outputs.aclose()  # RunPod stops reading: the generator is closed
            return
        task = asyncio.ensure_future(_collect(worker.handle(job)))
        await asyncio.sleep(1.5)  # loaded, and working
        assert not task.done(), task.result()
        task.cancel()  # as the SDK cancels a job's task
        with pytest.raises(asyncio.CancelledError):
            await task

    async def active() -> int:
        health = {"id": "h", "input": {"route": "/health", "method": "GET"}}
        return (await _collect(worker.handle(health)))[0]["active"]

    async def freed_within(seconds: float) -> float:
        started = time.monotonic()
        while await active():
            assert time.monotonic() - started < seconds
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    loop.run_until_complete(cancel())
    # Each job's work takes far longer; a cancelled one stops within a token, batch or segment.
    assert loop.run_until_complete(freed_within(4.0)) < 4.0


def test_runpod_jobs_have_the_gateways_body_caps(platforms):
    # The session's in-process settings: the default cap (25 MiB) — a job past it is a 413.
    big = {"model": "gpt-4", "messages": [{"role": "user", "content": "x" * 27_000_000}]}
    refused = from_job_outputs(from_job_outputs_raw(platforms, "/v1/chat/completions", big))
    assert refused.status == 413 and refused.body["error"]["code"] == "payload_too_large"


def from_job_outputs_raw(platforms, route: str, body: Any) -> list[Any]:
    job = {"id": "big", "input": {"route": route, "body": body}}

    async def outputs() -> list[Any]:
        return [output async for output in platforms.worker.handle(job)]

    return platforms.runpod_loop.run_until_complete(outputs())


async def _collect(outputs) -> list[Any]:
    return [output async for output in outputs]


# --- work caps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {**CHAT, "n": 64, "max_tokens": 1500}, "max_tokens"),
        (
            "/v1/completions",
            {"model": "gpt-4", "prompt": ["Once upon a time"] * 60, "n": 2, "max_tokens": 1000},
            "max_tokens",
        ),
        (
            "/v1/completions",
            {"model": "gpt-4", "prompt": ["Hi"] * 8, "n": 2, "best_of": 10, "max_tokens": 1000},
            "max_tokens",
        ),
    ],
)
def test_too_much_work_in_one_request_is_a_400(http, path, body, param):
    error = assert_envelope(http.post(path, json=body), 400, param=param)
    assert "too much work" in error["message"]


# --- bodies are capped as they arrive ----------------------------------------------------------


def _send_chunked(url: str, path: str, content_type: str, chunks: Iterator[bytes]) -> tuple:
    """Sends a chunked body (no Content-Length) until the server answers; returns the status
    line and how many body bytes had been sent by then."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEYS[0]}\r\n"
            f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(head.encode())
        sock.setblocking(False)
        answer = b""
        for chunk in chunks:
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
            except (BlockingIOError, OSError):
                pass  # the server has stopped reading: its answer is on the way
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                continue
            if b"\r\n\r\n" in answer:
                break
        sock.setblocking(True)
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
    return answer.split(b"\r\n", 1)[0].decode(), sent, answer


@pytest.mark.parametrize("kind", ["multipart", "json"])
def test_a_chunked_body_over_the_cap_is_refused_while_it_arrives(server, kind):
    boundary = "b0undary"
    if kind == "multipart":
        content_type = f"multipart/form-data; boundary={boundary}"
        opening = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="a.wav"\r\n\r\n'
        ).encode()
        path = "/v1/audio/transcriptions"
    else:
        content_type, opening, path = (
            "application/json",
            b'{"model": "gpt-4", "x": "',
            ("/v1/chat/completions"),
        )

    def chunks() -> Iterator[bytes]:
        yield opening
        for _ in range(2000):  # 32 MB, if nobody stopped it
            time.sleep(0.001)
            yield b"a" * 16384

    status, sent, answer = _send_chunked(server.url, path, content_type, chunks())
    assert " 413 " in status, answer[:300]
    assert b'"payload_too_large"' in answer
    assert sent < 16 * MAX_BODY_BYTES  # refused near the cap, not after 32 MB


# --- audio duration ----------------------------------------------------------------------------


def test_audio_longer_than_the_cap_is_refused(http, platforms):
    flac = silence(2 * MAX_AUDIO_SECONDS)  # four minutes of silence in ~48 KB
    assert len(flac) < MAX_BODY_BYTES
    response = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("long.flac", flac)},
        data={"model": "whisper-1"},
    )
    error = assert_envelope(response, 400, code="audio_too_long", param="file")
    assert f"{MAX_AUDIO_SECONDS} seconds" in error["message"]
    body = {"model": "whisper-1", "file": base64.b64encode(flac).decode()}
    answer = platforms.call("runpod", "POST", "/v1/audio/transcriptions", body)
    assert answer.status == 400 and answer.body["error"]["code"] == "audio_too_long"


def test_sigterm_bounds_a_runpod_workers_jobs_in_flight(platforms, tmp_path):
    """The SDK stops taking jobs on SIGTERM and waits for those in flight; after the grace,
    their work stops. (The handler is called directly: this test process keeps its own.)"""
    import signal

    settings = platforms.settings.model_copy(update={"shutdown_grace": 0.5})
    worker = make_worker(settings, platforms.store)
    sdk_handler_calls = []
    previous = signal.signal(signal.SIGTERM, lambda *args: sdk_handler_calls.append(args))
    try:
        worker.watch_sigterm()
        on_sigterm = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    job = {"id": "t", "input": {"route": "/v1/chat/completions", "body": LONG_STREAM}}

    async def run() -> list[Any]:
        outputs = worker.handle(job)
        first = await anext(outputs)
        on_sigterm(signal.SIGTERM, None)
        return [first] + [output async for output in outputs]

    started = time.monotonic()
    answer = from_job_outputs(platforms.runpod_loop.run_until_complete(run()))
    assert time.monotonic() - started < 5  # 1500 tokens take 15 s or more
    assert len(sdk_handler_calls) == 1  # the SDK still stopped taking jobs
    assert answer.events[-1] == "[DONE]"
    assert answer.events[-2]["error"]["code"] == "server_shutting_down"
