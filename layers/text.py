"""The text-generation interface every LLM engine implements (llama.cpp, exllamav2): sampling
settings, the tokens it yields and the model protocol. The conversation it renders is
common/turns."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from common.turns import ChatTurn, TokenLogprob, ToolSpec

if TYPE_CHECKING:
    from layers.reasoning import ReasoningFormat
    from layers.tool_formats.base import ToolFormat


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


class GeneratedToken(NamedTuple):
    piece: bytes
    logprob: TokenLogprob | None = None  # only when asked for


class TextModel(Protocol):
    name: str
    context_length: int
    vocab_size: int
    fingerprint: str  # changes whenever the same request could give a different answer
    # How the model thinks before it answers (layers/reasoning, from its chat template), and
    # whether its prompt opens the block (all it writes up to the end marker is reasoning).
    reasoning: ReasoningFormat | None
    reasoning_opens: bool
    # How the model writes tool calls (layers/tool_formats, from its chat template).
    tool_format: ToolFormat

    def grammar_literal(self, text: str) -> str:
        """A format's marker in a grammar: the special token (`<[id]>`) when the vocabulary
        has the marker as one, a string literal otherwise."""
        ...

    @property
    def max_token_bytes(self) -> int:
        """The longest token's length in bytes: a text of more than context_length times this
        cannot fit, whatever its tokens (known without tokenizing it)."""
        ...

    def chat_prompt(
        self,
        turns: Sequence[ChatTurn],
        tools: Sequence[ToolSpec] = (),
        thinking: bool = True,
        effort: str | None = None,
    ) -> list[int]:
        """The tokens of the conversation rendered with the model's chat template, ready to
        generate; the tools, when there are any, described the way the template or
        layers/tool_prompt asks. Special tokens come from the template only: what clients
        wrote is tokenized as text. `thinking` False: a reasoning model answers at once;
        `effort`: the request's reasoning effort, for a template that reads one."""
        ...

    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Token ids of a prompt, with the model's beginning-of-sequence token if it has one
        (`add_special` False: never); `parse_special`: control tokens written in the text are
        parsed as such (else as plain text)."""
        ...

    def token_bytes(self, token: int) -> bytes:
        """A token's bytes, control tokens spelled out (`<|im_end|>`)."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def infill_prompt(self, prefix: str, suffix: str) -> list[int] | None:
        """A fill-in-the-middle prompt (the text between prefix and suffix), or None when the
        model has no fill-in-the-middle tokens."""
        ...

    def generate(
        self,
        prompt: Sequence[int],
        sampling: Sampling,
        grammar: str | None = None,
        logprobs: int | None = None,
        limit: int | None = None,
    ) -> Iterator[GeneratedToken]:
        """Each generated token, until end of sequence, `limit` tokens, or the caller stops
        iterating (closing the iterator stops the engine's work).

        An engine may start at once, before the first token is asked for: the choices of one
        request are started together and run side by side.

        `grammar` (layers/structured) constrains every token; the generation ends when it is
        complete. `logprobs`: None, or how many alternatives to report with each token's own
        log probability (0 for none).

        Bytes, not text: a multi-byte character may span tokens; the caller decodes.
        """
        ...

    def fewest_tokens(self, grammar: str) -> int | None:
        """The fewest tokens a text of `grammar` takes in this vocabulary (found greedily: a
        bound, layers/closing), 0 when it may be empty, None when none is found (free text)."""
        ...

    def prompt_logprobs(self, prompt: Sequence[int], top: int) -> list[TokenLogprob | None]:
        """Each prompt token's log probability given the tokens before it (None for the
        first, which has nothing before it)."""
        ...
