"""Rerank on a live server: the embedded MiniLM as a bi-encoder by default, a real
sentence-transformers CrossEncoder and a llama.cpp GGUF reranker (one tiny random
cross-encoder, converted by llama.cpp's converter: tests/rerank_models.py), in Jina's / vLLM's,
infinity's and Cohere's shapes, and every bad input."""

from __future__ import annotations

import math

import pytest

from tests.conftest import VOCAB_MISSING
from tests.rerank_models import build_rerankers, reference_logits

QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Bananas are yellow and grow in bunches.",
    "Paris is the capital and largest city of France.",
    {"text": "The Eiffel Tower stands in Paris, France."},
    "Photosynthesis turns light into chemical energy.",
]
needs_rerankers = pytest.mark.skipif(VOCAB_MISSING is not None, reason=str(VOCAB_MISSING))


def test_the_embedded_minilm_ranks_by_cosine_by_default(http):
    body = {"query": QUERY, "documents": DOCUMENTS, "top_n": 2}
    answer = http.post("/v1/rerank", json=body)
    assert answer.status_code == 200, answer.text
    ranked = answer.json()
    assert ranked["model"] == "all-minilm-l6-v2 (bi-encoder, cosine)"
    assert [r["index"] for r in ranked["results"]] == [1, 2]  # Paris first, then the tower
    assert ranked["results"][0]["document"] == {"text": DOCUMENTS[1]}
    assert ranked["results"][0]["relevance_score"] > ranked["results"][1]["relevance_score"]
    assert -1 <= ranked["results"][1]["relevance_score"] <= 1
    assert ranked["usage"]["total_tokens"] == ranked["usage"]["prompt_tokens"] > 0
    # infinity's clients read `data` (documents only when asked), Cohere v2's its own shape
    assert [d["index"] for d in ranked["data"]] == [1, 2] and ranked["data"][0]["document"] is None
    assert ranked["object"] == "rerank" and ranked["id"].startswith("rerank-")
    bare = http.post("/rerank", json={**body, "return_documents": False}).json()
    assert bare["results"][0].get("document") is None
    asked = http.post("/rerank", json={**body, "return_documents": True}).json()
    assert asked["data"][0]["document"] == DOCUMENTS[1]
    cohere = http.post("/v2/rerank", json={**body, "model": "all-minilm-l6-v2"}).json()
    assert set(cohere) == {"id", "results", "meta"}
    assert [r["index"] for r in cohere["results"]] == [1, 2]
    assert set(cohere["results"][0]) == {"index", "relevance_score"}
    assert cohere["meta"]["billed_units"] == {"search_units": 1}


@needs_rerankers
@pytest.mark.parametrize("model", ["tiny-cross-encoder", "tiny-gguf-reranker"])
def test_a_cross_encoder_scores_each_pair_with_a_sigmoid_or_raw(http, model):
    body = {"model": model, "query": QUERY, "documents": DOCUMENTS}
    ranked = http.post("/v1/rerank", json=body).json()
    assert ranked["model"] == model
    scores = {r["index"]: r["relevance_score"] for r in ranked["results"]}
    assert sorted(scores) == [0, 1, 2, 3] and all(0 < s < 1 for s in scores.values())
    listed = [r["relevance_score"] for r in ranked["results"]]
    assert listed == sorted(listed, reverse=True)
    raw = http.post("/rerank", json={**body, "raw_scores": True}).json()["results"]
    for result in raw:
        assert scores[result["index"]] == pytest.approx(
            1 / (1 + math.exp(-result["relevance_score"]))
        )


@needs_rerankers
def test_the_gguf_reranker_reads_pairs_as_llama_cpps_server_does(http):
    """Its logits are the classifier's over [CLS] of [CLS] query [SEP] document [SEP], computed
    again in PyTorch from the same weights."""
    body = {
        "model": "tiny-gguf-reranker",
        "query": QUERY,
        "documents": DOCUMENTS,
        "raw_scores": True,
    }
    ranked = http.post("/rerank", json=body).json()["results"]
    from transformers import AutoTokenizer

    checkpoint = build_rerankers() / "hf"
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    texts = [d if isinstance(d, str) else d["text"] for d in DOCUMENTS]
    pairs = [tokenizer(QUERY, text)["input_ids"] for text in texts]
    expected = reference_logits(checkpoint, pairs)
    for result in ranked:
        assert result["relevance_score"] == pytest.approx(expected[result["index"]], abs=1e-4)


@needs_rerankers
def test_long_documents_are_refused_or_cut_as_asked(http):
    long = "word " * 400
    body = {"model": "tiny-gguf-reranker", "query": QUERY, "documents": ["short", long]}
    refused = http.post("/v1/rerank", json=body)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "documents[1]"
    cut = http.post("/v2/rerank", json={**body, "max_tokens_per_doc": 32})
    assert cut.status_code == 200 and len(cut.json()["results"]) == 2


@pytest.mark.parametrize(
    "body, param",
    [
        ({"query": QUERY, "documents": []}, "documents"),
        ({"query": "", "documents": ["a"]}, "query"),
        ({"documents": ["a"]}, "query"),
        ({"query": QUERY, "documents": ["a"] * 10_000}, "documents"),
        ({"query": QUERY, "documents": ["a"], "top_n": 0}, "top_n"),
        ({"query": QUERY, "documents": [{"txt": "a"}]}, "documents[0]"),
        ({"query": QUERY, "documents": ["a"], "model": "gpt-4"}, "model"),
        ({"query": "word " * 600, "documents": ["a"]}, "query"),
    ],
)
def test_bad_rerank_requests_are_400s_naming_the_field(http, body, param):
    answer = http.post("/v1/rerank", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"].startswith(param), answer.json()


def test_an_unknown_model_is_a_404_and_cohere_v2_refuses_return_documents(http):
    missing = http.post("/v1/rerank", json={"model": "nope", "query": "q", "documents": ["a"]})
    assert missing.status_code == 404
    body = {"query": QUERY, "documents": ["a"], "return_documents": True}
    refused = http.post("/v2/rerank", json=body)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "return_documents"
