"""sentence-transformers behind the EmbeddingModel interface (CPU, or CUDA when there is one)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common import cancellation
from common.registry import ModelConfig
from layers import EngineOptions

BATCH_SIZE = 32


def load(config: ModelConfig, path: Path, options: EngineOptions) -> SentenceTransformerModel:
    return SentenceTransformerModel(config, path, options)


class SentenceTransformerModel:
    def __init__(self, config: ModelConfig, path: Path, options: EngineOptions) -> None:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # no "Loading weights" bars in server logs

        torch.set_num_threads(options.threads)
        device = config.parameters.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self._model.eval()
        self._torch = torch
        self.name = config.name
        dimension = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self.dimensions = int(dimension())
        self.max_tokens = int(config.parameters.get("max_tokens", self._model.max_seq_length))
        self._tokenizer = self._model.tokenizer
        self.vocab_size = int(self._tokenizer.vocab_size)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self._tokenizer(list(texts), add_special_tokens=True)["input_ids"]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._tokenizer.decode(list(tokens), skip_special_tokens=True)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One batch at a time, texts of similar length together (as sentence-transformers
        orders them itself): a request whose client left, or whose deadline passed, stops
        within one batch (2048 long inputs take minutes on a CPU)."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        with self._torch.inference_mode():
            for start in range(0, len(order), BATCH_SIZE):
                cancellation.check()
                batch = order[start : start + BATCH_SIZE]
                vectors[batch] = self._model.encode(
                    [texts[i] for i in batch],
                    batch_size=BATCH_SIZE,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
        return vectors
