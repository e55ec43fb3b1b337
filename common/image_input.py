"""Reads an image a client put in a chat turn into RGB pixels, refusing a bad one with a 400.

An image arrives as OpenAI's image_url content part: a data: URL carrying base64, or an
http(s) URL, fetched through common.url_fetch (public addresses only, unless the operator's
allow-list names the host). Every byte of it is the client's, so each size is checked before
the work it would make expensive:

- a data: URL's payload by its length, before base64 decodes it;
- a fetched body while it streams (url_fetch's cap);
- the pixels the file's header declares, before Pillow decodes one (a PNG of a hundred bytes
  can declare 100000x100000: a decompression bomb).

The format is the file's own (its first bytes), not the media type the client wrote. Only
PNG, JPEG, WebP and GIF are read, and Pillow is told to try just the one found, so none of
its other decoders ever parses a client's bytes.

Blocking (a fetch, a decode): run read_image in a thread. PIL is imported when an image is
read, not at import.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any

from common.errors import InvalidRequest, PayloadTooLarge
from common.turns import AUDIO_MARKER, IMAGE_MARKER, ImageRef, Picture
from common.url_fetch import FetchPolicy, fetch_url

if TYPE_CHECKING:
    from common.settings import Settings

LOW_DETAIL_SIDE = 512  # OpenAI's low detail: the image is read at 512x512 at most
DETAILS = ("auto", "low", "high")
MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/jpg", "image/webp", "image/gif"})
ACCEPTED = "PNG, JPEG, WebP or GIF (image/png, image/jpeg, image/webp, image/gif)"
_MIB = 1024 * 1024
# A data: URL's header ("data:image/jpeg;base64") is short; a longer one is not an image's.
_MAX_HEADER = 200

# What a damaged file makes Pillow raise: the exceptions Pillow's own fuzz tests accept, and
# the struct and index errors some decoders let through. Each means the client's file is
# broken. Not MemoryError: under the pixel cap it means this worker is short of memory, and
# that, like any other exception, stays a 500.
_BROKEN_FILE = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    NotImplementedError,
    OverflowError,
)


@dataclass(frozen=True)
class ImageLimits:
    """How large an image a client may send, and which hosts its URL may reach."""

    max_bytes: int = 20 * _MIB  # the encoded file: a data: URL's payload or a fetched body
    max_pixels: int = 8192 * 8192  # width times height, as the file's header declares them
    policy: FetchPolicy = FetchPolicy()
    fetch_timeout: float = 30.0
    # A request's images together (Anthropic's limit is 100 images a request): each decoded
    # image is held until the prompt is made, so the sum of their pixels is bounded too.
    max_images: int = 100
    max_total_pixels: int = 2 * 8192 * 8192

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            policy=FetchPolicy.from_setting(settings.fetch_allow),
        )


def read_image(image: ImageRef, limits: ImageLimits, pixels_left: int | None = None) -> Picture:
    """The image's pixels, as RGB on white, upright, at most 512x512 for low detail.

    Raises InvalidRequest (400) naming `image.param` for anything wrong with it, with the
    code invalid_image_url, image_too_large, unsupported_image_format, invalid_image or
    (for a detail other than auto, low or high) invalid_value.
    """
    param = image.param
    if image.detail not in DETAILS:
        raise InvalidRequest(
            f"The detail of the image in '{param}' must be auto, low or high.",
            param=param,
            code="invalid_value",
        )
    scheme = image.url[:8].lower()
    if scheme.startswith("data:"):
        data = _data_url_bytes(image.url, param, limits.max_bytes)
    elif scheme.startswith(("http://", "https://")):
        data = _fetched_bytes(image.url, param, limits)
    else:
        raise _bad_url(param, "is neither a data: URL nor an http(s) URL")
    return _decode(data, image, limits, pixels_left)


def read_images(images: Sequence[ImageRef], limits: ImageLimits) -> list[Picture]:
    """Every image of a request, one at a time, within the request's caps: at most
    `max_images` of them, and `max_total_pixels` in all (each checked before it is decoded)."""
    if len(images) > limits.max_images:
        raise InvalidRequest(
            f"A request may hold at most {limits.max_images} images; this one holds {len(images)}.",
            param=images[limits.max_images].param,
            code="too_many_images",
        )
    pictures: list[Picture] = []
    left = limits.max_total_pixels
    for image in images:
        picture = read_image(image, limits, pixels_left=left)
        left -= picture.width * picture.height  # what it holds (low detail: shrunk)
        pictures.append(picture)
    return pictures


def check_text(text: str, param: str) -> None:
    """Refuses a client's text holding IMAGE_MARKER or AUDIO_MARKER: in a rendered prompt, every
    marker must be an image's (an audio clip's) place, or a client could make the engine read an
    image where it wrote text."""
    for marker, what, part in (
        (IMAGE_MARKER, "image", "image_url"),
        (AUDIO_MARKER, "audio", "input_audio"),
    ):
        if marker in text:
            raise InvalidRequest(
                f"The text in '{param}' contains '<{what}>' enclosed in NUL characters, which "
                f"marks where {what} goes; send it as {part} content parts instead.",
                param=param,
                code="invalid_value",
            )


def _data_url_bytes(url: str, param: str, max_bytes: int) -> bytes:
    comma = url.find(",")
    if not 5 <= comma <= _MAX_HEADER:
        raise _bad_url(param, "is not a valid data: URL")
    media_type, *parameters = url[5:comma].lower().split(";")
    media_type = media_type.strip()
    if media_type not in MEDIA_TYPES:
        raise InvalidRequest(
            f"The image in '{param}' has the media type '{media_type}'; images may be {ACCEPTED}.",
            param=param,
            code="unsupported_image_format",
        )
    if not parameters or parameters[-1].strip() != "base64":
        raise _bad_url(param, "is a data: URL without ';base64', and only base64 is read")
    # The size base64 decodes to, from the payload's length alone (exact for any payload
    # b64decode accepts), so a huge one is refused without a copy or a decode.
    decoded_size = (len(url) - comma - 1) * 3 // 4 - url[-2:].count("=")
    if decoded_size > max_bytes:
        raise _too_large(param, max_bytes)
    try:
        return base64.b64decode(url[comma + 1 :], validate=True)
    except ValueError:
        raise InvalidRequest(
            f"The data: URL in '{param}' is not valid base64.", param=param, code="invalid_image"
        ) from None


def _fetched_bytes(url: str, param: str, limits: ImageLimits) -> bytes:
    try:
        return fetch_url(
            url,
            max_bytes=limits.max_bytes,
            policy=limits.policy,
            param=param,
            timeout=limits.fetch_timeout,
        )
    except PayloadTooLarge:
        raise _too_large(param, limits.max_bytes) from None
    except InvalidRequest as refusal:
        # url_fetch's message says nothing about our network; it gains this module's code.
        raise InvalidRequest(refusal.message, param=param, code="invalid_image_url") from None


def _format(data: bytes) -> str | None:
    """Pillow's name for the file's format, from its first bytes; None for any other."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _decode(data: bytes, image: ImageRef, limits: ImageLimits, pixels_left: int | None) -> Picture:
    from PIL import Image, ImageOps

    param = image.param
    broken = InvalidRequest(
        f"The image in '{param}' could not be read: the file is empty, damaged or truncated.",
        param=param,
        code="invalid_image",
    )
    if not data:
        raise broken
    found = _format(data)
    if found is None:
        raise InvalidRequest(
            f"The image in '{param}' is not in a supported format; images may be {ACCEPTED}.",
            param=param,
            code="unsupported_image_format",
        )
    low = image.detail == "low"
    try:
        # open() reads the header only: the size is known before a pixel is decoded.
        with Image.open(BytesIO(data), formats=[found]) as opened:
            width, height = opened.size
            if width * height > limits.max_pixels:
                raise _too_many_pixels(param, limits.max_pixels, f"{width}x{height}")
            if pixels_left is not None and width * height > pixels_left:
                raise InvalidRequest(
                    f"The images of this request have more than {limits.max_total_pixels} "
                    f"pixels in all (width times height, summed); '{param}' is past that.",
                    param=param,
                    code="image_too_large",
                )
            if low:
                # JPEG only (a no-op otherwise): decode at 1/2 to 1/8 scale, still >= 512.
                opened.draft(None, (LOW_DETAIL_SIDE, LOW_DETAIL_SIDE))
            opened.load()  # a GIF's or WebP's first frame: open() stands on it
            ImageOps.exif_transpose(opened, in_place=True)  # phone photos, upright
            rgb = _rgb_on_white(opened)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own cap (twice Image.MAX_IMAGE_PIXELS), met only if the operator's is higher.
        raise _too_many_pixels(param, limits.max_pixels, "too many") from None
    except _BROKEN_FILE:
        raise broken from None
    if low:
        rgb.thumbnail((LOW_DETAIL_SIDE, LOW_DETAIL_SIDE))  # keeps the aspect; never enlarges
    width, height = rgb.size
    pixels = rgb.tobytes()
    digest = hashlib.sha256(f"{width}x{height}".encode())
    digest.update(pixels)
    return Picture(width, height, pixels, digest.hexdigest(), param=param)


def _rgb_on_white(picture: Any) -> Any:
    """RGB, transparent parts laid on white (as a viewer shows them, not black)."""
    from PIL import Image

    if picture.mode.startswith("I"):
        # 16-bit grayscale PNG: convert() would clip 0..65535 to 0..255; scale it instead.
        picture = picture.convert("I").point(lambda value: value / 256).convert("L")
    if not picture.has_transparency_data:
        return picture.convert("RGB")
    white = Image.new("RGBA", picture.size, (255, 255, 255, 255))
    white.alpha_composite(picture.convert("RGBA"))
    return white.convert("RGB")


def _bad_url(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(
        f"The image URL in '{param}' {what}; images are accepted as data: URLs "
        "(data:image/png;base64,...) or http(s) URLs.",
        param=param,
        code="invalid_image_url",
    )


def _too_large(param: str, max_bytes: int) -> InvalidRequest:
    limit = f"{max_bytes // _MIB} MiB" if max_bytes % _MIB == 0 else f"{max_bytes} bytes"
    return InvalidRequest(
        f"The image in '{param}' is larger than {limit}, the most an image file may be.",
        param=param,
        code="image_too_large",
    )


def _too_many_pixels(param: str, max_pixels: int, declared: str) -> InvalidRequest:
    return InvalidRequest(
        f"The image in '{param}' has {declared} pixels; an image may have at most {max_pixels} "
        "(width times height).",
        param=param,
        code="image_too_large",
    )
