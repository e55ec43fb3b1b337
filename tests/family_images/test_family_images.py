"""The CPU images of the other families, built and started (`make test-images`; not part of
`make test`: each carries PyTorch's CPU build, ~1.7 GB, and takes minutes to build).

    embeddings  POST /v1/embeddings with the embedded all-MiniLM-L6-v2
    audio       POST /v1/audio/speech (Piper), then that speech transcribed (faster-whisper)
    images      POST /v1/images/generations (tiny-sd, generated into the cache volume)
"""

from __future__ import annotations

import base64
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import container
from tests.processes import free_port

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("STRATUS_TEST_FAMILY_IMAGES") != "1",
        reason="builds three images of ~1.7 GB: `make test-images` runs these",
    ),
    pytest.mark.skipif(container.why_not_here() is not None, reason=container.why_not_here() or ""),
]


@contextlib.contextmanager
def served(family: str, tmp_path: Path) -> Iterator[tuple[container.Container, str]]:
    """The family's http image, built, started with a cache volume, and answering."""
    [tag] = container.image_build.build_images(
        family, "cpu", ["http"], pip=[sys.executable, "-m", "pip"], tool="buildah", quiet=True
    )
    cache = tmp_path / "cache"
    cache.mkdir()
    port = free_port()
    volumes = {str(cache): "/opt/stratus-cache"}
    with container.started(tag, env={"PORT": str(port)}, volumes=volumes) as box:
        url = f"http://127.0.0.1:{port}"
        container.first_answer(f"{url}/health", box, timeout=120)
        yield box, url


def test_embeddings_image(tmp_path):
    with served("embeddings", tmp_path) as (box, url):
        answer = httpx.post(
            f"{url}/v1/embeddings",
            json={"model": "text-embedding-ada-002", "input": "hi"},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text + box.output()
        assert len(answer.json()["data"][0]["embedding"]) == 384
        assert box.healthcheck().returncode == 0


def test_audio_image_speaks_and_transcribes(tmp_path):
    with served("audio", tmp_path) as (box, url):
        speech = httpx.post(
            f"{url}/v1/audio/speech",
            json={"model": "tts-1", "input": "The quick brown fox.", "voice": "alloy",
                  "response_format": "wav"},
            timeout=120,
        )  # fmt: skip
        assert speech.status_code == 200 and speech.content[:4] == b"RIFF", box.output()
        text = httpx.post(
            f"{url}/v1/audio/transcriptions",
            data={"model": "whisper-1"},
            files={"file": ("fox.wav", speech.content, "audio/wav")},
            timeout=120,
        )
        assert text.status_code == 200, text.text + box.output()
        assert "fox" in text.json()["text"].lower()


def test_images_image_draws(tmp_path):
    with served("images", tmp_path) as (box, url):
        answer = httpx.post(
            f"{url}/v1/images/generations",
            json={"prompt": "a red circle", "size": "64x64", "response_format": "b64_json"},
            timeout=600,
        )
        assert answer.status_code == 200, answer.text + box.output()
        png = base64.b64decode(answer.json()["data"][0]["b64_json"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
