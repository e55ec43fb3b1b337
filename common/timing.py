"""Where a request's time went (model fetch, load, compute), for the Server-Timing header.

The adapter opens a RequestTimings for each request; the store adds what it spent fetching and
loading. It travels in a context variable, which threads started by anyio/starlette inherit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_current: ContextVar[RequestTimings | None] = ContextVar("stratus_request_timings", default=None)


class RequestTimings:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.spans: dict[str, float] = {}  # name -> seconds

    def add(self, name: str, seconds: float) -> None:
        self.spans[name] = self.spans.get(name, 0.0) + seconds

    def server_timing(self) -> str:
        """`fetch;dur=12.3, load;dur=45.6, compute;dur=78.9`: compute is the rest."""
        elapsed = time.perf_counter() - self.started
        spans = dict(self.spans)
        spans["compute"] = max(0.0, elapsed - sum(spans.values()))
        return ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in spans.items())


@contextmanager
def request_timings() -> Iterator[RequestTimings]:
    timings = RequestTimings()
    token = _current.set(timings)
    try:
        yield timings
    finally:
        _current.reset(token)


@contextmanager
def span(name: str) -> Iterator[None]:
    """Adds the time spent inside to the current request's timings, if there is a request."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings = _current.get()
        if timings is not None:
            timings.add(name, time.perf_counter() - started)
