"""The API gateway: every operation's paths over ASGI (served by uvicorn, by Mangum on Lambda,
and by the RunPod worker, which turns each job into a request of this app).

It translates and nothing more: HTTP body -> protocol type -> handler -> JSON or SSE. Errors
are mapped here, once, to the status and the envelope of the operation's dialect (OpenAI's, or
Anthropic's for /v1/messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters import docs, playground
from adapters.bodies import ON_LOOP_BYTES, BodyReader
from adapters.error_responses import error_response, unrouted
from adapters.event_stream import RAW, EventStreamResponse, event_stream, sse
from adapters.operations import ANTHROPIC_CLIENT, OPERATIONS, Operation, start
from adapters.parsed import Publishing, Reading, Signing, Stateful, requested_model
from adapters.playground import ROUTE as PLAYGROUND
from adapters.probes import Probes
from adapters.runtime import build_image_urls, build_response_store, build_store
from common import cancellation, metering
from common.admission import InferenceGate
from common.auth import ApiKeyAuth
from common.cancellation import Cancellation
from common.errors import (
    InternalError,
    NotFound,
    StratusError,
    Unauthorized,
)
from common.image_input import ImageLimits
from common.image_urls import ROUTE as IMAGES_ROUTE
from common.image_urls import ImageUrls, ServedImages
from common.metering import CostLog, RequestRecord
from common.protocol.base import BinaryResponse, BinaryStream, OpenAIResponse
from common.sealed import Sealer, Signer
from common.settings import Settings
from common.store import ModelStore

if TYPE_CHECKING:
    from common.metrics import Metrics

log = logging.getLogger("stratus.http")

# The only routes answered without an API key (the image route only where this gateway serves
# images itself); every other route, method and spelling of a path is behind the key, as
# tests/e2e/test_hardening_http.py checks against the app's own route table.
OPEN_PATHS = ("/health", "/ping", IMAGES_ROUTE + "/{name}", "/", PLAYGROUND + "/{asset}")
# The platform's own id of the call (Lambda's request id, RunPod's job id), for the cost line:
# set in the ASGI scope by the adapter that knows it.
PLATFORM_REQUEST_ID = "stratus.platform_request_id"


def create_app(
    settings: Settings,
    store: ModelStore | None = None,
    operations: Sequence[Operation] = OPERATIONS,
    image_urls: ImageUrls | None = None,
    platform: str = "http",
) -> Starlette:
    """`platform` (http, lambda, runpod) is what the cost lines and metrics say served it."""
    store = store or build_store(settings)
    store.start_reaper()
    store.preload(settings.preload_models)  # loads while the server starts (STRATUS_PRELOAD)
    image_urls = image_urls or build_image_urls(settings, "this server", serves_files=True)
    gateway = Gateway(settings, store, image_urls, platform)
    probes = Probes(store, gateway.auth, gateway.gate)
    routes = [
        Route("/health", probes.health, methods=["GET"]),
        Route("/ping", probes.ping, methods=["GET"]),  # RunPod load balancers poll it
        # The playground: open, as it holds only code (its requests carry the person's key).
        Route("/", playground.page, methods=["GET"]),
        Route(PLAYGROUND + "/{asset}", playground.asset, methods=["GET"]),
    ]
    serves_images = isinstance(image_urls, ServedImages)
    if serves_images:  # open, as S3 URLs are: the name is the secret
        routes.append(Route(IMAGES_ROUTE + "/{name}", gateway.image, methods=["GET"]))
    for operation in operations:
        path = re.sub(r"\{(\w+)\}", r"{\1:path}", operation.path)  # model ids may hold "/"
        endpoint = gateway.endpoint(operation)
        routes.append(Route(f"/v1{path}", endpoint, methods=[operation.method]))
        routes.append(Route(path, endpoint, methods=[operation.method]))  # as LocalAI does
    # Behind the key: the document tells what a deployment serves; metrics tell how it is used.
    pages = docs.Pages(operations, serves_images=serves_images, metrics=gateway.metrics is not None)
    routes += [
        Route(path, gateway.guarded(page), methods=["GET"]) for path, page in pages.routes().items()
    ]
    if gateway.metrics is not None:
        routes.append(Route("/metrics", gateway.guarded(gateway.metrics_page), methods=["GET"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncGenerator[None, None]:
        """Nothing at start (models load on first use). At shutdown (after uvicorn's grace
        for requests in flight) the work still running stops: inference threads would
        otherwise keep the process alive until their generations end."""
        yield
        gateway.stopping.set()

    app = Starlette(routes=routes, exception_handlers={HTTPException: unrouted}, lifespan=lifespan)
    # Starlette would answer a trailing slash with a 307 whose Location copies the client's
    # Host header; an unknown spelling is a 404 in the envelope instead.
    app.router.redirect_slashes = False
    app.state.stopping = gateway.stopping  # for adapters that see the shutdown themselves
    app.state.registry = gateway.store.registry  # for adapters that size themselves by models
    return app


class Gateway:
    def __init__(
        self, settings: Settings, store: ModelStore, image_urls: ImageUrls, platform: str
    ) -> None:
        self.store = store
        self.image_urls = image_urls
        self.image_limits = ImageLimits.from_settings(settings)
        self.responses = build_response_store(settings)
        self.sealer = Sealer.from_settings(settings.secret, settings.api_keys)
        self.platform = platform
        self.auth = ApiKeyAuth(settings.api_keys)
        self.metrics: Metrics | None = None
        if settings.serves_metrics(platform):
            from common.metrics import Metrics  # prometheus-client: only where it is served

            self.metrics = Metrics(settings.prometheus_multiproc_dir)
        self.cost_log = CostLog() if settings.cost_log else None
        self.gate = InferenceGate(settings.max_concurrency, settings.max_queue)
        # Inference runs on threads of its own, as many as may infer at once (an idle thread is
        # reused first: with one request at a time a torch engine keeps one OpenMP team).
        most_slots = max((m.config.parallel for _, m in store.registry.ids()), default=1)
        self.inference_threads = ThreadPoolExecutor(
            settings.max_concurrency * most_slots, thread_name_prefix="inference"
        )
        self.bodies = BodyReader(settings.max_body_bytes)
        self.request_timeout = settings.request_timeout
        self.stopping = threading.Event()  # set at shutdown: every request's work stops

    async def image(self, request: Request) -> Response:
        """A generated image this gateway serves, until it expires."""
        assert isinstance(self.image_urls, ServedImages)
        path = self.image_urls.path(request.path_params["name"])
        try:
            content = await run_in_threadpool(path.read_bytes) if path else None
        except OSError:
            content = None
        if content is None:
            error = NotFound("This image does not exist, or its URL has expired.")
            return JSONResponse(error.envelope(), status_code=error.status)
        return Response(content, media_type="image/png", headers={"cache-control": "private"})

    def _invocation(self, request: Request) -> str | None:
        """Behind the Lambda Web Adapter (`stratus serve` with STRATUS_PLATFORM=lambda), the
        invocation's request id, from the Lambda context the adapter forwards as a header.
        Trusted only there: elsewhere any client could send that header."""
        if self.platform != "lambda":
            return None
        try:
            context = json.loads(request.headers.get("x-amzn-lambda-context", ""))
        except ValueError:
            return None
        request_id = context.get("request_id") if isinstance(context, dict) else None
        return request_id if isinstance(request_id, str) else None

    def guarded(self, page: Callable[[Request], Any]) -> Callable[[Request], Any]:
        """A page (not an operation) behind the API key. Its 401 asks a browser to log in
        (HTTP Basic, a key as the password)."""

        async def endpoint(request: Request) -> Response:
            try:
                self.auth.check(
                    request.headers.get("authorization"), request.headers.get("x-api-key")
                )
            except Unauthorized as error:
                error.headers.update(docs.BROWSER_LOGIN)
                return error_response(error, secrets.token_hex(8))
            return await page(request)

        return endpoint

    async def metrics_page(self, request: Request) -> Response:
        assert self.metrics is not None
        body, content_type = await run_in_threadpool(self.metrics.exposition)
        return Response(body, headers={"content-type": content_type})

    def endpoint(self, operation: Operation) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            async def run() -> OpenAIResponse | EventStreamResponse:
                body, on_loop = None, True
                if operation.form:  # an upload: validated off the loop, whatever its size
                    body, on_loop = await self.bodies.form(request), False
                elif operation.method == "POST":
                    body, size = await self.bodies.json(request)
                    on_loop = size <= ON_LOOP_BYTES
                params = {**request.query_params, **request.path_params}
                if operation.anthropic_clients and ANTHROPIC_CLIENT in request.headers:
                    params[ANTHROPIC_CLIENT] = request.headers[ANTHROPIC_CLIENT]
                # Validating megabytes of messages is slow too: off the event loop (a small
                # body is validated at once, quicker than the hop to a worker thread).
                parse = functools.partial(operation.parse, body, params)
                parsed = parse() if on_loop else await run_in_threadpool(parse)
                if operation.publishes:
                    base_url = str(request.base_url).rstrip("/")
                    parsed = Publishing(parsed, self.image_urls, base_url)
                if operation.stateful:
                    owner = request.state.owner
                    parsed = Stateful(parsed, self.responses, owner, self.sealer)
                if operation.signs:
                    parsed = Signing(parsed, Signer(self.sealer, request.state.owner))
                if operation.reads_images:
                    parsed = Reading(parsed, self.image_limits)
                if operation.stateful and not operation.inference:  # the store may be remote
                    return await run_in_threadpool(operation.handle, parsed, self.store)
                if not operation.inference:
                    return operation.handle(parsed, self.store)
                return await self._infer(operation, parsed, request)

            return await self._answer(request, operation, run)

        return endpoint

    async def _infer(
        self, operation: Operation, parsed: Any, request: Request
    ) -> OpenAIResponse | EventStreamResponse:
        request_id = request.state.request_id
        # Until the answer (or a stream's first chunk) is ready, a client that goes away
        # cancels its request: taken out of the queue, or stopped between tokens. The deadline
        # counts from here, the queue included.
        deadline = cancellation.deadline_after(self.request_timeout)
        gone = threading.Event()
        watcher = asyncio.create_task(_watch_disconnect(request, gone))
        model, slots = self._admission(parsed)
        record: RequestRecord = request.state.record
        record.model = model
        release = functools.partial(self._release, model)
        try:
            await self._queue(record, slots, watcher, deadline)
            try:
                run = functools.partial(start, operation.handle, parsed, self.store)
                context = contextvars.copy_context()  # the request's record goes along
                context.run(cancellation.bind, Cancellation(gone, self.stopping, deadline))
                result, first = await asyncio.get_running_loop().run_in_executor(
                    self.inference_threads, context.run, run
                )
                if first is None:
                    release()
                    return result
            except BaseException:
                release()
                raise
        finally:
            watcher.cancel()
        # From here the stream owns the slot, and releases it when it ends. It is started at
        # once: a started generator's cleanup runs on aclose() even if the response is never
        # sent; an unstarted one's never would. Its chunks are produced in the request's
        # context: the deadline and shutdown still stop it (a client that leaves now is seen
        # by the response, which closes the stream).
        dialect = operation.dialect
        framing = (
            RAW if isinstance(result, BinaryStream) else sse(dialect.envelope, dialect.named_events)
        )
        chunks = result.chunks if isinstance(result, BinaryStream) else result

        def end() -> None:  # the stream's last chunk went, or it was cut
            release()
            self._finish(record, 200)

        data = event_stream(first, chunks, end, request_id, framing, context)
        if isinstance(result, BinaryStream):
            return EventStreamResponse(data, {}, await anext(data), media_type=result.media_type)
        return EventStreamResponse(data, {}, head=await anext(data))

    def _admission(self, parsed: Any) -> tuple[str, int]:
        """The model a request waits for, and how many requests that model serves at once.

        An unknown model is a 404 at once: queued, it would wait for the running model to
        drain, and every request after it too."""
        config = self.store.registry.resolve(requested_model(parsed))
        return config.name, config.parallel

    async def _queue(
        self, record: RequestRecord, slots: int, watcher: asyncio.Task, deadline: float | None
    ) -> None:
        """A slot of the record's model, in time; the wait is the request's queue time."""
        model, queued = record.model, time.perf_counter()
        if self.metrics is not None:
            self.metrics.waiting.labels(model).inc()
        try:
            await self.gate.acquire_in_time(model, slots, watcher, deadline)
        finally:
            record.add_span("queue", time.perf_counter() - queued)
            if self.metrics is not None:
                self.metrics.waiting.labels(model).dec()
        if self.metrics is not None:
            self.metrics.running.labels(model).inc()

    def _release(self, model: str) -> None:
        self.gate.release(model)
        if self.metrics is not None:
            self.metrics.running.labels(model).dec()

    def _finish(self, record: RequestRecord, status: int, error: str | None = None) -> None:
        """A request is over: its cost line and its metrics, once."""
        if record.ended is not None:
            return
        record.close(status, error)
        if self.metrics is not None:
            self.metrics.observe(record)
        if self.cost_log is not None:
            self.cost_log.write(record)

    async def _answer(
        self, request: Request, operation: Operation, run: Callable[[], Any]
    ) -> Response:
        request.state.request_id = request_id = secrets.token_hex(8)
        dialect = operation.dialect_for(request.headers)
        record = RequestRecord(request_id, operation.name, self.platform)
        record.platform_request_id = request.scope.get(PLATFORM_REQUEST_ID) or self._invocation(
            request
        )
        request.state.record = record
        with metering.recording(record):
            try:
                request.state.owner = self.auth.check(
                    request.headers.get("authorization"), request.headers.get("x-api-key")
                )
                result = await run()
            except StratusError as error:
                self._finish(record, error.status, error.code)
                return error_response(error, request_id, dialect.envelope)
            except Exception:
                log.exception("request %s failed", request_id)
                error = InternalError(request_id)
                self._finish(record, error.status, error.code)
                return error_response(error, request_id, dialect.envelope)
        # Where the time went until the answer (or a stream's first chunk) was ready.
        headers = {"x-request-id": request_id, "server-timing": record.server_timing()}
        if isinstance(result, OpenAIResponse):
            response = Response(result.to_json(), media_type="application/json", headers=headers)
        elif isinstance(result, BinaryResponse):
            response = Response(result.content, media_type=result.media_type, headers=headers)
        else:  # a stream: over when its last chunk has gone
            result.headers.update(headers)
            return result
        self._finish(record, response.status_code)
        return response


async def _watch_disconnect(request: Request, gone: threading.Event) -> None:
    """Sets `gone` when the client disconnects (its body has been read: the next message the
    server gets from it is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return
