"""A live server whose registry holds tiny random-weight VITS models, built for the session.

Nothing here imports TTS at collection time: without it (`make test`), the test module skips
itself and these fixtures never run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.coqui.tiny_vits import build
from tests.processes import stratus_serve

API_KEY = "coqui-key"
SPEAKERS = ("ana", "ben")
MULTI_RATE = 16_000  # not the single-speaker model's 22.05 kHz: the rate comes from the model


@dataclass(frozen=True)
class CoquiServer:
    url: str
    models: Path

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"


def write_registry(directory: Path, models: Path) -> Path:
    registry = directory / "coqui.yaml"
    registry.write_text(
        f"""
- name: coqui-vits
  backend: coqui-tts
  source: {models / "single"}
  parameters: {{device: cpu}}
- name: coqui-vits-speakers
  backend: coqui-tts
  source: {models / "multi"}
  parameters:
    voices: {{alloy: {SPEAKERS[0]}, echo: {SPEAKERS[1]}}}
- name: coqui-empty
  backend: coqui-tts
  source: {models / "empty"}
"""
    )
    return registry


@pytest.fixture(scope="session")
def coqui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoquiServer]:
    models = tmp_path_factory.mktemp("coqui-models")
    build(models / "single")
    build(models / "multi", SPEAKERS, sample_rate=MULTI_RATE)
    (models / "empty").mkdir()
    registry = write_registry(tmp_path_factory.mktemp("registry"), models)
    env = {
        **os.environ,
        "STRATUS_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
        "API_KEY": API_KEY,
        "STRATUS_LOG_LEVEL": "warning",
    }
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with open(log, "wb") as log_file:
        try:
            with stratus_serve("--models", str(registry), env=env, log=log_file) as started:
                yield CoquiServer(started.url, models)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{log.read_text()}") from None
    assert started.process.returncode in (0, -15), log.read_text()


@pytest.fixture(scope="session")
def coqui_client(coqui_server: CoquiServer):
    import openai

    return openai.OpenAI(base_url=coqui_server.v1, api_key=API_KEY, max_retries=0, timeout=120)
