"""Images without a server: request checks, sizes, registry parameters, where URLs point."""

from __future__ import annotations

import time

import pytest

from common.errors import EngineUnavailable, InvalidRequest
from common.image_urls import (
    NAME,
    ImageStorageUnavailable,
    NoImageUrls,
    S3ImageUrls,
    ServedImages,
)
from common.protocol import parse_request
from common.protocol.images import ImageGenerationRequest
from common.registry import ModelConfig
from handlers.images import image_size
from layers.diffusers import pipeline_options
from layers.images import SizeLimits


def param_of(body: dict) -> str | None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(ImageGenerationRequest, body)
    return caught.value.param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"prompt": ["a list"]}, "prompt"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "n": 11}, "n"),
        ({"prompt": "x", "size": "big"}, "size"),
        ({"prompt": "x", "size": "64x"}, "size"),
        ({"prompt": "x", "size": "-64x64"}, "size"),
        ({"prompt": "x", "size": 64}, "size"),
        ({"prompt": "x", "response_format": "png"}, "response_format"),
        ({"prompt": "x", "quality": "ultra"}, "quality"),
        ({"prompt": "x", "style": "baroque"}, "style"),
        ({"prompt": "x", "steps": 0}, "steps"),
        ({"prompt": "x", "steps": 501}, "steps"),
        ({"prompt": "x", "guidance_scale": -1}, "guidance_scale"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "seed": 2**64}, "seed"),
        ({"prompt": "x", "negative_prompt": "y" * 1001}, "negative_prompt"),
        ({"prompt": "\ud800"}, "prompt"),
    ],
)
def test_bad_requests_name_their_field(body, param):
    assert param_of(body) == param


def test_openai_fields_are_accepted_and_unknown_ones_ignored():
    request = parse_request(
        ImageGenerationRequest,
        {
            "prompt": "A cute baby sea otter",
            "model": "dall-e-3",
            "n": 1,
            "size": "1024x1792",
            "quality": "hd",
            "style": "natural",
            "response_format": None,
            "user": "user-1234",
            "output_format": "png",  # gpt-image-1's, unknown here
        },
    )
    assert request.response_format == "url" and request.quality == "hd"


LIMITS = SizeLimits(default=(256, 256), smallest=64, largest=1024, multiple=8)


@pytest.mark.parametrize(
    ("size", "expected"),
    [(None, (256, 256)), ("auto", (256, 256)), ("64x64", (64, 64)), ("1024x72", (1024, 72))],
)
def test_sizes_the_model_draws(size, expected):
    assert image_size(size, LIMITS) == expected


@pytest.mark.parametrize("size", ["60x64", "64x60", "0x0", "56x64", "1032x64", "99999999x64"])
def test_sizes_it_does_not_are_400_naming_the_limits(size):
    with pytest.raises(InvalidRequest) as caught:
        image_size(size, LIMITS)
    assert caught.value.param == "size"
    assert "multiple of 8 from 64 to 1024" in caught.value.message
    assert "256x256, 512x512, 1024x1024" in caught.value.message


def config(**parameters) -> ModelConfig:
    return ModelConfig(name="m", backend="diffusers", source="/m", parameters=parameters)


def test_registry_parameters_are_checked_at_load():
    options = pipeline_options(config(steps=1, guidance_scale=0, size="512x512", max_batch=2))
    assert (options.steps, options.guidance_scale, options.size) == (1, 0.0, (512, 512))
    assert (options.min_size, options.max_size, options.size_multiple) == (64, 2048, 8)
    bad_values = (
        {"steps": "many"},
        {"dtype": "float8"},
        {"size": "big"},
        {"max_batch": 0},
        {"png_compress_level": 10},
    )
    for bad in bad_values:
        with pytest.raises(EngineUnavailable, match=next(iter(bad))):
            pipeline_options(config(**bad))


def test_served_images_are_whole_files_that_expire(tmp_path):
    now = [time.time()]  # file times are real: the clock starts now and jumps
    served = ServedImages(tmp_path / "images", ttl=60, public_url="", clock=lambda: now[0])
    urls = served.publish([b"\x89PNG one", b"\x89PNG two"], "http://host:8080")
    names = [url.rsplit("/", 1)[1] for url in urls]
    assert all(url.startswith("http://host:8080/generated-images/") for url in urls)
    assert len(set(names)) == 2 and all(NAME.match(name) for name in names)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(names)
    assert served.path(names[0]).read_bytes() == b"\x89PNG one"
    for bad in ("../images/" + names[0], names[0][:-4], "x" * 22 + ".PNG", ".." + names[0][2:]):
        assert served.path(bad) is None
    now[0] += 61
    assert served.path(names[0]) is None  # expired: gone
    assert served.sweep(force=True) == 1 and not any((tmp_path / "images").iterdir())


def test_a_public_url_wins_over_the_request(tmp_path):
    served = ServedImages(tmp_path, ttl=60, public_url="https://images.example.com/")
    [url] = served.publish([b"png"], "http://10.0.0.5:8080")
    assert url.startswith("https://images.example.com/generated-images/")


def test_no_urls_off_http_without_a_bucket_is_a_clear_400():
    with pytest.raises(InvalidRequest) as caught:
        NoImageUrls("RunPod").check()
    assert caught.value.param == "response_format" and "b64_json" in caught.value.message
    assert "STRATUS_IMAGE_BUCKET" in caught.value.message


@pytest.mark.parametrize(
    ("setting", "bucket", "prefix"),
    [
        ("images", "images", "generated-images/"),
        ("images/out", "images", "out/"),
        ("s3://images/a/b/", "images", "a/b/"),
    ],
)
def test_bucket_setting(setting, bucket, prefix):
    urls = S3ImageUrls.from_setting(lambda: None, setting, 60)
    assert (urls.bucket, urls.prefix) == (bucket, prefix)


@pytest.mark.parametrize("shape", [(1, 1), (64, 64), (7, 13), (136, 64)])
def test_png_files_decode_to_the_same_pixels(shape):
    import io

    import numpy as np
    from PIL import Image

    from layers.png import encode_png

    rgb = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    for level in (0, 1, 9):
        image = Image.open(io.BytesIO(encode_png(rgb, level)))
        assert image.format == "PNG" and image.mode == "RGB"
        assert np.array_equal(np.asarray(image), rgb)
    with pytest.raises(ValueError):
        encode_png(rgb.astype(np.float32))


def test_an_unwritable_image_directory_is_a_clear_503(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    served = ServedImages(tmp_path / "file" / "images", ttl=60)  # a path under a file
    with pytest.raises(ImageStorageUnavailable) as caught:
        served.publish([b"png"], "http://host")
    assert caught.value.status == 503 and caught.value.code == "image_storage_unavailable"
