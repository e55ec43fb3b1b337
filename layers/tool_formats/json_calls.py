"""Formats whose calls are a name and a JSON object of arguments, in some family's syntax.

Most families differ only in the text around the name and the arguments, so one description
covers them: where the calls start, what comes before each name, between the name and the
arguments, after the arguments, between calls and after the last. `{index}` in a piece stands
for the call's position as the model counts it (Kimi K2, Command R7B) and `{id}` for an id the
model writes (Mistral's nine alphanumerics); Stratus replaces the model's ids with its own of the
same form, so a template given them back accepts them.

The grammar is built from the same description, so the parser only has to find its way: the
start of the calls (a trigger), the text just before each name, the end of the name, the first
`{` of the arguments, and their end (brackets counted outside strings).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from common.turns import ToolCall, ToolSpec
from layers.structured import ANY_OBJECT, inline_json, lark_string, regex_escape
from layers.tool_formats.base import (
    Arguments,
    CallStarted,
    Event,
    JsonScanner,
    Literal,
    StreamParser,
    Text,
    ToolFormat,
    alphanumeric_id,
    arguments_json,
    partial_suffix,
    stable_alphanumeric_id,
    text_without,
)

log = logging.getLogger("stratus.tool_calls")
_PLACEHOLDER = re.compile(r"\{(index|id)\}")
_PATTERNS = {"index": "/[0-9]+/", "id": "/[a-zA-Z0-9]{9}/"}


@dataclass(frozen=True)
class JsonCalls(ToolFormat):
    name: str
    triggers: tuple[str, ...]  # text that starts the calls: free text never contains it
    call_open: str  # before each call's name
    name_end: str  # between the name and the arguments
    call_close: str = ""  # after the arguments
    section_open: tuple[str, ...] = ("",)  # before the first call: one of these
    separator: str = ""  # between calls
    section_close: str = ""  # after the last call
    markers: tuple[str, ...] = ()
    single_call: bool = False
    id_length: int | None = None  # the template wants ids of this many alphanumerics
    # Around the text of an answer (Command R7B's response markers): allowed, not content.
    text_open: str = ""
    text_close: str = ""

    def grammar(
        self,
        tools: Sequence[ToolSpec],
        required: bool,
        parallel: bool,
        literal: Literal = lark_string,
    ) -> str:
        seq = _Sequencer(self.markers, literal)
        many = parallel and not self.single_call
        more = f"({seq(self.separator)} call)*" if many else ""
        if many and not self.separator:
            more = "call*"
        close = seq(self.section_close)
        lines = [
            f"calls: {_choice([seq(o) for o in self.section_open])} call {more} {close}",
            f"call: {seq(self.call_open)} body {seq(self.call_close)}",
            f"body: {' | '.join(f'body_{i}' for i in range(len(tools)))}",
        ]
        for i, tool in enumerate(tools):
            name_end = seq(self.name_end)
            lines.append(f"body_{i}: {lark_string(tool.name)} {name_end} arguments_{i}")
            lines.append(f"arguments_{i}: {inline_json(tool.parameters or ANY_OBJECT)}")
        if required:
            return "start: calls\n" + "\n".join(lines) + "\n"
        text = "TEXT"
        if self.text_open:
            text = f"({seq(self.text_open)} TEXT {seq(self.text_close)} | TEXT)"
        alternatives = [text, f"{text}? calls"]
        stops = self.triggers + _texts(self)
        lines.append(f"TEXT: {text_without(stops)}")
        # A trigger that is text, not a special token, cannot end a TEXT lexeme (the lexer
        # would rather go on with the text): free text that ends with the trigger is one
        # lexeme instead, and the calls go on from just after it.
        for k, trigger in enumerate(self.triggers):
            if literal(trigger) != lark_string(trigger):
                continue
            heads = [o + self.call_open for o in self.section_open]
            rests = [seq(h[len(trigger) :]) for h in heads if h.startswith(trigger)]
            if not rests:
                continue
            alternatives.append(
                f"TEXT_{k} {_choice(rests)} body {seq(self.call_close)} {more} {close}"
            )
            lines.append(
                f"TEXT_{k}: /(.|\\n)*{regex_escape(trigger)}/ & ~/(.|\\n)*"
                f"({'|'.join(regex_escape(t) for t in stops)})(.|\\n)+/"
            )
        return f"start: {' | '.join(alternatives)}\n" + "\n".join(lines) + "\n"

    def parser(self, tools: Sequence[ToolSpec] = ()) -> _Parser:
        return _Parser(self)

    def new_call_id(self) -> str | None:
        return alphanumeric_id(self.id_length) if self.id_length else None

    def template_id(self, call_id: str) -> str:
        if self.id_length is None or (
            len(call_id) == self.id_length and call_id.isalnum() and call_id.isascii()
        ):
            return call_id
        return stable_alphanumeric_id(call_id, self.id_length)

    def render_calls(self, calls: Sequence[ToolCall]) -> str:
        rendered = []
        for index, call in enumerate(calls):
            arguments = json.dumps(arguments_json(call.arguments), ensure_ascii=False)
            fill = {"index": str(index), "id": self.template_id(call.id)}
            rendered.append(
                _fill(self.call_open, fill)
                + call.name
                + _fill(self.name_end, fill)
                + arguments
                + _fill(self.call_close, fill)
            )
        return self.section_open[0] + self.separator.join(rendered) + self.section_close


def _choice(options: list[str]) -> str:
    """Lark for one of `options` ("" for nothing)."""
    present = [o for o in options if o]
    if not present:
        return ""
    group = present[0] if len(present) == 1 else f"({' | '.join(present)})"
    return f"{group}?" if len(present) < len(options) else group


def _texts(fmt: JsonCalls) -> tuple[str, ...]:
    return tuple(t for t in (fmt.text_open, fmt.text_close) if t)


def _fill(piece: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], piece)


class _Sequencer:
    """A piece of a format as a Lark sequence: its special tokens as tokens, its text as
    string literals, its placeholders as patterns."""

    def __init__(self, markers: Sequence[str], literal: Literal) -> None:
        self._literal = literal
        alternatives = [re.escape(m) for m in sorted(markers, key=len, reverse=True)]
        self._split = re.compile("(" + "|".join(alternatives + [_PLACEHOLDER.pattern]) + ")")
        self._markers = set(markers)

    def __call__(self, piece: str) -> str:
        out = []
        for part in self._split.split(piece):
            if not part:
                continue
            if part in self._markers:
                out.append(self._literal(part))
            elif (placeholder := _PLACEHOLDER.fullmatch(part)) is not None:
                out.append(_PATTERNS[placeholder.group(1)])
            elif part not in ("index", "id"):
                out.append(lark_string(part))
        return " ".join(out)


def _first_text(piece: str) -> str:
    return _PLACEHOLDER.split(piece)[0]


def _last_text(piece: str) -> str:
    return _PLACEHOLDER.split(piece)[-1]


class _Parser(StreamParser):
    """One answer in a JsonCalls format, split as it streams (see the module's docstring)."""

    def __init__(self, fmt: JsonCalls) -> None:
        super().__init__("text")
        self._fmt = fmt
        self._anchor = _last_text(fmt.call_open)  # just before a name
        self._name_stop = _first_text(fmt.name_end)[:1] or "{"
        self._stripped = _texts(fmt)
        self._json = JsonScanner()

    def finish(self) -> Iterator[Event]:
        held, self._held = self._held, ""
        if self._state == "text":
            if held:
                yield Text(held)
        elif self._state != "calls" or self._calls == 0:
            log.warning(
                "The model's %s tool call ended unfinished (%s); it is left out: %r",
                self._fmt.name,
                self._state,
                held[:200],
            )

    def _in_text(self) -> Iterator[Event]:
        found = [(self._held.find(m), m) for m in self._fmt.triggers + self._stripped]
        found = [(at, m) for at, m in found if at >= 0]
        if found:
            at, marker = min(found)
            text = self._held[:at]
            if marker in self._stripped:
                self._held = self._held[at + len(marker) :]
            else:
                self._held, self._state = self._held[at:], "calls"
        else:
            keep = partial_suffix(self._held, self._fmt.triggers + self._stripped)
            text, self._held = (
                self._held[: len(self._held) - keep],
                self._held[len(self._held) - keep :],
            )
        if text:
            yield Text(text)

    def _in_calls(self) -> Iterator[Event]:
        at = self._held.find(self._anchor)
        if at >= 0:
            self._held, self._state = self._held[at + len(self._anchor) :], "name"
        yield from ()

    def _in_name(self) -> Iterator[Event]:
        end = self._held.find(self._name_stop)
        if end < 0:
            return
        name, self._held = self._held[:end], self._held[end:]
        self._state = "before_arguments"
        yield CallStarted(self._calls, name)

    def _in_before_arguments(self) -> Iterator[Event]:
        at = self._held.find("{")
        if at >= 0:
            self._held, self._state, self._json = self._held[at:], "arguments", JsonScanner()
        yield from ()

    def _in_arguments(self) -> Iterator[Event]:
        end = self._json.end(self._held)
        part = self._held if end is None else self._held[:end]
        self._held = "" if end is None else self._held[end:]
        if part:
            yield Arguments(self._calls, part)
        if end is not None:
            self._calls += 1
            self._state = "calls"


# The families, each as its template writes a call.
HERMES = JsonCalls(  # Hermes 2/3, Qwen 2.5, Qwen 3, SmolLM3, and Stratus's generic prompt
    "hermes",
    triggers=("<tool_call>",),
    call_open='<tool_call>\n{"name": "',
    name_end='", "arguments": ',
    call_close="}\n</tool_call>",
    separator="\n",
    markers=("<tool_call>", "</tool_call>"),  # single tokens in Qwen's vocabulary
)
LLAMA3 = JsonCalls(  # Llama 3.1 / 3.2 / 3.3: one call, bare JSON, "parameters"
    "llama3",
    triggers=('{"name"', "<|python_tag|>"),
    section_open=("", "<|python_tag|>"),
    call_open='{"name": "',
    name_end='", "parameters": ',
    call_close="}",
    markers=("<|python_tag|>",),
    single_call=True,
)
MISTRAL_NEMO = JsonCalls(  # Mistral Nemo, Mistral 7B v0.3: a JSON list with 9-character ids
    "mistral-nemo",
    triggers=("[TOOL_CALLS]",),
    section_open=("[TOOL_CALLS][",),
    call_open='{"name": "',
    name_end='", "arguments": ',
    call_close=', "id": "{id}"}',
    separator=", ",
    section_close="]",
    markers=("[TOOL_CALLS]",),
    id_length=9,
)
MISTRAL = JsonCalls(  # Mistral Small 3.2, Magistral, Ministral 3: name[CALL_ID]id[ARGS]{...}
    "mistral",
    triggers=("[TOOL_CALLS]",),
    call_open="[TOOL_CALLS]",
    name_end="[CALL_ID]{id}[ARGS]",
    markers=("[TOOL_CALLS]", "[CALL_ID]", "[ARGS]"),
    id_length=9,
)
DEVSTRAL = JsonCalls(  # Devstral: as Mistral's, without ids in the call
    "devstral",
    triggers=("[TOOL_CALLS]",),
    call_open="[TOOL_CALLS]",
    name_end="[ARGS]",
    markers=("[TOOL_CALLS]", "[ARGS]"),
    id_length=9,
)
GRANITE = JsonCalls(  # IBM Granite 3.x / 4.x
    "granite",
    triggers=("<|tool_call|>",),
    section_open=("<|tool_call|>[",),
    call_open='{"name": "',
    name_end='", "arguments": ',
    call_close="}",
    separator=", ",
    section_close="]",
    markers=("<|tool_call|>",),
)
COMMAND_R7B = JsonCalls(  # Cohere Command R7B
    "command-r7b",
    triggers=("<|START_ACTION|>",),
    section_open=("<|START_ACTION|>[\n    ",),
    call_open='{"tool_call_id": "{index}", "tool_name": "',
    name_end='", "parameters": ',
    call_close="}",
    separator=",\n    ",
    section_close="\n]<|END_ACTION|>",
    markers=("<|START_ACTION|>", "<|END_ACTION|>", "<|START_RESPONSE|>", "<|END_RESPONSE|>"),
    text_open="<|START_RESPONSE|>",
    text_close="<|END_RESPONSE|>",
)
KIMI_K2 = JsonCalls(  # Moonshot Kimi K2
    "kimi-k2",
    triggers=("<|tool_calls_section_begin|>",),
    section_open=("<|tool_calls_section_begin|>",),
    call_open="<|tool_call_begin|>functions.",
    name_end=":{index}<|tool_call_argument_begin|>",
    call_close="<|tool_call_end|>",
    section_close="<|tool_calls_section_end|>",
    markers=(
        "<|tool_calls_section_begin|>",
        "<|tool_call_begin|>",
        "<|tool_call_argument_begin|>",
        "<|tool_call_end|>",
        "<|tool_calls_section_end|>",
    ),
)
_DEEPSEEK_MARKERS = (
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁sep｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁calls▁end｜>",
)
DEEPSEEK_R1 = JsonCalls(  # DeepSeek R1 (llama.cpp's tool-aware template): a fenced JSON block
    "deepseek-r1",
    triggers=("<｜tool▁calls▁begin｜>",),
    section_open=("<｜tool▁calls▁begin｜>",),
    call_open="<｜tool▁call▁begin｜>function<｜tool▁sep｜>",
    name_end="\n```json\n",
    call_close="\n```<｜tool▁call▁end｜>",
    section_close="<｜tool▁calls▁end｜>",
    markers=_DEEPSEEK_MARKERS,
)
DEEPSEEK_V3 = JsonCalls(  # DeepSeek V3.1 / V3.2: name<｜tool▁sep｜>{...}
    "deepseek-v3",
    triggers=("<｜tool▁calls▁begin｜>",),
    section_open=("<｜tool▁calls▁begin｜>",),
    call_open="<｜tool▁call▁begin｜>",
    name_end="<｜tool▁sep｜>",
    call_close="<｜tool▁call▁end｜>",
    section_close="<｜tool▁calls▁end｜>",
    markers=_DEEPSEEK_MARKERS,
)
FUNCTIONARY_V31 = JsonCalls(  # Functionary v3.1 (Llama 3.1 based): <function=name>{...}</function>
    "functionary-v3.1",
    triggers=("<function=",),
    call_open="<function=",
    name_end=">",
    call_close="</function>",
)
FORMATS = (
    HERMES,
    LLAMA3,
    MISTRAL_NEMO,
    MISTRAL,
    DEVSTRAL,
    GRANITE,
    COMMAND_R7B,
    KIMI_K2,
    DEEPSEEK_R1,
    DEEPSEEK_V3,
    FUNCTIONARY_V31,
)
