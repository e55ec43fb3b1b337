"""Encoding mono 16-bit audio into OpenAI's speech formats, in memory, with PyAV (no ffmpeg
binary needed): mp3, opus (in Ogg), aac (ADTS), flac, wav, and pcm — raw 24 kHz 16-bit mono
little-endian, as OpenAI documents it, so other rates are resampled."""

from __future__ import annotations

import io
import wave

import numpy as np

PCM_RATE = 24_000
MEDIA_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# format -> (container, codec, sample rate: None keeps the source's)
_CODECS = {
    "mp3": ("mp3", "libmp3lame", None),
    "opus": ("ogg", "libopus", 48_000),  # Opus runs at 48 kHz
    "aac": ("adts", "aac", None),
    "flac": ("flac", "flac", None),
}


def encode(samples: np.ndarray, rate: int, response_format: str) -> bytes:
    samples = np.asarray(samples, dtype=np.int16).reshape(-1)
    if response_format == "wav":
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(samples.astype("<i2").tobytes())
        return buffer.getvalue()
    if response_format == "pcm":
        return _resampled(samples, rate, PCM_RATE).astype("<i2").tobytes()
    container, codec, out_rate = _CODECS[response_format]
    return _encoded(samples, rate, container, codec, out_rate or rate)


def _frame(samples: np.ndarray, rate: int):
    import av

    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    return frame


def _resampled(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target or samples.size == 0:
        return samples
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=target)
    frames = resampler.resample(_frame(samples, rate)) + resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


def _encoded(samples: np.ndarray, rate: int, container: str, codec: str, out_rate: int) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(codec, rate=out_rate, layout="mono")
        context = stream.codec_context
        resampler = av.AudioResampler(
            format=context.format.name,
            layout="mono",
            rate=out_rate,
            frame_size=context.frame_size or None,  # encoders that want fixed-size frames
        )
        for frame in resampler.resample(_frame(samples, rate)) + resampler.resample(None):
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()
