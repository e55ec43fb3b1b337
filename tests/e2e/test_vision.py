"""Images in chat, live: gpt-4-vision-preview (tiny-vlm, generated on first use by llama.cpp's
converter) through the official SDKs, on a server of its own (tests/vision_server.py), held to
llama.cpp's own reading of the same images (tests/mtmd_reference.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import BUCKET, VOCAB_MISSING, S3World
from tests.crafted_images import data_url, png, png_declaring
from tests.mtmd_reference import first_token as llama_cpp_first_token
from tests.mtmd_reference import image_places
from tests.platforms import PLATFORMS
from tests.vision_server import (
    BLUE,
    MODEL,
    QWEN,
    RED,
    Vision,
    ask,
    image_part,
    image_requests,
    usage_of,
    vision_server,
)


@pytest.fixture(scope="module")
def qwen_dir() -> Path | None:
    """A tiny Qwen2.5-VL (tests/vision_models.py), where llama.cpp's vocabularies are."""
    if VOCAB_MISSING is not None:
        return None
    from tests.vision_models import build_qwen25_vl

    return build_qwen25_vl()


@pytest.fixture(scope="module")
def vision(
    tmp_path_factory: pytest.TempPathFactory, s3: S3World, qwen_dir: Path | None
) -> Iterator[Vision]:
    with vision_server(tmp_path_factory.mktemp("vision"), s3.env, qwen_dir) as served:
        yield served


@pytest.fixture(scope="module")
def generated(vision: Vision) -> Path:
    """The directory of the generated model (made by the server's first image request)."""
    answer = vision.client.chat.completions.create(
        model=MODEL, messages=ask(image_part(data_url(RED))), max_tokens=2
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    [model] = vision.cache_dir.rglob("model.gguf")
    assert (model.parent / "mmproj.gguf").is_file()
    return model.parent


def test_an_image_counts_the_places_mtmd_gives_it(vision, generated):
    text_only = usage_of(vision, ask())
    red, blue = image_places(generated, RED), image_places(generated, BLUE)
    assert red != blue and min(red, blue) > 8  # 3x4 tiles and 4x4 tiles, and the overview
    assert usage_of(vision, ask(image_part(data_url(RED)))) == text_only + red
    # Two images in one message, and images across turns.
    two = ask(image_part(data_url(RED)), image_part(data_url(BLUE)))
    assert usage_of(vision, two) == text_only + red + blue

    def conversation(*images: list[dict]) -> list[dict]:
        return [
            *ask(*images[0]),
            {"role": "assistant", "content": "A red picture."},
            *ask(*images[1], text="And this one?"),
        ]

    across = conversation([image_part(data_url(RED))], [image_part(data_url(BLUE))])
    assert usage_of(vision, across) == usage_of(vision, conversation([], [])) + red + blue


QWEN_PROMPT = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n<|im_start|>user\nWhat is in <image> this image?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def test_an_m_rope_image_reads_as_llama_cpp_reads_it(vision, qwen_dir):
    """Qwen2.5-VL places an image's embeddings at fewer positions than it has (M-RoPE): the
    text after it, and the tokens generated, sit at the positions llama.cpp gives them, the
    first time and when the prefix cache serves the prompt again."""
    if qwen_dir is None:
        pytest.skip(VOCAB_MISSING)
    places = image_places(qwen_dir, RED)
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What is in "}, image_part(data_url(RED)),
        {"type": "text", "text": " this image?"},
    ]}]  # fmt: skip
    text_only = [{"role": "user", "content": "What is in  this image?"}]
    assert usage_of(vision, messages, QWEN) == usage_of(vision, text_only, QWEN) + places

    def first_token() -> tuple[str, float]:
        answer = vision.client.chat.completions.create(
            model=QWEN, messages=messages, max_tokens=1, temperature=0, logprobs=True
        )
        [token] = answer.choices[0].logprobs.content
        return token.token, token.logprob

    token, logprob = first_token()
    raw_token, raw_logprob = llama_cpp_first_token(qwen_dir, QWEN_PROMPT, RED)
    assert token == raw_token
    # The same numbers (equal here; a position off by the image's shift moves them by 1e-3).
    assert logprob == pytest.approx(raw_logprob, abs=1e-5), logprob - raw_logprob
    assert first_token() == (token, logprob)  # from the cache: bit for bit


SMOLLM_PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is in this image?<image><|im_end|>\n"
    "<|im_start|>assistant\n"
)


def test_tiles_read_as_llama_cpp_reads_them(vision, generated):
    """SmolVLM's tiles, with the row and column tokens between them, evaluated as one span:
    the first token's numbers are llama.cpp's own."""
    answer = vision.client.chat.completions.create(
        model=MODEL, messages=ask(image_part(data_url(BLUE))), max_tokens=1, temperature=0,
        logprobs=True,
    )  # fmt: skip
    [token] = answer.choices[0].logprobs.content
    raw_token, raw_logprob = llama_cpp_first_token(generated, SMOLLM_PROMPT, BLUE)
    assert token.token == raw_token
    assert token.logprob == pytest.approx(raw_logprob, abs=1e-5), token.logprob - raw_logprob


def test_streamed_and_whole_answers_agree(vision, generated):
    messages = ask(image_part(data_url(png(180, 120, (90, 200, 90)))))
    # Two choices: the second copies the first's evaluated image rather than encoding it again.
    whole = vision.client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=6, temperature=0, n=2
    )
    assert whole.choices[0].message.content == whole.choices[1].message.content
    chunks = list(
        vision.client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_a_fetched_image_is_the_same_as_its_data_url(vision, generated):
    def logprobs(url: str) -> list:
        answer = vision.client.chat.completions.create(
            model=MODEL,
            messages=ask(image_part(url)),
            max_tokens=3,
            temperature=0,
            logprobs=True,
            top_logprobs=3,
        )
        return [(t.token, t.logprob, [a.logprob for a in t.top_logprobs])
                for t in answer.choices[0].logprobs.content]  # fmt: skip

    fetched = logprobs(f"{vision.images}/red.png")
    assert fetched == logprobs(data_url(RED))
    # The prefix cache never serves one image's cells for another: the same text with the
    # other image is scored from its own embeddings, and the first one's again as first.
    other = logprobs(data_url(BLUE))
    assert other != fetched
    assert logprobs(data_url(RED)) == fetched


def test_tools_and_json_schemas_hold_with_an_image(vision, generated):
    tool = {
        "type": "function",
        "function": {
            "name": "describe",
            "parameters": {
                "type": "object",
                "properties": {"colour": {"type": "string", "enum": ["red", "blue"]}},
                "required": ["colour"],
                "additionalProperties": False,  # else the model may add keys to the budget
            },
        },
    }
    called = vision.client.chat.completions.create(
        model=MODEL,
        messages=ask(image_part(data_url(RED))),
        tools=[tool],
        tool_choice="required",
        max_tokens=60,
    )
    [call] = called.choices[0].message.tool_calls[:1]
    assert call.function.name == "describe"
    assert json.loads(call.function.arguments)["colour"] in ("red", "blue")
    schema = {
        "type": "object",
        # bounded: a random model's integer may otherwise run past max_tokens
        "properties": {"count": {"type": "integer", "minimum": 0, "maximum": 999}},
        "required": ["count"],
        "additionalProperties": False,
    }
    shaped = vision.client.chat.completions.create(
        model=MODEL,
        messages=ask(image_part(data_url(BLUE))),
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        max_tokens=40,
    )
    assert isinstance(json.loads(shaped.choices[0].message.content)["count"], int)


def test_stop_sequences_end_an_answer_about_an_image(vision, generated):
    def answer(**fields):
        reply = vision.client.chat.completions.create(
            model=MODEL, messages=ask(image_part(data_url(BLUE))), max_tokens=8, temperature=0,
            **fields,
        )  # fmt: skip
        return reply.choices[0]

    free = answer().message.content
    assert len(free) >= 3, free
    stop = free[1:3]
    stopped = answer(stop=[stop])
    assert stopped.finish_reason == "stop"
    assert stopped.message.content == free[: free.index(stop)]


def test_the_responses_and_messages_dialects_read_images(vision, generated):
    text_only = usage_of(vision, ask())
    red = image_places(generated, RED)
    response = vision.client.responses.create(
        model=MODEL,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this image?"},
                    {"type": "input_image", "image_url": data_url(RED), "detail": "auto"},
                ],
            }
        ],  # fmt: skip
        max_output_tokens=16,
    )
    assert response.usage.input_tokens == text_only + red
    import anthropic

    claude = anthropic.Anthropic(base_url=vision.url, api_key="x", max_retries=0)
    message = claude.messages.create(
        model=MODEL,
        max_tokens=4,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": base64.b64encode(RED).decode(),
                        },
                    },
                    {"type": "text", "text": "What is in this image?"},
                ],
            }
        ],  # fmt: skip
    )
    assert message.usage.input_tokens > red
    counted = claude.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": f"{vision.images}/red.png"}},
        {"type": "text", "text": "What is in this image?"},
    ]}])  # fmt: skip
    assert counted.input_tokens == message.usage.input_tokens


def test_a_projector_comes_from_s3_as_models_do(vision, generated, s3):
    client = s3.client()
    for name in ("model.gguf", "mmproj.gguf"):
        client.upload_file(str(generated / name), BUCKET, f"vlm/{name}")
    messages = ask(image_part(data_url(RED)))
    from_s3 = vision.client.chat.completions.create(
        model="vlm-s3", messages=messages, max_tokens=4, temperature=0
    )
    embedded = vision.client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=4, temperature=0
    )
    assert from_s3.usage.prompt_tokens == embedded.usage.prompt_tokens
    assert from_s3.choices[0].message.content == embedded.choices[0].message.content


def test_a_cancelled_image_request_frees_its_sequence(vision, generated):
    many = ask(*(image_part(data_url(png(256, 256, (i * 30, 0, 0)))) for i in range(8)))
    with httpx.Client(base_url=vision.url, timeout=120) as http:
        body = {"model": MODEL, "messages": many, "max_tokens": 200, "stream": True}
        with http.stream("POST", "/v1/chat/completions", json=body) as stream:
            assert stream.status_code == 200
            next(stream.iter_lines())  # the first event; then the client goes away
        for _ in range(200):
            health = http.get("/health").json()
            if health["active"] == 0:
                break
            import time

            time.sleep(0.05)
        assert health["active"] == 0, health
    after = vision.client.chat.completions.create(
        model=MODEL, messages=ask(image_part(data_url(RED))), max_tokens=2
    )
    assert after.choices[0].finish_reason in ("stop", "length")


PLATFORM_REFUSALS = [
    (MODEL, image_part(data_url(RED[:60])), "invalid_image"),
    (MODEL, image_part("http://127.0.0.1:9/red.png"), "invalid_image_url"),  # not allowed there
    ("gpt-4", image_part(data_url(RED)), "images_not_supported"),  # no projector
]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_platform_refuses_bad_images_by_their_part(platforms, platform):
    for model, part, code in PLATFORM_REFUSALS:
        body = {"model": model, "messages": ask(part), "max_tokens": 2}
        answer = platforms.call(platform, "POST", "/v1/chat/completions", body)
        assert answer.status == 400, (platform, model, answer.body)
        error = answer.body["error"]
        assert (error["param"], error["code"]) == ("messages[0].content[1]", code), error


REFUSALS = [
    ("corrupt", lambda v: image_part(data_url(RED[:60])), "invalid_image"),
    ("unsupported", lambda v: image_part(data_url(b"BM" + b"\0" * 64, "image/bmp")),
     "unsupported_image_format"),
    ("bomb", lambda v: image_part(data_url(png_declaring(100_000, 100_000))), "image_too_large"),
    ("loopback", lambda v: image_part(v.images.replace("127.0.0.1", "127.0.0.2") + "/red.png"),
     "invalid_image_url"),
    ("file", lambda v: image_part("file:///etc/passwd"), "invalid_image_url"),
    ("over the cap", lambda v: image_part(f"{v.images}/big.png"), "image_too_large"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "part", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_bad_images_are_a_400_naming_their_part(vision, name, part, code):
    with pytest.raises(openai.BadRequestError) as caught:
        vision.client.chat.completions.create(model=MODEL, messages=ask(part(vision)), max_tokens=2)
    assert caught.value.param == "messages[0].content[1]"
    assert caught.value.code == code, caught.value.message


def test_a_100_mb_data_url_is_refused_by_its_length(vision):
    huge = "data:image/png;base64," + "A" * (100 * 1024 * 1024)
    body = {"model": MODEL, "messages": ask(image_part(huge)), "max_tokens": 2}
    answer = httpx.post(f"{vision.url}/v1/chat/completions", json=body, timeout=120)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == ("messages[0].content[1]", "image_too_large")


def test_images_in_each_dialect_answer_as_recorded(vision: Vision, generated: Path):
    """The same image, asked in the three dialects, plain and streamed, greedy: the wire
    output against its recording (tests/wire_golden.py; issue 36's moves hold it still)."""
    from tests.wire_golden import check, exchange

    with httpx.Client(base_url=vision.url, timeout=300) as http:
        answers = {
            name: exchange(http, path, body, headers)
            for name, (path, body, headers) in image_requests(data_url(RED)).items()
        }
    check("images", answers)
