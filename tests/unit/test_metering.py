"""A request's record (common/metering.py), its cost line on every platform, and its metrics
(common/metrics.py), in one process and summed over several (prometheus-client's
multiprocess mode)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from adapters.aws_lambda import make_handler
from adapters.http import create_app
from adapters.runpod_worker import make_worker
from common import metering
from common.metering import RequestRecord
from common.metrics import Metrics
from common.settings import Settings
from tests.unit.fakes import FakeTextModel, fake_store, run_job

EVENT = Path(__file__).parent.parent / "events" / "apigw_http_v2_chat_stream.json"
CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def samples(body: bytes | str) -> dict[tuple[str, frozenset], float]:
    text = body.decode() if isinstance(body, bytes) else body
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_record_times_tokens_and_says_where_the_time_went():
    record = RequestRecord("r1", "createChatCompletion", "http")
    record.add_span("queue", 0.25)
    record.add_span("load", 1.0)
    record.count("prompt_tokens", 7)
    for _ in range(3):
        record.output_token()
        time.sleep(0.01)
    record.close(200)
    assert record.units == {"prompt_tokens": 7, "completion_tokens": 3}
    assert record.cold_start  # it loaded its model
    assert record.time_per_output_token is not None and record.time_per_output_token >= 0.009
    line = record.cost_line()
    assert line["queue_ms"] == 250.0 and line["load_ms"] == 1000.0 and line["fetch_ms"] == 0.0
    assert line["units"] == {"prompt_tokens": 7, "completion_tokens": 3}
    assert line["time_to_first_token_ms"] >= 0 and line["status"] == 200
    assert "queue;dur=250.0" in record.server_timing()


def test_without_a_request_nothing_is_recorded():
    metering.count("prompt_tokens", 3)  # the CLI's prefetch, a warm-up: no record, no error
    with metering.span("load"):
        pass
    assert metering.current() is None


def test_metrics_count_a_record_once_with_its_labels():
    metrics = Metrics()
    record = RequestRecord("r", "createEmbedding", "http")
    record.model = "minilm"
    record.count("prompt_tokens", 5)
    record.count("inputs", 2)
    record.note_model_source("disk")
    record.close(200)
    metrics.observe(record)
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=")
    seen = samples(body)
    labels = frozenset({"operation": "createEmbedding", "model": "minilm"}.items())
    assert seen[("stratus_prompt_tokens_total", labels)] == 5
    assert seen[("stratus_embedding_inputs_total", labels)] == 2
    assert seen[("stratus_requests_total", labels | {("status", "200")})] == 1
    source = frozenset({"model": "minilm", "source": "disk"}.items())
    assert seen[("stratus_model_requests_total", source)] == 1


def test_processes_sharing_a_multiprocess_directory_are_summed(tmp_path):
    worker = textwrap.dedent(
        """
        import sys
        from common.metering import RequestRecord
        from common.metrics import Metrics
        metrics = Metrics(sys.argv[1])
        record = RequestRecord("r", "createCompletion", "http")
        record.model = "m"
        record.count("completion_tokens", int(sys.argv[2]))
        record.close(200)
        metrics.observe(record)
        if len(sys.argv) > 3:
            sys.stdout.write(metrics.exposition()[0].decode())
        """
    )
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": "."}
    run = [sys.executable, "-c", worker, str(tmp_path)]
    subprocess.run([*run, "4"], env=env, check=True)
    out = subprocess.run([*run, "6", "show"], env=env, check=True, capture_output=True, text=True)
    labels = frozenset({"operation": "createCompletion", "model": "m"}.items())
    assert samples(out.stdout)[("stratus_completion_tokens_total", labels)] == 10


def cost_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"event"')]


def test_http_writes_a_cost_line_per_request_and_metrics_on_or_off(tmp_path, capsys):
    app = create_app(Settings(cache_dir=tmp_path), fake_store(FakeTextModel([b"a", b"b", b"c"])))
    with TestClient(app) as client:
        answer = client.post("/v1/chat/completions", json=CHAT)
        assert client.get("/metrics").status_code == 200
    [line] = cost_lines(capsys.readouterr().out)
    assert line["request_id"] == answer.headers["x-request-id"]
    assert line["units"] == {"prompt_tokens": answer.json()["usage"]["prompt_tokens"],
                             "completion_tokens": 3}  # fmt: skip
    assert (line["platform"], line["model"], line["cold_start"]) == ("http", "fake", True)

    quiet = Settings(cache_dir=tmp_path, metrics=False, cost_log=False)
    app = create_app(quiet, fake_store(FakeTextModel([b"a"])))
    with TestClient(app) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert client.get("/metrics").status_code == 404
    assert cost_lines(capsys.readouterr().out) == []


@pytest.mark.parametrize("platform", ["http", "lambda", "runpod"])
def test_metrics_are_served_by_default_on_a_server_only(tmp_path, platform):
    """On Lambda and RunPod each instance counts only its own requests and no scraper chooses
    the instance it reaches: metrics are off unless STRATUS_METRICS asks for them."""
    for asked, served in ((None, platform == "http"), (True, True), (False, False)):
        settings = Settings(cache_dir=tmp_path, metrics=asked)
        app = create_app(settings, fake_store(FakeTextModel([b"x"])), platform=platform)
        with TestClient(app) as client:
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
            assert client.get("/metrics").status_code == (200 if served else 404), asked


def test_lambda_and_runpod_lines_carry_the_platforms_own_request_id(tmp_path, capsys):
    handler = make_handler(Settings(cache_dir=tmp_path), fake_store(FakeTextModel([b"x"])))
    event = copy.deepcopy(json.loads(EVENT.read_text()))
    event["headers"].pop("content-length")
    event["body"] = json.dumps({**CHAT, "stream": False})
    event["isBase64Encoded"] = False
    response = handler(event, SimpleNamespace(aws_request_id="lambda-req-1"))
    assert response["statusCode"] == 200
    [line] = cost_lines(capsys.readouterr().out)
    assert (line["platform"], line["platform_request_id"]) == ("lambda", "lambda-req-1")

    worker = make_worker(Settings(cache_dir=tmp_path), fake_store(FakeTextModel([b"x"])))
    job = {"id": "job-7", "input": {"openai_route": "/v1/chat/completions", "openai_input": CHAT}}

    [output] = run_job(worker, job)
    assert output["object"] == "chat.completion"
    [line] = cost_lines(capsys.readouterr().out)
    assert (line["platform"], line["platform_request_id"]) == ("runpod", "job-7")


def test_behind_the_lambda_web_adapter_the_invocation_id_comes_from_its_header(tmp_path, capsys):
    context = json.dumps({"request_id": "lwa-req-9", "function_name": "f"})
    for platform, expected in (("lambda", "lwa-req-9"), ("http", None)):
        settings = Settings(cache_dir=tmp_path, platform=platform)
        app = create_app(settings, fake_store(FakeTextModel([b"x"])), platform=settings.platform)
        with TestClient(app) as client:
            answer = client.post(
                "/v1/chat/completions", json=CHAT, headers={"x-amzn-lambda-context": context}
            )
        assert answer.status_code == 200
        [line] = cost_lines(capsys.readouterr().out)
        assert (line["platform"], line.get("platform_request_id")) == (platform, expected)
