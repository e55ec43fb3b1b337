"""Cold start of each entry point: process start -> first answer, embedded model.

http        `stratus serve`, then POST /v1/chat/completions
runpod      `python -m adapters.runpod_worker --rp_serve_api`, then POST /runsync
lambda      a fresh Python process that imports adapters.aws_lambda and invokes the handler
            with tests/events/apigw_rest_v1_chat.json (what a Lambda cold start does)

.venv/bin/python bench/bench_cold_start.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.processes import free_port, runpod_local_api, wait_until_up  # noqa: E402

CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}
ENV = {**os.environ, "STRATUS_LOG_LEVEL": "warning", "API_KEY": "test-key"}
LAMBDA_SCRIPT = """
import json, sys
from adapters.aws_lambda import handler
event = json.load(open(sys.argv[1]))
response = handler(event, None)
print(response["statusCode"], flush=True)
"""


def spawn(command: list[str]) -> tuple[subprocess.Popen, float]:
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    return process, started


def http_cold_start() -> float:
    port = free_port()
    process, started = spawn([sys.executable, "-m", "adapters.cli", "serve", "--port", str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/health", process)
        answer = httpx.post(
            f"{url}/v1/chat/completions",
            json=CHAT,
            timeout=60,
            headers={"Authorization": "Bearer test-key"},
        )
        assert answer.status_code == 200, answer.text
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(10)


def runpod_cold_start() -> float:
    port = free_port()
    process, started = spawn(runpod_local_api(port))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/docs", process)
        job = {"input": {"openai_route": "/v1/chat/completions", "openai_input": CHAT}}
        answer = httpx.post(f"{url}/runsync", json=job, timeout=60).json()
        assert answer["status"] == "COMPLETED", answer
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(10)


def lambda_cold_start() -> float:
    event = ROOT / "tests" / "events" / "apigw_rest_v1_chat.json"
    process, started = spawn([sys.executable, "-c", LAMBDA_SCRIPT, str(event)])
    status = process.stdout.readline().strip()
    elapsed = time.perf_counter() - started
    process.wait(30)
    assert status == "200", status
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for name, measure in (
        ("http", http_cold_start),
        ("runpod", runpod_cold_start),
        ("lambda", lambda_cold_start),
    ):
        results[name] = statistics.median(measure() for _ in range(args.rounds))
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))
    for name, seconds in results.items():
        print(f"{name:8} process start -> first answer: {seconds:.3f} s")


if __name__ == "__main__":
    main()
