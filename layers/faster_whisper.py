"""faster-whisper (CTranslate2) behind the TranscriptionModel interface. Audio of any container
PyAV reads (wav, mp3, m4a, ogg, webm, flac) is decoded in memory (layers/audio_decode.py, with
the duration cap): no ffmpeg binary needed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from common.errors import InvalidRequest
from common.registry import ModelConfig
from layers import EngineOptions, audio_decode
from layers.transcription import Segment, TranscriptStream, Word


def load(config: ModelConfig, path: Path, options: EngineOptions) -> FasterWhisperModel:
    return FasterWhisperModel(config, path, options)


class FasterWhisperModel:
    def __init__(self, config: ModelConfig, path: Path, options: EngineOptions) -> None:
        from faster_whisper import WhisperModel

        device = str(config.parameters.get("device", "auto"))
        compute_type = str(config.parameters.get("compute_type", "default"))
        self._model = WhisperModel(
            str(path), device=device, compute_type=compute_type, cpu_threads=options.threads
        )
        self.name = config.name
        self._max_audio_seconds = options.max_audio_seconds
        self._lock = threading.Lock()

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
        samples = audio_decode.decode(audio, self._max_audio_seconds)
        if samples.size == 0:
            raise InvalidRequest("The audio file holds no sound.", param="file")
        stream = self._segments(
            samples,
            task=task,
            language=whisper_language(language),
            initial_prompt=prompt,
            temperature=temperature,
            word_timestamps=word_timestamps,
            beam_size=5,
        )
        info = next(stream)  # started: from here closing the stream releases the engine
        return TranscriptStream(info.language, float(info.duration), stream)  # type: ignore[arg-type]

    def _segments(self, samples, **options) -> Iterator:
        """Yields the transcription's info, then each segment as faster-whisper decodes it."""
        with self._lock:
            segments, info = self._model.transcribe(samples, **options)
            yield info
            for index, segment in enumerate(segments):
                yield _segment(index, segment)


def whisper_language(code: str | None) -> str | None:
    """An ISO-639-1 code Whisper knows, lower-cased; an unknown one is the client's error
    (a multilingual model would fail on it; an English-only one would quietly ignore it)."""
    if not code or not code.strip():
        return None
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    code = code.strip().lower()
    if code not in _LANGUAGE_CODES:
        raise InvalidRequest(
            f"Invalid value for 'language': '{code}' is not a language Whisper knows; give an "
            "ISO-639-1 code such as en, de, fr or ja.",
            param="language",
            code="invalid_value",
        )
    return code


def _segment(index: int, s) -> Segment:
    return Segment(
        id=index,
        seek=int(s.seek),
        start=float(s.start),
        end=float(s.end),
        text=s.text,
        tokens=list(s.tokens),
        temperature=float(s.temperature or 0.0),
        avg_logprob=float(s.avg_logprob),
        compression_ratio=float(s.compression_ratio),
        no_speech_prob=float(s.no_speech_prob),
        words=[Word(w.word, float(w.start), float(w.end)) for w in (s.words or [])],
    )
