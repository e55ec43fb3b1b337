"""POST /v1/images/generations."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from common.protocol.base import OpenAIRequest, OpenAIResponse


class ImageGenerationRequest(OpenAIRequest):
    prompt: str = Field(min_length=1)
    model: str | None = None  # OpenAI's examples omit it: the registry's default image model
    n: Annotated[int, Field(ge=1, le=10)] = 1
    size: str | None = None
    quality: str | None = None
    style: str | None = None
    response_format: Literal["url", "b64_json"] = "url"
    user: str | None = None

    @field_validator("size")
    @classmethod
    def _size_shape(cls, value: str | None) -> str | None:
        if value in (None, "auto"):
            return value
        width, _, height = value.partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise ValueError("size must be WIDTHxHEIGHT, e.g. 256x256")
        return value


class Image(OpenAIResponse):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(OpenAIResponse):
    created: int
    data: list[Image]
