"""The speech-to-text interface (faster-whisper)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from common import cancellation


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word]


@dataclass(frozen=True)
class Transcript:
    language: str
    duration: float
    segments: list[Segment]

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()


@dataclass(frozen=True)
class TranscriptStream:
    """A transcription under way: what is known at once, and segments as they are decoded.

    `segments` holds the engine until it is exhausted or closed.
    """

    language: str
    duration: float
    segments: Iterator[Segment]

    def collect(self) -> Transcript:
        """Every segment; stops early, freeing the engine, if the request is cancelled."""
        segments = []
        try:
            for segment in self.segments:
                cancellation.check()
                segments.append(segment)
        finally:
            self.segments.close()  # type: ignore[attr-defined]
        return Transcript(self.language, self.duration, segments)


class TranscriptionModel(Protocol):
    name: str

    def transcribe(
        self,
        audio: bytes,
        *,
        task: str,
        language: str | None,
        prompt: str | None,
        temperature: float,
        word_timestamps: bool,
    ) -> TranscriptStream:
        """Raises InvalidRequest for audio that cannot be decoded."""
        ...
