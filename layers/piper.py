"""Piper (ONNX voices) behind the SpeechModel interface.

A registry entry may map voice names to the model's speakers with
`parameters: {voices: {alloy: 0, echo: 3}}`; without it, every OpenAI voice name speaks with
the model's first speaker (the embedded voice has only one).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from common.errors import EngineUnavailable
from common.registry import ModelConfig
from layers import EngineOptions
from layers.speech import OPENAI_VOICES


def load(config: ModelConfig, path: Path, options: EngineOptions) -> PiperSpeechModel:
    return PiperSpeechModel(config, onnx_file(config, path))


def onnx_file(config: ModelConfig, path: Path) -> Path:
    if path.is_file():
        return path
    candidates = sorted(path.rglob("*.onnx"))
    if len(candidates) != 1:
        raise EngineUnavailable(
            f"The model '{config.name}' is a directory with {len(candidates)} .onnx voices; "
            "name one in its source."
        )
    return candidates[0]


def voice_map(parameters: Mapping[str, object], speakers: int) -> dict[str, int]:
    """Request voice name -> Piper speaker id."""
    configured = parameters.get("voices")
    if isinstance(configured, Mapping):
        return {str(name): int(speaker) for name, speaker in configured.items()}  # type: ignore[arg-type]
    return {name: 0 for name in OPENAI_VOICES} | {str(i): i for i in range(max(speakers, 1))}


class PiperSpeechModel:
    def __init__(self, config: ModelConfig, path: Path) -> None:
        from piper import PiperVoice

        self._voice = PiperVoice.load(str(path))
        self.name = config.name
        self.sample_rate = int(self._voice.config.sample_rate)
        self._speakers = voice_map(config.parameters, int(self._voice.config.num_speakers or 1))
        self._lock = threading.Lock()  # one ONNX session: one synthesis at a time

    def voices(self) -> list[str]:
        return sorted(self._speakers)

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[np.ndarray]:
        from piper import SynthesisConfig

        speaker = self._speakers[voice]
        settings = SynthesisConfig(
            speaker_id=speaker if self._voice.config.num_speakers > 1 else None,
            length_scale=1.0 / speed,  # Piper's length scale stretches time: the inverse of speed
        )
        with self._lock:
            for chunk in self._voice.synthesize(text, syn_config=settings):
                yield chunk.audio_int16_array
