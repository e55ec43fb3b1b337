"""common.image_input: images built in memory with Pillow, read from data: URLs; every refusal
checked for its status, param and code (fetched URLs and a request's images together:
test_image_requests.py)."""

from __future__ import annotations

import hashlib
import time
from io import BytesIO

import pytest
from PIL import Image

from common import image_input
from common.errors import InvalidRequest
from common.image_input import LOW_DETAIL_SIDE, ImageLimits, check_text
from common.settings import Settings
from common.turns import IMAGE_MARKER, Picture
from common.url_fetch import FetchPolicy
from tests.crafted_images import data_url, encoded, png_declaring
from tests.unit.image_checks import LIMITS, PARAM, RED, read, refused


def _pixel(picture: Picture, x: int, y: int) -> tuple[int, ...]:
    start = (y * picture.width + x) * 3
    return tuple(picture.rgb[start : start + 3])


def _near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# --- reading --------------------------------------------------------------------------------


def test_png_round_trips_exactly() -> None:
    source = Image.new("RGB", (3, 2))
    colours = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30), (255, 255, 255)]
    source.putdata(colours)
    picture = read(data_url(encoded(source, "PNG")))
    assert (picture.width, picture.height, picture.param) == (3, 2, PARAM)
    assert picture.rgb == bytes(value for colour in colours for value in colour)
    assert picture.digest == hashlib.sha256(b"3x2" + picture.rgb).hexdigest()


@pytest.mark.parametrize(
    ("format_", "media_type", "tolerance"),
    [
        ("PNG", "image/png", 0),
        ("GIF", "image/gif", 0),
        ("JPEG", "image/jpeg", 8),
        ("JPEG", "image/jpg", 8),
        ("WEBP", "image/webp", 8),
    ],
)
def test_each_format_reads_to_its_size_and_colour(
    format_: str, media_type: str, tolerance: int
) -> None:
    data = encoded(Image.new("RGB", (16, 8), RED), format_)
    picture = read(data_url(data, media_type))
    assert (picture.width, picture.height) == (16, 8)
    assert len(picture.rgb) == 16 * 8 * 3
    assert all(_near(_pixel(picture, x, y), RED, tolerance) for x in range(16) for y in range(8))


def test_the_files_own_format_decides_not_the_declared_media_type() -> None:
    jpeg = encoded(Image.new("RGB", (4, 4), RED), "JPEG")
    assert read(data_url(jpeg, "image/png")).width == 4


def test_a_multi_picture_jpeg_reads_as_its_first_picture() -> None:
    # MPO, as phone cameras write: JPEG's first bytes, a second picture after the first.
    first, second = Image.new("RGB", (8, 4), RED), Image.new("RGB", (8, 4), (0, 0, 255))
    data = encoded(first, "MPO", save_all=True, append_images=[second])
    picture = read(data_url(data, "image/jpeg"))
    assert (picture.width, picture.height) == (8, 4)
    assert _near(_pixel(picture, 3, 2), RED, 8)


def test_same_pixels_same_digest_different_pixels_different_digest() -> None:
    red = read(data_url(encoded(Image.new("RGB", (4, 4), RED), "PNG")))
    again = read(data_url(encoded(Image.new("RGB", (4, 4), RED), "GIF"), "image/gif"))
    blue = read(data_url(encoded(Image.new("RGB", (4, 4), (0, 0, 255)), "PNG")))
    transposed = read(data_url(encoded(Image.new("RGB", (2, 8), RED), "PNG")))
    assert red.digest == again.digest
    assert len({red.digest, blue.digest, transposed.digest}) == 3


def test_rgba_is_laid_on_white() -> None:
    source = Image.new("RGBA", (3, 1))
    source.putdata([(255, 0, 0, 255), (255, 0, 0, 0), (255, 0, 0, 128)])
    picture = read(data_url(encoded(source, "PNG")))
    assert _pixel(picture, 0, 0) == RED
    assert _pixel(picture, 1, 0) == (255, 255, 255)
    assert _near(_pixel(picture, 2, 0), (255, 127, 127), 1)


@pytest.mark.parametrize("format_", ["PNG", "WEBP"])
def test_transparent_grayscale_and_webp_alpha_are_laid_on_white(format_: str) -> None:
    source = Image.new("LA" if format_ == "PNG" else "RGBA", (2, 1))
    source.putdata([(0, 255), (0, 0)] if format_ == "PNG" else [(0, 0, 0, 255), (0, 0, 0, 0)])
    picture = read(data_url(encoded(source, format_, lossless=True)))
    assert _pixel(picture, 0, 0) == (0, 0, 0)
    assert _pixel(picture, 1, 0) == (255, 255, 255)


def test_a_gifs_transparent_colour_is_white() -> None:
    source = Image.new("P", (2, 1))
    source.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    source.putdata([0, 1])
    data = encoded(source, "GIF", transparency=1)
    picture = read(data_url(data, "image/gif"))
    assert _pixel(picture, 0, 0) == RED
    assert _pixel(picture, 1, 0) == (255, 255, 255)


def test_an_animated_gif_is_read_as_its_first_frame() -> None:
    frames = [Image.new("RGB", (6, 4), colour) for colour in (RED, (0, 255, 0), (0, 0, 255))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(BytesIO(data)).n_frames == 3
    picture = read(data_url(data, "image/gif"))
    assert (picture.width, picture.height) == (6, 4)
    assert set(picture.rgb[i : i + 3] for i in range(0, len(picture.rgb), 3)) == {bytes(RED)}


def test_grayscale_16_bit_and_cmyk_become_rgb() -> None:
    gray = Image.new("L", (1, 1), 200)
    assert read(data_url(encoded(gray, "PNG"))).rgb == bytes([200] * 3)
    deep = Image.new("I;16", (2, 1))
    deep.putpixel((0, 0), 65535)
    deep.putpixel((1, 0), 32768)
    assert read(data_url(encoded(deep, "PNG"))).rgb == bytes([255] * 3 + [128] * 3)
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # red in ink
    picture = read(data_url(encoded(cmyk, "JPEG"), "image/jpeg"))
    assert _near(_pixel(picture, 1, 1), RED, 8)


def test_exif_orientation_is_applied() -> None:
    source = Image.new("RGB", (20, 10), RED)
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    picture = read(data_url(encoded(source, "JPEG", exif=exif), "image/jpeg"))
    assert (picture.width, picture.height) == (10, 20)


@pytest.mark.parametrize("format_", ["PNG", "JPEG"])
def test_low_detail_fits_within_512_keeping_the_aspect(format_: str) -> None:
    data = encoded(Image.new("RGB", (2048, 1024), RED), format_)
    low = read(data_url(data), detail="low")
    assert (low.width, low.height) == (512, 256)
    assert _near(_pixel(low, 100, 100), RED, 8)
    high = read(data_url(data), detail="high")
    assert (high.width, high.height) == (2048, 1024)


def test_low_detail_never_enlarges_and_auto_keeps_the_size() -> None:
    data = data_url(encoded(Image.new("RGB", (300, 200), RED), "PNG"))
    assert (read(data, detail="low").width, read(data, detail="low").height) == (300, 200)
    assert LOW_DETAIL_SIDE == 512
    tall = data_url(encoded(Image.new("RGB", (100, 1000), RED), "PNG"))
    assert (read(tall, detail="low").width, read(tall, detail="low").height) == (51, 512)
    assert read(tall, detail="auto").height == 1000


def test_an_unknown_detail_isrefused() -> None:
    data = data_url(encoded(Image.new("RGB", (4, 4)), "PNG"))
    assert "auto, low or high" in refused(data, "invalid_value", detail="medium")


# --- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [9000, 100_000])
def test_a_png_declaring_too_many_pixels_is_refused_before_decoding(side: int) -> None:
    # 9000x9000 passes Pillow's own bomb check, so it is ours that refuses it; 100000x100000
    # is past Pillow's too. Neither allocates: both answer at once.
    pillows_limit = Image.MAX_IMAGE_PIXELS
    started = time.perf_counter()
    message = refused(data_url(png_declaring(side, side)), "image_too_large")
    assert time.perf_counter() - started < 0.5
    assert str(LIMITS.max_pixels) in message
    assert Image.MAX_IMAGE_PIXELS == pillows_limit


def test_max_pixels_from_the_limits_is_honoured() -> None:
    data = data_url(encoded(Image.new("RGB", (100, 100)), "PNG"))
    assert read(data, ImageLimits(max_pixels=10_000)).width == 100
    message = refused(data, "image_too_large", ImageLimits(max_pixels=9_999))
    assert "100x100" in message and "9999" in message


def test_a_data_url_over_max_bytes_is_refused_without_decoding(monkeypatch) -> None:
    def never(*args, **kwargs):
        raise AssertionError("the payload was decoded")

    monkeypatch.setattr(image_input.base64, "b64decode", never)
    limits = ImageLimits(max_bytes=3000)
    payload = "A" * 4004  # 3003 bytes once decoded
    assert "3000 bytes" in refused(f"data:image/png;base64,{payload}", "image_too_large", limits)


def test_a_data_url_of_exactly_max_bytes_isread() -> None:
    data = encoded(Image.new("RGB", (8, 8), RED), "PNG")
    for padded in (data, data + b"\x00", data + b"\x00\x00"):  # each amount of '=' padding
        assert read(data_url(padded), ImageLimits(max_bytes=len(padded))).width == 8
        refused(data_url(padded), "image_too_large", ImageLimits(max_bytes=len(padded) - 1))


def test_a_30_mb_data_url_is_refused_at_once() -> None:
    url = "data:image/png;base64," + "A" * (30 * 1024 * 1024)
    started = time.perf_counter()
    assert "20 MiB" in refused(url, "image_too_large")
    assert time.perf_counter() - started < 0.5


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "data:text/plain;base64,aGVsbG8=",
        "data:image/bmp;base64,Qk0=",
        "data:image/svg+xml;base64,PHN2Zz4=",
        "data:;base64,aGVsbG8=",
    ],
)
def test_a_media_type_other_than_the_four_isrefused(url: str) -> None:
    assert "image/png" in refused(url, "unsupported_image_format")


@pytest.mark.parametrize("format_", ["BMP", "TIFF", "ICO", "PPM"])
def test_a_file_in_another_format_is_refused_whatever_it_claims(format_: str) -> None:
    data = encoded(Image.new("RGB", (8, 8), RED), format_)
    assert "PNG, JPEG, WebP or GIF" in refused(data_url(data), "unsupported_image_format")


def test_bytes_that_are_no_image_arerefused() -> None:
    refused(data_url(b"hello, this is not an image"), "unsupported_image_format")


def test_a_truncated_or_damaged_file_isrefused() -> None:
    png = encoded(Image.new("RGB", (64, 64), RED), "PNG")
    jpeg = encoded(Image.new("RGB", (64, 64), RED), "JPEG")
    for data in (png[: len(png) // 2], png[:40], jpeg[:300], b"GIF89a\x00", b""):
        message = refused(data_url(data), "invalid_image")
        assert "damaged or truncated" in message
    damaged = bytearray(png)
    damaged[60] ^= 0xFF  # a flipped byte: the chunk's checksum no longer matches
    refused(data_url(bytes(damaged)), "invalid_image")


@pytest.mark.parametrize(
    "url",
    ["data:image/png;base64,@@@@", "data:image/png;base64,aGVsbG8", "data:image/png;base64,é="],
)
def test_a_payload_that_is_not_base64_isrefused(url: str) -> None:
    assert "base64" in refused(url, "invalid_image")


@pytest.mark.parametrize(
    "url",
    ["data:image/png,%89PNG", "data:image/png;base64", "data:" + "x" * 300 + ",AAAA"],
)
def test_a_malformed_or_unencoded_data_url_isrefused(url: str) -> None:
    assert "data: URL" in refused(url, "invalid_image_url")


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.com/a.png", "", "garbage", "javascript:alert(1)"],
)
def test_other_schemes_arerefused(url: str) -> None:
    message = refused(url, "invalid_image_url")
    assert "data:" in message and "http(s)" in message


def test_check_text() -> None:
    check_text("an <image> tag and a \x00 are just text", "messages[0].content")
    with pytest.raises(InvalidRequest) as caught:
        check_text(f"look: {IMAGE_MARKER}", "messages[0].content")
    refusal = caught.value
    assert (refusal.status, refusal.param) == (400, "messages[0].content")
    assert "messages[0].content" in refusal.message


def test_limits_from_settings() -> None:
    settings = Settings(max_image_bytes=4096, max_image_pixels=1000, fetch_allow="127.0.0.1")
    limits = ImageLimits.from_settings(settings)
    assert (limits.max_bytes, limits.max_pixels) == (4096, 1000)
    assert limits.policy == FetchPolicy.from_setting("127.0.0.1")
    assert ImageLimits.from_settings(Settings(fetch_allow="")).policy == FetchPolicy()
