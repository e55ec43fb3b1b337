"""Prometheus metrics (GET /metrics), observed from each finished request's record.

Names follow Prometheus' conventions (base units, `_total` counters) and the peers' meanings:
vLLM's time to first token and per output token, llama.cpp server's tokens and queue. Labels
hold only names from the registry and the operation table (never a client's raw model string),
so a client cannot grow the number of series.

One process exports its own numbers. Where several worker processes serve one port (uvicorn or
gunicorn workers), set PROMETHEUS_MULTIPROC_DIR to an empty directory shared by them before they
start: prometheus-client then keeps the values in files there and /metrics, from any of the
processes, sums them (its multiprocess mode; see README: Operating).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from common.metering import RequestRecord

# Request units (common/metering.py) and the counters they go to.
UNIT_COUNTERS = {
    "prompt_tokens": ("stratus_prompt_tokens", "Prompt (input) tokens processed."),
    "completion_tokens": ("stratus_completion_tokens", "Tokens generated (or transcribed)."),
    "audio_seconds_in": ("stratus_audio_input_seconds", "Seconds of audio transcribed."),
    "audio_seconds_out": ("stratus_audio_output_seconds", "Seconds of speech synthesized."),
    "characters": ("stratus_speech_characters", "Characters of text synthesized as speech."),
    "images": ("stratus_images", "Images generated."),
    "image_pixels": ("stratus_image_pixels", "Pixels generated (width x height per image)."),
    "image_steps": ("stratus_image_steps", "Denoising steps run (per image)."),
    "inputs": ("stratus_embedding_inputs", "Texts embedded."),
    # Speculative decoding (layers/speculation), as vLLM's spec_decode counters.
    "draft_tokens": ("stratus_spec_decode_draft_tokens", "Tokens drafted and verified."),
    "accepted_draft_tokens": (
        "stratus_spec_decode_accepted_tokens",
        "Drafted tokens the model chose too (each one a decode step saved).",
    ),
}
# vLLM's buckets for its own time to first token and per output token.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
                   30.0, 60.0, 120.0, 240.0, 480.0, 960.0)  # fmt: skip
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)


class Metrics:
    def __init__(self, multiprocess_dir: str | None = None) -> None:
        # No `_created` series (a timestamp beside every counter and histogram): a fifth of the
        # text, and of each scrape's time, for nothing a dashboard uses (process-wide).
        disable_created_metrics()
        # A registry of its own: several applications in one process (tests, a worker beside a
        # gateway) each count their own requests.
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        r = self.registry
        op_model = ["operation", "model"]
        self.requests = Counter(
            "stratus_requests", "Requests finished, by operation, model and HTTP status.",
            [*op_model, "status"], registry=r,
        )  # fmt: skip
        self.units = {
            unit: Counter(name, doc, op_model, registry=r)
            for unit, (name, doc) in UNIT_COUNTERS.items()
        }
        self.latency = Histogram(
            "stratus_request_duration_seconds",
            "From the request's arrival to its answer's last byte (a stream's end).",
            op_model, buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "stratus_queue_wait_seconds", "Time a request waited for an inference slot.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "stratus_time_to_first_token_seconds",
            "From the request's arrival to its first generated token.",
            ["model"], buckets=TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.tpot = Histogram(
            "stratus_time_per_output_token_seconds",
            "A request's time per generated token after its first.",
            ["model"], buckets=TPOT_BUCKETS, registry=r,
        )  # fmt: skip
        gauge_mode = {"multiprocess_mode": "livesum"}  # summed over the live processes
        self.waiting = Gauge(
            "stratus_requests_waiting", "Requests queued for an inference slot.", ["model"],
            registry=r, **gauge_mode,
        )  # fmt: skip
        self.running = Gauge(
            "stratus_requests_running", "Requests holding an inference slot.", ["model"],
            registry=r, **gauge_mode,
        )  # fmt: skip
        self.model_requests = Counter(
            "stratus_model_requests",
            "Requests by where their model came from: memory (loaded), disk (the cache), "
            "fetched (downloaded or generated now) or local (a package or volume path).",
            ["model", "source"], registry=r,
        )  # fmt: skip
        self.fetch_seconds = Counter(
            "stratus_model_fetch_seconds", "Seconds spent fetching models.", ["model"], registry=r
        )
        self.fetch_bytes = Counter(
            "stratus_model_fetch_bytes", "Bytes of models downloaded.", ["model"], registry=r
        )
        self.load_seconds = Histogram(
            "stratus_model_load_seconds", "Time to load a model into its engine (cold starts).",
            ["model"], buckets=LOAD_BUCKETS, registry=r,
        )  # fmt: skip

    def observe(self, record: RequestRecord) -> None:
        """A finished request's record, counted once."""
        operation, model = record.operation, record.model
        self.requests.labels(operation, model, str(record.status)).inc()
        end = record.ended if record.ended is not None else record.started
        self.latency.labels(operation, model).observe(end - record.started)
        for unit, amount in record.units.items():
            if (counter := self.units.get(unit)) is not None and amount > 0:
                counter.labels(operation, model).inc(amount)
        if not model:  # unknown or no model: nothing ran
            return
        if "queue" in record.spans:
            self.queue_wait.labels(model).observe(record.spans["queue"])
        if (ttft := record.time_to_first_token) is not None:
            self.ttft.labels(model).observe(ttft)
        if (tpot := record.time_per_output_token) is not None:
            self.tpot.labels(model).observe(tpot)
        if record.model_source is not None:
            self.model_requests.labels(model, record.model_source).inc()
        if "fetch" in record.spans:
            self.fetch_seconds.labels(model).inc(record.spans["fetch"])
        if record.fetched_bytes:
            self.fetch_bytes.labels(model).inc(record.fetched_bytes)
        if "load" in record.spans:
            self.load_seconds.labels(model).observe(record.spans["load"])

    def exposition(self) -> tuple[bytes, str]:
        """The text format's body and content type: this process's metrics, or every
        process's in multiprocess mode."""
        registry = self.registry
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry), CONTENT_TYPE_LATEST
