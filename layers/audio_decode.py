"""Audio files (wav, mp3, m4a, ogg, webm, flac: whatever PyAV reads) to 16 kHz mono samples, in
memory, with a cap on duration.

The cap is checked twice: from the container's header before anything is decoded, and on the
samples while decoding, since a header can lie or say nothing (a raw or streamed file). A few
megabytes of compressed silence decode to hours: without the cap, to gigabytes of samples.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np

from common import cancellation
from common.errors import InvalidRequest

SAMPLE_RATE = 16000
_UNDECODABLE = "The file could not be decoded as audio (wav, mp3, m4a, ogg, webm, flac)."


def decode(audio: bytes, max_seconds: float) -> np.ndarray:
    """float32 samples in [-1, 1] at 16 kHz; a 400 (param file) for what is not audio or is
    longer than `max_seconds`."""
    import av

    limit = int(max_seconds * SAMPLE_RATE)
    pieces: list[np.ndarray] = []
    decoded = 0
    try:
        with av.open(io.BytesIO(audio), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InvalidRequest(_UNDECODABLE, param="file")
            declared = container.duration  # in av.time_base units (microseconds), or None
            if declared is not None and declared / av.time_base > max_seconds:
                raise _too_long(max_seconds)
            resampler = av.audio.resampler.AudioResampler(
                format="s16", layout="mono", rate=SAMPLE_RATE
            )
            for frame in _frames(container, av.error.InvalidDataError):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
                    decoded += pieces[-1].size
                if decoded > limit:
                    raise _too_long(max_seconds)
                cancellation.check()
            pieces += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    except InvalidRequest:
        raise
    except av.error.FFmpegError:
        raise InvalidRequest(_UNDECODABLE, param="file") from None
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    samples = np.concatenate(pieces)[:limit]
    return samples.astype(np.float32) / 32768.0


def _frames(container: Any, invalid: type[Exception]) -> Iterator[Any]:
    """The audio frames, skipping the ones that fail to decode (a damaged stretch of a file)."""
    frames = container.decode(audio=0)
    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except invalid:
            continue


def _too_long(max_seconds: float) -> InvalidRequest:
    return InvalidRequest(
        f"The audio is longer than this server transcribes ({max_seconds:g} seconds at most; "
        "STRATUS_MAX_AUDIO_SECONDS). Split it, and send the parts one by one.",
        param="file",
        code="audio_too_long",
    )
