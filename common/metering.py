"""What a request used and where its time went: one record per request, the source of its cost
line, its metrics and its Server-Timing header.

The adapter opens a record for each request and closes it when the answer (or a stream's last
chunk) has gone. Whatever the request does adds to it from wherever that runs: the store (fetch,
load, where the model came from), the handlers (the billable units: tokens, audio seconds,
characters, images) and text generation (each output token, for time to first token and per
output token). The record travels in a context variable, which the request's threads (its
inference thread, a stream's producer) run in.

Units are totals of the request, named as its usage is: `prompt_tokens` and `completion_tokens`
equal the response's `usage`; `audio_seconds_in` (transcription), `audio_seconds_out` and
`characters` (speech), `images`, `image_pixels` (width x height, summed over the images) and
`image_steps` (denoising steps, summed over the images), `inputs` (embeddings); beside them,
`draft_tokens` and `accepted_draft_tokens` (speculative decoding: not billed, as usage does not
count them).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

_current: ContextVar[RequestRecord | None] = ContextVar("stratus_request_record", default=None)

# Where a request's model came from: already loaded, the disk cache, downloaded (or generated)
# now, or a local path (a package or a volume) that is never cached.
ModelSource = Literal["memory", "disk", "fetched", "local"]


class RequestRecord:
    def __init__(self, request_id: str, operation: str, platform: str) -> None:
        self.request_id = request_id
        self.platform_request_id: str | None = None  # Lambda's or RunPod's id of the call
        self.operation = operation
        self.platform = platform
        self.started = time.perf_counter()
        self.model = ""  # the registry's name, once the request named a model that exists
        self.status = 0
        self.error: str | None = None  # the error code, also for a stream that ended in one
        self.spans: dict[str, float] = {}  # queue, fetch, load -> seconds
        self.units: dict[str, float] = {}
        self.model_source: str | None = None
        self.fetched_bytes = 0
        self.first_output: float | None = None  # perf_counter() of the first output token
        self.last_output: float | None = None
        self.head_ready: float | None = None  # the answer, or a stream's first chunk, ready
        self.ended: float | None = None
        self._lock = threading.Lock()  # a request's choices may count from several threads

    def add_span(self, name: str, seconds: float) -> None:
        with self._lock:
            self.spans[name] = self.spans.get(name, 0.0) + seconds

    def count(self, unit: str, amount: float) -> None:
        with self._lock:
            self.units[unit] = self.units.get(unit, 0) + amount

    def output_token(self) -> None:
        now = time.perf_counter()
        with self._lock:
            if self.first_output is None:
                self.first_output = now
            self.last_output = now
            self.units["completion_tokens"] = self.units.get("completion_tokens", 0) + 1

    def note_model_source(self, source: ModelSource) -> None:
        if self.model_source is None:  # the first model a request used (edits use one)
            self.model_source = source

    @property
    def cold_start(self) -> bool:
        """The request waited for its model to be fetched or loaded."""
        return "load" in self.spans or self.model_source == "fetched"

    @property
    def compute_seconds(self) -> float:
        """Time neither queued nor fetching nor loading, until the record closed (or now)."""
        end = self.ended if self.ended is not None else time.perf_counter()
        return max(0.0, end - self.started - sum(self.spans.values()))

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_output is None else self.first_output - self.started

    @property
    def time_per_output_token(self) -> float | None:
        """Between the first output token and the last, per token after the first."""
        outputs = int(self.units.get("completion_tokens", 0))
        if self.first_output is None or self.last_output is None or outputs < 2:
            return None
        return (self.last_output - self.first_output) / (outputs - 1)

    def server_timing(self) -> str:
        """`queue;dur=1.2, fetch;dur=12.3, load;dur=45.6, compute;dur=78.9` (milliseconds, up
        to now: for a stream, until its first chunk); compute is the rest."""
        elapsed = time.perf_counter() - self.started
        spans = dict(self.spans)
        spans["compute"] = max(0.0, elapsed - sum(spans.values()))
        return ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in spans.items())

    def close(self, status: int, error: str | None = None) -> None:
        self.ended = time.perf_counter()
        self.status = status
        self.error = self.error or error

    def cost_line(self) -> dict[str, Any]:
        """The record as one JSON-ready object: what a bill is made of."""
        line: dict[str, Any] = {
            "event": "request",
            "request_id": self.request_id,
            "operation": self.operation,
            "model": self.model,
            "status": self.status,
            "platform": self.platform,
            "cold_start": self.cold_start,
            "units": {k: round(v, 3) if isinstance(v, float) else v for k, v in self.units.items()},
            "queue_ms": _ms(self.spans.get("queue", 0.0)),
            "fetch_ms": _ms(self.spans.get("fetch", 0.0)),
            "load_ms": _ms(self.spans.get("load", 0.0)),
            "compute_ms": _ms(self.compute_seconds),
            "total_ms": _ms((self.ended or time.perf_counter()) - self.started),
        }
        if self.platform_request_id:
            line["platform_request_id"] = self.platform_request_id
        if self.error:
            line["error"] = self.error
        if self.model_source:
            line["model_source"] = self.model_source
        if self.fetched_bytes:
            line["fetched_bytes"] = self.fetched_bytes
        if (ttft := self.time_to_first_token) is not None:
            line["time_to_first_token_ms"] = _ms(ttft)
        return line


class CostLog:
    """Each finished request's cost line, one JSON object per line, on stdout (where every
    platform collects a process's output: CloudWatch Logs, RunPod's worker logs, docker logs)."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, record: RequestRecord) -> None:
        line = json.dumps(record.cost_line(), separators=(",", ":"))
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(line + "\n")
            stream.flush()


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


@contextmanager
def recording(record: RequestRecord) -> Iterator[RequestRecord]:
    token = _current.set(record)
    try:
        yield record
    finally:
        _current.reset(token)


def current() -> RequestRecord | None:
    return _current.get()


@contextmanager
def span(name: str) -> Iterator[None]:
    """Adds the time spent inside to the current request's record, if there is a request."""
    started = time.perf_counter()
    try:
        yield
    finally:
        if (record := _current.get()) is not None:
            record.add_span(name, time.perf_counter() - started)


def count(unit: str, amount: float) -> None:
    """Adds billable units to the current request's record, if there is a request."""
    if (record := _current.get()) is not None:
        record.count(unit, amount)


def model_source(source: ModelSource, fetched_bytes: int = 0) -> None:
    if (record := _current.get()) is not None:
        record.note_model_source(source)
        record.fetched_bytes += fetched_bytes
