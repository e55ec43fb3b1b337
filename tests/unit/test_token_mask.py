"""layers/structured.py's TokenMask on a real llguidance matcher, over a small byte-level BPE
vocabulary trained here (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from layers.structured import TokenMask


@pytest.fixture(scope="module")
def vocabulary():
    import llguidance.hf
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(['{"a": 1, "b": true}'] * 10, vocab_size=300, special_tokens=["</s>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="</s>")
    return tokenizer, llguidance.hf.from_tokenizer(tokenizer)


def token(tokenizer, text: str) -> int:
    (only,) = tokenizer.encode(text, add_special_tokens=False)
    return only


def allowed(mask: TokenMask, size: int) -> set[int]:
    logits = np.zeros(size, dtype=np.float32)
    mask.apply(logits)
    return set(np.flatnonzero(np.isfinite(logits)).tolist())


def test_a_copy_goes_on_from_the_same_point_with_its_own_state(vocabulary):
    tokenizer, grammar_tokenizer = vocabulary
    size = tokenizer.vocab_size
    x, y, z = (token(tokenizer, c) for c in "xyz")
    mask = TokenMask(grammar_tokenizer, 'start: "xy" | "xz"', size)
    assert mask.accept(x)
    twin = mask.copy()

    assert mask.accept(y) and mask.complete
    assert not twin.complete  # the original's step did not advance the copy
    assert {y, z} <= allowed(twin, size) and x not in allowed(twin, size)
    assert twin.accept(z) and twin.complete
    assert not mask.accept(z)  # nor the copy's step the original
