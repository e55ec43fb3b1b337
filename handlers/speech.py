"""POST /v1/audio/speech: text in, audio out in the asked format."""

from __future__ import annotations

import numpy as np

from common.errors import InvalidRequest
from common.protocol.audio import SpeechRequest
from common.protocol.base import BinaryResponse
from common.store import ModelStore
from handlers._capabilities import require
from layers.audio_codec import MEDIA_TYPES, encode
from layers.speech import SpeechModel


def create_speech(request: SpeechRequest, store: ModelStore) -> BinaryResponse:
    with store.use(request.model) as loaded:
        model: SpeechModel = require(loaded, "synthesize", request.model, "speak")
        voices = model.voices()
        if request.voice not in voices:
            raise InvalidRequest(
                f"Unknown voice '{request.voice}' for model '{request.model}'; its voices are: "
                f"{', '.join(voices)}.",
                param="voice",
            )
        chunks = list(model.synthesize(request.input, request.voice, request.speed))
        rate = model.sample_rate
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    audio = encode(samples, rate, request.response_format)
    return BinaryResponse(audio, MEDIA_TYPES[request.response_format])
