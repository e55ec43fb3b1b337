"""The ranking interface of cross-encoders (sentence-transformers' CrossEncoder, llama.cpp GGUF
rerankers): how relevant each document is to a query, read by one model over the pair.

An embedding model ranks too, as a bi-encoder: the cosine of the query's vector and each
document's (`cosine_scores`). Cheaper and weaker than a cross-encoder; the default, since the
embedded MiniLM is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from layers.embeddings import EmbeddingModel


class RankingModel(Protocol):
    name: str
    max_tokens: int  # the longest query-and-document pair the model reads, in its tokens

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def pair_tokens(self, query: str, documents: Sequence[str]) -> list[int]:
        """Each pair's token count, as the model reads it (special tokens included)."""
        ...

    def rank(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """One relevance logit per document (float32; higher is more relevant)."""
        ...


def cosine_scores(model: EmbeddingModel, query: str, documents: Sequence[str]) -> np.ndarray:
    """A bi-encoder's relevance: each document's vector against the query's (both normalised:
    their dot product is the cosine, in [-1, 1])."""
    vectors = model.embed([query, *documents])
    return (vectors[1:] @ vectors[0]).astype(np.float32)
