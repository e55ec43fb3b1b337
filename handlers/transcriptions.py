"""POST /v1/audio/transcriptions and /v1/audio/translations: audio in, text in OpenAI's formats."""

from __future__ import annotations

from collections.abc import Iterator

from common import metering
from common.protocol.audio import (
    Transcription,
    TranscriptionRequest,
    TranscriptionSegment,
    TranscriptionVerbose,
    TranscriptionWord,
    TranscriptTextDelta,
    TranscriptTextDone,
    TranscriptUsage,
)
from common.protocol.base import BinaryResponse, OpenAIResponse
from common.store import ModelStore
from handlers.capabilities import require
from layers.transcription import Transcript, TranscriptionModel, TranscriptStream

Upload = tuple[TranscriptionRequest, bytes]  # the form fields, and the audio file
Answer = OpenAIResponse | BinaryResponse | Iterator[OpenAIResponse]


def create_transcription(upload: Upload, store: ModelStore) -> Answer:
    return _run(upload, store, task="transcribe")


def create_translation(upload: Upload, store: ModelStore) -> Answer:
    return _run(upload, store, task="translate")


def _run(upload: Upload, store: ModelStore, task: str) -> Answer:
    request, audio = upload
    if request.stream:
        return _streamed(request, audio, store, task)
    with store.use(request.model) as loaded:
        transcript = _transcribe(loaded, request, audio, task).collect()
    _count(transcript.duration, sum(len(s.tokens) for s in transcript.segments))
    return shape(transcript, request, task)


def _count(audio_seconds: float, output_tokens: int) -> None:
    metering.count("audio_seconds_in", audio_seconds)
    metering.count("completion_tokens", output_tokens)


def _streamed(
    request: TranscriptionRequest, audio: bytes, store: ModelStore, task: str
) -> Iterator[OpenAIResponse]:
    """transcript.text.delta as each segment is decoded, then transcript.text.done."""
    with store.use(request.model) as loaded:
        transcript = _transcribe(loaded, request, audio, task)
        texts: list[str] = []
        tokens = 0
        try:
            for segment in transcript.segments:
                text = segment.text if texts else segment.text.lstrip()
                texts.append(text)
                tokens += len(segment.tokens)
                yield TranscriptTextDelta(delta=text)
        finally:
            transcript.segments.close()  # type: ignore[attr-defined]  # frees the engine
            _count(transcript.duration, tokens)
    # Whisper's encoder sees 50 audio positions a second: its input tokens.
    audio_tokens = round(transcript.duration * 50)
    yield TranscriptTextDone(
        text="".join(texts).strip(),
        usage=TranscriptUsage(
            input_tokens=audio_tokens,
            output_tokens=tokens,
            total_tokens=audio_tokens + tokens,
            input_token_details={"audio_tokens": audio_tokens},
        ),
    )


def _transcribe(
    loaded: object, request: TranscriptionRequest, audio: bytes, task: str
) -> TranscriptStream:
    model: TranscriptionModel = require(loaded, "transcribe", request.model, "transcribe")
    return model.transcribe(
        audio,
        task=task,
        language=request.language,  # for a translation, the language spoken (a hint)
        prompt=request.prompt,
        temperature=request.temperature,
        word_timestamps="word" in request.timestamp_granularities,
    )


def shape(
    transcript: Transcript, request: TranscriptionRequest, task: str
) -> OpenAIResponse | BinaryResponse:
    match request.response_format:
        case "json":
            return Transcription(text=transcript.text)
        case "text":
            return _text(transcript.text + "\n", "text/plain")
        case "srt":
            return _text(subtitles(transcript, srt=True), "application/x-subrip")
        case "vtt":
            return _text(subtitles(transcript, srt=False), "text/vtt")
    granularities = request.timestamp_granularities
    return TranscriptionVerbose(
        task=task,  # type: ignore[arg-type]
        language=transcript.language,
        duration=transcript.duration,
        text=transcript.text,
        segments=[
            TranscriptionSegment(**{k: v for k, v in s.__dict__.items() if k != "words"})
            for s in transcript.segments
        ]
        if "segment" in granularities
        else None,
        words=[
            TranscriptionWord(word=w.word.strip(), start=w.start, end=w.end)
            for s in transcript.segments
            for w in s.words
        ]
        if "word" in granularities
        else None,
    )


def subtitles(transcript: Transcript, srt: bool) -> str:
    blocks = [] if srt else ["WEBVTT\n"]
    for number, segment in enumerate(transcript.segments, start=1):
        start, end = _clock(segment.start, srt), _clock(segment.end, srt)
        cue = f"{start} --> {end}\n{segment.text.strip()}\n"
        blocks.append(f"{number}\n{cue}" if srt else cue)
    return "\n".join(blocks)


def _clock(seconds: float, srt: bool) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{',' if srt else '.'}{millis:03d}"


def _text(text: str, media_type: str) -> BinaryResponse:
    return BinaryResponse(text.encode(), f"{media_type}; charset=utf-8")
