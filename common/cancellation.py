"""A request's cancellation, seen by the code that runs it on an inference thread.

The gateway sets it when the client goes away (queued or running) or when the server stops
after its shutdown grace; the generation loops check it between tokens, segments and
diffusion steps, and stop, which frees the engine and the request's slot. A context variable,
because handlers and engines know nothing of HTTP: the gateway binds it in the context it runs
the handler in.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar

_events: ContextVar[tuple[threading.Event, ...]] = ContextVar("stratus_cancellation", default=())


def bind(*events: threading.Event) -> None:
    """In the current context (the request's copy), work stops once any of `events` is set."""
    _events.set(events)


def cancelled() -> bool:
    return any(event.is_set() for event in _events.get())
