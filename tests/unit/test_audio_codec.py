"""Incremental encoding: each format hands back bytes before the end, and the joined stream
decodes to all the audio."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from layers.audio_codec import PCM_RATE, AudioEncoder

RATE = 22_050


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac", "wav"])
def test_each_sentence_comes_out_before_the_end(response_format):
    encoder = AudioEncoder(RATE, response_format)
    parts = [encoder.add(tone(1.0)), encoder.add(tone(1.0)), encoder.finish()]
    # Most of the audio is out before finish(): it can be sent while the rest is synthesized.
    assert len(parts[0]) > 1000 and len(parts[1]) > 1000
    with av.open(io.BytesIO(b"".join(parts))) as container:
        stream = container.streams.audio[0]
        seconds = sum(frame.samples for frame in container.decode(stream)) / stream.rate
    assert 1.95 < seconds < 2.15


def test_pcm_is_resampled_to_24khz_across_chunks():
    encoder = AudioEncoder(RATE, "pcm")
    data = encoder.add(tone(1.0)) + encoder.add(tone(0.5)) + encoder.finish()
    assert abs(len(data) / 2 / PCM_RATE - 1.5) < 0.01


def test_streamed_wav_says_its_length_is_unknown():
    data = AudioEncoder(RATE, "wav").add(tone(0.1))
    assert data[:4] == b"RIFF" and data[4:8] == b"\xff\xff\xff\xff"
    assert data[40:44] == b"\xff\xff\xff\xff"  # the data chunk's size
