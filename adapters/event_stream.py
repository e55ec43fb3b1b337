"""An ASGI response for a stream (Server-Sent Events, or audio as it is encoded) that stops
generation when the client goes away.

Starlette's StreamingResponse notices a lost client only at the next write on newer ASGI
servers and leaves the body iterator to the garbage collector; generation would run on and
keep the inference slot. This one watches for the disconnect and always closes the stream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping

import anyio
from starlette.types import Receive, Scope, Send

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
