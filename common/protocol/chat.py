"""POST /v1/chat/completions: request, response and stream chunk."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from common.protocol.base import (
    OpenAIRequest,
    OpenAIResponse,
    SamplingFields,
    TokenBudget,
    Usage,
)

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class ContentPart(OpenAIRequest):
    """One part of a message's content; only text parts are read by a text model."""

    type: str
    text: str | None = None

    @model_validator(mode="after")
    def _text_needs_text(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text content part needs 'text'")
        return self


class ChatMessage(OpenAIRequest):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _content_type(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | list):
            raise ValueError("content must be a string, an array of content parts, or null")
        return value


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: TokenBudget | None = None
    max_completion_tokens: TokenBudget | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    @property
    def token_budget(self) -> int | None:
        # max_completion_tokens supersedes the deprecated max_tokens when both are sent.
        return self.max_completion_tokens or self.max_tokens


class ResponseMessage(OpenAIResponse):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


class ChatChoice(OpenAIResponse):
    index: int
    message: ResponseMessage
    logprobs: None = None
    finish_reason: FinishReason


class ChatCompletion(OpenAIResponse):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ChoiceDelta(OpenAIResponse):
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: Any) -> dict[str, Any]:
        # A delta carries only what changed: {"role": ...} first, then {"content": ...}, then {}.
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatChunkChoice(OpenAIResponse):
    index: int
    delta: ChoiceDelta
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(OpenAIResponse):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    system_fingerprint: str | None = None
    usage: Usage | None = None
