"""Images in chat, live: gpt-4-vision-preview (tiny-vlm, generated on first use by llama.cpp's
converter) through the official SDKs, on a server of its own that may fetch from 127.0.0.1 (the
test's image server) and takes bodies large enough to reach the image caps."""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import BUCKET, VOCAB_MISSING, S3World
from tests.crafted_images import png_declaring
from tests.platforms import PLATFORMS
from tests.processes import stratus_serve

MODEL = "gpt-4-vision-preview"
QWEN = "qwen25-vl-vocab"
BODY_CAP = 160 * 1024 * 1024  # above the 20 MB image cap: the image's own cap answers


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def data_url(image: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(image).decode()}"


RED, BLUE = png(300, 200, (200, 30, 40)), png(200, 200, (20, 40, 220))


def image_part(url: str, detail: str | None = None) -> dict:
    image = {"url": url} if detail is None else {"url": url, "detail": detail}
    return {"type": "image_url", "image_url": image}


def ask(*parts: dict, text: str = "What is in this image?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, *parts]}]


@dataclass(frozen=True)
class Vision:
    url: str
    cache_dir: Path
    images: str  # the image server's base URL (127.0.0.1, which the fetch policy allows)

    @property
    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="x", max_retries=0, timeout=300)


class _Images(http.server.BaseHTTPRequestHandler):
    files = {"/red.png": RED, "/blue.png": BLUE, "/big.png": b"\x89PNG" + b"\0" * (21 << 20)}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


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
    images = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=images.serve_forever, daemon=True).start()
    registry = tmp_path_factory.mktemp("vision-registry") / "models.yaml"
    # The generated model again, its GGUF and projector from S3 (uploaded by a test).
    text = f"""
- name: vlm-s3
  backend: llama-cpp
  source: s3://{BUCKET}/vlm/model.gguf
  mmproj: s3://{BUCKET}/vlm/mmproj.gguf
  parameters: {{n_ctx: 2048, parallel: 2}}
"""
    if qwen_dir is not None:
        text += f"""
- name: {QWEN}
  backend: llama-cpp
  source: file://{qwen_dir}
  mmproj: mmproj.gguf
  parameters: {{file: model.gguf, n_ctx: 2048, parallel: 2}}
"""
    registry.write_text(text)
    cache_dir = tmp_path_factory.mktemp("vision-cache")
    env = {
        **os.environ,
        **s3.env,
        "STRATUS_CACHE_DIR": str(cache_dir),
        "STRATUS_FETCH_ALLOW": "127.0.0.1",
        "STRATUS_MAX_BODY_BYTES": str(BODY_CAP),
        "STRATUS_LOG_LEVEL": "warning",
    }
    log = tmp_path_factory.mktemp("vision-logs") / "server.log"
    with open(log, "wb") as log_file:
        try:
            with stratus_serve("--models", str(registry), env=env, log=log_file) as started:
                yield Vision(started.url, cache_dir, f"http://127.0.0.1:{images.server_port}")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{log.read_text()}") from None
        finally:
            images.shutdown()
    assert started.process.returncode in (0, -15), log.read_text()


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


def image_places(directory: Path, image: bytes) -> int:
    """The places mtmd gives an image with this projector: its embeddings and the model's
    own tokens around them (tiles, rows, the overview), counted by llama.cpp itself."""
    import ctypes

    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd
    from llama_cpp._internals import LlamaModel
    from llama_cpp._logger import llama_log_callback, set_verbose
    from PIL import Image

    set_verbose(False)
    mtmd.mtmd_log_set(llama_log_callback, ctypes.c_void_p(0))

    model = LlamaModel(path_model=str(directory / "model.gguf"),
                       params=llama_cpp.llama_model_default_params(), verbose=False)  # fmt: skip
    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.warmup, params.print_timings = False, False, False
    context = mtmd.mtmd_init_from_file(str(directory / "mmproj.gguf").encode(), model.model, params)
    pixels = Image.open(io.BytesIO(image)).convert("RGB")
    data = pixels.tobytes()
    bitmap = mtmd.mtmd_bitmap_init(pixels.width, pixels.height,
                                   (ctypes.c_uint8 * len(data)).from_buffer_copy(data))  # fmt: skip
    marker = mtmd.mtmd_default_marker()
    text = mtmd.mtmd_input_text(marker, len(marker), False, True)
    chunks = mtmd.mtmd_input_chunks_init()
    bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
    assert mtmd.mtmd_tokenize(context, chunks, ctypes.byref(text), bitmaps, 1) == 0
    places = mtmd.mtmd_helper_get_n_tokens(chunks)
    mtmd.mtmd_input_chunks_free(chunks)
    mtmd.mtmd_bitmap_free(bitmap)
    mtmd.mtmd_free(context)
    model.close()
    return places


def usage_of(vision: Vision, messages: list[dict], model: str = MODEL) -> int:
    answer = vision.client.chat.completions.create(model=model, messages=messages, max_tokens=1)
    return answer.usage.prompt_tokens


def raw_first_token(directory: Path, prompt: str, image: bytes) -> tuple[str, float]:
    """The most likely first token of `prompt` (one image at mtmd's marker) and its log
    probability, as llama.cpp's own helper evaluates it: no Stratus in between."""
    import ctypes

    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd
    import numpy as np
    from llama_cpp._internals import LlamaModel

    model = LlamaModel(path_model=str(directory / "model.gguf"),
                       params=llama_cpp.llama_model_default_params(), verbose=False)  # fmt: skip
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = 2048
    context = llama_cpp.llama_init_from_model(model.model, params)
    vision = mtmd.mtmd_context_params_default()
    vision.use_gpu, vision.warmup, vision.print_timings = False, False, False
    projector = mtmd.mtmd_init_from_file(str(directory / "mmproj.gguf").encode(), model.model,
                                         vision)  # fmt: skip
    data = (ctypes.c_uint8 * len(image)).from_buffer_copy(image)
    bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(projector, data, len(image), False)
    text = prompt.replace("<image>", mtmd.mtmd_default_marker().decode()).encode()
    chunks = mtmd.mtmd_input_chunks_init()
    parts = mtmd.mtmd_input_text(text, len(text), False, True)
    bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
    assert mtmd.mtmd_tokenize(projector, chunks, ctypes.byref(parts), bitmaps, 1) == 0
    past = llama_cpp.llama_pos(0)
    assert mtmd.mtmd_helper_eval_chunks(projector, context, chunks, 0, 0, 512, True,
                                        ctypes.byref(past)) == 0  # fmt: skip
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(context, -1),
                                   shape=(model.n_vocab(),)).astype(np.float64)  # fmt: skip
    best = int(logits.argmax())
    logprob = float(logits[best] - logits.max() - np.log(np.exp(logits - logits.max()).sum()))
    piece = model.token_to_piece(best, special=False).rstrip(b"\0").decode(errors="replace")
    mtmd.mtmd_input_chunks_free(chunks)
    mtmd.mtmd_bitmap_free(bitmap)
    mtmd.mtmd_free(projector)
    llama_cpp.llama_free(context)
    model.close()
    return piece, logprob


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
    raw_token, raw_logprob = raw_first_token(qwen_dir, QWEN_PROMPT, RED)
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
    raw_token, raw_logprob = raw_first_token(generated, SMOLLM_PROMPT, BLUE)
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
        "properties": {"count": {"type": "integer"}},
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
