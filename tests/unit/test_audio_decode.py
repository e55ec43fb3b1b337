"""Decoding uploads with a duration cap: refused from the header, and while decoding when the
header says nothing."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from common.errors import InvalidRequest
from layers import audio_decode


def silence(seconds: float, fmt: str = "flac", rate: int = 16000) -> bytes:
    """Compressed silence: minutes of it in a few kilobytes (as in the issue's Opus file)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream("flac" if fmt == "flac" else "pcm_s16le", rate=rate)
        stream.layout = "mono"
        zeros = np.zeros((1, 4096), dtype=np.int16)
        for _ in range(int(seconds * rate) // 4096):
            frame = av.AudioFrame.from_ndarray(zeros, format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def test_audio_within_the_cap_decodes_to_16khz_mono():
    samples = audio_decode.decode(silence(8, "wav", rate=8000), max_seconds=60)
    assert samples.dtype == np.float32 and abs(samples.size - 8 * 16000) < 4096 * 2


def test_a_long_file_is_refused_from_its_header_before_decoding(monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoding started")

    monkeypatch.setattr(av.audio.resampler, "AudioResampler", no_decoding)
    with pytest.raises(InvalidRequest) as refused:
        audio_decode.decode(silence(240), max_seconds=120)
    assert refused.value.param == "file" and refused.value.code == "audio_too_long"
    assert "120 seconds" in refused.value.message


class Headerless:
    """A container whose header declares no duration (a live recording, a piped stream)."""

    def __init__(self, container):
        self._container = container
        self.duration = None

    def __getattr__(self, name):
        return getattr(self._container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._container.__exit__(*exc)


def test_without_a_declared_duration_decoding_stops_at_the_cap(monkeypatch):
    real_open = av.open
    decoded_frames = []
    monkeypatch.setattr(av, "open", lambda *a, **k: Headerless(real_open(*a, **k)))
    real_frames = audio_decode._frames

    def counted(container, invalid):
        for frame in real_frames(container, invalid):
            decoded_frames.append(frame.samples)
            yield frame

    monkeypatch.setattr(audio_decode, "_frames", counted)
    with pytest.raises(InvalidRequest) as refused:
        audio_decode.decode(silence(240), max_seconds=30)
    assert refused.value.code == "audio_too_long"
    # It stopped just past 30 s of samples, not at the end of the 240 s file.
    assert 30 * 16000 <= sum(decoded_frames) < 40 * 16000


@pytest.mark.parametrize("data", [b"", b"not audio at all" * 64, b"RIFF\x00\x00"])
def test_what_is_not_audio_is_a_400(data):
    with pytest.raises(InvalidRequest) as refused:
        audio_decode.decode(data, max_seconds=60)
    assert refused.value.param == "file"
