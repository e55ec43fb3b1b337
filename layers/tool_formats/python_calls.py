"""LFM2's calls (Liquid AI): a Python list of calls with keyword arguments, between special
tokens, with text before or after it:

    Let me look.<|tool_call_start|>[get_weather(city="Paris", days=3)]<|tool_call_end|>Checking.

Sources: LFM2's model cards (their example answer goes on with text after the calls), the LFM2
and LFM2.5 chat templates (LFM2.5-8B-A1B's writes earlier calls itself: strings in single
quotes, mappings as JSON, other values through Jinja's `string`, so `True` and `None`), and
llama.cpp's LFM2 parser (common/parsers/lfm2.cpp), which reads Python or JSON literals.

The grammar asks for keyword arguments in the order of the tool's properties, the required
ones present, each value a Python literal that validates against its property's schema
(layers/tool_formats/python_literals). The parser reads more than the grammar writes (either
quote, Python or JSON words, any order) and turns each value into JSON as soon as it ends, so
the arguments stream as OpenAI's JSON text.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence

from common.turns import ToolCall, ToolSpec
from layers.structured import lark_string
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
from layers.tool_formats.python_literals import (
    ANY_VALUE,
    ValueEnd,
    as_json,
    python_literal,
    value_grammar,
)

log = logging.getLogger("stratus.tool_calls")
START, END = "<|tool_call_start|>", "<|tool_call_end|>"
_IDENTIFIER = r"[^\s=,()\[\]{}'\"<>]+"  # a function's or a keyword's name, leniently
_NAME_OPEN = re.compile(rf"({_IDENTIFIER})\s*\(")
_KEY = re.compile(rf"({_IDENTIFIER})\s*=")
_UNFINISHED_NAME = re.compile(rf"{_IDENTIFIER}\s*")


class PythonCalls(ToolFormat):
    name = "lfm2"
    markers = (START, END)

    def grammar(
        self,
        tools: Sequence[ToolSpec],
        required: bool,
        parallel: bool,
        literal: Literal = lark_string,
    ) -> str:
        calls = 'call (", " call)*' if parallel else "call"
        lines = [
            f"calls: {literal(START)} listed",
            f'listed: "[" {calls} "]" {literal(END)}',
            f"call: {' | '.join(f'call_{i}' for i in range(len(tools)))}",
        ]
        if required:
            start = "calls"
        elif literal(START) != lark_string(START):  # a special token: text cannot spell it
            start = "TEXT | TEXT? calls TEXT?"
        else:
            # llguidance lexes greedily: text before a marker spelt as text would swallow the
            # marker's first characters, so there the text is a lazy lexeme ending at it.
            start = "TEXT | before listed TEXT?"
            lines.append(f"before[suffix={lark_string(START)}]: TEXT?")
        lines.insert(0, f"start: {start}")
        if not required:
            lines.append(f"TEXT: {text_without(self.markers)}")
        for i, tool in enumerate(tools):
            lines += _call_rules(i, tool)
        return "\n".join(lines) + "\n"

    def parser(self, tools: Sequence[ToolSpec] = ()) -> _Parser:
        return _Parser()  # the values are typed as the model writes them

    def render_calls(self, calls: Sequence[ToolCall]) -> str:
        """Calls as the grammar writes them (arguments that are not a JSON object: none)."""
        rendered = []
        for call in calls:
            arguments = arguments_json(call.arguments)
            pairs = arguments.items() if isinstance(arguments, dict) else ()
            keywords = ", ".join(f"{key}={python_literal(value)}" for key, value in pairs)
            rendered.append(f"{call.name}({keywords})")
        return f"{START}[{', '.join(rendered)}]{END}"


def _call_rules(i: int, tool: ToolSpec) -> list[str]:
    """`name(keyword=value, ...)` for one tool: its properties in their order, each optional
    one skippable; free keywords when the schema names none and allows others."""
    schema = tool.parameters or {}
    properties = schema.get("properties")
    head = f"call_{i}: {lark_string(tool.name + '(')}"
    if not isinstance(properties, Mapping) or not properties:
        if schema.get("additionalProperties") is False:
            return [f'{head} ")"']
        keyword = f'/[A-Za-z_][A-Za-z0-9_]*/ "=" {ANY_VALUE}'
        return [f'{head} ({keyword} (", " {keyword})*)? ")"']
    names = list(properties)
    required = set(schema.get("required") or ()) & set(names)
    rules = [
        f"arg_{i}_{j}: {lark_string(name + '=')} {value_grammar(properties[name], schema)}"
        for j, name in enumerate(names)
    ]
    firsts = []  # the arguments that may come first: up to the first required one
    for j, name in enumerate(names):
        rest = [
            f'", " arg_{i}_{k}' if names[k] in required else f'(", " arg_{i}_{k})?'
            for k in range(j + 1, len(names))
        ]
        firsts.append(" ".join([f"arg_{i}_{j}", *rest]))
        if name in required:
            break
    arguments = f"({' | '.join(firsts)})" + ("" if required else "?")
    return [f'{head} {arguments} ")"', *rules]


class _Parser(StreamParser):
    """One LFM2 answer, split as it streams. A call that cannot be read is logged and skipped
    up to the end marker; its events so far stay sent, but it is not counted."""

    def __init__(self) -> None:
        super().__init__("text")
        self._started = self._keys = 0
        self._value = ValueEnd()

    def finish(self) -> Iterator[Event]:
        held, self._held = self._held, ""
        if self._state == "text" and held:
            yield Text(held)
        elif self._state not in ("text", "broken") and (self._state != "close" or held.strip()):
            log.warning("The model's lfm2 tool calls ended unfinished (%s): %r", self._state, held)

    def _in_text(self) -> Iterator[Event]:
        found = sorted((at, m) for m in (START, END) if (at := self._held.find(m)) >= 0)
        if found:
            at, marker = found[0]
            text, self._held = self._held[:at], self._held[at + len(marker) :]
            self._state = "open" if marker == START else "text"  # a stray end marker: dropped
        else:
            cut = len(self._held) - partial_suffix(self._held, (START, END))
            text, self._held = self._held[:cut], self._held[cut:]
        if text:
            yield Text(text)

    def _in_open(self) -> Iterator[Event]:
        yield from self._expect({"[": "call"}, "a list after the start marker")

    def _in_call(self) -> Iterator[Event]:
        self._held = self._held.lstrip()
        if self._held.startswith("]"):
            self._held, self._state = self._held[1:], "close"
        elif match := _NAME_OPEN.match(self._held):
            self._held, self._state, self._keys = self._held[match.end() :], "key", 0
            yield CallStarted(self._started, match.group(1))
            yield Arguments(self._started, "{")
        elif self._held and not _UNFINISHED_NAME.fullmatch(self._held):
            self._break("a function's name")

    def _in_key(self) -> Iterator[Event]:
        self._held = self._held.lstrip()
        if self._held.startswith(")"):
            yield from self._end_call()
        elif match := _KEY.match(self._held):
            self._held, self._state, self._value = self._held[match.end() :], "value", ValueEnd()
            separator = ", " if self._keys else ""
            self._keys += 1
            yield Arguments(self._started, f"{separator}{json.dumps(match.group(1))}: ")
        elif self._held and not _UNFINISHED_NAME.fullmatch(self._held):
            self._break("a keyword argument")

    def _in_value(self) -> Iterator[Event]:
        end = self._value.find(self._held)
        if end is None:
            return
        value = as_json(self._held[:end].strip())
        if value is None:
            self._break("a Python or JSON literal")
            return
        self._held, self._state = self._held[end:], "after_value"
        yield Arguments(self._started, value)

    def _in_after_value(self) -> Iterator[Event]:
        if self._held.lstrip().startswith(")"):
            self._held = self._held.lstrip()
            yield from self._end_call()
        else:
            yield from self._expect({",": "key"}, "`,` or `)` after a value")

    def _in_next(self) -> Iterator[Event]:
        yield from self._expect({",": "call", "]": "close"}, "`,` or `]` after a call")

    def _in_close(self) -> Iterator[Event]:
        self._held = self._held.lstrip()
        if self._held.startswith(END):
            self._held, self._state = self._held[len(END) :], "text"
        elif self._held and not END.startswith(self._held):
            log.warning("The model's lfm2 tool calls lack their end marker: %r", self._held[:200])
            self._state = "text"
        yield from ()

    def _in_broken(self) -> Iterator[Event]:
        at = self._held.find(END)
        if at >= 0:
            self._held, self._state = self._held[at + len(END) :], "text"
        else:
            self._held = self._held[len(self._held) - partial_suffix(self._held, (END,)) :]
        yield from ()

    def _end_call(self) -> Iterator[Event]:
        self._held, self._state = self._held[1:], "next"
        yield Arguments(self._started, "}")
        self._calls += 1
        self._started += 1

    def _expect(self, choices: dict[str, str], what: str) -> Iterator[Event]:
        self._held = self._held.lstrip()
        if self._held[:1] in choices:
            self._held, self._state = self._held[1:], choices[self._held[0]]
        elif self._held:
            self._break(what)
        yield from ()

    def _break(self, expected: str) -> None:
        log.warning(
            "The model's lfm2 tool call could not be parsed (expected %s); it is left out: %r",
            expected,
            self._held[:200],
        )
        if self._state in ("key", "value", "after_value"):
            self._started += 1  # the next call gets an index of its own
        self._state = "broken"


LFM2 = PythonCalls()
FORMATS = (LFM2,)
