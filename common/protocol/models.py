"""GET /v1/models and GET /v1/models/{model}."""

from __future__ import annotations

from typing import Literal

from common.protocol.base import OpenAIResponse


class Model(OpenAIResponse):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(OpenAIResponse):
    object: Literal["list"] = "list"
    data: list[Model]
