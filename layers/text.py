"""The text-generation interface every LLM engine implements (llama.cpp, exllamav2)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 40
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias); -100 bans, 100 forces


@dataclass(frozen=True)
class ChatTurn:
    role: str
    content: str


class TextModel(Protocol):
    name: str
    context_length: int
    vocab_size: int

    def chat_prompt(self, turns: Sequence[ChatTurn]) -> str:
        """The conversation rendered with the model's chat template, ready to generate."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a prompt, with the model's beginning-of-sequence token if it has one."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def generate(self, prompt: Sequence[int], sampling: Sampling) -> Iterator[bytes]:
        """Bytes of each generated token, until end of sequence or the caller stops iterating.

        Bytes, not text: a multi-byte character may span tokens; the caller decodes.
        """
        ...
