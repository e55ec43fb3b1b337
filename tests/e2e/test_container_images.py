"""The CPU text images, built by `make image`'s builder and started as their platforms start
them (tests/container.py): read-only root, the image's own user, its command as PID 1, reached
on loopback. Each platform's answer is compared with the live server's (same model, same
llama.cpp wheel, temperature 0: the same tokens).

    http       /health, chat plain and streamed, HEALTHCHECK, SIGTERM during a stream
    runpod-lb  /ping's 204 then 200 while STRATUS_PRELOAD's model is fetched from S3 (moto),
               then SSE straight from the worker; a model that cannot be fetched: 503s, no crash
    runpod     jobs from RunPod's job API on loopback: plain, streamed, failed
    lambda     awslambdaric against Lambda's Runtime API on loopback: API Gateway v1 and v2
               events, an error in the envelope, the cold start; no CUDA library in the image
    lambda-stream  built with a stand-in for the Lambda Web Adapter's image (not reachable)
and, on the http image: a model from a mounted volume; a model baked from S3 with its
credentials as a build secret that no pushed blob holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests import container
from tests.conftest import BUCKET
from tests.platforms import CHAT, EVENTS, from_job_outputs, from_job_result
from tests.processes import free_port
from tests.runpod_queue import JobQueue

TARGETS = ("http", "runpod-lb", "runpod", "lambda")
KEY = "image-test-key"
SMOLLM2 = "smollm2-135m-instruct"


pytestmark = pytest.mark.skipif(
    container.why_not_here() is not None, reason=container.why_not_here() or ""
)


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    started = time.perf_counter()
    tags = container.image_build.build_images(
        "text", "cpu", TARGETS, pip=[sys.executable, "-m", "pip"], tool="buildah", quiet=True
    )
    print(f"\nbuilt {', '.join(tags)} in {time.perf_counter() - started:.0f} s")
    return dict(zip(TARGETS, tags, strict=True))


@pytest.fixture
def cache(tmp_path: Path) -> dict[str, str]:
    """A volume for the model cache (the only writable place beside /tmp)."""
    path = tmp_path / "cache"
    path.mkdir()
    return {str(path): "/opt/stratus-cache"}


def reference_chat(server, **fields) -> dict:
    answer = httpx.post(
        f"{server.v1}/chat/completions",
        json={**CHAT, **fields},
        headers=server.headers(),
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_http_image_answers_from_a_read_only_root_as_its_own_user(images, cache, server):
    port = free_port()
    env = {"PORT": str(port), "API_KEY": KEY}
    with container.started(images["http"], env=env, volumes=cache) as box:
        health = container.first_answer(f"http://127.0.0.1:{port}/health", box)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
        plain = client.chat.completions.create(**CHAT)
        reference = reference_chat(server)
        assert plain.choices[0].message.content == reference["choices"][0]["message"]["content"]
        chunks = list(client.chat.completions.create(**CHAT, stream=True))
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == plain.choices[0].message.content
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")

        assert box.uid() == 10001  # the image's user, not root
        written = box.exec(["sh", "-c", "touch /opt/venv/intruder"])
        assert written.returncode != 0 and "Read-only" in written.stderr
        assert box.exec(["sh", "-c", "touch /tmp/ok"]).returncode == 0
        check = box.healthcheck()  # the image's HEALTHCHECK, run inside it
        assert check.returncode == 0, check.stdout + check.stderr
        status, took = box.stop()
    assert status == 0 and took < 10, (status, took, box.output())


def test_sigterm_to_pid_1_ends_the_container_within_the_grace(images, cache):
    """Python as PID 1 has no default signal handling: a SIGTERM it does not handle would be
    ignored until the runtime's SIGKILL. The server handles it, lets the request in flight run
    for the grace period, then stops its work and exits."""
    port = free_port()
    env = {"PORT": str(port), "STRATUS_SHUTDOWN_GRACE": "2"}
    with container.started(images["http"], env=env, volumes=cache) as box:
        container.first_answer(f"http://127.0.0.1:{port}/health", box)
        received: list[str] = []

        def long_stream() -> None:
            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0)
            with contextlib.suppress(Exception):
                for chunk in client.chat.completions.create(
                    **{**CHAT, "max_tokens": 1500},
                    stream=True,
                    extra_body={"ignore_eos": True},  # runs well past the grace
                ):
                    received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")

        streaming = threading.Thread(target=long_stream)
        streaming.start()
        deadline = time.monotonic() + 60
        while len(received) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert received, box.output()
        status, took = box.stop(timeout=15)
        streaming.join(30)
    assert status == 0, box.output()
    assert took < 2 + 3, took  # the grace, and a little for the exit itself
    assert not streaming.is_alive()


def s3_registry(tmp_path: Path) -> Path:
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "models.yaml").write_text(
        f"- name: s3-chat\n  backend: llama-cpp\n  source: s3://{BUCKET}/smollm2.gguf\n"
    )
    return registry


def test_runpod_lb_image_pings_204_until_its_model_is_ready(images, cache, s3, tmp_path, server):
    port, health_port = free_port(), free_port()
    env = {
        **s3.env,
        "AWS_ENDPOINT_URL_S3": s3.moto.url,  # straight to moto, not through the fault proxy
        "PORT": str(port),
        "PORT_HEALTH": str(health_port),
        "STRATUS_PRELOAD": "s3-chat",
    }
    volumes = {**cache, str(s3_registry(tmp_path)): "/home/stratus/models"}
    with container.started(images["runpod-lb"], env=env, volumes=volumes) as box:
        codes = [container.first_answer(f"http://127.0.0.1:{health_port}/ping", box).status_code]
        deadline = time.monotonic() + 90
        while codes[-1] != 200 and time.monotonic() < deadline:
            codes.append(httpx.get(f"http://127.0.0.1:{health_port}/ping", timeout=5).status_code)
            time.sleep(0.01)
        assert codes[-1] == 200 and set(codes[:-1]) == {204}, codes  # initializing, then ready
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
        assert "s3-chat" in health["loaded"]  # ready means loaded: the first request waits not
        assert httpx.get(f"http://127.0.0.1:{port}/ping", timeout=5).status_code == 200

        arrivals = []
        with httpx.stream(
            "POST",
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={**CHAT, "model": "s3-chat", "stream": True},
            timeout=120,
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data: "):
                    arrivals.append((time.perf_counter(), line.removeprefix("data: ")))
        assert arrivals[-1][1] == "[DONE]"
        assert arrivals[-1][0] - arrivals[0][0] > 0.01  # token by token, not one block
        text = "".join(
            json.loads(data)["choices"][0]["delta"].get("content") or ""
            for _, data in arrivals[:-1]
            if json.loads(data)["choices"]
        )
        assert text == reference_chat(server)["choices"][0]["message"]["content"]


def test_a_model_that_cannot_be_fetched_is_reported_and_answered_503(images, cache, tmp_path):
    port = free_port()
    env = {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PORT": str(port),
        "STRATUS_PRELOAD": "s3-chat",
    }
    volumes = {**cache, str(s3_registry(tmp_path)): "/home/stratus/models"}
    with container.started(images["runpod-lb"], env=env, volumes=volumes) as box:
        container.first_answer(f"http://127.0.0.1:{port}/ping", box)
        deadline = time.monotonic() + 90
        while (ping := httpx.get(f"http://127.0.0.1:{port}/ping")).status_code == 204:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ping.status_code == 503 and ping.json()["error"]["type"]
        health = httpx.get(f"http://127.0.0.1:{port}/health")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert "s3-chat" in health.json()["failed"]
        check = box.healthcheck()
        assert check.returncode == 1 and "s3-chat" in check.stderr  # the reason, in its log
        chat = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json={**CHAT, "model": "s3-chat"}
        )
        assert chat.status_code == 503 and chat.json()["error"]["message"]
        assert "Traceback" not in chat.text and BUCKET not in chat.text
        assert box.process.poll() is None  # still serving: no crash loop
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 503
    assert "preloading model s3-chat failed" in box.output()


def test_runpod_image_takes_jobs_from_the_queue(images, cache, server):
    with JobQueue() as queue:
        env = {**queue.env(), "RUNPOD_DEBUG_LEVEL": "ERROR"}
        with container.started(images["runpod"], env=env, volumes=cache) as box:
            reference = reference_chat(server)
            queue.put("plain", {"openai_route": "/v1/chat/completions", "openai_input": CHAT})
            queue.put(
                "stream",
                {"openai_route": "/v1/chat/completions", "openai_input": {**CHAT, "stream": True}},
            )
            queue.put(
                "failed",
                {"openai_route": "/v1/chat/completions", "openai_input": {**CHAT, "model": "x"}},
            )
            try:
                plain = from_job_outputs(queue.result("plain", timeout=120).done["output"])
                streamed = queue.result("stream", timeout=120)
                failed = from_job_result(queue.result("failed", timeout=120).done)
            except TimeoutError:
                pytest.fail(box.output())
            assert box.uid() == 10001
            status, took = box.stop(timeout=15)  # RunPod scaling the worker down
    assert status == 0 and took < 10, (status, took)  # SIGTERM handled by PID 1, not SIGKILL
    content = reference["choices"][0]["message"]["content"]
    assert plain.status == 200 and plain.body["choices"][0]["message"]["content"] == content
    answer = from_job_outputs(streamed.done["output"])
    assert answer.events[-1] == "[DONE]" and answer.stream_text == content
    assert len(streamed.streamed) > 3  # posted chunk by chunk
    assert failed.status == 404 and failed.body["error"]["code"] == "model_not_found"


def test_lambda_image_answers_api_gateway_events_without_a_gpu(images, cache, server):
    from tests.lambda_runtime import RuntimeApi

    v1 = json.loads((EVENTS / "apigw_rest_v1_chat.json").read_text())
    v2 = json.loads((EVENTS / "apigw_http_v2_chat_stream.json").read_text())
    missing = json.loads(json.dumps(v1))
    missing["body"] = json.dumps({**CHAT, "model": "no-such-model"})
    with RuntimeApi() as api:
        env = {**api.env(), "API_KEY": "test-key", "STRATUS_CACHE_DIR": "/tmp/stratus-cache"}
        for request_id, event in (("v1", v1), ("v2", v2), ("missing", missing)):
            api.invoke(request_id, event)
        with container.started(images["lambda"], env=env) as box:
            try:
                first = api.result("v1", timeout=120)
                streamed = api.result("v2", timeout=120)
                failed = api.result("missing", timeout=120)
            except TimeoutError:
                pytest.fail(box.output())
            cold_start = first.at - box.started
            cuda = (
                "find / -xdev \\( -name 'libcuda*' -o -name 'libcudart*' -o -name 'libnvidia*' \\)"
            )
            libraries = box.exec(["sh", "-c", cuda + " 2>/dev/null; true"])
    print(f"\nlambda image: process start -> first answer {cold_start:.2f} s")
    assert not api.init_errors
    assert first.kind == "response" and first.body["statusCode"] == 200, first.body
    content = reference_chat(server)["choices"][0]["message"]["content"]
    assert json.loads(first.body["body"])["choices"][0]["message"]["content"] == content
    assert streamed.kind == "response" and streamed.body["statusCode"] == 200
    assert streamed.body["headers"]["content-type"].startswith("text/event-stream")
    assert streamed.body["body"].rstrip().endswith("data: [DONE]")
    assert failed.kind == "response" and failed.body["statusCode"] == 404
    assert json.loads(failed.body["body"])["error"]["code"] == "model_not_found"
    assert libraries.stdout.strip() == ""  # no CUDA library in it, no GPU driver asked for


def test_a_model_on_a_mounted_volume_is_served(images, cache, tmp_path, server):
    """A registry and its model file on volumes (RunPod's network volume, a Kubernetes PVC):
    the image reads them where they are mounted, read-only."""
    from tests.conftest import smollm2_path

    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "models.yaml").write_text(
        "- name: volume-chat\n  backend: llama-cpp\n  source: file:///volume/smollm2.gguf\n"
    )
    volume = tmp_path / "volume"
    volume.mkdir()
    os.link(smollm2_path(), volume / "smollm2.gguf")
    port = free_port()
    volumes = {**cache, str(registry): "/home/stratus/models", str(volume): "/volume"}
    with container.started(images["http"], env={"PORT": str(port)}, volumes=volumes) as box:
        container.first_answer(f"http://127.0.0.1:{port}/health", box)
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={**CHAT, "model": "volume-chat"},
            timeout=120,
        )
    assert answer.status_code == 200, answer.text
    content = reference_chat(server)["choices"][0]["message"]["content"]
    assert answer.json()["choices"][0]["message"]["content"] == content


SECRET = "never-in-a-layer-7f3a9c1e5b"


def test_models_baked_from_s3_are_served_offline_and_no_layer_holds_the_secret(
    images, s3, tmp_path, server
):
    """BAKE_MODELS with an S3 source (moto's, on loopback) and its credentials as a build
    secret: the model is in the image, served with S3 out of reach, from a read-only root with
    no cache volume; the credentials are in no file of any layer."""
    context = container.checkout_copy(tmp_path / "checkout")
    (context / "models" / "bake.yaml").write_text(
        f"- name: baked-chat\n  backend: llama-cpp\n  source: s3://{BUCKET}/smollm2.gguf\n"
    )
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = test\naws_secret_access_key = {SECRET}\n"
    )
    [tag] = container.image_build.build_images(
        "text", "cpu", ["http"], pip=[sys.executable, "-m", "pip"], tool="buildah",
        context=context, bake="baked-chat", quiet=True, repository="stratus-test-baked",
        build_args=[f"AWS_ENDPOINT_URL_S3={s3.moto.url}"], secrets=[f"id=aws,src={credentials}"],
    )  # fmt: skip
    try:
        port = free_port()
        env = {"PORT": str(port), "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}"}
        with container.started(tag, env=env) as box:  # no volume: the root is all read-only
            container.first_answer(f"http://127.0.0.1:{port}/health", box)
            answer = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={**CHAT, "model": "baked-chat"},
                timeout=120,
            )
            assert answer.status_code == 200, answer.text + box.output()
        content = reference_chat(server)["choices"][0]["message"]["content"]
        assert answer.json()["choices"][0]["message"]["content"] == content
        holding, blobs = [], 0
        for blob in container.pushed_blobs(tag, tmp_path):
            blobs += 1
            if SECRET.encode() in blob.read_bytes():
                holding.append(blob.name)
        assert blobs > 5  # the layers, the config, the manifest
        assert not holding, holding  # no layer, no build argument, no history line
    finally:
        with contextlib.suppress(container.image_build.BuildError):
            container.buildah("rmi", tag)


def test_lambda_stream_builds_on_the_http_stage(images, tmp_path):
    """The Lambda Web Adapter's image (public.ecr.aws) cannot be pulled here: a stand-in with
    the same file (/lambda-adapter) is given as LAMBDA_ADAPTER, so the stage is built as a
    deployment builds it. The adapter itself runs only on Lambda (an extension); what it
    forwards to is the http stage, which the tests above start."""
    context = tmp_path / "adapter"
    context.mkdir()
    (context / "lambda-adapter").write_text("#!/bin/sh\necho stand-in\n")
    (context / "lambda-adapter").chmod(0o755)
    (context / "Containerfile").write_text("FROM scratch\nCOPY lambda-adapter /lambda-adapter\n")
    stand_in = "localhost/stratus-test-lambda-adapter:latest"
    container.buildah("bud", "--quiet", "-t", stand_in, str(context))
    try:
        [tag] = container.image_build.build_images(
            "text", "cpu", ["lambda-stream"], pip=[sys.executable, "-m", "pip"], tool="buildah",
            quiet=True, build_args=[f"LAMBDA_ADAPTER={stand_in}"],
        )  # fmt: skip
        config = container.image_config(tag)
        assert config.env["AWS_LWA_INVOKE_MODE"] == "response_stream"
        assert config.env["AWS_LWA_PORT"] == config.env["PORT"] == "8080"
        assert config.env["AWS_LWA_READINESS_CHECK_PATH"] == "/health"
        assert config.env["STRATUS_PLATFORM"] == "lambda"
        assert config.cmd == ["stratus", "serve"] and config.user == "10001"
        with container.started(tag, command=["sh", "-c", "ls -l /opt/extensions; sleep 30"]) as box:
            deadline = time.monotonic() + 10
            while "lambda-adapter" not in box.output() and time.monotonic() < deadline:
                time.sleep(0.05)
        assert "-rwxr-xr-x" in box.output() and "lambda-adapter" in box.output()
    finally:
        # buildah keeps a working container of a stage that is only a FROM (the stand-in's):
        # removed, or it would hold the stand-in's image and a mount after the test.
        names = container.buildah("containers", "--format", "{{.ContainerName}}").split()
        for name in names:
            if name.startswith("stratus-test-lambda-adapter"):
                container.buildah("rm", name)
        for name in (stand_in, container.image_build.tag("text", "cpu", "lambda-stream")):
            with contextlib.suppress(container.image_build.BuildError):
                container.buildah("rmi", name)
