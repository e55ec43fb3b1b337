"""Whether a grammar accepts a text, checked by a real llguidance matcher over a byte-level
vocabulary whose special tokens are a format's markers (as a model's vocabulary has them)."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence


@functools.cache
def _vocabulary(markers: tuple[str, ...]):
    import llguidance.hf
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["x"], vocab_size=260, special_tokens=["</s>", *markers])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="</s>")
    return tokenizer, llguidance.hf.from_tokenizer(tokenizer)


def literal_for(markers: Sequence[str]):
    """The `literal` a model with these special tokens gives a format's grammar."""
    tokenizer, _ = _vocabulary(tuple(markers))

    def literal(text: str) -> str:
        if text in markers:
            return f"<[{tokenizer.convert_tokens_to_ids(text)}]>"
        import json

        return json.dumps(text, ensure_ascii=False)

    return literal


def accepts(grammar: str, text: str, markers: Sequence[str] = ()) -> bool:
    """True if `text` (its markers as special tokens) is a complete answer of `grammar`."""
    from llguidance import LLMatcher

    tokenizer, grammar_tokenizer = _vocabulary(tuple(markers))
    matcher = LLMatcher(grammar_tokenizer, LLMatcher.grammar_from_lark(grammar), log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    pattern = "(" + "|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True)) + ")"
    tokens: list[int] = []
    for part in re.split(pattern, text) if markers else [text]:
        if part in markers:
            tokens.append(tokenizer.convert_tokens_to_ids(part))
        elif part:
            tokens += tokenizer.encode(part, add_special_tokens=False)
    for token in tokens:
        if not matcher.consume_token(token):
            return False
    return matcher.is_accepting()
