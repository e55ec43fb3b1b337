"""GET /v1/models and GET /v1/models/{model}: OpenAI's shapes, and Anthropic's Models API for
Anthropic clients."""

from __future__ import annotations

from typing import ClassVar, Literal

from common.protocol.base import OpenAIResponse, Sparse, absent_when_none


class Model(OpenAIResponse):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(OpenAIResponse):
    object: Literal["list"] = "list"
    data: list[Model]


class AnthropicModel(Sparse):
    """Anthropic's model object (ModelInfo)."""

    absent: ClassVar[tuple[str, ...]] = ("max_input_tokens",)

    type: Literal["model"] = "model"
    id: str
    display_name: str
    created_at: str  # RFC 3339
    lifecycle: Literal["active"] = "active"
    # The context window (registry `n_ctx`), left out when the registry does not say (the
    # model's file decides when it loads). No `max_tokens`: Messages' is a ceiling here, cut to
    # the room the prompt leaves.
    max_input_tokens: int | None = None

    model_config = absent_when_none("max_input_tokens")


class AnthropicModelList(OpenAIResponse):
    data: list[AnthropicModel]
    first_id: str | None
    last_id: str | None
    has_more: bool
