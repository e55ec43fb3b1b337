"""POST /v1/audio/transcriptions (multipart form) and POST /v1/audio/speech."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_serializer

from common.protocol.base import OpenAIRequest, OpenAIResponse, absent_when_none, extension

TranscriptionFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
# Each speech format's content type (OpenAI's pcm: raw 24 kHz 16-bit mono little-endian).
SPEECH_MEDIA_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class TranscriptionRequest(OpenAIRequest):
    """The form fields; the audio itself travels beside it as bytes."""

    model: str = Field(min_length=1)
    language: str | None = None
    prompt: str | None = None
    response_format: TranscriptionFormat = "json"
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    timestamp_granularities: list[Literal["word", "segment"]] = ["segment"]
    stream: bool = False  # SSE: transcript.text.delta per segment, then transcript.text.done


class TranslationRequest(TranscriptionRequest):
    """Translations read the same fields; OpenAI's API has three of them for transcriptions
    only (whisper takes the source language as a hint for either task)."""

    language: str | None = extension()
    timestamp_granularities: list[Literal["word", "segment"]] = extension(["segment"])
    stream: bool = extension(False)


class Transcription(OpenAIResponse):
    text: str


class TranscriptionWord(OpenAIResponse):
    word: str
    start: float
    end: float


class TranscriptionSegment(OpenAIResponse):
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


class TranscriptionVerbose(OpenAIResponse):
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegment] | None = None
    words: list[TranscriptionWord] | None = None

    model_config = absent_when_none("segments", "words")

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: Any) -> dict[str, Any]:
        # OpenAI's spec types both as arrays: absent when not asked for, never null.
        return {
            k: v for k, v in handler(self).items() if not (k in ("segments", "words") and v is None)
        }


class SpeechRequest(OpenAIRequest):
    model: str = Field(min_length=1)
    input: str = Field(min_length=1, max_length=4096)
    voice: str = Field(min_length=1)
    instructions: str | None = None
    response_format: SpeechFormat = "mp3"
    speed: Annotated[float, Field(ge=0.25, le=4.0)] = 1.0

    # "audio": the bytes of `response_format`, sent as each sentence is synthesized;
    # "sse": the same bytes base64-encoded in speech.audio.delta events.
    stream_format: Literal["audio", "sse"] = "audio"

    @field_validator("input")
    @classmethod
    def _speakable(cls, value: str) -> str:
        # Control characters (a NUL, say) crash phonemizers and are never spoken: spaces.
        value = _CONTROL.sub(" ", value)
        if not value.strip():
            raise ValueError("the input has nothing to speak")
        return value


class TokenUsage(OpenAIResponse):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class TranscriptTextDelta(OpenAIResponse):
    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str


class TranscriptUsage(TokenUsage):
    type: Literal["tokens"] = "tokens"
    input_token_details: dict[str, int] | None = None


class TranscriptTextDone(OpenAIResponse):
    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str
    usage: TranscriptUsage | None = None


class SpeechAudioDelta(OpenAIResponse):
    type: Literal["speech.audio.delta"] = "speech.audio.delta"
    audio: str  # base64 of the next bytes of the response_format's audio


class SpeechAudioDone(OpenAIResponse):
    type: Literal["speech.audio.done"] = "speech.audio.done"
    usage: TokenUsage
