"""POST /v1/embeddings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from common.protocol.base import OpenAIRequest, OpenAIResponse

EmbeddingInput = str | list[str] | list[int] | list[list[int]]


class EmbeddingRequest(OpenAIRequest):
    model: str = Field(min_length=1)
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: EmbeddingInput) -> EmbeddingInput:
        if isinstance(value, list) and not value:
            raise ValueError("input must not be an empty array")
        return value


class Embedding(OpenAIResponse):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str  # a base64 string when encoding_format is "base64"
    index: int


class EmbeddingUsage(OpenAIResponse):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(OpenAIResponse):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
