"""sentence-transformers behind the EmbeddingModel interface (CPU, or CUDA when there is one)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common import cancellation
from common.registry import ModelConfig
from layers import EngineOptions
from layers.embedding_batcher import EmbeddingBatcher

BATCH_SIZE = 32
BATCH_WAIT_MS = 2.0  # under concurrent traffic, how long a batch waits to fill (see the batcher)


def load(
    config: ModelConfig, path: Path, options: EngineOptions
) -> SentenceTransformerModel | CrossEncoderModel:
    if config.parameters.get("reranker"):
        return CrossEncoderModel(config, path, options)
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
        # Request threads count tokens while the batcher's worker encodes. A fast tokenizer
        # keeps its padding and truncation settings in shared state that each call resets, so
        # a count (no padding) racing an encode (padding) breaks the batch: its own copy.
        self._tokenizer = copy.deepcopy(self._model.tokenizer)
        self.vocab_size = int(self._tokenizer.vocab_size)
        wait_ms = float(config.parameters.get("batch_wait_ms", BATCH_WAIT_MS))
        self._batcher = EmbeddingBatcher(
            self._encode,
            self.dimensions,
            batch_size=BATCH_SIZE,
            max_wait=wait_ms / 1000,
            name=config.name,
        )

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self._tokenizer(list(texts), add_special_tokens=True)["input_ids"]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._tokenizer.decode(list(tokens), skip_special_tokens=True)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Concurrent requests share batches of up to 32 texts, longest first within each
        request (as sentence-transformers orders them itself); a request whose client left, or
        whose deadline passed, stops waiting at once and withdraws its texts not yet started."""
        return self._batcher.embed(texts)

    def close(self) -> None:
        self._batcher.close()

    def _encode(self, texts: list[str]) -> np.ndarray:
        # On the batcher's one worker thread; inference mode is per thread, so it is set here.
        with self._torch.inference_mode():
            return self._model.encode(
                texts,
                batch_size=BATCH_SIZE,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )


class CrossEncoderModel:
    """A sentence-transformers CrossEncoder (a registry entry with `reranker: true`) behind the
    RankingModel interface: the query and each document read together, one logit per pair."""

    def __init__(self, config: ModelConfig, path: Path, options: EngineOptions) -> None:
        import torch
        from sentence_transformers import CrossEncoder
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        torch.set_num_threads(options.threads)
        device = config.parameters.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model = CrossEncoder(str(path), device=device, local_files_only=True)
        self._torch = torch
        self._lock = threading.Lock()  # one ranking at a time: torch's threads are the cores
        self.name = config.name
        self.max_tokens = int(config.parameters.get("max_tokens", self._model.max_length or 512))
        self._tokenizer = copy.deepcopy(self._model.tokenizer)  # counts race encodes otherwise

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self._tokenizer(list(texts), add_special_tokens=True)["input_ids"]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._tokenizer.decode(list(tokens), skip_special_tokens=True)

    def pair_tokens(self, query: str, documents: Sequence[str]) -> list[int]:
        pairs = self._tokenizer([query] * len(documents), list(documents))["input_ids"]
        return [len(ids) for ids in pairs]

    def rank(self, query: str, documents: Sequence[str]) -> np.ndarray:
        scores: list[np.ndarray] = []
        with self._lock, self._torch.inference_mode():
            for start in range(0, len(documents), BATCH_SIZE):
                cancellation.check()  # the client left, or the deadline passed: stop here
                batch = documents[start : start + BATCH_SIZE]
                logits = self._model.predict(
                    [(query, document) for document in batch],
                    batch_size=BATCH_SIZE,
                    activation_fn=self._torch.nn.Identity(),  # the handler applies sigmoid
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                scores.append(np.asarray(logits, dtype=np.float32).reshape(len(batch)))
        return np.concatenate(scores)
