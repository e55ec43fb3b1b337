"""A request's cancellation, seen by the code that runs it on an inference thread.

Work stops when the client goes away (queued or running), when the server stops after its
shutdown grace, or when the request's deadline passes. The generation loops call `check()`
between tokens, segments, sentences and diffusion steps: it raises the reason, which stops
the engine and frees the request's slot, and tells the client (when one is still there) why.
A context variable, because handlers and engines know nothing of HTTP: the adapter binds it in
the context it runs the handler in.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass

from common.errors import ClientGone, RequestTimeout, ServerStopping


@dataclass(frozen=True)
class Cancellation:
    gone: threading.Event  # the client closed its connection
    stopping: threading.Event  # the server is shutting down
    deadline: float | None = None  # time.monotonic() after which the request has failed

    def check(self) -> None:
        if self.gone.is_set():
            raise ClientGone("The client closed the connection before its answer was ready.")
        if self.stopping.is_set():
            raise ServerStopping("The server is shutting down; please retry the request.")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise RequestTimeout(
                "The request took longer than this server allows "
                "(STRATUS_REQUEST_TIMEOUT); ask for less work, or retry."
            )


_current: ContextVar[Cancellation | None] = ContextVar("stratus_cancellation", default=None)


def bind(cancellation: Cancellation) -> None:
    """In the current context (the request's copy), work stops as `cancellation` says."""
    _current.set(cancellation)


def check() -> None:
    """Raises the reason this request's work must stop, if there is one."""
    current = _current.get()
    if current is not None:
        current.check()


def deadline_after(seconds: float) -> float | None:
    """The deadline `seconds` from now; None for 0 (no deadline)."""
    return time.monotonic() + seconds if seconds > 0 else None
