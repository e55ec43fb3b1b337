"""Assertions shared by the tests of common.image_input."""

from __future__ import annotations

import pytest

from common.errors import InvalidRequest
from common.image_input import ImageLimits, read_image
from common.turns import ImageRef, Picture
from common.url_fetch import FetchPolicy

PARAM = "messages[1].content[2]"
LIMITS = ImageLimits()
LOOPBACK = ImageLimits(policy=FetchPolicy.from_setting("127.0.0.1"))
RED = (255, 0, 0)


def read(url: str, limits: ImageLimits = LIMITS, detail: str = "auto") -> Picture:
    return read_image(ImageRef(url, detail, PARAM), limits)


def refused(url: str, code: str, limits: ImageLimits = LIMITS, detail: str = "auto") -> str:
    """The message of the refusal of `url`, checked for its status, param and code."""
    with pytest.raises(InvalidRequest) as caught:
        read(url, limits, detail)
    refusal = caught.value
    assert (refusal.status, refusal.param, refusal.code) == (400, PARAM, code)
    assert PARAM in refusal.message
    # No Pillow (or base64, or httpx) exception chained inside: its text is not the client's.
    assert refusal.__cause__ is None
    assert refusal.__context__ is None or refusal.__suppress_context__
    return refusal.message
