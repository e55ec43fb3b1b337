"""Protocol types: OpenAI's field names and shapes, unknown fields ignored, known ones checked."""

from __future__ import annotations

import json

import pytest

from common.errors import InvalidRequest
from common.protocol import parse_request
from common.protocol.audio import SpeechRequest, TranscriptionRequest
from common.protocol.chat import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceDelta,
)
from common.protocol.completions import CompletionRequest
from common.protocol.embeddings import EmbeddingRequest
from common.protocol.images import ImageGenerationRequest
from common.protocol.models import Model

CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}


def param_of(model, body) -> str | None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(model, body)
    return caught.value.param


def test_unknown_fields_are_ignored_known_ones_validated():
    request = parse_request(ChatCompletionRequest, {**CHAT, "something_new": [1, 2]})
    assert request.model == "gpt-4" and not hasattr(request, "something_new")
    assert param_of(ChatCompletionRequest, {**CHAT, "top_p": 1.5}) == "top_p"
    assert param_of(ChatCompletionRequest, {**CHAT, "presence_penalty": -3}) == "presence_penalty"
    assert param_of(ChatCompletionRequest, {**CHAT, "messages": []}) == "messages"
    assert param_of(ChatCompletionRequest, {**CHAT, "stop": ""}) == "stop"
    missing = pytest.raises(InvalidRequest)
    with missing as caught:
        parse_request(ChatCompletionRequest, {"model": "gpt-4"})
    assert caught.value.message == "'messages' is a required property"


def test_nested_params_are_named_like_openai():
    body = {
        **CHAT,
        "messages": [CHAT["messages"][0], {"role": "user", "content": [{"type": "text"}]}],
    }
    assert param_of(ChatCompletionRequest, body) == "messages[1].content[0]"
    assert param_of(ChatCompletionRequest, {**CHAT, "stream_options": {"include_usage": "x"}}) == (
        "stream_options.include_usage"
    )


def test_non_object_bodies_are_rejected():
    for body in ([], "x", 3, None):
        with pytest.raises(InvalidRequest):
            parse_request(ChatCompletionRequest, body)


def test_max_completion_tokens_supersedes_max_tokens():
    request = parse_request(
        ChatCompletionRequest, {**CHAT, "max_tokens": 5, "max_completion_tokens": 9}
    )
    assert request.token_budget == 9


@pytest.mark.parametrize(
    ("prompt", "prompts"),
    [
        ("a", ["a"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2], [[1, 2]]),
        ([[1], [2, 3]], [[1], [2, 3]]),
    ],
)
def test_completion_prompt_shapes(prompt, prompts):
    request = parse_request(CompletionRequest, {"model": "m", "prompt": prompt})
    assert request.prompts == prompts
    assert request.max_tokens == 16


def test_chunk_deltas_carry_only_what_changed():
    def dumped(delta: ChoiceDelta) -> dict:
        chunk = ChatCompletionChunk(
            id="c",
            created=1,
            model="m",
            choices=[ChatChunkChoice(index=0, delta=delta)],
            system_fingerprint="fp_test",
        )
        return json.loads(chunk.to_json())["choices"][0]

    assert dumped(ChoiceDelta(role="assistant", content=""))["delta"] == {
        "role": "assistant",
        "content": "",
    }
    assert dumped(ChoiceDelta(content="x"))["delta"] == {"content": "x"}
    first = dumped(ChoiceDelta())
    assert first["delta"] == {} and first["finish_reason"] is None and first["logprobs"] is None


def test_other_endpoints_types():
    assert (
        parse_request(EmbeddingRequest, {"model": "m", "input": ["a", "b"]}).encoding_format
        == "float"
    )
    assert param_of(EmbeddingRequest, {"model": "m", "input": []}) == "input"
    assert (
        parse_request(
            SpeechRequest, {"model": "tts-1", "input": "hi", "voice": "alloy"}
        ).response_format
        == "mp3"
    )
    assert (
        param_of(SpeechRequest, {"model": "tts-1", "input": "hi", "voice": "a", "speed": 9})
        == "speed"
    )
    assert parse_request(TranscriptionRequest, {"model": "whisper-1"}).response_format == "json"
    images = parse_request(
        ImageGenerationRequest, {"prompt": "A cute baby sea otter", "size": "256x256"}
    )
    assert images.model is None and images.response_format == "url"
    assert param_of(ImageGenerationRequest, {"prompt": "x", "size": "big"}) == "size"
    assert Model(id="m", created=0, owned_by="me").model_dump() == {
        "id": "m",
        "object": "model",
        "created": 0,
        "owned_by": "me",
    }
