"""llama.cpp embeddings for GGUF models: one pooled, normalised vector per input; and GGUF
rerankers (`pooling: rank`): one relevance logit per query-and-document pair.

A registry entry selects it with `parameters: {embedding: true}` (and `pooling:
mean|cls|last|rank`, mean by default, for models whose file does not say).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common import cancellation
from common.registry import ModelConfig
from layers import EngineOptions
from layers.embedding_batcher import EmbeddingBatcher

POOLING = {"mean": 1, "cls": 2, "last": 3, "rank": 4}  # llama.cpp's enum llama_pooling_type


def load(config: ModelConfig, path: Path, options: EngineOptions) -> Any:
    if config.parameters.get("pooling") == "rank":
        return LlamaCppRankingModel(config, path, options)
    return LlamaCppEmbeddingModel(config, path, options)


def _context(config: ModelConfig, path: Path, options: EngineOptions) -> Any:
    """A llama-cpp-python model in embedding mode, with the entry's pooling and window."""
    from layers.llama_api import bindings

    bindings()  # llama.cpp's process-wide settings, before it computes anything
    import llama_cpp

    n_ctx = int(config.parameters.get("n_ctx", 512))
    return llama_cpp.Llama(
        model_path=str(path),
        embedding=True,
        pooling_type=POOLING[str(config.parameters.get("pooling", "mean"))],
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        n_threads=options.threads,
        n_threads_batch=options.threads,
        verbose=False,
    )


class LlamaCppEmbeddingModel:
    def __init__(self, config: ModelConfig, path: Path, options: EngineOptions) -> None:
        self._llm = _context(config, path, options)
        self.name = config.name
        self.dimensions = self._llm.n_embd()
        self.max_tokens = self._llm.n_ctx()
        self.vocab_size = self._llm.n_vocab()
        self._add_bos = self._llm._model.add_bos_token()
        # One context: one embedding at a time, on the batcher's worker thread. Batches of one
        # text: requests take turns text by text, and a request that must stop (client gone,
        # deadline) withdraws at once, between texts, even while another request is encoding.
        self._batcher = EmbeddingBatcher(
            self._encode, self.dimensions, batch_size=1, name=self.name
        )

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [self._llm.tokenize(t.encode(), add_bos=self._add_bos, special=True) for t in texts]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._llm.detokenize(list(tokens)).decode(errors="replace")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._batcher.embed(texts)

    def close(self) -> None:
        self._batcher.close()  # after the text it is encoding: the context is free
        self._llm.close()

    def _encode(self, texts: list[str]) -> np.ndarray:
        # One text per decode: llama.cpp's batched embedding packs several sequences into one
        # batch, and a vector would then depend (in its last bits) on its neighbours.
        vectors = [self._llm.embed(text, normalize=True) for text in texts]
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dimensions)


class LlamaCppRankingModel:
    """A GGUF reranker (a classifier head over BERT, as bge-reranker converts) behind the
    RankingModel interface. Each pair is laid out as llama.cpp's server lays it: the model's
    `rerank` template if its file has one, else [BOS] query [EOS] [SEP] document [EOS], each
    marker where the vocabulary adds it; its score is the pooled output's first value."""

    def __init__(self, config: ModelConfig, path: Path, options: EngineOptions) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._llm = _context(config, path, options)
        self.name = config.name
        self.max_tokens = self._llm.n_ctx()
        self.vocab_size = self._llm.n_vocab()
        model = self._llm._model.model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        template = llama_cpp.llama_model_chat_template(model, b"rerank")
        self._template = template.decode() if template else None
        self._lock = threading.Lock()  # one context: one pair at a time

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [self._text(t) for t in texts]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._llm.detokenize(list(tokens)).decode(errors="replace")

    def pair_tokens(self, query: str, documents: Sequence[str]) -> list[int]:
        return [len(self._pair(query, document)) for document in documents]

    def rank(self, query: str, documents: Sequence[str]) -> np.ndarray:
        scores = []
        with self._lock:
            for document in documents:
                cancellation.check()  # the client left, or the deadline passed: stop here
                scores.append(self._score(self._pair(query, document)))
        return np.asarray(scores, dtype=np.float32)

    def close(self) -> None:
        with self._lock:
            self._llm.close()

    def _text(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode(), add_bos=False, special=False)

    def _pair(self, query: str, document: str) -> list[int]:
        lib, vocab = self._lib, self._vocab
        if self._template is not None:
            prompt = self._template.replace("{query}", query).replace("{document}", document)
            return self._llm.tokenize(prompt.encode(), add_bos=False, special=True)
        end = lib.llama_vocab_eos(vocab)
        if end == lib.LLAMA_TOKEN_NULL:
            end = lib.llama_vocab_sep(vocab)
        tokens = [lib.llama_vocab_bos(vocab)] if lib.llama_vocab_get_add_bos(vocab) else []
        tokens += self._text(query)
        tokens += [end] if lib.llama_vocab_get_add_eos(vocab) else []
        tokens += [lib.llama_vocab_sep(vocab)] if lib.llama_vocab_get_add_sep(vocab) else []
        tokens += self._text(document)
        tokens += [end] if lib.llama_vocab_get_add_eos(vocab) else []
        return tokens

    def _score(self, tokens: list[int]) -> float:
        llm = self._llm
        llm._batch.reset()
        llm._batch.add_sequence(tokens, 0, True)
        llm._ctx.kv_cache_clear()
        llm._ctx.decode(llm._batch)
        return float(self._lib.llama_get_embeddings_seq(llm._ctx.ctx, 0)[0])
