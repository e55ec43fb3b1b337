"""Qwen3-Coder's XML calls: a function's name and each argument in tags of their own.

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    <parameter=days>
    3
    </parameter>
    </function>
    </tool_call>

Qwen3-Coder, Qwen3.5, Nemotron 3 Nano and StepFun 3.5 Flash write calls this way (their
templates render earlier calls so, and llama.cpp's common/parsers/qwen3-coder.cpp reads them
with the same whitespace). Seed-OSS's template shares the `<function=`/`<parameter=` tags but
writes `<seed:tool_call>` and no newlines around values: not this format.

A value is raw text, not JSON: a string as it is (over several lines if need be), any other
type as JSON. So the arguments' JSON cannot be copied from the output: the parser builds it
from each value and the tool's schema, and the grammar gives each parameter its own rule.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from common.turns import ToolCall, ToolSpec
from layers.structured import inline_json, lark_string
from layers.tool_formats.base import (
    Arguments,
    CallStarted,
    Event,
    Literal,
    StreamParser,
    Text,
    ToolFormat,
    arguments_json,
    partial_suffix,
    text_without,
)

log = logging.getLogger("stratus.tool_calls")

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"  # single tokens in Qwen's vocabulary
FUNCTION_OPEN, FUNCTION_CLOSE = "<function=", "</function>"
PARAMETER_OPEN, PARAMETER_CLOSE = "<parameter=", "</parameter>"
# Raw text up to the first `\n</parameter>\n`, that line included: one lexeme, so that the
# lexer never has to guess where a value that may hold newlines and `<` ends.
_RAW_VALUE = (
    "/(.|\\n)*\\n<\\/parameter>\\n/ & ~/(.|\\n)*<\\/parameter>(.|\\n)*<\\/parameter>(.|\\n)*/"
)
# Any text up to and including the first `<tool_call>`.
_TEXT_THEN_CALL = "/(.|\\n)*<tool_call>/ & ~/(.|\\n)*<tool_call>(.|\\n)+/"
# What Python's Jinja writes for these (`True | string`), as Hugging Face's templates render.
_PYTHON_WORDS: dict[str, Any] = {"True": True, "False": False, "None": None}
_JSON_TYPES = {str: "string", int: "integer", float: "number", dict: "object", list: "array"}
_MISSING = object()


class XmlCalls(ToolFormat):
    name = "qwen3-coder"
    markers = (CALL_OPEN, CALL_CLOSE)

    def grammar(
        self,
        tools: Sequence[ToolSpec],
        required: bool,
        parallel: bool,
        literal: Literal = lark_string,
    ) -> str:
        newline, opening = lark_string("\n"), literal(CALL_OPEN)
        more = f"({newline} call)*" if parallel else ""
        lines = [
            f"call: {opening} body",
            f"body: {newline} function {literal(CALL_CLOSE)}",
            f"function: {' | '.join(f'function_{i}' for i in range(len(tools)))}",
        ]
        if required:
            lines.insert(0, f"start: call {more}")
        else:
            lines.insert(0, f"start: TEXT | lead body {more}")
            lines.append(f"TEXT: {text_without([CALL_OPEN])}")
            if opening == lark_string(CALL_OPEN):
                # As text, the marker must end the text's lexeme: a lexer that has read
                # `<tool_call` would not go back to end the text before its `<`.
                lines.append(f"lead: LEAD\nLEAD: {_TEXT_THEN_CALL}")
            else:
                lines.append(f"lead: TEXT? {opening}")
        for i, tool in enumerate(tools):
            lines += _function_rules(i, tool)
        if any(" RAW_VALUE" in line for line in lines):
            lines.append(f"RAW_VALUE: {_RAW_VALUE}")
        return "\n".join(lines) + "\n"

    def parser(self, tools: Sequence[ToolSpec] = ()) -> _Parser:
        """A parser that types each value by its tool's schema (guessing where none is
        known: JSON if it reads as a JSON value other than a string, a string otherwise)."""
        return _Parser(tools)

    def render_calls(self, calls: Sequence[ToolCall]) -> str:
        return "\n".join(_render_call(call) for call in calls)


def _function_rules(i: int, tool: ToolSpec) -> list[str]:
    """`function_i` and one rule per parameter: the schema's order, optional ones optional."""
    properties = _properties(tool)
    required = set(tool.parameters.get("required") or ())
    parts, rules = [], []
    for j, (name, schema) in enumerate(properties.items()):
        parts.append(f"param_{i}_{j}" if name in required else f"param_{i}_{j}?")
        opening = lark_string(f"{PARAMETER_OPEN}{name}>\n")
        closing = lark_string(f"\n{PARAMETER_CLOSE}\n")
        if _is_raw(schema):
            enum = schema.get("enum")
            if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
                choices = " | ".join(lark_string(v) for v in enum)
                rules.append(f"param_{i}_{j}: {opening} ({choices}) {closing}")
            else:
                rules.append(f"param_{i}_{j}: {opening} RAW_VALUE")
        else:
            rules.append(f"param_{i}_{j}: {opening} value_{i}_{j} {closing}")
            rules.append(f"value_{i}_{j}: {inline_json(schema)}")
    parts = [
        lark_string(f"{FUNCTION_OPEN}{tool.name}>\n"),
        *parts,
        lark_string(f"{FUNCTION_CLOSE}\n"),
    ]
    return [f"function_{i}: {' '.join(parts)}", *rules]


def _properties(tool: ToolSpec) -> Mapping[str, Mapping[str, Any]]:
    properties = tool.parameters.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    return {k: v if isinstance(v, Mapping) else {} for k, v in properties.items()}


def _value_types(schema: Mapping[str, Any]) -> frozenset[str]:
    """The JSON types a property's values may take; empty: any."""
    declared = schema.get("type")
    if isinstance(declared, str):
        return frozenset({declared})
    if isinstance(declared, list):
        return frozenset(t for t in declared if isinstance(t, str))
    values = schema["enum"] if isinstance(schema.get("enum"), list) else None
    if values is None and "const" in schema:
        values = [schema["const"]]
    if values is not None:
        return frozenset(_json_type(v) for v in values)
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(alternatives, list) and alternatives:
        each = [_value_types(a) if isinstance(a, Mapping) else frozenset() for a in alternatives]
        return frozenset() if not all(each) else frozenset().union(*each)
    return frozenset()


def _is_raw(schema: Mapping[str, Any]) -> bool:
    """A value the model writes as raw text: one that may be a string (or of any type, which
    a string is too). Mixed types take raw text, as llama.cpp's grammar does: the string
    alternative accepts any text anyway."""
    types = _value_types(schema)
    return not types or "string" in types


def _json_value(raw: str, schema: Mapping[str, Any] | None, where: str) -> str:
    """A raw value as JSON text, typed by its property's schema (None: unknown)."""
    schema = schema or {}
    may_be_text = _is_raw(schema)
    value = _parsed(raw, python_words=not may_be_text)
    if may_be_text:
        if value is _MISSING or isinstance(value, str) or not _fits(value, _value_types(schema)):
            value = raw  # a string is its raw text: quotes the model wrote are part of it
    elif value is _MISSING:
        log.warning("The model's %s is not JSON; it is kept as a string: %r", where, raw[:200])
        value = raw
    return json.dumps(value, ensure_ascii=False)


def _parsed(raw: str, python_words: bool) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return _PYTHON_WORDS.get(raw.strip(), _MISSING) if python_words else _MISSING


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return _JSON_TYPES.get(type(value), "null")


def _fits(value: Any, types: frozenset[str]) -> bool:
    kind = _json_type(value)
    return not types or kind in types or (kind == "integer" and "number" in types)


def _render_call(call: ToolCall) -> str:
    """A call as the templates write one: strings as they are, anything else as JSON."""
    arguments = arguments_json(call.arguments)
    if not isinstance(arguments, Mapping):
        arguments = {}  # arguments that are not an object: the templates cannot render them
    lines = [CALL_OPEN, f"{FUNCTION_OPEN}{call.name}>"]
    for name, value in arguments.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        lines += [f"{PARAMETER_OPEN}{name}>", text, PARAMETER_CLOSE]
    return "\n".join([*lines, FUNCTION_CLOSE, CALL_CLOSE])


class _Parser(StreamParser):
    """One answer, split as it streams: text until `<tool_call>`; then each call's name, and
    its arguments' JSON a value at a time, as each `</parameter>` closes one."""

    def __init__(self, tools: Sequence[ToolSpec]) -> None:
        super().__init__("text")
        self._schemas = {tool.name: _properties(tool) for tool in tools}
        self._properties: Mapping[str, Mapping[str, Any]] = {}  # the current call's
        self._name = ""  # the current call's function
        self._parameter = ""  # the parameter whose value is being read
        self._written = 0  # parameters written of the current call's arguments

    def finish(self) -> Iterator[Event]:
        held, self._held = self._held, ""
        if self._state == "text":
            if held:
                yield Text(held)
        elif self._state != "calls" or self._calls == 0:
            log.warning(
                "The model's qwen3-coder tool call ended unfinished (%s); it is left out: %r",
                self._state,
                held[:200],
            )

    def _in_text(self) -> Iterator[Event]:
        at = self._held.find(CALL_OPEN)
        if at >= 0:
            text, self._held = self._held[:at], self._held[at + len(CALL_OPEN) :]
            self._state = "calls"
        else:
            cut = len(self._held) - partial_suffix(self._held, [CALL_OPEN])
            text, self._held = self._held[:cut], self._held[cut:]
        if text:
            yield Text(text)

    def _in_calls(self) -> Iterator[Event]:
        """Between calls: everything up to the next `<function=` (tags, newlines) is form."""
        at = self._held.find(FUNCTION_OPEN)
        if at >= 0:
            self._held, self._state = self._held[at + len(FUNCTION_OPEN) :], "name"
        else:
            keep = partial_suffix(self._held, [FUNCTION_OPEN])
            self._held = self._held[len(self._held) - keep :] if keep else ""
        yield from ()

    def _in_name(self) -> Iterator[Event]:
        end = self._held.find(">")
        if end < 0:
            return
        self._name, self._held = self._held[:end].strip(), self._held[end + 1 :]
        self._properties = self._schemas.get(self._name, {})
        self._state, self._written = "body", 0
        yield CallStarted(self._calls, self._name)

    def _in_body(self) -> Iterator[Event]:
        """After the name or a value: the next parameter, or the end of the call."""
        found = [(self._held.find(tag), tag) for tag in (PARAMETER_OPEN, FUNCTION_CLOSE)]
        found = [(at, tag) for at, tag in found if at >= 0]
        if not found:
            return
        at, tag = min(found)
        if tag == FUNCTION_CLOSE:
            self._held = self._held[at + len(tag) :]
            self._state = "calls"
            yield Arguments(self._calls, "}" if self._written else "{}")
            self._calls += 1
            return
        end = self._held.find(">", at)
        if end >= 0:
            self._parameter = self._held[at + len(tag) : end].strip()
            self._held, self._state = self._held[end + 1 :], "value"

    def _in_value(self) -> Iterator[Event]:
        end = self._held.find(PARAMETER_CLOSE)
        if end < 0:
            return
        raw, self._held = self._held[:end], self._held[end + len(PARAMETER_CLOSE) :]
        raw = raw.removeprefix("\n").removesuffix("\n")  # the lines the format puts around it
        where = f"value of {self._name}'s {self._parameter!r}"
        value = _json_value(raw, self._properties.get(self._parameter), where)
        key = json.dumps(self._parameter, ensure_ascii=False)
        self._state = "body"
        yield Arguments(self._calls, ("{" if not self._written else ", ") + f"{key}: {value}")
        self._written += 1


QWEN3_CODER = XmlCalls()
FORMATS = (QWEN3_CODER,)
