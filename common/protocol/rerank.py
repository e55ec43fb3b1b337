"""POST /rerank, /v1/rerank (Jina's, vLLM's and llama.cpp's server's shape; infinity's and
Cohere v1's read from the same answer) and POST /v2/rerank (Cohere v2's)."""

from __future__ import annotations

from typing import Literal

from common.protocol.base import OpenAIRequest, OpenAIResponse, extension

DEFAULT_RERANK_MODEL = "all-minilm-l6-v2"


class RerankDocumentParam(OpenAIRequest):
    """A document as an object (Jina's, Cohere v1's): its text."""

    text: str = extension(...)


class RerankRequest(OpenAIRequest):
    """Not OpenAI's API: every field is an extension."""

    model: str = extension(DEFAULT_RERANK_MODEL, min_length=1)
    query: str = extension(..., min_length=1)
    documents: list[str | RerankDocumentParam] = extension(..., min_length=1)
    top_n: int | None = extension(None, ge=1)
    # Jina and vLLM give each result its document by default; infinity and Cohere do not.
    return_documents: bool | None = extension()
    raw_scores: bool = extension(False)  # infinity's: the cross-encoder's logits, not sigmoids
    max_tokens_per_doc: int | None = extension(None, ge=1)  # Cohere v2's: longer ones are cut


class RerankDocument(OpenAIResponse):
    text: str


class RerankResult(OpenAIResponse):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class InfinityRerankResult(OpenAIResponse):
    relevance_score: float
    index: int
    document: str | None = None


class RerankUsage(OpenAIResponse):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(OpenAIResponse):
    """Jina's and vLLM's answer (`results`), with infinity's fields beside it (`object`,
    `created`, `data`: its clients read those)."""

    id: str
    object: Literal["rerank"] = "rerank"
    created: int
    model: str
    usage: RerankUsage
    results: list[RerankResult]
    data: list[InfinityRerankResult]


class CohereApiVersion(OpenAIResponse):
    version: str = "2"


class CohereBilledUnits(OpenAIResponse):
    search_units: int


class CohereMeta(OpenAIResponse):
    api_version: CohereApiVersion
    billed_units: CohereBilledUnits


class CohereRerankResult(OpenAIResponse):
    index: int
    relevance_score: float


class CohereRerankResponse(OpenAIResponse):
    """Cohere v2's answer."""

    id: str
    results: list[CohereRerankResult]
    meta: CohereMeta
