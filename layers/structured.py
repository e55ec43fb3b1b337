"""Structured output: JSON schemas (response_format, tools) as grammars every token must obey.

One module for every text engine. A constraint is a grammar in llguidance's Lark dialect, with
JSON schemas inlined (`%json {...}`). At each step llguidance computes the set of tokens that
keep the output a valid prefix (a bitmask over the vocabulary, in microseconds: it walks a
token trie with a lazily built lexer automaton); the engine sets every other token's logit to
-inf before its own sampler runs, so whatever the model, the output parses. Measured against
llama.cpp's own GBNF sampler in docs/PERFORMANCE.md.

Grammars are built and validated here without a tokenizer, so a schema construct that cannot
be enforced is refused before any model is loaded; the engine turns a grammar into a
`TokenMask` with its own tokenizer.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from common.errors import InvalidRequest
from layers.closing import LONGEST_END, Endings, closing_token, shortest_ending

# How generated JSON is laid out: Python's json.dumps style, no free whitespace. Free whitespace
# lets a small model pad forever with newlines; a fixed layout also makes streamed tool-call
# arguments predictable.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def json_schema_grammar(schema: Mapping[str, Any], param: str) -> str:
    """The grammar of one JSON value that validates against `schema` (checked: a 400 naming
    `param` if it cannot be enforced)."""
    grammar = f"start: {inline_json(schema)}\n"
    check_grammar(grammar, param)
    return grammar


def inline_json(schema: Mapping[str, Any]) -> str:
    """`%json {...}` for a Lark rule, with Stratus's JSON layout and its objects closed."""
    laid_out = dict(closed_objects(schema))
    laid_out["x-guidance"] = {**JSON_LAYOUT, **dict(schema.get("x-guidance") or {})}
    return "%json " + json.dumps(laid_out, ensure_ascii=False)


# Keywords whose value is a schema, a list of schemas, or a mapping of names to schemas.
_SUBSCHEMA = ("additionalProperties", "items", "not", "contains", "if", "then", "else")
_SUBSCHEMA_LISTS = ("prefixItems", "anyOf", "oneOf")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")


def closed_objects(schema: Any) -> Any:
    """`schema` with every object that lists its `properties` and says nothing of others
    allowing no others, as llama.cpp's schema converter and vLLM's strict xgrammar read it
    (JSON Schema's own default is open: `"additionalProperties": true` keeps that). Open
    objects let a small model add invented keys to a tool call until its budget ran out.
    The branches of an `allOf` stay as written: closing each would refuse the others' keys."""
    if not isinstance(schema, Mapping):
        return schema
    out = dict(schema)
    if (
        "properties" in out
        and "additionalProperties" not in out
        and "patternProperties" not in out
        and "unevaluatedProperties" not in out
        and "allOf" not in out
    ):
        out["additionalProperties"] = False
    for key in _SUBSCHEMA:
        if key in out:
            out[key] = closed_objects(out[key])
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [closed_objects(s) for s in out[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), Mapping):
            out[key] = {name: closed_objects(s) for name, s in out[key].items()}
    return out


def lark_string(text: str) -> str:
    """A Lark string literal matching exactly `text`."""
    return json.dumps(text, ensure_ascii=False)


def regex_escape(text: str) -> str:
    """`text` as a Lark regex (between slashes) that matches exactly it."""
    out = []
    for char in text:
        if char in "\\/.^$*+?()[]{}|-":
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        else:
            out.append(char)
    return "".join(out)


def check_schema(schema: Any, param: str) -> None:
    """A JSON schema llguidance can enforce completely, or a 400 naming what it cannot."""
    if not isinstance(schema, Mapping):
        raise InvalidRequest("A JSON schema must be a JSON object.", param=param)
    check_grammar(f"start: {inline_json(schema)}\n", param)


def check_grammar(grammar: str, param: str) -> None:
    from llguidance import LLMatcher

    is_error, messages = LLMatcher.validate_grammar_with_warnings(
        LLMatcher.grammar_from_lark(grammar)
    )
    if is_error:
        raise InvalidRequest(
            f"The JSON schema cannot be enforced: {_schema_error(messages[0])}", param=param
        )


def _schema_error(message: str) -> str:
    """llguidance's message without its position and grammar excerpt: what the client wrote
    that cannot be enforced (keywords, formats, regex features)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    first = re.sub(r"^at \d+\(\d+\): ", "", lines[0] if lines else "invalid schema")
    first = first.removeprefix("failed to compile JSON schema: ")
    if first.startswith("Unimplemented keys:"):
        return f"these keywords are not supported: {first.split(':', 1)[1].strip()}."
    details = [line.removeprefix("error: ") for line in lines[1:] if line.startswith("error:")]
    return first.rstrip(":") + (f": {details[0]}" if details else "")


class TokenMask:
    """One generation's grammar state: which tokens may come next, and what came."""

    def __init__(
        self, tokenizer: Any, grammar: str, vocab_size: int, endings: Endings | None = None
    ) -> None:
        import numpy as np
        from llguidance import LLMatcher

        self._np = np
        self._matcher = LLMatcher(tokenizer, LLMatcher.grammar_from_lark(grammar), log_level=0)
        if self._matcher.is_error():
            raise InvalidRequest(f"The grammar cannot be used: {self._matcher.get_error()}")
        self._vocab_size = vocab_size
        self._words = np.zeros((tokenizer.vocab_size + 31) // 32, dtype=np.int32)
        self._endings = endings  # None: a budget cuts the structure where it stands

    def apply(self, logits: Any, left: int | None = None) -> None:
        """Sets the logit of every token the grammar forbids next to -inf, in place; with
        `left` tokens of a budget left, only the token that closes the structure in time when
        one must (layers/closing)."""
        np = self._np
        words = self._words
        self._matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
        if left is not None and self._endings is not None:
            token = closing_token(self._matcher, words, self._mask_of, self._endings, left)
            if token is not None:
                words[:] = 0
                words.view(np.uint32)[token >> 5] = 1 << (token & 31)
        allowed = np.unpackbits(words.view(np.uint8), bitorder="little")[: self._vocab_size]
        logits[: allowed.size][allowed == 0] = -np.inf

    def fewest_to_end(self) -> int | None:
        """The fewest tokens that finish the grammar from here (layers/closing), 0 if it may end
        now; None when none is found (free text), or when the vocabulary's closing tokens were
        not given."""
        if self._endings is None:
            return None
        words = self._mask_of(self._matcher)
        plan = shortest_ending(self._matcher, words, self._mask_of, self._endings, LONGEST_END)
        return None if plan is None else len(plan)

    def _mask_of(self, matcher: Any) -> Any:
        words = self._np.zeros_like(self._words)
        matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
        return words

    def accept(self, token: int) -> bool:
        """Advances over a sampled token; False if the grammar did not allow it."""
        return self._matcher.consume_token(token) and not self._matcher.is_error()

    def allows(self, tokens: list[int]) -> int:
        """How many of `tokens`, in order from here, the grammar allows (none is accepted)."""
        return self._matcher.validate_tokens(tokens)

    def forced(self) -> list[int]:
        """The tokens the grammar forces next (a key, a closing bracket...), already accepted;
        the engine evaluates them in one batch instead of sampling each."""
        tokens = self._matcher.compute_ff_tokens()
        if tokens and not self._matcher.consume_tokens(tokens):
            return []
        return tokens

    def copy(self) -> TokenMask:
        """An independent state at the same point of the grammar: what either accepts from here
        on, the other does not see."""
        twin = copy.copy(self)
        twin._matcher = self._matcher.deep_copy()
        twin._words = self._np.zeros_like(self._words)
        return twin

    @property
    def complete(self) -> bool:
        """Nothing more may follow: the engine should stop here."""
        return self._matcher.is_stopped()
