"""Running `stratus serve` as a real process on a free loopback port (tests and benchmarks)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runpod_local_api(port: int) -> list[str]:
    """The RunPod worker serving the SDK's local test API (/runsync, /run, /stream)."""
    return [
        sys.executable, "-m", "adapters.runpod_worker",
        "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port),
    ]  # fmt: skip


@dataclass(frozen=True)
class ServerProcess:
    url: str
    process: subprocess.Popen


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 60) -> float:
    """Polls `url` until it answers; returns when it did (perf_counter). Until the port takes
    a connection it only knocks (a bare TCP connect): a new HTTP client at every try costs
    milliseconds of CPU (its TLS context), which a server starting beside it on two cores
    would lose."""
    target = httpx.URL(url)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                socket.create_connection((target.host, target.port), timeout=1).close()
                client.get(url)
                return time.perf_counter()
            except (OSError, httpx.TransportError):
                time.sleep(0.005)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


@contextlib.contextmanager
def running(
    command: list[str],
    health_url: str,
    env: Mapping[str, str],
    log: IO[bytes] | None = None,
    timeout: float = 60,
) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        command, env=dict(env), cwd=ROOT, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        wait_until_up(health_url, process, timeout)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def stratus_serve(
    *args: str, env: Mapping[str, str], log: IO[bytes] | None = None
) -> Iterator[ServerProcess]:
    port = free_port()
    command = [sys.executable, "-m", "adapters.cli", "serve", "--port", str(port), *args]
    url = f"http://127.0.0.1:{port}"
    with running(command, f"{url}/health", env, log) as process:
        yield ServerProcess(url, process)


@contextlib.contextmanager
def stratus_serve_logged(
    registry: Path, env: Mapping[str, str], log: Path
) -> Iterator[ServerProcess]:
    """`stratus serve --models registry`, its output in `log`: a start that fails says what the
    server printed; once stopped, it must have exited cleanly (nothing a client sent crashed
    it)."""
    with open(log, "wb") as log_file:
        try:
            with stratus_serve("--models", str(registry), env=env, log=log_file) as started:
                yield started
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{log.read_text()}") from None
    assert started.process.returncode in (0, -15), log.read_text()
