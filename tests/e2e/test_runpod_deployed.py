"""The RunPod worker as it runs when deployed: RunPod's SDK long-polls the job API for jobs and
posts their outputs back (tests/runpod_queue.py serves that API on loopback). The platform
matrix drives the SDK's local test API (`--rp_serve_api`), which takes another path through
the SDK; this is the path a RunPod endpoint's jobs take."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.platforms import CHAT, from_job_outputs, from_job_result
from tests.processes import ROOT, stop
from tests.runpod_queue import JobQueue


@pytest.fixture(scope="module")
def queue(server, tmp_path_factory) -> Iterator[JobQueue]:
    with JobQueue() as jobs:
        env = {
            **os.environ,
            **jobs.env(),
            "STRATUS_MODELS": str(server.registry),
            "STRATUS_LOG_LEVEL": "warning",
            "STRATUS_CACHE_DIR": str(tmp_path_factory.mktemp("runpod-deployed-cache")),
            "RUNPOD_DEBUG_LEVEL": "ERROR",
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "adapters.runpod_worker"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield jobs
        finally:
            stop(worker, timeout=20)


def http_chat(server) -> dict:
    answer = httpx.post(
        f"{server.v1}/chat/completions", json=CHAT, headers=server.headers(), timeout=120
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def chat_job(**fields) -> dict:
    return {"openai_route": "/v1/chat/completions", "openai_input": {**CHAT, **fields}}


def test_a_job_is_taken_and_answered_as_over_http(queue, server):
    reference = http_chat(server)
    queue.put("plain", chat_job())
    result = queue.result("plain", timeout=120)
    answer = from_job_outputs(result.done["output"])
    assert answer.status == 200
    assert answer.body["choices"] == reference["choices"]
    assert result.streamed == result.done["output"]  # each output was also streamed as made


def test_a_streamed_job_posts_its_chunks_as_they_come(queue, server):
    reference = http_chat(server)
    queue.put("stream", chat_job(stream=True))
    result = queue.result("stream", timeout=120)
    answer = from_job_outputs(result.done["output"])
    assert answer.events[-1] == "[DONE]"
    assert answer.stream_text == reference["choices"][0]["message"]["content"]
    assert len(result.streamed) > 3  # chunk by chunk, not one block at the end
    assert result.streamed == result.done["output"]


def test_jobs_taken_together_all_finish(queue):
    for n in range(3):
        queue.put(f"together-{n}", chat_job(messages=[{"role": "user", "content": f"Hi {n}"}]))
    for n in range(3):
        answer = from_job_outputs(queue.result(f"together-{n}", timeout=120).done["output"])
        assert answer.status == 200
        assert answer.body["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_bad_job_gets_the_error_envelope_and_the_worker_goes_on(queue):
    queue.put("unknown-model", chat_job(model="no-such-model"))
    queue.put("bad-input", {"neither": "route"})
    unknown = from_job_result(queue.result("unknown-model", timeout=120).done)
    assert unknown.status == 404
    assert unknown.body["error"]["code"] == "model_not_found"
    bad = from_job_result(queue.result("bad-input", timeout=120).done)
    assert bad.status == 400
    assert bad.body["error"]["param"] == "input"
    queue.put("after", chat_job())
    assert from_job_result(queue.result("after", timeout=120).done).status == 200


def test_a_job_runpod_stops_stops_its_work(queue):
    # 1,500 tokens take tens of seconds here; a stopped job frees the engine within a token.
    long = chat_job(stream=True, max_tokens=1500, ignore_eos=True)
    queue.put("long", long)
    deadline = time.monotonic() + 60
    while len(queue.streamed("long")) < 3:  # generating
        assert time.monotonic() < deadline and not queue.finished("long")
        time.sleep(0.05)
    queue.stop("long")
    stopped_at = time.monotonic()
    for n in itertools.count():
        queue.put(f"health-{n}", {"route": "/health", "method": "GET"})
        health = from_job_result(queue.result(f"health-{n}", timeout=30).done).body
        if health["active"] == 0:
            break
        assert time.monotonic() - stopped_at < 5, health
        time.sleep(0.1)
    assert not queue.finished("long")  # RunPod records a stopped job itself; no result is sent
    queue.put("next", chat_job())
    assert from_job_result(queue.result("next", timeout=60).done).status == 200
