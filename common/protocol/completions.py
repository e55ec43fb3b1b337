"""POST /v1/completions (legacy text completions) and POST /v1/edits."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from common.protocol.base import (
    Count,
    OpenAIRequest,
    OpenAIResponse,
    Probability,
    SamplingFields,
    Temperature,
    Usage,
    extension,
)

FinishReason = Literal["stop", "length", "content_filter"]

# A prompt is text or token ids, one or a batch of them (OpenAI's four accepted shapes).
Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(SamplingFields):
    prompt: Prompt = "<|endoftext|>"
    max_tokens: Annotated[int, Field(ge=1)] | None = 16  # OpenAI's default for this endpoint
    echo: bool = False
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1, le=20)] | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None

    @field_validator("prompt")
    @classmethod
    def _non_empty_batch(cls, value: Prompt) -> Prompt:
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty array")
        if isinstance(value, list) and any(isinstance(p, list) and not p for p in value):
            raise ValueError("a token-id prompt must not be empty")
        return value

    @property
    def prompts(self) -> list[str | list[int]]:
        """The batch of prompts: one choice per prompt, times n."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(p, int) for p in self.prompt):
            return [list(self.prompt)]  # type: ignore[arg-type]
        return list(self.prompt)  # type: ignore[arg-type]


class CompletionLogprobs(OpenAIResponse):
    """Legacy completions' log probabilities: parallel lists, one entry per token."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(OpenAIResponse):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None


class Completion(OpenAIResponse):
    """Both the whole response and each stream chunk: OpenAI uses one shape for both."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    system_fingerprint: str
    usage: Usage | None = None


class EditRequest(OpenAIRequest):
    model: str = Field(min_length=1)
    instruction: str = Field(min_length=1)
    input: str = ""
    n: Count = 1
    temperature: Temperature | None = None
    top_p: Probability | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = extension()
    seed: int | None = extension()


class EditChoice(OpenAIResponse):
    text: str
    index: int
    finish_reason: FinishReason


class Edit(OpenAIResponse):
    id: str
    object: Literal["edit"] = "edit"
    created: int
    model: str
    choices: list[EditChoice]
    usage: Usage
