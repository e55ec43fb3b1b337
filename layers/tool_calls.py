"""How a model calls tools: one text format, its grammar, its prompt, and its streaming parser.

The format is the Hermes / Qwen one, which many open models are trained on:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

A template that takes `tools` (Qwen's, Hermes') describes the tools itself; for any other
template Stratus adds `system_prompt(tools)` to the conversation. Either way the grammar makes
the output well-formed: in "auto" the model writes text or calls, in "required" it can only
call, and every call's `arguments` validate against its tool's parameters. Text never contains
the opening tag (the grammar forbids it there), so a call can never leak into `content`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from layers.structured import ANY_OBJECT, inline_json, lark_string
from layers.text import ChatTurn, ToolCall, ToolSpec

OPEN = "<tool_call>\n"
CLOSE = "\n</tool_call>"
_NAME_PREFIX = '{"name": "'
_ARGUMENTS_PREFIX = '", "arguments": '
_SEPARATOR = "\n"  # between parallel calls


def grammar(tools: Sequence[ToolSpec], required: bool, parallel: bool) -> str:
    """The Lark grammar of an answer: calls only (`required`), or text or calls."""
    calls = "call (SEPARATOR call)*" if parallel else "call"
    lines = [
        f"start: {calls}" if required else f"start: TEXT | TEXT? {calls}",
        # Any text that does not contain the opening tag: a call starts only where the parser
        # below expects one.
        f"TEXT: /(.|\\n)+/ & ~/(.|\\n)*{OPEN.strip()}(.|\\n)*/",
        f"SEPARATOR: {lark_string(_SEPARATOR)}",
        f"call: {lark_string(OPEN)} ({' | '.join(f'call_{i}' for i in range(len(tools)))}) "
        f"{lark_string('}' + CLOSE)}",
    ]
    for i, tool in enumerate(tools):
        prefix = _NAME_PREFIX + tool.name + _ARGUMENTS_PREFIX
        lines.append(f"call_{i}: {lark_string(prefix)} arguments_{i}")
        lines.append(f"arguments_{i}: {inline_json(tool.parameters or ANY_OBJECT)}")
    return "\n".join(lines) + "\n"


def system_prompt(tools: Sequence[ToolSpec], required: bool) -> str:
    """The tools described for a model whose chat template knows nothing of tools."""
    described = "\n".join(json.dumps(tool.openai(), ensure_ascii=False) for tool in tools)
    must = "You must call one of them." if required else "Call one only when it helps."
    return (
        "You can call functions. Their signatures, as JSON schemas, are inside <tools></tools>:\n"
        f"<tools>\n{described}\n</tools>\n"
        f"{must} To call a function, write its name and arguments as a JSON object inside "
        "<tool_call></tool_call> tags:\n"
        f'{OPEN}{{"name": "<function name>", "arguments": <arguments as a JSON object>}}{CLOSE}'
    )


def render_call(call: ToolCall) -> str:
    """A call made earlier, written as the model would have written it."""
    return f"{OPEN}{_NAME_PREFIX}{call.name}{_ARGUMENTS_PREFIX}{call.arguments}}}{CLOSE}"


def as_plain_turns(turns: Sequence[ChatTurn]) -> list[ChatTurn]:
    """A conversation with tools, for a template without them: calls become assistant text,
    results become user turns in <tool_response> tags (consecutive results in one turn)."""
    plain: list[ChatTurn] = []
    for turn in turns:
        if turn.role == "assistant" and turn.tool_calls:
            calls = _SEPARATOR.join(render_call(call) for call in turn.tool_calls)
            text = f"{turn.content}\n{calls}" if turn.content else calls
            plain.append(ChatTurn("assistant", text))
        elif turn.role == "tool":
            response = f"<tool_response>\n{turn.content}\n</tool_response>"
            if (
                plain
                and plain[-1].role == "user"
                and plain[-1].content.endswith("</tool_response>")
            ):
                response = f"{plain.pop().content}\n{response}"
            plain.append(ChatTurn("user", response))
        else:
            plain.append(turn)
    return plain


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class CallStarted:
    index: int
    name: str


@dataclass(frozen=True)
class Arguments:
    index: int
    text: str


Event = Text | CallStarted | Arguments


class ToolCallParser:
    """Splits generated text, as it streams, into content and calls with argument fragments.

    The grammar guarantees the layout, so this only has to know where it is: in text, in a
    call's name, in its arguments (a JSON value whose end is found by counting brackets outside
    strings), or in the syntax between calls. Text that might be the start of the opening tag
    is held back until the next piece decides.
    """

    def __init__(self) -> None:
        self._state = "text"
        self._held = ""
        self._calls = 0
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self.content = ""

    @property
    def calls(self) -> int:
        return self._calls

    def feed(self, text: str) -> Iterator[Event]:
        self._held += text
        while self._held:
            before = (self._state, len(self._held))
            yield from getattr(self, f"_in_{self._state}")()
            if (self._state, len(self._held)) == before:
                return  # needs more text

    def finish(self) -> Iterator[Event]:
        """The end of the generation: text held back was text after all."""
        if self._state == "text" and self._held:
            held, self._held = self._held, ""
            self.content += held
            yield Text(held)

    def _in_text(self) -> Iterator[Event]:
        at = self._held.find(OPEN)
        if at >= 0:
            text, self._held = self._held[:at], self._held[at + len(OPEN) :]
            self._state = "name"
        else:
            keep = _partial_suffix(self._held, OPEN)
            text, self._held = (
                self._held[: len(self._held) - keep],
                self._held[len(self._held) - keep :],
            )
        if text:
            self.content += text
            yield Text(text)

    def _in_name(self) -> Iterator[Event]:
        end = self._held.find(_ARGUMENTS_PREFIX)
        if end < 0:
            return
        name = self._held[len(_NAME_PREFIX) : end]
        self._held = self._held[end + len(_ARGUMENTS_PREFIX) :]
        self._state, self._depth = "arguments", 0
        yield CallStarted(self._calls, name)

    def _in_arguments(self) -> Iterator[Event]:
        end = self._arguments_end()
        part, self._held = self._held[:end], self._held[end:]
        if self._depth == 0 and part:
            self._state = "between"
        if part:
            yield Arguments(self._calls, part)
        if self._state == "between":
            self._calls += 1

    def _in_between(self) -> Iterator[Event]:
        # `}` + CLOSE, then a separator and the next OPEN, or the end.
        closing = "}" + CLOSE
        if len(self._held) < len(closing):
            return
        rest = self._held[len(closing) :]
        if rest.startswith(_SEPARATOR + OPEN):
            self._held, self._state = rest[len(_SEPARATOR + OPEN) :], "name"
        elif (_SEPARATOR + OPEN).startswith(rest):
            return
        else:
            self._held = ""  # nothing the grammar allows; ignore
        yield from ()

    def _arguments_end(self) -> int:
        """How much of the held text belongs to the arguments (all of it, or up to their end)."""
        for i, char in enumerate(self._held):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return i + 1
        return len(self._held)


def _partial_suffix(text: str, tag: str) -> int:
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
