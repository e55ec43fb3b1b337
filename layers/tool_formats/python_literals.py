"""Python literals for tool calls written as Python (LFM2's): the grammar of a value that
validates against a JSON schema, where a value ends in text that streams, and a value as JSON.

The grammar writes JSON, which Python reads too (a JSON string is a Python string), except that
booleans and null at the top of a value are Python's `True`, `False` and `None`; inside lists
and objects they stay JSON, as LFM2.5's template renders mappings. The other way round, JSON
and Python words are both read at any depth (as llama.cpp's LFM2 parser reads them).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping
from typing import Any

from layers.structured import inline_json, lark_string

_BOOLEAN = '("True" | "False")'
# A value of any type, its booleans and null in Python's words.
ANY_VALUE = (
    f'({_BOOLEAN} | "None" | {inline_json({"type": ["string", "number", "object", "array"]})})'
)
_ANNOTATIONS = {"description", "title", "default", "examples", "$comment"}
_WORDS = {"True": True, "true": True, "False": False, "false": False, "None": None, "null": None}


def value_grammar(schema: Any, root: Mapping[str, Any], seen: frozenset[str] = frozenset()) -> str:
    """A Lark expression of one value that validates against `schema`: JSON, but booleans and
    null at its top in Python's words. anyOf, oneOf, a type list and local $refs at the top are
    split into alternatives, the rest goes to llguidance's JSON schema (with the root's
    definitions, so nested $refs resolve)."""
    if not isinstance(schema, Mapping):
        return ANY_VALUE
    rest = {k: v for k, v in schema.items() if k not in _ANNOTATIONS}
    ref = rest.get("$ref")
    if isinstance(ref, str) and ref not in seen and (target := _resolve(ref, root)) is not None:
        del rest["$ref"]
        return value_grammar({**target, **rest}, root, seen | {ref})
    for key in ("anyOf", "oneOf"):
        branches = rest.pop(key, None)
        if isinstance(branches, list) and branches:
            return _alternatives(
                value_grammar({**rest, **b} if isinstance(b, Mapping) else rest, root, seen)
                for b in branches
            )
    if "const" in rest or isinstance(rest.get("enum"), list):
        values = [rest["const"]] if "const" in rest else rest["enum"]
        return _alternatives(lark_string(python_literal(v)) for v in values)
    kind = rest.get("type")
    if isinstance(kind, list) and kind:
        return _alternatives(value_grammar({**rest, "type": t}, root, seen) for t in kind)
    if kind == "boolean":
        return _BOOLEAN
    if kind == "null":
        return '"None"'
    if not rest:
        return ANY_VALUE
    definitions = {k: root[k] for k in ("$defs", "definitions") if k in root}
    return inline_json({**rest, **definitions})


def _resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A local `#/...` reference's schema (others are left to llguidance)."""
    if not ref.startswith("#"):
        return None
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, Mapping) else None


def _alternatives(expressions: Iterable[str]) -> str:
    return "(" + " | ".join(dict.fromkeys(expressions)) + ")"


def python_literal(value: Any) -> str:
    """A value as the grammar writes it: Python's words at the top, JSON below."""
    if value is True or value is False or value is None:
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def as_json(text: str) -> str | None:
    """A Python or JSON literal as JSON text; None when it is neither."""
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = _literal(ast.parse(text, mode="eval").body)
        except (SyntaxError, ValueError, RecursionError):
            return None
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return None


def _literal(node: ast.AST) -> Any:
    """ast.literal_eval that also reads JSON's true, false and null, and refuses what JSON
    cannot hold (sets, bytes, complex numbers)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | None):
        return node.value
    if isinstance(node, ast.Name) and node.id in _WORDS:
        return _WORDS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        number = _literal(node.operand)
        if isinstance(number, int | float) and not isinstance(number, bool):
            return -number if isinstance(node.op, ast.USub) else number
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict) and None not in node.keys:
        keys = [_literal(key) for key in node.keys]  # type: ignore[arg-type]
        if all(isinstance(key, str | int | float) for key in keys):
            return dict(zip(keys, (_literal(v) for v in node.values), strict=True))
    raise ValueError("not a literal")


class ValueEnd:
    """Where a Python value ends in text that grows: at a `,` or `)` outside brackets and
    strings (either quote)."""

    def __init__(self) -> None:
        self._at, self._depth, self._quote, self._escaped = 0, 0, "", False

    def find(self, text: str) -> int | None:
        for i in range(self._at, len(text)):
            char = text[i]
            if self._quote:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == self._quote:
                    self._quote = ""
            elif char in "\"'":
                self._quote = char
            elif char in "([{":
                self._depth += 1
            elif char in ")]}" and self._depth > 0:
                self._depth -= 1
            elif self._depth == 0 and char in ",)]}":
                return i
        self._at = len(text)
        return None
