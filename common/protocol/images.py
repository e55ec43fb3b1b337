"""POST /v1/images/generations."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer

from common.protocol.base import OpenAIRequest, OpenAIResponse, extension

MAX_PROMPT_CHARACTERS = 1000  # OpenAI's limit for dall-e-2
MAX_STEPS = 500  # a model's own limit (registry max_steps, 150 by default) is checked later


def parse_size(text: str) -> tuple[int, int] | None:
    """(width, height) of "WIDTHxHEIGHT", or None if it is not that shape."""
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit() and len(text) <= 16):
        return None
    return int(width), int(height)


class ImageGenerationRequest(OpenAIRequest):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARACTERS)
    model: str | None = None  # OpenAI's examples omit it: dall-e-2, as OpenAI does
    default_model: ClassVar[str] = "dall-e-2"  # whichever model answers to it (tiny-sd built in)
    n: Annotated[int, Field(ge=1, le=10)] = 1
    size: str | None = None  # WIDTHxHEIGHT or auto; the model's limits are checked later
    quality: Literal["standard", "hd", "auto", "low", "medium", "high"] | None = None
    style: Literal["vivid", "natural"] | None = None
    response_format: Literal["url", "b64_json"] = "url"  # OpenAI's default for dall-e
    user: str | None = None
    # Extensions (diffusers): what OpenAI's models decide for themselves.
    negative_prompt: str | None = extension(max_length=MAX_PROMPT_CHARACTERS)
    steps: Annotated[int, Field(ge=1, le=MAX_STEPS)] | None = extension()
    guidance_scale: Annotated[float, Field(ge=0.0, le=50.0)] | None = extension()
    seed: Annotated[int, Field(ge=0, lt=2**64)] | None = extension()

    @field_validator("size")
    @classmethod
    def _size_shape(cls, value: str | None) -> str | None:
        if value in (None, "auto") or parse_size(value) is not None:
            return value
        raise ValueError("size must be WIDTHxHEIGHT, e.g. 256x256, or auto")

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                value.encode()
            except UnicodeError:  # a lone surrogate, say, from a job's JSON
                raise ValueError("must be valid Unicode text") from None
        return value

    @field_validator("response_format", mode="before")
    @classmethod
    def _null_is_default(cls, value: object) -> object:
        return "url" if value is None else value


class Image(OpenAIResponse):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None

    @model_serializer(mode="wrap")
    def _present_fields_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}  # as OpenAI answers


class ImagesResponse(OpenAIResponse):
    created: int
    data: list[Image]
