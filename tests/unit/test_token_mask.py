"""layers/structured.py's TokenMask on a real llguidance matcher, over a small byte-level BPE
vocabulary trained here (no model needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from layers.closing import Endings
from layers.structured import TokenMask, json_schema_grammar


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


# A structure meeting its budget is closed, not cut (layers/closing).
STRING_FIELD = json_schema_grammar(
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}, "x"
)


def closing_mask(vocabulary, grammar: str) -> TokenMask:
    tokenizer, grammar_tokenizer = vocabulary
    return TokenMask(
        grammar_tokenizer, grammar, tokenizer.vocab_size, Endings.of(grammar_tokenizer)
    )


def babble(vocabulary, mask: TokenMask, budget: int, word: str = "x") -> tuple[str, bool]:
    """A model that would write `word` forever: greedy under the mask, with `budget` tokens.
    The text, and whether it ended before the budget (the grammar complete, or end of text)."""
    tokenizer, _ = vocabulary
    wanted, eos = token(tokenizer, word), tokenizer.eos_token_id
    out: list[int] = []
    while len(out) < budget:
        logits = np.zeros(tokenizer.vocab_size, dtype=np.float32)
        logits[wanted] = 1.0
        mask.apply(logits, budget - len(out))
        choice = int(np.argmax(logits))
        assert mask.accept(choice)
        if choice == eos:
            return tokenizer.decode(out), True
        out.append(choice)
        if mask.complete:
            return tokenizer.decode(out), True
    return tokenizer.decode(out), False


@pytest.mark.parametrize("budget, value", [(10, ""), (16, "x"), (40, "x"), (200, "x")])
def test_a_string_that_would_never_end_is_closed_within_the_budget(vocabulary, budget, value):
    """(With 10 tokens the shortest object needs them all from the start: its string stays
    empty.)"""
    mask = closing_mask(vocabulary, STRING_FIELD)
    text, ended = babble(vocabulary, mask, budget)
    assert ended, text  # before the budget: a finished answer, not one cut at max_tokens
    assert json.loads(text)["a"].startswith(value)
    assert json.loads(text)["a"] != "" or not value


def test_without_its_closing_tokens_a_mask_lets_the_budget_cut_the_structure(vocabulary):
    tokenizer, grammar_tokenizer = vocabulary
    mask = TokenMask(grammar_tokenizer, STRING_FIELD, tokenizer.vocab_size)
    text, ended = babble(vocabulary, mask, 16)
    assert not ended and text.startswith('{"a": "x')


def test_free_text_is_never_closed(vocabulary):
    mask = closing_mask(vocabulary, 'start: "T: " /[a-z ]*/ "." | %json {"type": "object"}\n')
    text, ended = babble(vocabulary, mask, 12)
    assert not ended and text.startswith("T: x")


def test_nothing_new_begins_after_a_finished_structure_near_the_budget(vocabulary):
    tokenizer, _ = vocabulary
    mask = closing_mask(vocabulary, 'start: ("x" | "b")+\n')
    assert {token(tokenizer, "x"), token(tokenizer, "b")} <= allowed(mask, tokenizer.vocab_size)
    assert mask.accept(token(tokenizer, "x"))
    logits = np.zeros(tokenizer.vocab_size, dtype=np.float32)
    mask.apply(logits, 8)
    assert set(np.flatnonzero(np.isfinite(logits)).tolist()) == {tokenizer.eos_token_id}
    far = np.zeros(tokenizer.vocab_size, dtype=np.float32)
    mask.apply(far, 200)  # far from the budget: the model chooses
    assert token(tokenizer, "b") in set(np.flatnonzero(np.isfinite(far)).tolist())
