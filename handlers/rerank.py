"""POST /rerank and /v1/rerank (Jina's and vLLM's shape, infinity's beside it) and POST
/v2/rerank (Cohere's): the documents ordered by their relevance to the query.

A cross-encoder (layers/rerank) reads the query with each document; its logit becomes a score
in (0, 1) by the sigmoid, as vLLM, infinity and Cohere report them (infinity's `raw_scores`
keeps the logit). An embedding model ranks as a bi-encoder: each score is the cosine of the
document's vector and the query's, in [-1, 1], and the answer's `model` says so.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import numpy as np

from common import metering
from common.errors import InvalidRequest
from common.protocol.base import new_id
from common.protocol.rerank import (
    CohereApiVersion,
    CohereBilledUnits,
    CohereMeta,
    CohereRerankResponse,
    CohereRerankResult,
    InfinityRerankResult,
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
)
from common.store import ModelStore
from layers.rerank import cosine_scores

MAX_DOCUMENTS = 1000  # Cohere's limit per request
BI_ENCODER = " (bi-encoder, cosine)"  # after the model's id, when it ranks by embeddings
SEARCH_UNIT = 100  # documents per Cohere search unit


def rerank(request: RerankRequest, store: ModelStore) -> RerankResponse:
    ranked, tokens, model = _ranked(request, store)
    texts = _texts(request)
    keep = request.return_documents is not False  # Jina's and vLLM's default
    results = [
        RerankResult(
            index=i, relevance_score=score, document=RerankDocument(text=texts[i]) if keep else None
        )
        for i, score in ranked
    ]
    # infinity's clients ask for documents when they want them
    data = [
        InfinityRerankResult(
            relevance_score=score, index=i, document=texts[i] if request.return_documents else None
        )
        for i, score in ranked
    ]
    return RerankResponse(
        id=new_id("rerank-"),
        created=int(time.time()),
        model=model,
        usage=RerankUsage(prompt_tokens=tokens, total_tokens=tokens),
        results=results,
        data=data,
    )


def rerank_cohere(request: RerankRequest, store: ModelStore) -> CohereRerankResponse:
    if request.return_documents:
        raise InvalidRequest(
            "Cohere's v2 rerank gives no documents back; use /v1/rerank for 'return_documents'.",
            param="return_documents",
        )
    ranked, _, _ = _ranked(request, store)
    units = math.ceil(len(request.documents) / SEARCH_UNIT)
    return CohereRerankResponse(
        id=str(uuid.uuid4()),
        results=[CohereRerankResult(index=i, relevance_score=score) for i, score in ranked],
        meta=CohereMeta(
            api_version=CohereApiVersion(), billed_units=CohereBilledUnits(search_units=units)
        ),
    )


def _ranked(request: RerankRequest, store: ModelStore) -> tuple[list[tuple[int, float]], int, str]:
    """(document index, score) best first, cut to top_n; the tokens read; the model's name as
    the answer gives it."""
    texts = _texts(request)
    if len(texts) > MAX_DOCUMENTS:
        raise InvalidRequest(
            f"'documents' has {len(texts)} items; at most {MAX_DOCUMENTS} are allowed.",
            param="documents",
        )
    if store.registry.resolve(request.model).writes_text:  # refused before it is loaded
        raise _cannot_rank(request.model)
    with store.use(request.model) as model:
        if request.max_tokens_per_doc is not None:
            texts = _cut(model, texts, request.max_tokens_per_doc)
        if hasattr(model, "rank"):
            tokens = _pair_tokens(model, request.query, texts)
            logits = model.rank(request.query, texts)
            scores = logits if request.raw_scores else 1 / (1 + np.exp(-logits))
            name = request.model
        elif hasattr(model, "embed"):
            tokens = _text_tokens(model, request.query, texts)
            scores = cosine_scores(model, request.query, texts)
            name = request.model + BI_ENCODER
        else:
            raise _cannot_rank(request.model)
    order = sorted(range(len(texts)), key=lambda i: -float(scores[i]))
    metering.count("prompt_tokens", tokens)
    metering.count("documents", len(texts))
    ranked = [(i, float(scores[i])) for i in order[: request.top_n]]
    return ranked, tokens, name


def _cannot_rank(model_id: str) -> InvalidRequest:
    return InvalidRequest(
        f"The model '{model_id}' does not rank documents (a reranker or an embedding model "
        "does); GET /v1/models lists the models served here.",
        param="model",
        code="model_not_supported",
    )


def _texts(request: RerankRequest) -> list[str]:
    return [d if isinstance(d, str) else d.text for d in request.documents]


def _cut(model: Any, texts: list[str], most: int) -> list[str]:
    """Each document cut to `most` of the model's tokens (Cohere's max_tokens_per_doc)."""
    cut = []
    for text, tokens in zip(texts, model.tokenize(texts), strict=True):
        cut.append(text if len(tokens) <= most else model.detokenize(tokens[:most]))
    return cut


def _pair_tokens(model: Any, query: str, texts: list[str]) -> int:
    counts = model.pair_tokens(query, texts)
    for i, count in enumerate(counts):
        if count > model.max_tokens:
            raise InvalidRequest(
                f"The query with 'documents[{i}]' has {count} tokens; this model reads at most "
                f"{model.max_tokens} (a shorter document, or 'max_tokens_per_doc').",
                param=f"documents[{i}]",
                code="context_length_exceeded",
            )
    return sum(counts)


def _text_tokens(model: Any, query: str, texts: list[str]) -> int:
    counts = [len(tokens) for tokens in model.tokenize([query, *texts])]
    for i, count in enumerate(counts):
        if count > model.max_tokens:
            where = "query" if i == 0 else f"documents[{i - 1}]"
            raise InvalidRequest(
                f"'{where}' has {count} tokens; this model reads at most {model.max_tokens}.",
                param=where,
                code="context_length_exceeded",
            )
    return sum(counts)
