"""A deterministic fake text engine for handler logic tests (never the only test of a feature)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from common.registry import ModelConfig, RegisteredModel, Registry
from common.store import ModelStore
from layers.text import ChatTurn, Sampling


class FakeTextModel:
    """Tokens are bytes; generation replays `pieces` (bytes per token) whatever the prompt."""

    name = "fake"
    vocab_size = 256

    def __init__(self, pieces: Sequence[bytes], context_length: int = 64) -> None:
        self.pieces = list(pieces)
        self.context_length = context_length
        self.samplings: list[Sampling] = []
        self.closed = 0

    def chat_prompt(self, turns: Sequence[ChatTurn]) -> str:
        return "".join(f"<{t.role}>{t.content}" for t in turns) + "<assistant>"

    def tokenize(self, text: str) -> list[int]:
        return list(text.encode())

    def detokenize(self, tokens: Sequence[int]) -> str:
        return bytes(tokens).decode(errors="replace")

    def generate(self, prompt: Sequence[int], sampling: Sampling) -> Iterator[bytes]:
        self.samplings.append(sampling)
        try:
            yield from self.pieces
        finally:
            self.closed += 1


def fake_store(model: FakeTextModel, **config: object) -> ModelStore:
    entry = ModelConfig(
        name="fake", backend="llama-cpp", source="/fake", aliases=("gpt-4",), **config
    )
    registry = Registry([RegisteredModel(entry, user_configured=False)])
    return ModelStore(registry, loader=lambda config, path: model, fetch=lambda c: Path("/fake"))
