"""A chat's spoken answer (`modalities: ["text", "audio"]`, gpt-4o-audio-preview's shape): the
answer's text, as it streams, becomes `delta.audio.transcript` instead of `delta.content`; when
a choice ends, the registry's tts-1 speaks it, and its audio follows as `delta.audio.data`
pieces (base64), the first with the answer's `id` and `expires_at`. Gathered (not streamed),
the message has `audio: {id, data, expires_at, transcript}` and no content.

The id holds the transcript itself (base64), so that an assistant message handing it back
(`audio: {id}`) is read as what was said, on any worker, with nothing stored: what it says is
what the client could have sent as the message's text anyway. Nothing expires; `expires_at`
is an hour on, as OpenAI's.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterator

from common.errors import InvalidRequest
from common.protocol.audio import SpeechRequest
from common.protocol.chat import (
    AudioOutputParam,
    ChatAudioDelta,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChoiceDelta,
)
from common.store import ModelStore
from handlers.capabilities import require
from handlers.speech import speech_bytes

VOICE_MODEL = "tts-1"  # OpenAI's name for it, which the registry gives its speech model
AUDIO_ID = "audio_"
EXPIRES_SECONDS = 3600
# Chat's audio formats as the speech endpoint names them.
SPEECH_FORMATS = {"wav": "wav", "aac": "aac", "mp3": "mp3", "flac": "flac", "opus": "opus",
                  "pcm16": "pcm"}  # fmt: skip


def check_voice(audio: AudioOutputParam, store: ModelStore) -> None:
    """A 400 before generating when no model here speaks, or not in that voice."""
    if VOICE_MODEL not in store.registry:
        raise InvalidRequest(
            f"No model here speaks (the registry has no '{VOICE_MODEL}'): ask for text only.",
            param="modalities",
            code="audio_not_supported",
        )
    with store.use(VOICE_MODEL) as loaded:
        voices = require(loaded, "synthesize", VOICE_MODEL, "speak").voices()
    if audio.voice not in voices:
        raise InvalidRequest(
            f"Unknown voice '{audio.voice}'; the voices are: {', '.join(voices)}.",
            param="audio.voice",
        )


def spoken(
    chunks: Iterator[ChatCompletionChunk], audio: AudioOutputParam, store: ModelStore
) -> Iterator[ChatCompletionChunk]:
    """The chunks with each choice's text as its transcript, and its audio before its end."""
    said: dict[int, list[str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            text = choice.delta.content
            if text:
                said.setdefault(choice.index, []).append(text)
                choice.delta.content = None
                choice.delta.audio = ChatAudioDelta(transcript=text)
            if choice.finish_reason is not None and said.get(choice.index):
                yield from _audio_chunks(
                    chunk, choice.index, "".join(said[choice.index]), audio, store
                )
        yield chunk


def transcript_of(audio_id: str, param: str) -> str:
    """What an earlier spoken answer said, from its id."""
    try:
        if not audio_id.startswith(AUDIO_ID):
            raise ValueError(audio_id)
        encoded = audio_id.removeprefix(AUDIO_ID).encode()
        return base64.b64decode(encoded, altchars=b"-_", validate=True).decode()
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidRequest(
            f"'{param}' is not the id of a spoken answer given here.", param=param
        ) from None


def _audio_chunks(
    like: ChatCompletionChunk, index: int, text: str, audio: AudioOutputParam, store: ModelStore
) -> Iterator[ChatCompletionChunk]:
    # Built without validation: an answer may be longer than the speech endpoint's 4096
    # characters, which bound what a client sends, not what a model wrote.
    request = SpeechRequest.model_construct(
        model=VOICE_MODEL, input=text, voice=audio.voice, instructions=None,
        response_format=SPEECH_FORMATS[audio.format], speed=1.0, stream_format="audio",
    )  # fmt: skip
    first = ChatAudioDelta(
        id=AUDIO_ID + base64.urlsafe_b64encode(text.encode()).decode(),
        expires_at=int(time.time()) + EXPIRES_SECONDS,
    )
    for piece in speech_bytes(request, store):
        if not piece:
            continue
        delta = first.model_copy(update={"data": base64.b64encode(piece).decode()})
        first = ChatAudioDelta()
        yield ChatCompletionChunk(
            id=like.id,
            created=like.created,
            model=like.model,
            choices=[ChatChunkChoice(index=index, delta=ChoiceDelta(audio=delta))],
            system_fingerprint=like.system_fingerprint,
        )
