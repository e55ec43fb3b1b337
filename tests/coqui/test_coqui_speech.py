"""/v1/audio/speech on Coqui TTS: tiny random-weight VITS model directories, loaded through the
store from their paths, spoken through a live `stratus serve`, asked with the openai SDK."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip(
    "TTS",
    reason="Coqui TTS needs torch 2.9.1 + torchaudio (a CUDA build); run `make test-coqui`",
)

import av  # noqa: E402
import httpx  # noqa: E402
import openai  # noqa: E402

from tests.coqui.conftest import API_KEY, MULTI_RATE, SPEAKERS  # noqa: E402
from tests.coqui.tiny_vits import FRAMES_PER_TOKEN  # noqa: E402

SHORT = "Hello there."
LONG = "Hello there. This is a longer test of the speech system, with a second sentence."


def decoded(data: bytes) -> tuple[np.ndarray, int]:
    """All samples of the first audio stream (mono) and its rate."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        return np.concatenate(frames), stream.rate


def speak(client, model="coqui-vits", text=SHORT, voice="alloy", fmt="wav", **fields):
    response = client.audio.speech.create(
        model=model, input=text, voice=voice, response_format=fmt, **fields
    )
    return response.content


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_audio_at_the_models_rate_lasting_as_the_text(coqui_client, fmt):
    samples, rate = decoded(speak(coqui_client, fmt=fmt))
    assert rate == 22_050
    assert np.abs(samples.astype(np.float64)).max() > 0  # not silence
    # "Hello there." is 12 characters, 25 tokens with the blanks VITS puts between them.
    expected = 25 * FRAMES_PER_TOKEN * 256 / rate
    assert expected * 0.9 < len(samples) / rate < expected + 0.2, len(samples) / rate


def test_longer_text_is_longer(coqui_client):
    short, rate = decoded(speak(coqui_client, text=SHORT))
    long, _ = decoded(speak(coqui_client, text=LONG))
    assert len(long) / rate > 3 * len(short) / rate


def test_speed_two_is_shorter(coqui_client):
    normal, _ = decoded(speak(coqui_client, text=LONG))
    fast, _ = decoded(speak(coqui_client, text=LONG, speed=2.0))
    assert 0.4 * len(normal) < len(fast) < 0.75 * len(normal)


def test_mapped_voices_speak_with_different_speakers(coqui_client):
    alloy, rate = decoded(speak(coqui_client, model="coqui-vits-speakers", voice="alloy"))
    echo, _ = decoded(speak(coqui_client, model="coqui-vits-speakers", voice="echo"))
    assert rate == MULTI_RATE
    assert len(alloy) == len(echo) and not np.array_equal(alloy, echo)
    # The model's own speaker names are voices too: alloy is ana, and ana is ana every time.
    ana, _ = decoded(speak(coqui_client, model="coqui-vits-speakers", voice=SPEAKERS[0]))
    assert np.array_equal(alloy, ana)


@pytest.mark.parametrize(
    ("model", "voice"),
    [("coqui-vits", "bob"), ("coqui-vits-speakers", "nova"), ("coqui-vits-speakers", "carl")],
)
def test_an_unknown_voice_is_a_400_in_openais_envelope(coqui_server, coqui_client, model, voice):
    with pytest.raises(openai.BadRequestError) as caught:
        speak(coqui_client, model=model, voice=voice)
    assert caught.value.param == "voice"
    body = httpx.post(
        f"{coqui_server.v1}/audio/speech",
        json={"model": model, "input": SHORT, "voice": voice},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    )
    assert body.status_code == 400
    error = body.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "voice"
    assert voice in error["message"]


def test_a_directory_without_a_model_is_a_503_that_says_why(coqui_client):
    with pytest.raises(openai.InternalServerError) as caught:
        speak(coqui_client, model="coqui-empty")
    assert caught.value.status_code == 503
    assert caught.value.code == "engine_unavailable"
    assert "config.json" in caught.value.message
