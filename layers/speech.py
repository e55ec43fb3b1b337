"""The speech interface every text-to-speech engine implements (Piper, Coqui TTS)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

# OpenAI's voice names; a registry entry maps them (and any names of its own) to engine voices.
OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
)  # fmt: skip


class SpeechModel(Protocol):
    name: str
    sample_rate: int

    def voices(self) -> list[str]:
        """Every voice name a request may use."""
        ...

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[np.ndarray]:
        """Mono int16 samples at `sample_rate`, one array per sentence as it is ready."""
        ...
