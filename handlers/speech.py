"""POST /v1/audio/speech: text in, audio out in the asked format, sent sentence by sentence."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import numpy as np

from common import cancellation, metering
from common.errors import InvalidRequest
from common.protocol.audio import (
    SPEECH_MEDIA_TYPES,
    SpeechAudioDelta,
    SpeechAudioDone,
    SpeechRequest,
    TokenUsage,
)
from common.protocol.base import BinaryStream
from common.store import ModelStore
from handlers.capabilities import require
from layers.audio_codec import AudioEncoder
from layers.speech import SpeechModel

# Speech engines have no text tokenizer of OpenAI's: words and punctuation marks stand in.
_TEXT_TOKEN = re.compile(r"\w+|[^\w\s]")
AUDIO_TOKENS_PER_SECOND = 50  # one output token per 20 ms of audio


def create_speech(
    request: SpeechRequest, store: ModelStore
) -> BinaryStream | Iterator[SpeechAudioDelta | SpeechAudioDone]:
    if request.stream_format == "sse":
        return _events(request, store)
    return BinaryStream(speech_bytes(request, store), SPEECH_MEDIA_TYPES[request.response_format])


def speech_bytes(
    request: SpeechRequest, store: ModelStore, seconds: list[float] | None = None
) -> Iterator[bytes]:
    """The encoded bytes ready after each sentence; `seconds` (if given) gets the duration."""
    with store.use(request.model) as loaded:
        model: SpeechModel = require(loaded, "synthesize", request.model, "speak")
        voices = model.voices()
        if request.voice not in voices:
            raise InvalidRequest(
                f"Unknown voice '{request.voice}' for model '{request.model}'; its voices are: "
                f"{', '.join(voices)}.",
                param="voice",
            )
        encoder = AudioEncoder(model.sample_rate, request.response_format)
        samples = 0
        piece = model.sample_rate // 2
        metering.count("characters", len(request.input))
        try:
            for sentence in model.synthesize(request.input, request.voice, request.speed):
                cancellation.check()  # between sentences: the client left, or the deadline passed
                samples += len(sentence)
                # Encoded in half-second pieces, each sent when ready: the first bytes leave
                # after encoding half a second of audio, not a whole sentence (~30 ms less for
                # mp3).
                for start in range(0, len(sentence), piece):
                    if data := encoder.add(sentence[start : start + piece]):
                        yield data
        finally:  # what was synthesized counts, also when the client left halfway
            metering.count("audio_seconds_out", samples / model.sample_rate)
        if not samples:
            # Nothing speakable (only punctuation, say): a moment of silence is still a file
            # every player opens, where zero bytes of mp3 are not.
            samples = model.sample_rate // 10
            metering.count("audio_seconds_out", samples / model.sample_rate)
            yield encoder.add(np.zeros(samples, dtype=np.int16))
        if seconds is not None:
            seconds.append(samples / model.sample_rate)
    yield encoder.finish()


def _events(
    request: SpeechRequest, store: ModelStore
) -> Iterator[SpeechAudioDelta | SpeechAudioDone]:
    seconds: list[float] = []
    for data in speech_bytes(request, store, seconds):
        if data:
            yield SpeechAudioDelta(audio=base64.b64encode(data).decode())
    input_tokens = len(_TEXT_TOKEN.findall(request.input))
    output_tokens = round(seconds[0] * AUDIO_TOKENS_PER_SECOND)
    yield SpeechAudioDone(
        usage=TokenUsage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        )
    )
