"""Every chat, completions, edits, embeddings, images and models request of the API reference we
implement (shared/API.md, LocalAI's), sent verbatim with curl to the live server."""

from __future__ import annotations

import io
import json
import subprocess

import httpx
import pytest
from PIL import Image

from tests.conftest import API_KEYS

# (method, path, body) exactly as the reference writes them.
REFERENCE_REQUESTS = {
    "chat request body": (
        "POST",
        "/v1/chat/completions",
        """{
  "model": "gpt-4",
  "messages": [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello!"}
  ],
  "temperature": 0.7,
  "max_tokens": 100,
  "top_p": 1.0,
  "top_k": 40,
  "stream": false
}""",
    ),
    "chat example": (
        "POST",
        "/v1/chat/completions",
        """{
    "model": "gpt-4",
    "messages": [{"role": "user", "content": "Hello!"}]
  }""",
    ),
    "completions request body": (
        "POST",
        "/v1/completions",
        """{
  "model": "gpt-4",
  "prompt": "The capital of France is",
  "temperature": 0.7,
  "max_tokens": 10
}""",
    ),
    "completions example": (
        "POST",
        "/v1/completions",
        """{
    "model": "gpt-4",
    "prompt": "The capital of France is",
    "max_tokens": 10
  }""",
    ),
    "edits request body": (
        "POST",
        "/v1/edits",
        """{
  "model": "gpt-4",
  "instruction": "Make it more formal",
  "input": "Hey, how are you?",
  "temperature": 0.7
}""",
    ),
    "edits example": (
        "POST",
        "/v1/edits",
        """{
    "model": "gpt-4",
    "instruction": "Make it more formal",
    "input": "Hey, how are you?"
  }""",
    ),
    "embeddings request body": (
        "POST",
        "/v1/embeddings",
        """{
  "model": "text-embedding-ada-002",
  "input": "The food was delicious"
}""",
    ),
    "embeddings example": (
        "POST",
        "/v1/embeddings",
        """{
    "model": "text-embedding-ada-002",
    "input": "The food was delicious"
  }""",
    ),
    "models example": ("GET", "/v1/models", None),
}
IMAGE_REQUESTS = {
    "images request body": """{
  "prompt": "A cute baby sea otter",
  "n": 1,
  "size": "256x256",
  "response_format": "url"
}""",
    "images example": """{
    "prompt": "A cute baby sea otter",
    "size": "256x256"
  }""",
}
STREAMING_EXAMPLE = """{
    "model": "gpt-4",
    "messages": [{"role": "user", "content": "Hello!"}],
    "stream": true
  }"""


def curl(server, method: str, path: str, body: str | None) -> str:
    command = ["curl", "-sS", "--fail-with-body", f"{server.url}{path}"]
    command += ["-H", f"Authorization: Bearer {API_KEYS[0]}"]
    if body is not None:
        command += ["-H", "Content-Type: application/json", "-d", body]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("name", sorted(REFERENCE_REQUESTS))
def test_reference_request_works_verbatim(server, name):
    method, path, body = REFERENCE_REQUESTS[name]
    answer = json.loads(curl(server, method, path, body))
    expected_object = {
        "/v1/chat/completions": "chat.completion",
        "/v1/completions": "text_completion",
        "/v1/edits": "edit",
        "/v1/embeddings": "list",
        "/v1/models": "list",
    }[path]
    assert answer["object"] == expected_object
    if path == "/v1/models":
        assert any(m["id"] == "gpt-4" and m["object"] == "model" for m in answer["data"])
    elif path == "/v1/embeddings":
        [item] = answer["data"]
        assert item["object"] == "embedding" and len(item["embedding"]) == 384
        assert answer["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    else:
        choice = answer["choices"][0]
        assert (choice.get("message", {}).get("content") or choice.get("text")).strip()
        assert answer["usage"]["total_tokens"] > 0


def test_reference_streaming_example(server):
    raw = curl(server, "POST", "/v1/chat/completions", STREAMING_EXAMPLE)
    events = [e for e in raw.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks).strip()


@pytest.mark.parametrize("name", sorted(IMAGE_REQUESTS))
def test_reference_image_request_works_verbatim(server, name):
    answer = json.loads(curl(server, "POST", "/v1/images/generations", IMAGE_REQUESTS[name]))
    assert answer["created"] > 0
    [item] = answer["data"]
    assert set(item) == {"url"}  # the reference's default, and its request body's choice
    image = Image.open(io.BytesIO(httpx.get(item["url"]).content))
    assert image.format == "PNG" and image.size == (256, 256)
