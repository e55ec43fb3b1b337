"""The gateway's SSE stream: framing, errors mid-stream, and cleanup however it ends."""

from __future__ import annotations

import asyncio
import json

from adapters.event_stream import event_stream
from common.errors import InvalidRequest
from common.protocol.models import Model


def model(i: int) -> Model:
    return Model(id=f"m{i}", created=i, owned_by="x")


class Chunks:
    """A handler's chunk generator, with a record of how it ended."""

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.closed = False
        self._gen = self._run(count, fail_at)

    def _run(self, count, fail_at):
        try:
            for i in range(count):
                if i == fail_at:
                    raise InvalidRequest("bad luck")
                yield model(i)
        finally:
            self.closed = True

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._gen)

    def close(self):
        self._gen.close()


def run(coro):
    return asyncio.run(coro)


def split(events: list[bytes]) -> list[bytes]:
    """Events ready together are sent in one write: back to one event each."""
    return [e + b"\n\n" for e in b"".join(events).split(b"\n\n") if e]


def test_stream_frames_every_chunk_then_done_and_releases():
    released = []
    chunks = Chunks(4)

    async def consume():
        return [
            e async for e in event_stream(next(chunks), chunks, lambda: released.append(1), "r")
        ]

    events = split(run(consume()))
    assert [json.loads(e[6:])["id"] for e in events[:-1]] == ["m0", "m1", "m2", "m3"]
    assert events[-1] == b"data: [DONE]\n\n"
    assert released == [1] and chunks.closed


def test_error_mid_stream_is_one_event_then_done():
    chunks = Chunks(5, fail_at=2)

    async def consume():
        return [e async for e in event_stream(next(chunks), chunks, lambda: None, "r")]

    events = split(run(consume()))
    assert json.loads(events[-2][6:])["error"]["message"] == "bad luck"
    assert events[-1] == b"data: [DONE]\n\n"


def test_a_stream_closed_before_it_is_sent_still_releases():
    released = []
    chunks = Chunks(4)

    async def abandon():
        events = event_stream(next(chunks), chunks, lambda: released.append(1), "r")
        await anext(events)  # what the gateway does before handing it to the response
        await events.aclose()

    run(abandon())
    assert released == [1] and chunks.closed


def test_a_client_leaving_mid_stream_stops_and_releases():
    released = []
    chunks = Chunks(10_000)

    async def leave():
        events = event_stream(next(chunks), chunks, lambda: released.append(1), "r")
        await anext(events)
        await anext(events)
        await events.aclose()
        for _ in range(100):  # the producer notices, closes the chunks, then releases
            if released:
                break
            await asyncio.sleep(0.01)

    run(leave())
    assert released == [1] and chunks.closed
