"""A request's cancellation, seen by the code that runs it on an inference thread.

The gateway sets it when the client goes away (queued or running); the generation loops check
it between tokens and stop, which frees the engine and the request's slot. A context variable,
because the handler and the engine know nothing of HTTP: the gateway binds it in the context
it runs the handler in.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar

_event: ContextVar[threading.Event | None] = ContextVar("stratus_cancellation", default=None)
# Set once the process is shutting down and its grace period is over: all work stops.
_shutdown = threading.Event()


def bind(event: threading.Event) -> None:
    """In the current context (the request's copy), work stops once `event` is set."""
    _event.set(event)


def shut_down() -> None:
    _shutdown.set()


def cancelled() -> bool:
    if _shutdown.is_set():
        return True
    event = _event.get()
    return event is not None and event.is_set()
