"""The local API gateway: OpenAI's paths over ASGI (served by uvicorn, or Mangum on Lambda).

It translates and nothing more: HTTP body -> protocol type -> handler -> JSON or SSE.
Errors are mapped here, once, to OpenAI's envelope and status.
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
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.event_stream import RAW, SSE, EventStreamResponse, event_stream
from adapters.operations import OPERATIONS, Operation, Publishing, find, requested_model, start
from adapters.runtime import build_image_urls, build_store
from common import cancellation
from common.admission import InferenceGate
from common.auth import ApiKeyAuth
from common.cancellation import Cancellation
from common.errors import (
    ClientGone,
    InternalError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    StratusError,
    Unauthorized,
    UnsupportedMediaType,
)
from common.image_urls import ROUTE as IMAGES_ROUTE
from common.image_urls import ImageUrls, ServedImages
from common.protocol.base import BinaryResponse, BinaryStream, OpenAIResponse
from common.settings import Settings
from common.store import ModelStore
from common.timing import request_timings

log = logging.getLogger("stratus.http")

# The only routes answered without an API key (the image route only where this gateway serves
# images itself); every other route, method and spelling of a path is behind the key, as
# tests/e2e/test_hardening_http.py checks against the app's own route table.
OPEN_PATHS = ("/health", IMAGES_ROUTE + "/{name}")


def create_app(
    settings: Settings,
    store: ModelStore | None = None,
    operations: Sequence[Operation] = OPERATIONS,
    image_urls: ImageUrls | None = None,
) -> Starlette:
    store = store or build_store(settings)
    store.start_reaper()
    image_urls = image_urls or build_image_urls(settings, "this server", serves_files=True)
    gateway = Gateway(settings, store, image_urls)
    routes = [Route("/health", gateway.health, methods=["GET"])]
    if isinstance(image_urls, ServedImages):  # open, as S3 URLs are: the name is the secret
        routes.append(Route(IMAGES_ROUTE + "/{name}", gateway.image, methods=["GET"]))
    for operation in operations:
        path = re.sub(r"\{(\w+)\}", r"{\1:path}", operation.path)  # model ids may hold "/"
        endpoint = gateway.endpoint(operation)
        routes.append(Route(f"/v1{path}", endpoint, methods=[operation.method]))
        routes.append(Route(path, endpoint, methods=[operation.method]))  # as LocalAI does

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncGenerator[None, None]:
        """Nothing at start (models load on first use). At shutdown (after uvicorn's grace
        for requests in flight) the work still running stops: inference threads would
        otherwise keep the process alive until their generations end."""
        yield
        gateway.stopping.set()

    app = Starlette(
        routes=routes, exception_handlers={HTTPException: _http_exception}, lifespan=lifespan
    )
    # Starlette would answer a trailing slash with a 307 whose Location copies the client's
    # Host header; an unknown spelling is a 404 in the envelope instead.
    app.router.redirect_slashes = False
    app.state.stopping = gateway.stopping  # for adapters that see the shutdown themselves
    app.state.registry = gateway.store.registry  # for adapters that size themselves by models
    return app


class Gateway:
    def __init__(self, settings: Settings, store: ModelStore, image_urls: ImageUrls) -> None:
        self.store = store
        self.image_urls = image_urls
        self.auth = ApiKeyAuth(settings.api_keys)
        self.gate = InferenceGate(settings.max_concurrency, settings.max_queue)
        # Inference runs on threads of its own, as many as may infer at once (an idle thread is
        # reused first: with one request at a time a torch engine keeps one OpenMP team).
        most_slots = max((m.config.parallel for _, m in store.registry.ids()), default=1)
        self.inference_threads = ThreadPoolExecutor(
            settings.max_concurrency * most_slots, thread_name_prefix="inference"
        )
        self.max_body = settings.max_body_bytes
        self.request_timeout = settings.request_timeout
        self.stopping = threading.Event()  # set at shutdown: every request's work stops

    async def health(self, request: Request) -> Response:
        """Open, for load balancers; what is loaded and running only with a key (when keys
        are set): model names tell an outsider what a deployment serves."""
        try:
            self.auth.check(request.headers.get("authorization"), request.headers.get("x-api-key"))
        except Unauthorized:
            return JSONResponse({"status": "ok"})
        return JSONResponse(
            {
                "status": "ok",
                "active": self.gate.active,
                "waiting": self.gate.waiting,
                "loaded": self.store.loaded(),
            }
        )

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

    def endpoint(self, operation: Operation) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            async def run() -> OpenAIResponse | EventStreamResponse:
                body = None
                if operation.form:
                    body = await self._read_form(request)
                elif operation.method == "POST":
                    body = await self._read_json(request)
                params = {**request.query_params, **request.path_params}
                # Validating megabytes of messages is slow too: off the event loop.
                parse = functools.partial(operation.parse, body, params)
                parsed = parse() if body is None else await run_in_threadpool(parse)
                if operation.publishes:
                    base_url = str(request.base_url).rstrip("/")
                    parsed = Publishing(parsed, self.image_urls, base_url)
                if not operation.inference:
                    return operation.handle(parsed, self.store)
                return await self._infer(operation, parsed, request)

            return await self._answer(request, run)

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
        release = functools.partial(self.gate.release, model)
        try:
            await self._acquire_in_time(model, slots, watcher, deadline)
            try:
                run = functools.partial(start, operation.handle, parsed, self.store)
                context = contextvars.copy_context()  # the request's timings go along
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
        framing = RAW if isinstance(result, BinaryStream) else SSE
        chunks = result.chunks if isinstance(result, BinaryStream) else result
        data = event_stream(first, chunks, release, request_id, framing, context)
        if isinstance(result, BinaryStream):
            return EventStreamResponse(data, {}, await anext(data), media_type=result.media_type)
        return EventStreamResponse(data, {}, head=await anext(data))

    def _admission(self, parsed: Any) -> tuple[str, int]:
        """The model a request waits for, and how many requests that model serves at once.

        An unknown model is a 404 at once: queued, it would wait for the running model to
        drain, and every request after it too."""
        config = self.store.registry.resolve(requested_model(parsed))
        return config.name, config.parallel

    async def _acquire_in_time(
        self, model: str, slots: int, watcher: asyncio.Task, deadline: float | None
    ) -> None:
        """One of the model's slots; ClientGone if the client leaves while the request waits
        for one, RequestTimeout if the deadline passes first."""
        acquiring = asyncio.ensure_future(self.gate.acquire(model, slots))
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, _ = await asyncio.wait(
            {acquiring, watcher}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if acquiring in done:
            acquiring.result()  # Overloaded: the queue is full
            return
        acquiring.cancel()
        try:
            await acquiring
        except asyncio.CancelledError:
            pass
        else:  # it got the slot at the very moment the client left
            self.gate.release(model)
        if watcher in done:
            raise ClientGone("The client closed the connection before its request ran.")
        raise RequestTimeout(
            "The request waited for a free slot longer than this server allows "
            "(STRATUS_REQUEST_TIMEOUT); please retry shortly.",
            headers={"Retry-After": "1"},
        )

    async def _answer(self, request: Request, run: Callable[[], Any]) -> Response:
        request.state.request_id = request_id = secrets.token_hex(8)
        with request_timings() as timings:
            try:
                self.auth.check(
                    request.headers.get("authorization"), request.headers.get("x-api-key")
                )
                result = await run()
            except StratusError as error:
                return _error_response(error, request_id)
            except Exception:
                log.exception("request %s failed", request_id)
                return _error_response(InternalError(request_id), request_id)
        # Where the time went until the answer (or a stream's first chunk) was ready.
        headers = {"x-request-id": request_id, "server-timing": timings.server_timing()}
        if isinstance(result, OpenAIResponse):
            return Response(result.to_json(), media_type="application/json", headers=headers)
        if isinstance(result, BinaryResponse):
            return Response(result.content, media_type=result.media_type, headers=headers)
        result.headers.update(headers)
        return result

    async def _read_form(self, request: Request) -> dict[str, Any]:
        """A multipart upload as a dict: text fields, repeated `x[]` fields as lists, `file`
        as bytes."""
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "multipart/form-data":
            raise UnsupportedMediaType("Send this request as multipart/form-data, with a 'file'.")
        self._refuse_declared_excess(request)
        parser = MultiPartParser(
            request.headers, self._capped_body(request), max_files=1, max_fields=64
        )
        try:
            form = await parser.parse()
        except StratusError:
            raise  # over the cap, while it arrived
        except Exception:  # python-multipart's errors: a malformed body
            raise InvalidRequest("The multipart body could not be parsed.") from None
        fields: dict[str, Any] = {}
        try:
            for name, value in form.multi_items():
                if isinstance(value, str):
                    if name.endswith("[]"):
                        fields.setdefault(name[:-2], []).append(value)
                    else:
                        fields[name] = value
                    continue
                fields[name] = await value.read()  # within the cap: it was counted arriving
        finally:
            await form.close()
        return fields

    def _refuse_declared_excess(self, request: Request) -> None:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise _too_large(self.max_body)

    async def _capped_body(self, request: Request) -> AsyncGenerator[bytes, None]:
        """The body as it arrives, refused (413) once it passes the cap: a chunked upload,
        which declares no length, is never buffered or spooled beyond it."""
        received = 0
        async for part in request.stream():
            received += len(part)
            if received > self.max_body:
                raise _too_large(self.max_body)
            yield part

    async def _read_json(self, request: Request) -> Any:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type and media_type != "application/json" and not media_type.endswith("+json"):
            raise UnsupportedMediaType(
                f"Unsupported content type '{media_type}': send the body as application/json."
            )
        self._refuse_declared_excess(request)
        body = bytearray()
        async for part in self._capped_body(request):
            body += part
        try:
            if len(body) <= _PARSE_ON_LOOP_BYTES:
                return _parse_json(body)
            # Megabytes of JSON take the event loop for a while: every other client (and
            # /health) would wait.
            return await run_in_threadpool(_parse_json, body)
        except (ValueError, RecursionError):  # UnicodeError is a ValueError
            raise InvalidRequest(
                "We could not parse the JSON body of your request. The body must be a JSON "
                "object; check its syntax and encoding (UTF-8)."
            ) from None


_PARSE_ON_LOOP_BYTES = 64 * 1024


def _parse_json(body: bytes | bytearray) -> Any:
    data = json.loads(body)
    # A lone surrogate ("\ud800") parses, but is not text: refuse it here rather than fail
    # later in a tokenizer or an encoder.
    json.dumps(data, ensure_ascii=False).encode()
    return data


async def _watch_disconnect(request: Request, gone: threading.Event) -> None:
    """Sets `gone` when the client disconnects (its body has been read: the next message the
    server gets from it is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than this server accepts ({limit} bytes).")


def _error_response(error: StratusError, request_id: str) -> Response:
    headers = {"x-request-id": request_id, **error.headers}
    return JSONResponse(error.envelope(), status_code=error.status, headers=headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 for unknown routes, in the envelope every platform uses."""
    try:
        find(request.method, request.url.path)
        error: StratusError = NotFound(f"Unknown request URL: {request.url.path}.")
    except StratusError as found:
        error = found
    return JSONResponse(error.envelope(), status_code=error.status)
