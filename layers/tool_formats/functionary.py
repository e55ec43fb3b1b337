"""Functionary v3.2's messages (MeetKai): each part of an answer is addressed to a recipient,
`>>>all` for the user, `>>>name` for a function with its arguments as JSON:

    all
    Let me look.>>>get_weather
    {"city": "Paris"}>>>get_time
    {"city": "Paris"}

The chat template ends its generation prompt with the first `>>>`, so an answer starts with its
first recipient; earlier answers are rendered the same way, calls straight after the text and
after each other (meetkai-functionary-medium-v3.2.jinja; llama.cpp's
common/parsers/functionary-v3-2.cpp reads the same). Every answer has a recipient, with tools or
without, so the parser runs on every answer: it takes `all\\n` off plain answers too.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence

from common.turns import ToolCall, ToolSpec
from layers.structured import ANY_OBJECT, inline_json, lark_string
from layers.tool_formats.base import (
    Arguments,
    CallStarted,
    Event,
    JsonScanner,
    Literal,
    StreamParser,
    Text,
    ToolFormat,
    arguments_json,
    partial_suffix,
    text_without,
)

log = logging.getLogger("stratus.tool_calls")
HEADER = ">>>"  # before each recipient but the first, which the prompt writes
TEXT_RECIPIENT = "all"
_RECIPIENT = re.compile(r"[\w.\-]*")  # a name, or a name still arriving


class Functionary(ToolFormat):
    name = "functionary-v3.2"
    parses_every_answer = True

    def grammar(
        self,
        tools: Sequence[ToolSpec],
        required: bool,
        parallel: bool,
        literal: Literal = lark_string,  # no special tokens: `>>>` and the names are text
    ) -> str:
        calls = f"call ({lark_string(HEADER)} call)*" if parallel else "call"
        text = lark_string(TEXT_RECIPIENT + "\n")
        lines = [
            "start: calls" if required else f"start: {text} TEXT? | {text} before calls | calls",
            f"calls: {calls}",
            f"call: {' | '.join(f'call_{i}' for i in range(len(tools)))}",
        ]
        if not required:
            # llguidance lexes greedily: text followed by `>>>` would swallow its first `>`s,
            # so text before calls is a lazy lexeme that ends at the first `>>>`.
            lines.append(f"before[suffix={lark_string(HEADER)}]: TEXT?")
            lines.append(f"TEXT: {text_without([HEADER])}")
        for i, tool in enumerate(tools):
            lines.append(f"call_{i}: {lark_string(tool.name + chr(10))} arguments_{i}")
            lines.append(f"arguments_{i}: {inline_json(tool.parameters or ANY_OBJECT)}")
        return "\n".join(lines) + "\n"

    def answer_grammar(self, answer: str | None, literal: Literal = lark_string) -> str | None:
        """A JSON answer after the `all` recipient every answer starts with (free text: no
        grammar, the parser takes the recipient off)."""
        if answer is None:
            return None
        content = re.sub(r"^start:", "all_answer:", answer.strip(), count=1, flags=re.M)
        return f"start: {lark_string(TEXT_RECIPIENT + chr(10))} all_answer\n{content}\n"

    def parser(self, tools: Sequence[ToolSpec] = ()) -> _Parser:
        return _Parser()  # arguments are JSON already

    def render_calls(self, calls: Sequence[ToolCall]) -> str:
        """Calls as the template writes them after an answer's text (`>>>` before each)."""
        return "".join(
            f"{HEADER}{call.name}\n"
            + json.dumps(arguments_json(call.arguments), ensure_ascii=False)
            for call in calls
        )


class _Parser(StreamParser):
    """One answer, split as it streams. A part that cannot be read is logged and skipped up to
    the next `>>>`; a call whose arguments are not JSON is logged and not counted."""

    def __init__(self) -> None:
        super().__init__("first")
        self._name = ""
        self._started = 0
        self._arguments = ""
        self._json = JsonScanner()

    def finish(self) -> Iterator[Event]:
        held, self._held = self._held, ""
        if self._state in ("text", "first"):
            if held:
                yield Text(held)  # in "first": no recipient came, the model answered in text
        elif self._state != "broken" and (self._state != "after_call" or held.strip()):
            log.warning(
                "The model's functionary tool call ended unfinished (%s): %r", self._state, held
            )

    def _in_first(self) -> Iterator[Event]:
        """The start: a recipient (after a `>>>` of the model's own where the prompt lacks
        it), or, from a model that ignores the format, plain text."""
        if HEADER.startswith(self._held):
            return
        self._held = self._held.removeprefix(HEADER)
        end = self._held.find("\n")
        if _RECIPIENT.fullmatch(self._held if end < 0 else self._held[:end]):
            if end >= 0:
                self._state = "recipient"
        else:
            self._state = "text"
        yield from ()

    def _in_recipient(self) -> Iterator[Event]:
        end = self._held.find("\n")
        name = self._held if end < 0 else self._held[:end]
        if not _RECIPIENT.fullmatch(name):
            self._break("a recipient's name and a newline")
        elif end < 0:
            return
        elif name == TEXT_RECIPIENT:
            self._held, self._state = self._held[end + 1 :], "text"
        elif not name:
            self._break("a recipient's name")
        else:
            self._held, self._state, self._name = self._held[end + 1 :], "arguments", name
            self._json, self._arguments = JsonScanner(), ""
        yield from ()

    def _in_text(self) -> Iterator[Event]:
        at = self._held.find(HEADER)
        if at >= 0:
            text, self._held = self._held[:at], self._held[at + len(HEADER) :]
            self._state = "recipient"
        else:
            cut = len(self._held) - partial_suffix(self._held, (HEADER,))
            text, self._held = self._held[:cut], self._held[cut:]
        if text:
            yield Text(text)

    def _in_arguments(self) -> Iterator[Event]:
        if not self._arguments:  # the call starts with its arguments: a name alone is no call
            self._held = self._held.lstrip()
            if not self._held.startswith("{"):
                if self._held:
                    self._break("a JSON object of arguments")
                return
            yield CallStarted(self._started, self._name)
        end = self._json.end(self._held)
        cut = len(self._held) if end is None else end
        part, self._held = self._held[:cut], self._held[cut:]
        if part:
            self._arguments += part
            yield Arguments(self._started, part)
        if end is not None:
            self._end_call()

    def _in_after_call(self) -> Iterator[Event]:
        self._held = self._held.lstrip()
        if self._held.startswith(HEADER):
            self._held, self._state = self._held[len(HEADER) :], "recipient"
        elif self._held and not HEADER.startswith(self._held):
            self._break("`>>>` after a call")
        yield from ()

    def _in_broken(self) -> Iterator[Event]:
        at = self._held.find(HEADER)
        if at >= 0:
            self._held, self._state = self._held[at + len(HEADER) :], "recipient"
        else:
            self._held = self._held[len(self._held) - partial_suffix(self._held, (HEADER,)) :]
        yield from ()

    def _end_call(self) -> None:
        self._state = "after_call"
        self._started += 1
        try:
            json.loads(self._arguments)
        except ValueError:
            log.warning("The model's functionary call arguments are not JSON: %r", self._arguments)
        else:
            self._calls += 1

    def _break(self, expected: str) -> None:
        log.warning(
            "The model's functionary answer could not be parsed (expected %s); "
            "it is left out up to the next >>>: %r",
            expected,
            self._held[:200],
        )
        self._state = "broken"


FUNCTIONARY_V32 = Functionary()
FORMATS = (FUNCTIONARY_V32,)
