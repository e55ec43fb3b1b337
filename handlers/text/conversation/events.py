"""The neutral events of a generation, which every dialect renders in its own shape.

`choice` is the index of the choice among a request's `n` (only Chat Completions asks for
more than one); a call's `index` counts the calls of its choice from 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from common.turns import TokenLogprob

# Why a choice ended: its own end ("stop"), a stop sequence the client sent ("stop_sequence",
# which Chat Completions reports as "stop"), the token budget or the context ("length"), or
# calls made ("tool_calls").
FinishReason = Literal["stop", "stop_sequence", "length", "tool_calls"]


@dataclass(frozen=True)
class Started:
    """Every check passed and generation began: nothing after this is a 4xx."""

    prompt_tokens: int
    fingerprint: str


@dataclass(frozen=True)
class TextDelta:
    choice: int
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens of this text, when asked for


@dataclass(frozen=True)
class ReasoningDelta:
    choice: int
    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    choice: int
    index: int
    call_id: str
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    choice: int
    index: int
    text: str


@dataclass(frozen=True)
class CallDone:
    choice: int
    index: int
    call_id: str
    name: str
    arguments: str  # the whole JSON text


@dataclass(frozen=True)
class Finished:
    choice: int
    reason: FinishReason
    stop_sequence: str | None = None  # the one that ended it, for "stop_sequence"
    completion_tokens: int = 0


@dataclass(frozen=True)
class TokenUsage:
    """The last event: the request's tokens, every choice's together."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


Event = (
    Started
    | TextDelta
    | ReasoningDelta
    | ToolCallStarted
    | ArgumentsDelta
    | CallDone
    | Finished
    | TokenUsage
)
