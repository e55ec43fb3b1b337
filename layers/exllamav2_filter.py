"""A grammar (layers/structured.py's llguidance masks) as an exllamav2 filter: the structured
output and tool calls of the exllamav2 engine, from the same grammars as llama.cpp's.

Imported only when a request with a grammar reaches an exllamav2 model (it subclasses the
library's filter, so it needs exllamav2 itself).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from exllamav2.generator.filters import ExLlamaV2Filter

from layers.closing import Endings
from layers.structured import TokenMask


@functools.cache
def llguidance_tokenizer(model_directory: str) -> Any:
    """llguidance's view of a Hugging Face model's vocabulary, from its tokenizer.json (built
    once per model)."""
    import llguidance.hf
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(Path(model_directory) / "tokenizer.json")
    )
    return llguidance.hf.from_tokenizer(tokenizer)


@functools.cache
def closing_tokens(model_directory: str) -> Endings:
    return Endings.of(llguidance_tokenizer(model_directory))


class GrammarFilter(ExLlamaV2Filter):
    """Allows, at each step, the tokens the grammar allows; ends the job when it is complete."""

    def __init__(
        self, model: Any, tokenizer: Any, mask: TokenMask, vocab_size: int, limit: int | None
    ) -> None:
        super().__init__(model, tokenizer)
        self._mask = mask
        self._vocab_size = vocab_size
        self._left = limit  # tokens the job may still generate (layers/closing)

    def clone(self, c: Any = None) -> GrammarFilter:
        """A twin at the same point of the grammar with its own state, so that the two never
        advance each other (exllamav2 0.3.2's dynamic generator does not clone filters; its
        other generators and later versions may)."""
        twin = super().clone(c if c is not None else GrammarFilter.__new__(GrammarFilter))
        twin._mask = self._mask.copy()
        twin._vocab_size = self._vocab_size
        twin._left = self._left
        twin.background_result = None  # a pending next() belongs to the original
        return twin

    def begin(self, prefix_str: str) -> None:
        pass  # a new job starts at the grammar's start

    def feed(self, token: Any) -> None:
        self._mask.accept(int(token))
        if self._left is not None:
            self._left -= 1

    def next(self) -> tuple[set[int], set[int]]:
        import numpy as np

        if self._mask.complete:
            eos = self.tokenizer.eos_token_id
            return {eos}, {eos}
        logits = np.zeros(self._vocab_size, dtype=np.float32)
        self._mask.apply(logits, self._left)
        allowed = set(np.flatnonzero(np.isfinite(logits)).tolist())
        return allowed, set()

    def use_background_worker(self) -> bool:
        return True  # a grammar step is CPU work: overlapped with the GPU's forward pass


def token_mask(model: Any, grammar: str, vocab_size: int) -> TokenMask:
    directory = model.config.model_dir
    return TokenMask(
        llguidance_tokenizer(directory), grammar, vocab_size, closing_tokens(directory)
    )


def grammar_filter(
    model: Any, tokenizer: Any, grammar: str, vocab_size: int, limit: int | None
) -> GrammarFilter:
    return GrammarFilter(
        model, tokenizer, token_mask(model, grammar, vocab_size), vocab_size, limit
    )
