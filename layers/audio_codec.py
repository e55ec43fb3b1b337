"""Encoding mono 16-bit audio into OpenAI's speech formats, in memory, with PyAV (no ffmpeg
binary needed): mp3, opus (in Ogg), aac (ADTS), flac, wav, and pcm — raw 24 kHz 16-bit mono
little-endian, as OpenAI documents it, so other rates are resampled.

Encoding is incremental: each sentence's samples go in as they are synthesized and the bytes
ready so far come out, so a client can start playing before the rest is spoken. The output is
never rewound, which is what lets it stream: a wav header says "length unknown" (as OpenAI's
streamed wav does) and flac carries no total sample count.
"""

from __future__ import annotations

import struct

import numpy as np

PCM_RATE = 24_000
# format -> (container, codec, sample rate: None keeps the source's, muxer options)
_CODECS = {
    "mp3": ("mp3", "libmp3lame", None, {}),
    # Opus runs at 48 kHz. Ogg pages hold a second of audio by default: 100 ms pages let a
    # sentence out as soon as it is encoded, for ~270 bytes/s of page headers.
    "opus": ("ogg", "libopus", 48_000, {"page_duration": "100000"}),
    "aac": ("adts", "aac", None, {}),
    "flac": ("flac", "flac", None, {}),
}
_UNKNOWN_SIZE = 0xFFFFFFFF


def encode(samples: np.ndarray, rate: int, response_format: str) -> bytes:
    """All of it at once."""
    encoder = AudioEncoder(rate, response_format)
    return encoder.add(samples) + encoder.finish()


class AudioEncoder:
    """One response's encoder: `add` samples as they come, then `finish` once."""

    def __init__(self, rate: int, response_format: str) -> None:
        self._rate = rate
        self._format = response_format
        self._ready = bytearray()
        if response_format == "wav":
            self._ready += _streamed_wav_header(rate)
        elif response_format == "pcm":
            self._resampler = _Resampler(rate, PCM_RATE) if rate != PCM_RATE else None
        else:
            self._open_container(*_CODECS[response_format])

    def add(self, samples: np.ndarray) -> bytes:
        samples = np.asarray(samples, dtype=np.int16).reshape(-1)
        if samples.size:
            if self._format == "wav":
                self._ready += samples.astype("<i2").tobytes()
            elif self._format == "pcm":
                pcm = self._resampler.add(samples) if self._resampler else samples
                self._ready += pcm.astype("<i2").tobytes()
            else:
                self._encode(self._resample_for_codec.resample(_frame(samples, self._rate)))
        return self._take()

    def finish(self) -> bytes:
        if self._format == "pcm" and self._resampler:
            self._ready += self._resampler.finish().astype("<i2").tobytes()
        elif self._format not in ("wav", "pcm"):
            self._encode(self._resample_for_codec.resample(None))
            self._encode([None])  # flush the encoder
            self._container.close()  # writes the trailer, if the format has one
        return self._take()

    def _open_container(
        self, container: str, codec: str, out_rate: int | None, options: dict[str, str]
    ) -> None:
        import av

        self._container = av.open(_Sink(self._ready), "w", format=container, options=options)
        self._stream = self._container.add_stream(codec, rate=out_rate or self._rate, layout="mono")
        context = self._stream.codec_context
        self._resample_for_codec = av.AudioResampler(
            format=context.format.name,
            layout="mono",
            rate=out_rate or self._rate,
            frame_size=context.frame_size or None,  # encoders that want fixed-size frames
        )

    def _encode(self, frames: list) -> None:
        for frame in frames:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)

    def _take(self) -> bytes:
        data = bytes(self._ready)
        self._ready.clear()
        return data


class _Sink:
    """A write-only file for PyAV. Having no seek(), it makes muxers write straight through
    instead of going back to patch headers in bytes that were already sent."""

    def __init__(self, buffer: bytearray) -> None:
        self._buffer = buffer

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)


class _Resampler:
    """Stateful, so sentence boundaries resample without clicks."""

    def __init__(self, rate: int, target: int) -> None:
        import av

        self._rate = rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=target)

    def add(self, samples: np.ndarray) -> np.ndarray:
        return _samples(self._resampler.resample(_frame(samples, self._rate)))

    def finish(self) -> np.ndarray:
        return _samples(self._resampler.resample(None))


def _frame(samples: np.ndarray, rate: int):
    import av

    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    return frame


def _samples(frames: list) -> np.ndarray:
    if not frames:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


def _streamed_wav_header(rate: int) -> bytes:
    """A 16-bit mono PCM wav header whose sizes say "until the end of the stream"."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", _UNKNOWN_SIZE)
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", _UNKNOWN_SIZE)
    )
