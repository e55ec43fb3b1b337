"""The embedding interface every embedding engine implements (sentence-transformers, llama.cpp)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class EmbeddingModel(Protocol):
    name: str
    dimensions: int
    max_tokens: int  # the longest input the model reads, in its own tokens
    vocab_size: int

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids, as the model counts them (special tokens included)."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 vector per text, shape (len(texts), dimensions).

        A text's vector must not depend on the texts it is batched with.
        """
        ...
