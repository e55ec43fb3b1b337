"""A prompt with images in it: the tokens an engine evaluates, where some runs are images.

An image is not tokens but embeddings that the model's projector computes; in the prompt it
takes as many places as it has embeddings (what the model sees, and what `usage` counts), each
holding a placeholder: a negative id, from the image's digest and its place in the image. So two
prompts compare equal, place by place, only where they hold the same text and the same images,
and the prefix cache (layers/prefix_cache) can never reuse one image's cells for another.

Some models place an image's embeddings at fewer positions than it has embeddings (Qwen2-VL's
M-RoPE: a grid counts as its largest side); `position` maps a place to its position then.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

_PLACEHOLDERS = 1 << 62


@dataclass(frozen=True)
class MediaSpan:
    """An image's run of places in a prompt: [start, start + length), at `positions` positions."""

    start: int
    length: int
    positions: int
    chunk: Any = None  # the engine's handles (llama.cpp: mtmd chunks); None in a cache's copy

    @property
    def end(self) -> int:
        return self.start + self.length


def placeholders(key: str, length: int) -> list[int]:
    """The ids an image (identified by `key`: its digest and which part of it) holds its places
    with: negative, so never a token, and different for different images."""
    first = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % _PLACEHOLDERS
    return [-1 - (first + i) % _PLACEHOLDERS for i in range(length)]


class Prompt(list):
    """A prompt's places (token ids, and images' placeholders) with its images' spans."""

    spans: tuple[MediaSpan, ...]
    owner: Any  # keeps the engine's chunks alive while the prompt may be evaluated

    def __init__(
        self, places: Iterable[int], spans: Sequence[MediaSpan] = (), owner: Any = None
    ) -> None:
        super().__init__(places)
        self.spans = tuple(spans)
        self.owner = owner

    def span_at(self, start: int) -> MediaSpan | None:
        for span in self.spans:
            if span.start == start:
                return span
        return None

    def position(self, index: int) -> int:
        """The position of the place `index` (or of a token generated there)."""
        shift = 0
        for span in self.spans:
            if span.end > index:
                break
            shift += span.length - span.positions
        return index - shift

    def detached(self) -> Prompt:
        """The same places and spans without the engine's chunks: what a cache keeps."""
        spans = [MediaSpan(s.start, s.length, s.positions) for s in self.spans]
        return Prompt(self, spans)


def spans_of(tokens: Sequence[int]) -> tuple[MediaSpan, ...]:
    return tokens.spans if isinstance(tokens, Prompt) else ()


def position(tokens: Sequence[int], index: int) -> int:
    return tokens.position(index) if isinstance(tokens, Prompt) and tokens.spans else index
