"""RunPod serverless worker: each job becomes a request to the same ASGI application that serves
HTTP (and Lambda, through Mangum), translated here the way Mangum translates API Gateway events.
Admission (a bounded queue, 429 beyond it), body caps, deadlines, cancellation, error mapping
and SSE framing therefore exist once, in the application.

    python -m adapters.runpod_worker                      # on RunPod
    python -m adapters.runpod_worker --rp_serve_api ...   # the SDK's local test API

Accepted job inputs (one pure function turns each into method, path, body and query):
    {"openai_route": "/v1/chat/completions", "openai_input": {...}}   RunPod's OpenAI endpoint;
        an empty openai_input means GET (as for /v1/models)
    {"route": "/v1/models", "method": "GET", "body": {...}}            a generic request

An audio upload (transcriptions, translations) carries `file` base64-encoded or as an http(s)
URL, which is fetched under the fetch policy (public addresses only, unless
STRATUS_FETCH_ALLOW names more) and sent on as a multipart body. RunPod authenticates jobs
before they reach the worker, so the application here checks no API key.
Images asked for as `url` need STRATUS_IMAGE_BUCKET (presigned S3 URLs); without it, a 400.

Outputs: a streamed chat or completion yields SSE-framed strings ("data: {...}\\n\\n", ending
with "data: [DONE]\\n\\n") as they are produced; a binary answer (audio) yields
{"content_type", "data": base64} — streamed speech one such part per piece of audio, as it is
synthesized: the audio is the decoded parts joined in order; anything else yields its JSON
object once. An error yields {"error": TEXT}, which fails the job with TEXT as its error: the
JSON of OpenAI's envelope with the HTTP status it would have had, {"error": {...}, "status":
404}. A job RunPod cancels is a client that disconnects: its work stops, and its slot is freed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import signal
import sys
import threading
import types
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.types import ASGIApp, Message

from adapters.http import PLATFORM_REQUEST_ID
from common.errors import InvalidRequest, StratusError
from common.lazy import skipping_inits
from common.registry import Registry
from common.settings import Settings
from common.store import ModelStore
from common.url_fetch import FetchPolicy, fetch_url

log = logging.getLogger("stratus.runpod")

JSON = "application/json"
UPLOAD_ROUTES = ("/audio/transcriptions", "/audio/translations")


@dataclass(frozen=True)
class JobRequest:
    method: str
    path: str
    body: Any = None
    query: Mapping[str, str] = field(default_factory=dict)


def normalize_job(job_input: Any) -> JobRequest:
    """Every accepted job shape as one request: method, path, body, query."""
    if not isinstance(job_input, Mapping):
        raise InvalidRequest("The job input must be an object.")
    if "openai_route" in job_input:
        route, body = job_input["openai_route"], job_input.get("openai_input") or None
        method = "POST" if body else "GET"
    elif "route" in job_input:
        route, body = job_input["route"], job_input.get("body")
        method = str(job_input.get("method") or ("POST" if body else "GET")).upper()
    else:
        raise InvalidRequest(
            "A job input needs 'openai_route' (with 'openai_input') or 'route' (with 'method' "
            "and 'body').",
            param="input",
        )
    if not isinstance(route, str) or not route.startswith("/"):
        raise InvalidRequest(
            "The route must be a path such as /v1/chat/completions.", param="route"
        )
    url = urlsplit(route)
    return JobRequest(method, url.path, body, dict(parse_qsl(url.query)))


@dataclass(frozen=True)
class WireRequest:
    """A job as the bytes an HTTP client would have sent."""

    method: str
    path: str
    query: str
    content_type: str | None
    body: bytes


class Uploads:
    """A job's audio `file` (base64, a data: URL, or an http(s) URL) as bytes."""

    def __init__(self, policy: FetchPolicy, max_bytes: int) -> None:
        self.policy = policy
        self.max_bytes = max_bytes

    def read(self, value: str) -> bytes:
        if value.startswith(("http://", "https://")):
            return fetch_url(value, max_bytes=self.max_bytes, policy=self.policy, param="file")
        try:
            return base64.b64decode(value.split(",", 1)[-1], validate=True)
        except ValueError:
            raise InvalidRequest(
                "'file' must be base64-encoded audio or an http(s) URL.", param="file"
            ) from None


def wire_request(request: JobRequest, uploads: Uploads) -> WireRequest:
    """The job's request as an HTTP body: JSON, or multipart for an upload (blocking: an
    upload's URL is fetched here)."""
    query = urlencode(request.query)
    body = request.body
    is_upload = request.path.removeprefix("/v1") in UPLOAD_ROUTES
    if is_upload and isinstance(body, Mapping) and isinstance(body.get("file"), str):
        boundary = secrets.token_hex(16)
        data = _multipart(body, uploads.read(body["file"]), boundary)
        return WireRequest(
            request.method, request.path, query, f"multipart/form-data; boundary={boundary}", data
        )
    if body is None:
        return WireRequest(request.method, request.path, query, None, b"")
    # Whatever else (a missing file included) goes as JSON: the application says what is wrong.
    return WireRequest(request.method, request.path, query, JSON, json.dumps(body).encode())


def _multipart(fields: Mapping[str, Any], audio: bytes, boundary: str) -> bytes:
    """Form fields as a client's SDK sends them: lists as repeated `name[]`, booleans as
    true/false, objects as JSON; the audio as the `file` part."""
    parts = []
    for name, value in fields.items():
        if name == "file":
            continue
        values = value if isinstance(value, list) else [value]
        key = f"{name}[]" if isinstance(value, list) else name
        for item in values:
            parts.append(_part(key, _form_value(item).encode()))
    parts.append(_part("file", audio, filename="audio"))
    return b"".join(f"--{boundary}\r\n".encode() + part for part in parts) + (
        f"--{boundary}--\r\n".encode()
    )


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename:
        disposition += f'; filename="{filename}"'
    return f"Content-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


class Worker:
    """RunPod's handler over an ASGI application."""

    def __init__(
        self,
        app: ASGIApp,
        uploads: Uploads,
        stopping: threading.Event | None = None,
        shutdown_grace: float = 10.0,
    ) -> None:
        self.app = app
        self.uploads = uploads
        self.stopping = stopping or threading.Event()  # set: the application's work stops
        self.shutdown_grace = shutdown_grace
        self._running: set[asyncio.Task] = set()  # the event loop keeps only weak references
        self._watching_sigterm = False

    def watch_sigterm(self) -> None:
        """On SIGTERM, the RunPod SDK stops taking jobs and waits for those in flight, however
        long they run; this bounds the wait: after the grace, their work stops (the SDK's own
        handler still runs first). Installed from the event loop's (main) thread, after the SDK
        has installed its handler."""
        if self._watching_sigterm or threading.current_thread() is not threading.main_thread():
            return
        self._watching_sigterm = True
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: Any) -> None:
            log.info("SIGTERM: work still running stops in %.0f s", self.shutdown_grace)
            timer = threading.Timer(self.shutdown_grace, self.stopping.set)
            timer.daemon = True
            timer.start()
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)

    async def handle(self, job: Mapping[str, Any]) -> AsyncIterator[Any]:
        """The RunPod handler: an async generator, so the SDK's loop stays free meanwhile."""
        try:
            request = normalize_job(job.get("input"))
            wire = await asyncio.to_thread(wire_request, request, self.uploads)
        except StratusError as error:
            yield failed(error.envelope(), error.status)
            return
        job_id = job.get("id")
        async for output in self._exchange(wire, job_id if isinstance(job_id, str) else None):
            yield output

    async def _exchange(self, wire: WireRequest, job_id: str | None = None) -> AsyncIterator[Any]:
        """Runs the application on one request; yields the job outputs of its response."""
        messages: asyncio.Queue[Message | None] = asyncio.Queue()
        disconnected = asyncio.Event()
        body_sent = False

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": wire.body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if disconnected.is_set():
                raise OSError("the job was cancelled")  # as a server's closed socket would
            await messages.put(message)

        async def run() -> None:
            try:
                await self.app(_scope(wire, job_id), receive, send)
            except Exception:  # the application answers its own errors: this is a bug
                if not disconnected.is_set():
                    log.exception("the application failed on %s %s", wire.method, wire.path)
            finally:
                await messages.put(None)

        task = asyncio.create_task(run())
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        try:
            async for output in _outputs(messages):
                yield output
        finally:
            # Finished, or cancelled by RunPod (the generator closed): either way the
            # application sees its client go, and stops whatever work is left.
            disconnected.set()


def _scope(wire: WireRequest, job_id: str | None = None) -> dict[str, Any]:
    headers = [(b"host", b"runpod-worker"), (b"content-length", str(len(wire.body)).encode())]
    if wire.content_type:
        headers.append((b"content-type", wire.content_type.encode()))
    return {
        PLATFORM_REQUEST_ID: job_id,  # the cost line's link to RunPod's own record of the job
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": wire.method,
        "scheme": "http",
        "path": wire.path,
        "raw_path": wire.path.encode(),
        "query_string": wire.query.encode(),
        "root_path": "",
        "headers": headers,
        "client": None,
        "server": None,
    }


async def _outputs(messages: asyncio.Queue[Message | None]) -> AsyncIterator[Any]:
    """A response's messages as job outputs: SSE text as it comes, audio as base64 parts as
    they come, JSON once (an error with its status)."""
    status, content_type = 500, JSON
    buffered = bytearray()
    while (message := await messages.get()) is not None:
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
            content_type = headers.get("content-type", JSON)
            continue
        data = message.get("body", b"")
        if content_type.startswith("text/event-stream"):
            if data:
                yield data.decode()
        elif not content_type.startswith(JSON):
            if data:
                yield {"content_type": content_type, "data": base64.b64encode(data).decode()}
        else:
            buffered += data
    if content_type.startswith(JSON):
        answer = json.loads(buffered) if buffered else {}
        yield failed(answer, status) if status >= 400 else answer


def failed(envelope: Mapping[str, Any], status: int) -> dict[str, str]:
    """A failed request's job output. RunPod's SDK fails a job whose output has an `error`,
    and makes the job's error `str()` of it (a dict would become its Python repr), so the
    error is the envelope and its HTTP status as JSON text: the job is FAILED, and its error
    parses as `{"error": {...}, "status": 404}`."""
    return {"error": json.dumps({**envelope, "status": status})}


def make_worker(settings: Settings, store: ModelStore | None = None, **app_options: Any) -> Worker:
    """The worker over the HTTP gateway's application, built from settings. No API key: RunPod
    authenticates jobs itself (its endpoint key) before they reach the worker."""
    from adapters.http import create_app
    from adapters.runtime import build_image_urls

    app_options.setdefault("image_urls", build_image_urls(settings, "RunPod", serves_files=False))
    app = create_app(
        settings.model_copy(update={"api_key": ""}), store, platform="runpod", **app_options
    )
    uploads = Uploads(FetchPolicy.from_setting(settings.fetch_allow), settings.max_body_bytes)
    return Worker(app, uploads, app.state.stopping, settings.shutdown_grace)


def concurrency_modifier(settings: Settings, registry: Registry) -> Callable[[int], int]:
    """Jobs the worker takes at once: the setting, else as many as its busiest model batches
    (more would only wait in the gateway's queue)."""
    jobs = settings.runpod_concurrency or max(
        (m.config.parallel for _, m in registry.ids()), default=1
    )
    return lambda current: jobs


def import_sdk() -> Any:
    """The serverless part of RunPod's SDK (`runpod.serverless`), imported as far as a worker
    uses it. `import runpod` also imports the SDK's API clients and its command line, whose SSH
    client (paramiko) is most of it, none of which a worker runs; the serverless part itself
    reaches only the command line's credentials file. So neither package's `__init__` runs
    (common/lazy.skipping_inits): 311 modules instead of 508, 50-90 ms of every cold start here.

    Nor does the second the import spends naming the CPU: for its debugger's output it asks
    py-cpuinfo, which answers from a Python subprocess probing the CPU. During the import,
    py-cpuinfo's one call is answered from /proc/cpuinfo; the real module is what any later
    `import cpuinfo` gets."""
    light = types.ModuleType("cpuinfo")
    light.get_cpu_info = lambda: {"brand_raw": _cpu_name()}  # type: ignore[attr-defined]
    if "cpuinfo" not in sys.modules:
        sys.modules["cpuinfo"] = light
    try:
        return skipping_inits("runpod.serverless", ["runpod", "runpod.cli"])
    finally:
        if sys.modules.get("cpuinfo") is light:
            del sys.modules["cpuinfo"]


def _cpu_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "Unable to get processor info."


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper())
    worker = make_worker(settings)  # first: STRATUS_PRELOAD's loads overlap the SDK's import
    serverless = import_sdk()

    async def handler(job: Mapping[str, Any]) -> AsyncIterator[Any]:
        worker.watch_sigterm()  # the SDK's own SIGTERM handler is in place by now
        async for output in worker.handle(job):
            yield output

    serverless.start(
        {
            "handler": handler,
            "return_aggregate_stream": True,
            "concurrency_modifier": concurrency_modifier(settings, worker.app.state.registry),
        }
    )


if __name__ == "__main__":
    main()
