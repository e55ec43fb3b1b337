"""/v1/audio/transcriptions and /translations on the embedded whisper tiny.en, with speech made
by the embedded Piper voice: a round trip from text to audio and back."""

from __future__ import annotations

import io
import json
import re
import subprocess

import av
import pytest

from tests.conftest import API_KEYS, MAX_BODY_BYTES
from tests.openai_spec import check
from tests.transcripts import SENTENCE, word_error_rate


@pytest.fixture(scope="module")
def fox_mp3(http) -> bytes:
    body = {"model": "tts-1", "input": SENTENCE, "voice": "alloy", "response_format": "mp3"}
    return http.post("/v1/audio/speech", json=body).content


def reencode(wav: bytes, container: str, codec: str, rate: int) -> bytes:
    """The same speech in another container and codec (what browsers and phones record)."""
    out = io.BytesIO()
    with av.open(io.BytesIO(wav)) as source, av.open(out, "w", format=container) as target:
        stream = target.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(
            format=stream.codec_context.format.name,
            layout="mono",
            rate=rate,
            frame_size=stream.codec_context.frame_size or None,
        )
        for frame in source.decode(audio=0):
            for resampled in resampler.resample(frame):
                for packet in stream.encode(resampled):
                    target.mux(packet)
        for resampled in resampler.resample(None):
            for packet in stream.encode(resampled):
                target.mux(packet)
        for packet in stream.encode(None):
            target.mux(packet)
    return out.getvalue()


def webm(wav: bytes) -> bytes:
    return reencode(wav, "webm", "libopus", 48000)


def test_round_trip_recovers_the_words(client, fox_mp3):
    result = client.audio.transcriptions.create(model="whisper-1", file=("fox.mp3", fox_mp3))
    assert word_error_rate(SENTENCE, result.text) < 0.2, result.text


def test_webm_upload_and_language(client, http):
    body = {"model": "tts-1", "input": SENTENCE, "voice": "echo", "response_format": "wav"}
    wav = http.post("/v1/audio/speech", json=body).content
    result = client.audio.transcriptions.create(
        model="whisper-1", file=("fox.webm", webm(wav)), language="en"
    )
    assert word_error_rate(SENTENCE, result.text) < 0.2, result.text


@pytest.mark.parametrize(
    ("name", "container", "codec", "rate"),
    [
        ("fox.m4a", "mp4", "aac", 22050),
        ("fox.ogg", "ogg", "libopus", 48000),
        ("fox.flac", "flac", "flac", 8000),  # small: the test server takes 64 KiB
        ("fox.wav", "wav", "pcm_s16le", 8000),
    ],
)
def test_every_upload_format(client, http, name, container, codec, rate):
    body = {"model": "tts-1", "input": SENTENCE, "voice": "alloy", "response_format": "wav"}
    audio = reencode(http.post("/v1/audio/speech", json=body).content, container, codec, rate)
    result = client.audio.transcriptions.create(model="whisper-1", file=(name, audio))
    assert word_error_rate(SENTENCE, result.text) < 0.2, (name, result.text)


def test_text_srt_and_vtt(client, fox_mp3):
    text = client.audio.transcriptions.create(
        model="whisper-1", file=("f.mp3", fox_mp3), response_format="text"
    )
    assert isinstance(text, str) and word_error_rate(SENTENCE, text) < 0.2
    for fmt, separator in (("srt", ","), ("vtt", ".")):
        clock = rf"(\d\d):(\d\d):(\d\d){re.escape(separator)}(\d\d\d)"
        subtitles = client.audio.transcriptions.create(
            model="whisper-1", file=("f.mp3", fox_mp3), response_format=fmt
        )
        if fmt == "vtt":
            assert subtitles.startswith("WEBVTT")
        stamps = re.findall(
            f"{clock} --> {clock}",
            subtitles,
        )
        assert stamps, subtitles
        previous_end = 0.0
        for h1, m1, s1, ms1, h2, m2, s2, ms2 in stamps:
            start = int(h1) * 3600 + int(m1) * 60 + int(s1) + int(ms1) / 1000
            end = int(h2) * 3600 + int(m2) * 60 + int(s2) + int(ms2) / 1000
            assert previous_end <= start < end <= 10
            previous_end = end


def test_verbose_json_with_segments_and_words(client, fox_mp3):
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=("f.mp3", fox_mp3),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert result.language == "en" and 1.5 < result.duration < 6
    assert result.segments and all(s.start < s.end for s in result.segments)
    segment = result.segments[0].model_dump()
    for field in (
        "id",
        "seek",
        "start",
        "end",
        "text",
        "tokens",
        "temperature",
        "avg_logprob",
        "compression_ratio",
        "no_speech_prob",
    ):
        assert field in segment
    assert [w.word.lower().strip(".") for w in result.words][:3] == ["the", "quick", "brown"]
    assert all(w.start <= w.end for w in result.words)
    plain = client.audio.transcriptions.create(
        model="whisper-1", file=("f.mp3", fox_mp3), response_format="verbose_json"
    )
    assert plain.words is None and plain.segments


def test_verbose_json_matches_openais_spec(http, fox_mp3):
    for granularity in ("segment", "word"):
        response = http.post(
            "/v1/audio/transcriptions",
            files={"file": ("f.mp3", fox_mp3)},
            data={
                "model": "whisper-1",
                "response_format": "verbose_json",
                "timestamp_granularities[]": granularity,
            },
        )
        body = response.json()
        check("CreateTranscriptionResponseVerboseJson", body)
        assert ("words" in body) == (granularity == "word")  # absent, never null


def test_streamed_transcription_sends_each_segment(client, http):
    story = " ".join(
        f"This is sentence number {n}, spoken while the stream goes on."
        for n in ("one", "two", "three", "four")
    )
    body = {"model": "tts-1", "input": story, "voice": "alloy", "response_format": "mp3"}
    audio = http.post("/v1/audio/speech", json=body).content
    events = list(
        client.audio.transcriptions.create(
            model="whisper-1", file=("story.mp3", audio), stream=True
        )
    )
    *deltas, done = events
    assert len(deltas) >= 2 and {e.type for e in deltas} == {"transcript.text.delta"}
    assert done.type == "transcript.text.done"
    assert "".join(e.delta for e in deltas) == done.text
    assert word_error_rate(story, done.text) < 0.2
    assert done.usage.output_tokens > 0
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens


def test_translations(client, fox_mp3):
    result = client.audio.translations.create(model="whisper-1", file=("fox.mp3", fox_mp3))
    assert word_error_rate(SENTENCE, result.text) < 0.3, result.text


@pytest.mark.parametrize(
    ("files", "data", "status", "param"),
    [
        ({"file": ("empty.mp3", b"")}, {"model": "whisper-1"}, 400, "file"),
        ({"file": ("notes.txt", b"not audio at all " * 50)}, {"model": "whisper-1"}, 400, "file"),
        ({"file": ("f.mp3", b"ID3" + b"\x00" * 500)}, {"model": "whisper-1"}, 400, "file"),
        ({"other": ("f.mp3", b"x")}, {"model": "whisper-1"}, 400, "file"),
        ({"file": ("big.mp3", b"\x00" * (MAX_BODY_BYTES + 1))}, {"model": "whisper-1"}, 413, None),
        ({"file": ("f.mp3", b"x")}, {}, 400, "model"),
        (
            {"file": ("f.mp3", b"x")},
            {"model": "whisper-1", "response_format": "doc"},
            400,
            "response_format",
        ),
        ({"file": ("f.mp3", b"x")}, {"model": "gpt-4"}, 400, "model"),
    ],
)
def test_bad_uploads(http, files, data, status, param):
    response = http.post("/v1/audio/transcriptions", files=files, data=data)
    assert response.status_code == status, response.text
    if param:
        assert response.json()["error"]["param"] == param


def test_json_body_is_415(http):
    response = http.post("/v1/audio/transcriptions", json={"model": "whisper-1"})
    assert response.status_code == 415


def test_the_reference_transcription_example(server, fox_mp3, tmp_path):
    (tmp_path / "audio.mp3").write_bytes(fox_mp3)
    # The API reference's curl example (its "not-needed" key swapped for the test server's).
    command = [
        "curl", "-sS", "--fail-with-body", f"{server.url}/v1/audio/transcriptions",
        "-H", f"Authorization: Bearer {API_KEYS[0]}",
        "-F", "file=@audio.mp3", "-F", "model=whisper-1",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert word_error_rate(SENTENCE, json.loads(result.stdout)["text"]) < 0.2


def test_language_codes_are_checked(http, fox_mp3):
    def transcribe(language: str):
        files = {"file": ("fox.mp3", fox_mp3)}
        fields = {"model": "whisper-1", "language": language}
        return http.post("/v1/audio/transcriptions", files=files, data=fields)

    unknown = transcribe("xx")
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "language"
    assert transcribe("EN").status_code == 200  # any case, as clients send it
