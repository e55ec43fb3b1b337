"""POST /v1/embeddings: one normalised vector per input, in input order, as floats or base64."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from common import metering
from common.errors import InvalidRequest
from common.protocol.embeddings import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage
from common.store import ModelStore
from handlers.capabilities import require
from layers.embeddings import EmbeddingModel

MAX_INPUTS = 2048  # OpenAI's limit per request


def create_embeddings(request: EmbeddingRequest, store: ModelStore) -> EmbeddingList:
    with store.use(request.model) as loaded:
        model = embedding_model(loaded, request.model)
        if request.dimensions is not None and request.dimensions > model.dimensions:
            raise InvalidRequest(
                f"This model has {model.dimensions} dimensions; 'dimensions' may not be more.",
                param="dimensions",
            )
        texts, token_counts = _inputs(request.input, model)
        vectors = model.embed(texts)
    if request.dimensions is not None and request.dimensions < model.dimensions:
        vectors = vectors[:, : request.dimensions]
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    data = [
        Embedding.model_construct(object="embedding", embedding=_encode(v, request), index=i)
        for i, v in enumerate(vectors)
    ]
    tokens = sum(token_counts)
    metering.count("prompt_tokens", tokens)
    metering.count("inputs", len(texts))
    usage = EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    return EmbeddingList(data=data, model=request.model, usage=usage)


def embedding_model(model: Any, model_id: str) -> EmbeddingModel:
    return require(model, "embed", model_id, "create embeddings")


def _inputs(raw: Any, model: EmbeddingModel) -> tuple[list[str], list[int]]:
    """Texts and their token counts; every input checked, and a bad one named."""
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif raw and all(isinstance(t, int) for t in raw):
        items = [raw]  # one input given as token ids
    else:
        items = list(raw)
    if len(items) > MAX_INPUTS:
        raise InvalidRequest(
            f"'input' has {len(items)} items; at most {MAX_INPUTS} are allowed.", param="input"
        )
    texts: list[str] = []
    for i, item in enumerate(items):
        where = "input" if len(items) == 1 else f"input[{i}]"
        if isinstance(item, str):
            if not item:
                raise InvalidRequest(f"'{where}' is an empty string.", param=where)
            texts.append(item)
            continue
        if not item:
            raise InvalidRequest(f"'{where}' is an empty list of tokens.", param=where)
        bad = next((t for t in item if not 0 <= t < model.vocab_size), None)
        if bad is not None:
            raise InvalidRequest(
                f"'{where}' holds token id {bad}, outside this model's vocabulary "
                f"(0 to {model.vocab_size - 1}).",
                param=where,
            )
        text = model.detokenize(item)
        if not text:  # special tokens only: nothing an engine can embed
            raise InvalidRequest(
                f"'{where}' holds only special tokens, which carry no text to embed.", param=where
            )
        texts.append(text)
    counts = [len(tokens) for tokens in model.tokenize(texts)]
    for i, count in enumerate(counts):
        if count > model.max_tokens:
            where = "input" if len(items) == 1 else f"input[{i}]"
            raise InvalidRequest(
                f"'{where}' has {count} tokens; this model reads at most {model.max_tokens}.",
                param=where,
                code="context_length_exceeded",
            )
    return texts, counts


def _encode(vector: np.ndarray, request: EmbeddingRequest) -> list[float] | str:
    if request.encoding_format == "base64":
        # What OpenAI sends and its SDK decodes: little-endian float32, base64.
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
