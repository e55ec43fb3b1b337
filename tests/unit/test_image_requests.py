"""common.image_input: images fetched from a loopback HTTP server (allowed or not), and a
request's images read together under its caps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image

from common.errors import InvalidRequest
from common.image_input import ImageLimits, read_images
from common.turns import ImageRef
from tests.crafted_images import ImageServer, data_url, encoded, png_declaring, serving
from tests.unit.image_checks import LOOPBACK, PARAM, RED, read, refused

# --- http(s) --------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ImageServer]:
    files = {
        "/red.png": encoded(Image.new("RGB", (5, 3), RED), "PNG"),
        "/big.bin": b"\x89PNG\r\n\x1a\n" + b"\x00" * 5000,
    }
    with serving(files) as served:
        yield served


def test_an_allowed_url_is_fetched_andread(server: ImageServer) -> None:
    picture = read(server.url("/red.png"), LOOPBACK)
    assert (picture.width, picture.height, picture.param) == (5, 3, PARAM)
    assert picture.rgb == bytes(RED) * 15


def test_loopback_is_not_fetched_unless_the_operator_allows_it(server: ImageServer) -> None:
    message = refused(server.url("/red.png"), "invalid_image_url")
    assert "127.0.0.1" not in message
    assert server.connections == 0


def test_a_url_that_fails_isrefused(server: ImageServer) -> None:
    refused(server.url("/missing.png"), "invalid_image_url", LOOPBACK)


def test_a_fetched_body_over_max_bytes_isrefused(server: ImageServer) -> None:
    limits = ImageLimits(max_bytes=4096, policy=LOOPBACK.policy)
    assert "4096 bytes" in refused(server.url("/big.bin"), "image_too_large", limits)


# --- a request's images together ------------------------------------------------------------


def test_a_request_s_images_are_capped_in_number_and_in_pixels_before_decoding():
    url = data_url(encoded(Image.new("RGB", (100, 100), RED), "PNG"))
    refs = [ImageRef(url, "auto", f"messages[0].content[{i}]") for i in range(4)]
    assert len(read_images(refs, ImageLimits(max_images=4))) == 4
    with pytest.raises(InvalidRequest) as caught:
        read_images(refs, ImageLimits(max_images=3))
    assert (caught.value.param, caught.value.code) == ("messages[0].content[3]", "too_many_images")
    # 25,000 pixels in all: the third image (30,000 by then) is refused by its header.
    with pytest.raises(InvalidRequest) as caught:
        read_images(refs, ImageLimits(max_total_pixels=25_000))
    assert (caught.value.param, caught.value.code) == ("messages[0].content[2]", "image_too_large")
    bomb = ImageRef(data_url(png_declaring(5000, 5000)), "auto", "messages[0].content[4]")
    with pytest.raises(InvalidRequest) as caught:
        read_images([*refs[:1], bomb], ImageLimits(max_total_pixels=20_000_000))
    assert caught.value.param == "messages[0].content[4]"
