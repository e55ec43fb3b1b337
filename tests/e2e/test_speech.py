"""/v1/audio/speech on the embedded Piper voice, through the openai SDK, curl and raw HTTP."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import time

import av
import openai
import pytest

from tests.conftest import API_KEYS

TEXT = "Hello, this is a test of the speech system. It has two sentences."
STORY = " ".join(
    f"This is sentence number {n}, spoken while the stream goes on."
    for n in ("one", "two", "three", "four", "five", "six", "seven", "eight")
)


def duration(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.rate


def speak(http, **fields):
    body = {"model": "tts-1", "input": TEXT, "voice": "alloy", **fields}
    return http.post("/v1/audio/speech", json=body)


@pytest.mark.parametrize(
    ("response_format", "media_type"),
    [
        ("mp3", "audio/mpeg"),
        ("opus", "audio/ogg"),
        ("aac", "audio/aac"),
        ("flac", "audio/flac"),
        ("wav", "audio/wav"),
    ],
)
def test_each_format_decodes_and_lasts_plausibly(http, response_format, media_type):
    response = speak(http, response_format=response_format)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    seconds = duration(response.content)
    assert 2.5 < seconds < 8.0, seconds  # ~12 words


def test_pcm_is_raw_24khz_16bit_mono(http):
    pcm = speak(http, response_format="pcm").content
    wav = speak(http, response_format="wav").content
    assert len(pcm) % 2 == 0
    assert abs(len(pcm) / 2 / 24_000 - duration(wav)) < 0.5  # lengths vary a little per run


def test_speed_two_is_shorter(http):
    normal = duration(speak(http, response_format="wav").content)
    fast = duration(speak(http, response_format="wav", speed=2.0).content)
    assert fast < 0.7 * normal


def test_the_sdk_gets_mp3_by_default(client):
    response = client.audio.speech.create(model="tts-1", voice="nova", input="Hello there.")
    assert 0.3 < duration(response.content) < 3.0


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"voice": "bob"}, "voice"),
        ({"input": "x" * 4097}, "input"),
        ({"input": ""}, "input"),
        ({"input": " \t\n "}, "input"),
        ({"speed": 5}, "speed"),
        ({"response_format": "ogg"}, "response_format"),
        ({"stream_format": "chunks"}, "stream_format"),
        ({"model": "gpt-4"}, "model"),
    ],
)
def test_bad_requests_are_400(client, fields, param):
    body = {"model": "tts-1", "input": "Hello.", "voice": "alloy", **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(**body)
    assert caught.value.param == param


def test_the_reference_speech_example_verbatim(server, tmp_path):
    out = tmp_path / "speech.mp3"
    # The API reference's curl example, with the test server's key.
    command = [
        "curl", "-sS", "--fail-with-body", f"{server.url}/v1/audio/speech",
        "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {API_KEYS[0]}",
        "-d", """{
    "model": "tts-1",
    "input": "Hello, this is a test",
    "voice": "alloy"
  }""",
        "--output", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, timeout=60)
    assert 0.8 < duration(out.read_bytes()) < 4.0


def test_streamed_speech_arrives_before_synthesis_ends(client):
    client.audio.speech.create(model="tts-1", voice="alloy", input="Warm up.")  # loaded
    started = time.perf_counter()
    first_byte, audio = None, bytearray()
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=STORY, response_format="mp3"
    ) as response:
        for part in response.iter_bytes():
            first_byte = first_byte or time.perf_counter() - started
            audio += part
    total = time.perf_counter() - started
    # Eight sentences are synthesized one after another; the first is sent when it is ready.
    assert first_byte is not None and first_byte < total / 3, (first_byte, total)
    assert 15 < duration(bytes(audio)) < 40


def sse_events(text: str) -> list:
    datas = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data:")]
    assert datas[-1] == "[DONE]"
    return [json.loads(data) for data in datas[:-1]]


def test_sse_stream_format_carries_base64_audio_and_usage(http):
    response = speak(http, stream_format="sse", response_format="mp3")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    *deltas, done = events
    assert len(deltas) >= 2 and {e["type"] for e in deltas} == {"speech.audio.delta"}
    seconds = duration(b"".join(base64.b64decode(e["audio"]) for e in deltas))
    assert 2.5 < seconds < 8.0
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert usage["input_tokens"] == 16  # 13 words, a comma and two full stops
    assert abs(usage["output_tokens"] - seconds * 50) < 10
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_a_bad_voice_in_a_stream_is_still_a_400(http):
    response = speak(http, voice="bob", stream_format="sse")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "voice"


def test_a_client_that_leaves_stops_synthesis(http, wait_idle):
    long_text = " ".join(f"This is sentence {n} of a long text." for n in range(60))  # ~2.5 min
    body = {"model": "tts-1", "input": long_text, "voice": "alloy", "response_format": "pcm"}
    with http.stream("POST", "/v1/audio/speech", json=body) as response:
        assert response.status_code == 200
        audio = response.iter_raw()  # kept: a dropped iterator closes the connection
        next(audio)
        assert http.get("/health").json()["active"] == 1
    # Synthesizing all of it takes ~6 s; a stopped stream frees the slot within a sentence.
    assert wait_idle(timeout=2.0) < 2.0


@pytest.mark.parametrize("text", ["...", "\u0000Hello\u0001 there\u007f", "🙂 !"])
def test_odd_inputs_still_give_a_playable_file(http, text):
    response = speak(http, input=text)
    assert response.status_code == 200, response.text
    assert 0.05 <= duration(response.content) < 3.0
