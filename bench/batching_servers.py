"""The servers bench/bench_batching.py measures, each started on a free port and handed over as
a Target: Stratus, llama_cpp.server and llama.cpp's own llama-server (8 slots of N_CTX)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.processes import free_port, running

ROOT = Path(__file__).resolve().parent.parent
N_CTX = 2048
SLOTS = 8
THREADS = 2
MAX_QUEUE = 64


@dataclass(frozen=True)
class Target:
    """A running server: where to send, under which model name, what else to put in a body."""

    url: str
    model: str
    extra: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)
    command: str = ""


def wait_healthy(client: httpx.Client, url: str) -> None:
    """llama-server answers /health with 503 until its model is loaded."""
    deadline = time.monotonic() + 120
    while client.get(url).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not healthy in 120 s")
        time.sleep(0.05)


@contextlib.contextmanager
def stratus(threads: int = THREADS, **settings: str) -> Iterator[Target]:
    """Stratus; `settings` are more environment variables (STRATUS_METRICS="false", ...)."""
    port = free_port()
    command = [sys.executable, "-m", "adapters.cli", "serve", "--port", str(port)]
    env = {
        "STRATUS_THREADS": str(threads),
        "STRATUS_LOG_LEVEL": "warning",
        "STRATUS_MAX_QUEUE": str(MAX_QUEUE),
        **settings,
    }
    shown = " ".join(f"{k}={v}" for k, v in env.items()) + " " + shown_command(command, port)
    with running(command, f"http://127.0.0.1:{port}/health", {**os.environ, **env}):
        yield Target(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            "gpt-4",
            {"ignore_eos": True},
            command=shown,
        )


@contextlib.contextmanager
def llama_cpp_python(path: Path, threads: int = THREADS) -> Iterator[Target]:
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--n_ctx", str(N_CTX),
        "--n_threads", str(threads), "--n_threads_batch", str(threads),
        "--interrupt_requests", "false", "--model_alias", "smollm2", "--port", str(port),
    ]  # fmt: skip
    with running(command, f"http://127.0.0.1:{port}/v1/models", os.environ):
        yield Target(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            "smollm2",
            command=shown_command(command, port),
        )


@contextlib.contextmanager
def llama_server(
    binary: Path, path: Path, threads: int = THREADS, layout: str = "split"
) -> Iterator[Target]:
    """layout, as llama-server's own log line says (`n_slots`, `n_ctx_slot`, `kv_unified`):
    split     --parallel 8 -c 16384 --no-kv-unified: 8 KV streams of N_CTX cells, Stratus'
    default   --parallel 8 alone: 8 KV streams of the model's training context (8,192 cells
              for SmolLM2), not unified: given a number of slots, llama-server splits its cache
    auto      no flag at all: 4 slots sharing one unified buffer (`--parallel` auto), the
              server as it starts with nothing said; at 8 clients, 4 wait"""
    port = free_port()
    sizing = {
        "split": ["-c", str(N_CTX * SLOTS), "--no-kv-unified", "--parallel", str(SLOTS)],
        "default": ["--parallel", str(SLOTS)],
        "auto": [],
    }[layout]
    command = [
        str(binary), "-m", str(path), *sizing,
        "-t", str(threads), "-tb", str(threads), "--no-webui", "--port", str(port),
    ]  # fmt: skip
    with running(command, f"http://127.0.0.1:{port}/health", os.environ):
        with httpx.Client(timeout=10) as client:
            wait_healthy(client, f"http://127.0.0.1:{port}/health")
        # A connection per request: llama-server (cpp-httplib) drops kept-alive connections
        # after a few streamed answers, under the client's next request.
        yield Target(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            "smollm2",
            {"ignore_eos": True},
            {"Connection": "close"},
            shown_command(command, port),
        )


def shown_command(command: list[str], port: int) -> str:
    """The command as run, its port as PORT, paths inside the repository relative to it."""

    def shown(part: str) -> str:
        if part == str(port):
            return "PORT"
        if part.startswith(f"{ROOT}/"):
            return part.removeprefix(f"{ROOT}/")
        return part

    return " ".join(shown(part) for part in command)
