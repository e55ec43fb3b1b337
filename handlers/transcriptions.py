"""POST /v1/audio/transcriptions and /v1/audio/translations: audio in, text in OpenAI's formats."""

from __future__ import annotations

from common.protocol.audio import (
    Transcription,
    TranscriptionRequest,
    TranscriptionSegment,
    TranscriptionVerbose,
    TranscriptionWord,
)
from common.protocol.base import BinaryResponse, OpenAIResponse
from common.store import ModelStore
from handlers._capabilities import require
from layers.transcription import Transcript, TranscriptionModel


def create_transcription(
    upload: tuple[TranscriptionRequest, bytes], store: ModelStore
) -> OpenAIResponse | BinaryResponse:
    return _run(upload, store, task="transcribe")


def create_translation(
    upload: tuple[TranscriptionRequest, bytes], store: ModelStore
) -> OpenAIResponse | BinaryResponse:
    return _run(upload, store, task="translate")


def _run(
    upload: tuple[TranscriptionRequest, bytes], store: ModelStore, task: str
) -> OpenAIResponse | BinaryResponse:
    request, audio = upload
    with store.use(request.model) as loaded:
        model: TranscriptionModel = require(loaded, "transcribe", request.model, "transcribe")
        transcript = model.transcribe(
            audio,
            task=task,
            language=request.language if task == "transcribe" else None,
            prompt=request.prompt,
            temperature=request.temperature,
            word_timestamps="word" in request.timestamp_granularities,
        )
    return shape(transcript, request, task)


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
