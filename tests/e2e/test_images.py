"""/v1/images/generations with the official openai SDK against the live server and the generated
tiny-sd (real diffusers on the CPU); a real model too, when STRATUS_TEST_SD_MODEL names one."""

from __future__ import annotations

import asyncio
import base64
import io
import os
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from adapters.http import create_app
from common.settings import Settings
from tests.conftest import API_KEYS, IMAGE_BUCKET
from tests.processes import stratus_serve

PROMPT = "A cute baby sea otter"


def generate(client, **kwargs) -> list[bytes]:
    """The PNG files of a b64_json answer; extensions (seed, steps...) go in the body."""
    extra = {k: kwargs.pop(k) for k in ("seed", "steps", "guidance_scale", "negative_prompt")
             if k in kwargs}  # fmt: skip
    kwargs.setdefault("size", "64x64")
    answer = client.images.generate(
        prompt=kwargs.pop("prompt", PROMPT),
        response_format="b64_json",
        extra_body=extra or None,
        **kwargs,
    )
    assert answer.created > 0 and all(image.url is None for image in answer.data)
    return [base64.b64decode(image.b64_json) for image in answer.data]


def decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    image.load()
    return image


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(decoded(png), dtype=np.float64)


@pytest.mark.parametrize("size", ["64x64", "128x64", "64x136"])
def test_png_at_exactly_the_requested_size(client, size):
    [png] = generate(client, size=size, seed=1)
    image = decoded(png)
    assert f"{image.width}x{image.height}" == size and image.mode == "RGB"


def test_n_gives_that_many_different_images(client):
    pngs = generate(client, n=2, seed=5)
    assert len(pngs) == 2 and pngs[0] != pngs[1]
    assert all(decoded(png).size == (64, 64) for png in pngs)
    # Image i is drawn from seed + i: alone, it is the same picture (batched arithmetic may
    # differ in the last bits, so not always the same bytes).
    [alone] = generate(client, n=1, seed=6)
    difference = np.abs(pixels(alone) - pixels(pngs[1])).mean()
    assert difference < 1.0


def test_the_same_seed_gives_the_same_bytes(client):
    first = generate(client, seed=42)
    assert generate(client, seed=42) == first
    assert generate(client, seed=43) != first
    unseeded = [generate(client)[0] for _ in range(2)]
    assert unseeded[0] != unseeded[1]


def test_without_a_model_the_default_answers_and_openai_names_are_aliases(client):
    reference = generate(client, seed=9)
    for model in ("dall-e-2", "dall-e-3", "tiny-sd"):
        assert generate(client, model=model, seed=9) == reference
    ids = {m.id for m in client.models.list()}
    assert {"tiny-sd", "dall-e-2", "dall-e-3"} <= ids


def test_extensions_change_the_image(client):
    reference = generate(client, seed=3)
    assert generate(client, seed=3, steps=2) != reference
    assert generate(client, seed=3, guidance_scale=1.0) != reference
    assert generate(client, seed=3, negative_prompt="blurry") != reference
    # quality, style and user are accepted (OpenAI's); they change nothing here
    assert generate(client, seed=3, quality="hd", style="natural", user="u-1") == reference


def test_url_is_fetchable_from_the_gateway_without_a_key(client, server):
    answer = client.images.generate(prompt=PROMPT, size="64x64", response_format="url", n=2)
    urls = [image.url for image in answer.data]
    assert all(url.startswith(f"{server.url}/generated-images/") for url in urls)
    for url in urls:
        response = httpx.get(url)  # no Authorization: a URL is handed on, as OpenAI's are
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert decoded(response.content).size == (64, 64)
    missing = httpx.get(f"{server.url}/generated-images/{'A' * 22}.png")
    assert missing.status_code == 404 and missing.json()["error"]["type"]
    for bad in ("..%2F..%2Fetc%2Fpasswd", "%2E%2E", "x.png"):
        assert httpx.get(f"{server.url}/generated-images/{bad}").status_code == 404
    # a client's own host name goes into the URL (behind a proxy, set STRATUS_PUBLIC_URL)
    headers = {**server.headers(), "host": f"localhost:{server.url.rsplit(':', 1)[1]}"}
    body = {"prompt": PROMPT, "size": "64x64"}
    reply = httpx.post(f"{server.v1}/images/generations", json=body, headers=headers, timeout=60)
    assert reply.json()["data"][0]["url"].startswith("http://localhost:")


def test_url_as_an_s3_presigned_url_when_a_bucket_is_set(s3, tmp_path, monkeypatch):
    """The gateway built from settings with STRATUS_IMAGE_BUCKET (in-process, moto's S3 through
    the proxy), driven by the SDK's async client."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    app = create_app(Settings(image_bucket=f"{IMAGE_BUCKET}/sdk", cache_dir=tmp_path))

    async def urls() -> list[str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            client = openai.AsyncOpenAI(base_url="http://gateway/v1", api_key="-", http_client=http)
            answer = await client.images.generate(
                prompt=PROMPT, size="64x64", n=2, response_format="url"
            )
        return [image.url for image in answer.data]

    loop = asyncio.new_event_loop()  # its own: the thread's loop is Mangum's (test_platforms)
    try:
        presigned = loop.run_until_complete(urls())
    finally:
        loop.close()
    for url in presigned:
        assert url.startswith(f"{s3.proxy.url}/{IMAGE_BUCKET}/sdk/") and "X-Amz-Signature=" in url
        assert decoded(httpx.get(url).content).size == (64, 64)
    listed = s3.client().list_objects_v2(Bucket=IMAGE_BUCKET, Prefix="sdk/")["Contents"]
    assert len(listed) == 2


def test_the_default_is_a_url_to_a_256x256_png(http):
    reply = http.post("/v1/images/generations", json={"prompt": PROMPT})
    assert reply.status_code == 200 and set(reply.json()["data"][0]) == {"url"}
    assert decoded(httpx.get(reply.json()["data"][0]["url"]).content).size == (256, 256)


BAD_REQUESTS = [
    ({"prompt": ""}, 400, "prompt"),
    ({"prompt": "x" * 1001}, 400, "prompt"),
    ({"n": 0}, 400, "n"),
    ({"n": 11}, 400, "n"),
    ({"size": "big"}, 400, "size"),
    ({"size": "100x100"}, 400, "size"),  # not a multiple of 8
    ({"size": "8x8"}, 400, "size"),  # below the model's smallest side
    ({"size": "4096x4096"}, 400, "size"),  # above its largest
    ({"response_format": "png"}, 400, "response_format"),
    ({"quality": "ultra"}, 400, "quality"),
    ({"style": "baroque"}, 400, "style"),
    ({"steps": 0}, 400, "steps"),
    ({"steps": 151}, 400, "steps"),  # past the model's max_steps
    # Each within its own limit, too much work together (the request that ran for hours)
    ({"size": "1792x1792", "n": 10, "steps": 150}, 400, "n"),
    ({"size": "1792x1792", "steps": 150}, 400, "steps"),
    ({"guidance_scale": 51}, 400, "guidance_scale"),
    ({"seed": -1}, 400, "seed"),
    ({"model": "no-such-model"}, 404, "model"),
    ({"model": "gpt-4"}, 400, "model"),  # a text model does not draw
]


@pytest.mark.parametrize(("fields", "status", "param"), BAD_REQUESTS)
def test_bad_input_is_a_4xx_envelope(client, fields, status, param):
    body = {"prompt": PROMPT, "size": "64x64", **fields}
    with pytest.raises(openai.APIStatusError) as caught:
        client.post("/images/generations", body=body, cast_to=httpx.Response)
    error = caught.value
    assert error.status_code == status
    assert set(error.body) == {"message", "type", "param", "code"}  # the SDK unwraps "error"
    assert error.body["param"] == param and error.body["message"]


def test_a_missing_prompt_and_a_body_that_is_no_object(http):
    for body in ({"size": "64x64"}, ["prompt"], "prompt"):
        reply = http.post("/v1/images/generations", json=body)
        assert reply.status_code == 400 and reply.json()["error"]["type"] == "invalid_request_error"
    reply = http.post("/v1/images/generations", json={"prompt": "x"}, headers={"authorization": ""})
    assert reply.status_code == 401


# --- A real model, when there is one -------------------------------------------------------------

REAL_MODEL = os.environ.get("STRATUS_TEST_SD_MODEL", "")


def correlation_8px(image: Image.Image) -> float:
    """How alike pixels 8 apart are (one latent apart): high in a picture, near 0 in noise
    (tiny-sd measured 0.08 at 256x256)."""
    gray = np.asarray(image.convert("L"), dtype=np.float64)
    return float(np.corrcoef(gray[:, :-8].ravel(), gray[:, 8:].ravel())[0, 1])


def test_tiny_sd_draws_noise(client):
    [png] = generate(client, size="256x256", seed=1)
    assert correlation_8px(decoded(png)) < 0.3


@pytest.mark.skipif(
    not REAL_MODEL,
    reason="no real text-to-image model: set STRATUS_TEST_SD_MODEL to a diffusers directory "
    "(e.g. a download of stabilityai/sd-turbo; STRATUS_TEST_SD_STEPS, _GUIDANCE, _SIZE adjust)",
)
def test_a_real_model_from_a_local_directory(tmp_path):
    steps = int(os.environ.get("STRATUS_TEST_SD_STEPS", "1"))  # SD-Turbo's
    guidance = float(os.environ.get("STRATUS_TEST_SD_GUIDANCE", "0.0"))
    size = os.environ.get("STRATUS_TEST_SD_SIZE", "512x512")
    registry = tmp_path / "models.yaml"
    registry.write_text(
        f"- name: real-sd\n  backend: diffusers\n  source: {Path(REAL_MODEL).resolve()}\n"
        f"  aliases: [dall-e-2]\n"
        f"  parameters: {{steps: {steps}, guidance_scale: {guidance}, size: {size}}}\n"
    )
    env = {**os.environ, "STRATUS_CACHE_DIR": str(tmp_path / "cache"), "API_KEY": API_KEYS[0]}
    with stratus_serve("--models", str(registry), env=env) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEYS[0], timeout=600)
        pngs = generate(client, prompt="a red apple on a white table", size=size, n=2, seed=1)
        images = [decoded(png) for png in pngs]
        assert all(f"{i.width}x{i.height}" == size for i in images)
        assert all(correlation_8px(image) > 0.6 for image in images)  # a picture
        again = decoded(
            generate(client, prompt="a red apple on a white table", size=size, seed=1)[0]
        )
        # The same seed: the same image (on a GPU, float16 kernels may differ in the last bit)
        difference = np.abs(np.asarray(again, float) - np.asarray(images[0], float)).mean()
        assert difference < 1.0
        [url] = [i.url for i in client.images.generate(prompt="a cat", size=size).data]
        assert decoded(httpx.get(url).content).size == images[0].size


def test_a_client_that_leaves_stops_the_drawing(server, client, wait_idle):
    generate(client, seed=1)  # loaded first: a model load is not interrupted
    body = {"prompt": "a long drawing", "size": "256x256", "n": 4, "steps": 150, "seed": 1}
    with httpx.Client(base_url=server.url, headers=server.headers(), timeout=2) as impatient:
        with pytest.raises(httpx.TimeoutException):
            impatient.post("/v1/images/generations", json=body)
    # Four images of 150 steps take about 20 s here; the drawing stops at the next step.
    assert wait_idle(timeout=5.0) < 5.0
