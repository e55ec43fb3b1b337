"""llama.cpp embeddings for GGUF models: one pooled, normalised vector per input.

A registry entry selects it with `parameters: {embedding: true}` (and `pooling: mean|cls|last`,
mean by default, for models whose file does not say).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.registry import ModelConfig
from layers import EngineOptions
from layers.embedding_batcher import EmbeddingBatcher

POOLING = {"mean": 1, "cls": 2, "last": 3}  # llama.cpp's enum llama_pooling_type


class LlamaCppEmbeddingModel:
    def __init__(self, config: ModelConfig, path: Path, options: EngineOptions) -> None:
        from layers.llama_api import bindings

        bindings()  # llama.cpp's process-wide settings, before it computes anything
        import llama_cpp

        pooling = POOLING[str(config.parameters.get("pooling", "mean"))]
        n_ctx = int(config.parameters.get("n_ctx", 512))
        self._llm = llama_cpp.Llama(
            model_path=str(path),
            embedding=True,
            pooling_type=pooling,
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=options.threads,
            n_threads_batch=options.threads,
            verbose=False,
        )
        self.name = config.name
        self.dimensions = self._llm.n_embd()
        self.max_tokens = n_ctx
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
