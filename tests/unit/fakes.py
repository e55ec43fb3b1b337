"""A deterministic fake text engine for handler logic tests (never the only test of a feature)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from common.registry import ModelConfig, RegisteredModel, Registry
from common.store import ModelStore
from common.turns import ChatTurn, TokenLogprob, ToolSpec
from layers.structured import lark_string
from layers.text import GeneratedToken, Sampling
from layers.tool_formats.json_calls import HERMES


class FakeTextModel:
    """Tokens are bytes; generation replays `pieces` (bytes per token) whatever the prompt."""

    name = "fake"
    vocab_size = 256
    fingerprint = "fp_fake"
    max_token_bytes = 1
    reasoning = None
    reasoning_opens = False
    tool_format = HERMES

    def grammar_literal(self, text: str) -> str:
        return lark_string(text)

    def __init__(self, pieces: Sequence[bytes], context_length: int = 64) -> None:
        self.pieces = list(pieces)
        self.context_length = context_length
        self.samplings: list[Sampling] = []
        self.grammars: list[str | None] = []
        self.closed = 0

    def chat_prompt(
        self,
        turns: Sequence[ChatTurn],
        tools: Sequence[ToolSpec] = (),
        thinking: bool = True,
        effort: str | None = None,
    ) -> list[int]:
        described = "".join(f"<tool>{t.name}" for t in tools)
        text = described + "".join(f"<{t.role}>{t.content}" for t in turns) + "<assistant>"
        return self.tokenize(text)

    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        return list(text.encode())  # no special tokens: the switches change nothing

    def token_bytes(self, token: int) -> bytes:
        return bytes([token])

    def detokenize(self, tokens: Sequence[int]) -> str:
        return bytes(tokens).decode(errors="replace")

    def infill_prompt(self, prefix: str, suffix: str) -> list[int] | None:
        return None

    def generate(
        self,
        prompt: Sequence[int],
        sampling: Sampling,
        grammar: str | None = None,
        logprobs: int | None = None,
        limit: int | None = None,
    ) -> Iterator[GeneratedToken]:
        """Replays `pieces` (at most `limit`); with logprobs each token has log probability -1
        and one alternative (its next byte value)."""
        self.samplings.append(sampling)
        self.grammars.append(grammar)
        try:
            for piece in self.pieces[:limit]:
                scored = None
                if logprobs is not None:
                    top = ((piece, -1.0), (b"?", -2.0))[:logprobs]
                    scored = TokenLogprob(piece, -1.0, top)
                yield GeneratedToken(piece, scored)
        finally:
            self.closed += 1

    def prompt_logprobs(self, prompt: Sequence[int], top: int) -> list[TokenLogprob | None]:
        return [None] + [TokenLogprob(bytes([t]), -0.5) for t in prompt[1:]]


def fake_store(model: FakeTextModel, **config: object) -> ModelStore:
    entry = ModelConfig(
        name="fake", backend="llama-cpp", source="/fake", aliases=("gpt-4",), **config
    )
    registry = Registry([RegisteredModel(entry, user_configured=False)])
    return ModelStore(registry, loader=lambda config, path: model, fetch=lambda c: Path("/fake"))


def run_job(worker: Any, job: dict) -> list[Any]:
    """A RunPod worker's outputs for one job, on an event loop of its own."""

    async def outputs() -> list[Any]:
        return [output async for output in worker.handle(job)]

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(outputs())
    finally:
        loop.close()
