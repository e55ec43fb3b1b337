"""Images in prompts: their placeholders, positions and block plan, how each dialect's parts
become turns with images, and where a projector comes from."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from common.errors import InvalidRequest
from common.protocol.chat import ChatCompletionRequest
from common.protocol.messages import MessageCreateRequest
from common.registry import ModelConfig, RegisteredModel, Registry
from common.store import ModelStore
from common.turns import IMAGE_MARKER, ImageRef
from handlers.text.chat import chat_turns
from handlers.text.messages import message_turns
from handlers.text.responses.items import normalise, turns_of
from layers.media_prompt import MediaSpan, Prompt, placeholders, position
from layers.prefix_cache import blocks_of, prompt_blocks, reusable_blocks
from tests.unit.fakes import FakeTextModel, fake_store


def with_image(key: str, before: int = 70, length: int = 20, after: int = 5) -> Prompt:
    text = list(range(before))
    span = MediaSpan(before, length, length)
    return Prompt(text + placeholders(key, length) + list(range(after)), [span])


def test_placeholders_are_never_tokens_and_tell_images_apart():
    red, blue = placeholders("red/1", 8), placeholders("blue/1", 8)
    assert all(p < 0 for p in red + blue)
    assert red == placeholders("red/1", 8) and not set(red) & set(blue)


def test_an_image_is_one_block_between_its_texts_plans():
    prompt = with_image("red")
    blocks = blocks_of(prompt)
    assert blocks[:2] == [(0, 64), (64, 68)] and (70, 90) in blocks
    assert blocks[0][0] == 0 and blocks[-1][1] == len(prompt)
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))
    assert blocks_of(list(range(23))) == prompt_blocks(23)


def test_the_cache_reuses_an_image_only_for_the_same_image():
    red = with_image("red")
    cached = blocks_of(red)
    assert reusable_blocks(red, cached, with_image("red", after=9)) == cached.index((70, 90)) + 1
    # Another image at the same place: the text before it only.
    assert reusable_blocks(red, cached, with_image("blue")) == cached.index((70, 90))


def test_positions_skip_what_an_image_does_not_take():
    # An image of 20 embeddings at 6 positions (a grid counted by its larger side: M-RoPE).
    prompt = Prompt(list(range(70)) + placeholders("red", 20) + [1, 2], [MediaSpan(70, 20, 6)])
    assert [position(prompt, i) for i in (0, 69, 70)] == [0, 69, 70]
    assert position(prompt, 90) == 76 and position(prompt, 95) == 81  # and generated tokens
    assert position(list(range(5)), 4) == 4
    detached = prompt.detached()
    assert detached == prompt and detached.spans[0].chunk is None and detached.owner is None


PNG = "data:image/png;base64," + base64.b64encode(b"not decoded yet").decode()


def test_chat_parts_become_a_marker_and_an_image_named_by_its_place():
    request = ChatCompletionRequest.model_validate({"model": "m", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Compare "},
            {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
            {"type": "text", "text": " and "},
            {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}},
        ]},
    ]})  # fmt: skip
    turn = chat_turns(request.messages)[1]
    assert turn.content == f"Compare {IMAGE_MARKER} and {IMAGE_MARKER}"
    assert turn.images == (
        ImageRef(PNG, "low", "messages[1].content[1]"),
        ImageRef("https://example.com/b.png", "auto", "messages[1].content[3]"),
    )


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "system", "content": [{"type": "image_url", "image_url": {"url": PNG}}]},
         "messages[0].content[0]"),
        ({"role": "user", "content": f"a {IMAGE_MARKER}"}, "messages[0].content"),
        ({"role": "user", "content": [{"type": "text", "text": IMAGE_MARKER}]},
         "messages[0].content[0].text"),
        ({"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]},
         "messages[0].content[0].type"),
    ],
)  # fmt: skip
def test_images_where_they_cannot_be_are_refused_by_place(message, param):
    request = ChatCompletionRequest.model_validate({"model": "m", "messages": [message]})
    with pytest.raises(InvalidRequest) as caught:
        chat_turns(request.messages)
    assert caught.value.param == param


def test_responses_and_messages_images_become_the_same_turns():
    items = normalise(
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What? "},
                    {"type": "input_image", "image_url": PNG},
                ],
            }
        ],  # fmt: skip
        None,
    )
    [turn] = turns_of(items, None, first_param=0)
    assert turn.content == f"What? {IMAGE_MARKER}"
    assert turn.images == (ImageRef(PNG, "auto", "input[0].content[1]"),)
    data = base64.b64encode(b"not decoded yet").decode()
    request = MessageCreateRequest.model_validate({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": data}},
            {"type": "text", "text": "What?"},
        ]},
    ]})  # fmt: skip
    [turn] = message_turns(request)
    assert turn.content == f"{IMAGE_MARKER}\n\nWhat?"
    assert turn.images == (ImageRef(PNG, "auto", "messages[0].content[0]"),)


def test_a_model_without_a_projector_refuses_images_before_reading_them():
    from handlers.text.chat import create_chat_completion

    # An address no fetch could reach: refused by the registry entry, never fetched.
    image = {"type": "image_url", "image_url": {"url": "https://192.0.2.1/never.png"}}
    request = ChatCompletionRequest.model_validate(
        {"model": "gpt-4", "messages": [{"role": "user", "content": [image]}]}
    )
    with pytest.raises(InvalidRequest) as caught:
        create_chat_completion(request, fake_store(FakeTextModel([b"x"])))
    assert (caught.value.param, caught.value.code) == (
        "messages[0].content[0]",
        "images_not_supported",
    )


def test_a_projector_with_an_address_is_fetched_as_models_are(tmp_path):
    fetched: list[str] = []

    def fetch(config: ModelConfig) -> Path:
        fetched.append(config.source)
        return tmp_path / config.source.rsplit("/", 1)[-1]

    loaded: list[ModelConfig] = []
    entries = [
        ModelConfig(name="s3-vlm", backend="llama-cpp", source="s3://b/vlm/model.gguf",
                    mmproj="s3://b/vlm/mmproj.gguf"),
        ModelConfig(name="dir-vlm", backend="llama-cpp", source="/models/vlm",
                    mmproj="mmproj.gguf"),
    ]  # fmt: skip
    registry = Registry([RegisteredModel(e, user_configured=True) for e in entries])
    store = ModelStore(registry, lambda config, path: loaded.append(config), fetch)
    with store.use("s3-vlm"), store.use("dir-vlm"):
        pass
    assert fetched == ["s3://b/vlm/model.gguf", "s3://b/vlm/mmproj.gguf", "/models/vlm"]
    assert [c.mmproj for c in loaded] == [str(tmp_path / "mmproj.gguf"), "mmproj.gguf"]
