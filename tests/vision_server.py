"""The vision tests' server and requests: gpt-4-vision-preview (tiny-vlm) on a Stratus of its
own that may fetch from 127.0.0.1 (the tests' image server) and takes bodies large enough to
reach the image caps; a tiny Qwen2.5-VL beside it where llama.cpp's vocabularies are."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from tests.conftest import BUCKET
from tests.crafted_images import png, serving
from tests.processes import stratus_serve_logged

MODEL = "gpt-4-vision-preview"
QWEN = "qwen25-vl-vocab"
BODY_CAP = 160 * 1024 * 1024  # above the 20 MB image cap: the image's own cap answers


RED, BLUE = png(300, 200, (200, 30, 40)), png(200, 200, (20, 40, 220))


def image_part(url: str, detail: str | None = None) -> dict:
    image = {"url": url} if detail is None else {"url": url, "detail": detail}
    return {"type": "image_url", "image_url": image}


def ask(*parts: dict, text: str = "What is in this image?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, *parts]}]


@dataclass(frozen=True)
class Vision:
    url: str
    cache_dir: Path
    images: str  # the image server's base URL (127.0.0.1, which the fetch policy allows)

    @property
    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="x", max_retries=0, timeout=300)


@contextmanager
def vision_server(
    directory: Path, s3_env: Mapping[str, str], qwen_dir: Path | None
) -> Iterator[Vision]:
    """The server, its registry, cache and log in `directory`, and the image server."""
    registry = directory / "models.yaml"
    # The generated model again, its GGUF and projector from S3 (uploaded by a test).
    text = f"""
- name: vlm-s3
  backend: llama-cpp
  source: s3://{BUCKET}/vlm/model.gguf
  mmproj: s3://{BUCKET}/vlm/mmproj.gguf
  parameters: {{n_ctx: 2048, parallel: 2}}
"""
    if qwen_dir is not None:
        text += f"""
- name: {QWEN}
  backend: llama-cpp
  source: file://{qwen_dir}
  mmproj: mmproj.gguf
  parameters: {{file: model.gguf, n_ctx: 2048, parallel: 2}}
"""
    registry.write_text(text)
    cache_dir = directory / "cache"
    env = {
        **os.environ,
        **s3_env,
        "STRATUS_CACHE_DIR": str(cache_dir),
        "STRATUS_FETCH_ALLOW": "127.0.0.1",
        "STRATUS_MAX_BODY_BYTES": str(BODY_CAP),
        "STRATUS_LOG_LEVEL": "warning",
    }
    files = {"/red.png": RED, "/blue.png": BLUE, "/big.png": b"\x89PNG" + b"\0" * (21 << 20)}
    log = directory / "server.log"
    with serving(files) as images, stratus_serve_logged(registry, env, log) as started:
        yield Vision(started.url, cache_dir, images.url(""))


def usage_of(vision: Vision, messages: list[dict], model: str = MODEL) -> int:
    answer = vision.client.chat.completions.create(model=model, messages=messages, max_tokens=1)
    return answer.usage.prompt_tokens


def image_requests(url: str) -> dict[str, tuple[str, dict[str, Any], dict[str, str]]]:
    """The image `url` asked about in each dialect, plain and streamed, greedy, and once where
    no image may be (an assistant turn): name -> (path, body, headers), for the wire output's
    recording (tests/e2e/test_vision.py)."""
    anthropic = {"anthropic-version": "2023-06-01"}
    question = "What is in this image?"
    chat = {"model": MODEL, "messages": ask(image_part(url)), "max_tokens": 6, "temperature": 0}
    source = {"type": "base64", "media_type": "image/png", "data": url.split(",", 1)[1]}
    blocks = [{"type": "image", "source": source}, {"type": "text", "text": question}]
    messages = {"model": MODEL, "max_tokens": 6, "temperature": 0,
                "messages": [{"role": "user", "content": blocks}]}  # fmt: skip
    parts = [{"type": "input_image", "image_url": url}, {"type": "input_text", "text": question}]
    responses = {"model": MODEL, "max_output_tokens": 6, "temperature": 0, "store": False,
                 "input": [{"role": "user", "content": parts}]}  # fmt: skip
    in_assistant_turn = [*ask(), {"role": "assistant", "content": [image_part(url)]}]
    return {
        "chat image": ("/v1/chat/completions", chat, {}),
        "chat image, streamed": ("/v1/chat/completions", {**chat, "stream": True}, {}),
        "messages image": ("/v1/messages", messages, anthropic),
        "messages image, streamed": ("/v1/messages", {**messages, "stream": True}, anthropic),
        "responses image": ("/v1/responses", responses, {}),
        "responses image, streamed": ("/v1/responses", {**responses, "stream": True}, {}),
        "chat image in an assistant turn": (
            "/v1/chat/completions",
            {**chat, "messages": in_assistant_turn},
            {},
        ),
    }
