"""Cold start of each entry point: process start -> first answer, embedded model.

http        `stratus serve`, then POST /v1/chat/completions
runpod      `python -m adapters.runpod_worker` as deployed: a job waits in RunPod's job API
            (tests/runpod_queue.py, on loopback) from the start; the time is when its result
            is posted back
runpod-api  `python -m adapters.runpod_worker --rp_serve_api` (the SDK's local test API, which
            adds FastAPI), then POST /runsync
lambda      a fresh Python process that imports adapters.aws_lambda and invokes the handler
            with tests/events/apigw_rest_v1_chat.json (what a Lambda cold start does)

.venv/bin/python bench/bench_cold_start.py --rounds 3
.venv/bin/python bench/bench_cold_start.py --smoke   # one start of each, at 1 thread

Each start is split in phases: `ready` (process start -> the server answers, or for Lambda the
handler module imported), then the first request's `load_ms` (the model loaded) and the rest
of its work, `compute_ms` (the first answer), as its cost line reports them. Beside them, the
import of RunPod's SDK alone (its `import runpod` probes the CPU in a subprocess: about a
second here, whatever the worker does), `import adapters.http` alone, and beside it the
third-party libraries it imports, alone: the floor that Stratus's own modules add to.

Stratus's own modules are compiled to bytecode first, as `pip install` leaves them in an image
(`--no-compile`: as they are; this machine's PYTHONDONTWRITEBYTECODE=1 means a plain checkout
compiles them from source at every start). Set STRATUS_PRELOAD in the environment to measure
a start that loads its model in the background.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import smoke  # noqa: E402
from tests.processes import free_port, runpod_local_api, wait_until_up  # noqa: E402
from tests.runpod_queue import JobQueue  # noqa: E402

CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}
ENV = {**os.environ, "STRATUS_LOG_LEVEL": "warning", "API_KEY": "test-key"}
LAMBDA_SCRIPT = """
import json, sys, time
started = time.perf_counter()
from adapters.aws_lambda import handler
print("IMPORTED", time.perf_counter() - started, flush=True)
event = json.load(open(sys.argv[1]))
response = handler(event, None)
print("STATUS", response["statusCode"], flush=True)
"""


@dataclass
class ColdStart:
    total: float  # process start -> first answer, seconds
    ready: float  # process start -> serving (Lambda: the handler's module imported)
    load_ms: float  # the first request's model load, from its cost line
    compute_ms: float  # the rest of its work
    taken: float = 0.0  # RunPod as deployed: process start -> the worker took the job


def cost_line(lines: list[str]) -> dict:
    """The first request's cost line (stdout, one JSON object a line)."""
    for line in lines:
        if line.startswith("{") and '"event":"request"' in line:
            return json.loads(line)
    raise AssertionError(f"no cost line in: {lines[:5]}")


def finish(process: subprocess.Popen) -> list[str]:
    process.terminate()
    out, _ = process.communicate(timeout=10)
    return out.splitlines()


def spawn(command: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, float]:
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        env={**ENV, **(env or {})},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return process, started


def http_cold_start() -> ColdStart:
    port = free_port()
    client = httpx.Client(timeout=60)  # made first: its TLS context is the client's cost
    process, started = spawn([sys.executable, "-m", "adapters.cli", "serve", "--port", str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/health", process)
        ready = time.perf_counter() - started
        answer = client.post(
            f"{url}/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer test-key"}
        )
        assert answer.status_code == 200, answer.text
        total = time.perf_counter() - started
    finally:
        client.close()
        lines = finish(process)
    line = cost_line(lines)
    return ColdStart(total, ready, line["load_ms"], line["compute_ms"])


def runpod_cold_start() -> ColdStart:
    """The deployed worker: the job is waiting when the process starts (a cold start is what
    a queued job causes); `ready` is when the job reached the application."""
    job = {"openai_route": "/v1/chat/completions", "openai_input": CHAT}
    with JobQueue() as queue:
        queue.put("cold", job)
        process, started = spawn(
            [sys.executable, "-m", "adapters.runpod_worker"],
            {**queue.env(), "RUNPOD_DEBUG_LEVEL": "ERROR"},
        )
        try:
            result = queue.result("cold", timeout=60)
        finally:
            lines = finish(process)
    assert "output" in result.done, result.done
    line = cost_line(lines)
    total = result.at - started
    ready = total - line["total_ms"] / 1000
    return ColdStart(
        total, ready, line["load_ms"], line["compute_ms"], taken=result.taken_at - started
    )


def runpod_api_cold_start() -> ColdStart:
    port = free_port()
    client = httpx.Client(timeout=60)
    process, started = spawn(runpod_local_api(port))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/docs", process)
        ready = time.perf_counter() - started
        job = {"input": {"openai_route": "/v1/chat/completions", "openai_input": CHAT}}
        answer = client.post(f"{url}/runsync", json=job).json()
        assert answer["status"] == "COMPLETED", answer
        total = time.perf_counter() - started
    finally:
        client.close()
        lines = finish(process)
    line = cost_line(lines)
    return ColdStart(total, ready, line["load_ms"], line["compute_ms"])


def lambda_cold_start() -> ColdStart:
    event = ROOT / "tests" / "events" / "apigw_rest_v1_chat.json"
    process, started = spawn([sys.executable, "-c", LAMBDA_SCRIPT, str(event)])
    lines, ready, total = [], 0.0, 0.0
    for line in process.stdout:  # the cost line comes between the two markers
        lines.append(line.strip())
        if line.startswith("IMPORTED"):
            ready = time.perf_counter() - started
        if line.startswith("STATUS"):
            total = time.perf_counter() - started
            assert line.split()[1] == "200", line
            break
    process.wait(30)
    line = cost_line(lines)
    return ColdStart(total, ready, line["load_ms"], line["compute_ms"])


def import_seconds(setup: str, timed: str) -> float:
    """A fresh interpreter's `timed` statement, after `setup`, timed inside it."""
    script = (
        f"{setup}\nimport time\nt = time.perf_counter()\n{timed}\nprint(time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=ENV, cwd=ROOT, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return float(out.stdout.split()[-1])


# Every module `import adapters.http` loads that is not Stratus's own (the standard library's
# and the third parties'), listed by a fresh interpreter in the order it loaded them, then
# imported alone: the floor that Stratus's own modules add to.
LIBRARIES_LOADED = """
import json, sys
before = set(sys.modules)
import adapters.http
own = ("adapters", "common", "handlers", "layers", "__editable__")
print(json.dumps([m for m in sys.modules if m not in before and not m.startswith(own)]))
"""
IMPORT_ALL = """
import importlib
for name in {names!r}:
    try:
        importlib.import_module(name)
    except ImportError:  # a module that only its package can load
        pass
"""


def libraries_of_the_gateway() -> str:
    out = subprocess.run(
        [sys.executable, "-c", LIBRARIES_LOADED], env=ENV, cwd=ROOT, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    return IMPORT_ALL.format(names=json.loads(out.stdout))


# What is timed alone: RunPod's SDK as its package imports itself, and as the worker imports it
# (adapters/runpod_worker.import_sdk, without its CPU probe), and the HTTP gateway's module.
IMPORTS = {
    "import runpod": ("", "import runpod"),
    "runpod sdk as the worker imports it": (
        "from adapters.runpod_worker import import_sdk",
        "import_sdk()",
    ),
    "import adapters.http": ("", "import adapters.http"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="STRATUS_THREADS (default: the server's)")
    parser.add_argument("--no-compile", action="store_true", help="leave the bytecode as it is")
    args = smoke.parse_args(parser, {"rounds": 1, "threads": 1})
    if args.threads:
        ENV["STRATUS_THREADS"] = str(args.threads)
    if not args.no_compile:
        for package in ("adapters", "common", "handlers", "layers"):
            compileall.compile_dir(ROOT / package, quiet=1)
    results: dict[str, dict[str, float]] = {}
    for name, measure in (
        ("http", http_cold_start),
        ("runpod", runpod_cold_start),
        ("runpod-api", runpod_api_cold_start),
        ("lambda", lambda_cold_start),
    ):
        runs = [measure() for _ in range(args.rounds)]
        results[name] = {
            phase: statistics.median(getattr(run, phase) for run in runs)
            for phase in ("total", "ready", "load_ms", "compute_ms", "taken")
        }
        totals = " ".join(f"{run.total:.3f}" for run in runs)
        median = results[name]
        print(
            f"{name:8} process start -> first answer: {median['total']:.3f} s (runs {totals}); "
            f"ready {median['ready']:.3f} s, then load {median['load_ms']:.0f} ms, "
            f"first answer {median['compute_ms']:.0f} ms"
        )
        if median["taken"]:  # the SDK runs the jobs it took on its next tick (0.1 s)
            print(
                f"{'':8} the worker took the job at {median['taken']:.3f} s; the SDK ran it "
                f"{(median['ready'] - median['taken']) * 1000:.0f} ms later"
            )
    imports = {**IMPORTS, "its libraries": ("", libraries_of_the_gateway())}
    for name, (setup, timed) in imports.items():
        seconds = statistics.median(import_seconds(setup, timed) for _ in range(args.rounds))
        results[name] = {"total": seconds}
        print(f"{name} alone: {seconds * 1000:.0f} ms")
    own = results["import adapters.http"]["total"] - results["its libraries"]["total"]
    print(f"import adapters.http over its libraries: {own * 1000:.0f} ms")
    sdk = results["runpod sdk as the worker imports it"]["total"]
    print(f"runpod   without its SDK's import: {results['runpod']['total'] - sdk:.3f} s")
    print(json.dumps({k: {p: round(v, 3) for p, v in r.items()} for k, r in results.items()}))


if __name__ == "__main__":
    main()
