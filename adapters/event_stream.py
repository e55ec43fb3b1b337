"""A stream's way to the wire: its chunks framed (SSE events, or audio as it is encoded) by one
producer thread, and an ASGI response that stops generation when the client goes away.

Starlette's StreamingResponse notices a lost client only at the next write on newer ASGI
servers and leaves the body iterator to the garbage collector; generation would run on and
keep the inference slot. This one watches for the disconnect and always closes the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.types import Receive, Scope, Send

from common import metering
from common.errors import ClientGone, InternalError, StratusError
from common.sse import DONE, encode_event, error_event

log = logging.getLogger("stratus.http")

SSE_HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",  # nginx and similar proxies must not buffer the stream
}


class EventStreamResponse:
    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        headers: Mapping[str, str],
        head: bytes = b"",
        media_type: str = "text/event-stream; charset=utf-8",
    ) -> None:
        self._events = events
        self._media_type = media_type
        self._head = head  # already taken from `events`: sent first
        self.headers = dict(headers)  # the gateway adds its own before the response starts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {
            "content-type": self._media_type,
            **SSE_HEADERS,
            **self.headers,
        }
        raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch_disconnect, receive, group.cancel_scope)
                if self._head:
                    await send(
                        {"type": "http.response.body", "body": self._head, "more_body": True}
                    )
                async for data in self._events:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        except OSError:
            pass  # the client went away mid-write
        finally:
            await self._events.aclose()

    @staticmethod
    async def _watch_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()


@dataclass(frozen=True)
class Framing:
    """How a stream's chunks go on the wire."""

    encode: Callable[[Any], bytes]
    error: Callable[[StratusError], bytes]  # an error after the status was sent
    end: bytes


def sse(envelope: Callable[[StratusError], dict[str, Any]], named: bool) -> Framing:
    """Server-sent events of a dialect: OpenAI's `data:` lines ending with [DONE], or events
    named by their `type` (Responses, Messages), errors in the dialect's envelope."""
    if named:
        return Framing(
            lambda chunk: encode_event(chunk.to_json(), chunk.type),
            lambda error: error_event(error, envelope, named=True),
            b"",
        )
    return Framing(
        lambda chunk: encode_event(chunk.to_json()),
        lambda error: error_event(error, envelope),
        DONE,
    )


SSE = sse(StratusError.envelope, named=False)
# Audio goes as it is; an error after its first bytes can only cut it short (and is logged).
RAW = Framing(lambda chunk: chunk, lambda error: b"", b"")


async def event_stream(
    first: Any,
    chunks: Iterator[Any],
    release: Callable[[], None],
    request_id: str,
    framing: Framing = SSE,
    context: contextvars.Context | None = None,
) -> AsyncGenerator[bytes, None]:
    """The wire bytes of a handler's chunks (SSE events by default), produced and encoded on
    one thread.

    One producer thread per stream, handing finished events to the event loop, costs far less
    per token than a thread-pool round trip for each chunk: on two cores every wake-up is
    taken from the engine's own threads. When the client leaves, the producer stops at the
    next chunk and closes the handler's generator; the inference slot is released only then.
    """
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[bytes | None] = asyncio.Queue()
    stopping = threading.Event()

    def hand_over(data: bytes | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: the server is stopping
            loop.call_soon_threadsafe(events.put_nowait, data)

    def produce() -> None:
        record = metering.current()  # the request's: how the stream ended goes on its line
        try:
            for chunk in chunks:
                if stopping.is_set():
                    if record is not None:
                        record.error = record.error or ClientGone.code
                    break
                hand_over(framing.encode(chunk))
        except StratusError as error:
            log.info("stream %s ended early: %s", request_id, error.message)
            if record is not None:
                record.error = error.code or error.type
            hand_over(framing.error(error))
        except Exception:
            log.exception("stream %s failed", request_id)
            error = InternalError(request_id)
            if record is not None:
                record.error = error.code
            hand_over(framing.error(error))
        finally:
            chunks.close()  # type: ignore[attr-defined]
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(release)
            hand_over(None)

    producer = threading.Thread(
        target=(context or contextvars.copy_context()).run,
        args=(produce,),
        name=f"stream-{request_id}",
        daemon=True,
    )
    try:
        yield framing.encode(first)
        producer.start()
        finished = False
        while not finished and (data := await events.get()) is not None:
            while not events.empty():  # send whatever else is ready in the same write
                more = events.get_nowait()
                if more is None:
                    finished = True
                    break
                data += more
            yield data
        if framing.end:
            yield framing.end
    finally:
        stopping.set()
        if producer.ident is None:  # closed before it began: clean up here
            chunks.close()  # type: ignore[attr-defined]
            release()
