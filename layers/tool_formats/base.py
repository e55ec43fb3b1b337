"""What every tool-call format provides: a grammar of the answer, a streaming parser of it
into neutral events, and the quirks of its ids.

A format is one family's way of writing calls (Hermes' `<tool_call>` tags, Llama 3's bare
JSON, Mistral's `[TOOL_CALLS]`, harmony's channels...). Handlers never see a family: they ask
the model's format for a grammar and a parser, and read `Text`, `Reasoning`, `CallStarted` and
`Arguments` events. Arguments are always streamed as JSON text (OpenAI's `arguments`), whatever
the model writes.
"""

from __future__ import annotations

import json
import secrets
import string
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from common.turns import ToolCall, ToolSpec
from layers.structured import lark_string, regex_escape


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Reasoning:
    """Thinking the format itself marks (harmony's analysis channel)."""

    text: str


@dataclass(frozen=True)
class CallStarted:
    index: int
    name: str


@dataclass(frozen=True)
class Arguments:
    index: int
    text: str  # a fragment of the call's arguments as JSON text


Event = Text | Reasoning | CallStarted | Arguments

# A marker's text -> its Lark expression: the special token (`<[id]>`) where the model's
# vocabulary has the marker as one, a string literal otherwise. Special tokens cannot be spelled
# by text tokens, so a format written with them must name them as tokens.
Literal = Callable[[str], str]


class CallParser(Protocol):
    @property
    def calls(self) -> int:
        """Calls whose arguments are complete."""
        ...

    def feed(self, text: str) -> Iterator[Event]:
        """Events for the next piece of generated text; text that may still become a marker
        is held back until a later piece (or `finish`) decides."""
        ...

    def finish(self) -> Iterator[Event]:
        """The end of the generation: what was held back, and a log line where the text
        could not be parsed."""
        ...


class StreamParser:
    """The loop every format's parser runs: held text is handed to the method of the state the
    parser is in (`_in_<state>`), which consumes some of it or changes state; when a pass does
    neither, the held text waits for the next piece."""

    def __init__(self, state: str) -> None:
        self._state = state
        self._held = ""
        self._calls = 0

    @property
    def calls(self) -> int:
        """Calls whose arguments are complete."""
        return self._calls

    def feed(self, text: str) -> Iterator[Event]:
        self._held += text
        while self._held:
            before = (self._state, len(self._held))
            yield from getattr(self, f"_in_{self._state}")()
            if (self._state, len(self._held)) == before:
                return  # needs more text


class PlainText:
    """The parser of an answer that is only text (no tools offered, no channels)."""

    calls = 0

    def feed(self, text: str) -> Iterator[Event]:
        yield Text(text)

    def finish(self) -> Iterator[Event]:
        yield from ()


class ToolFormat(ABC):
    """One family's tool-call format."""

    name: str
    # Texts the model writes as special tokens (`[TOOL_CALLS]`, `<|python_tag|>`): the engine
    # keeps their text in the output so that the parser can see them.
    markers: tuple[str, ...] = ()
    # The format also shapes answers without tools (harmony's channels): its parser runs on
    # every answer, not only when tools are offered.
    parses_every_answer: bool = False
    # The format holds at most one call per answer (Llama 3.x's templates refuse more).
    single_call: bool = False

    @abstractmethod
    def grammar(
        self,
        tools: Sequence[ToolSpec],
        required: bool,
        parallel: bool,
        literal: Literal = lark_string,
    ) -> str:
        """The Lark grammar (a `start` rule) of an answer: calls only (`required`), or free
        text that cannot start a call, then optionally calls (`auto`). Each call's name is one
        of `tools` and its arguments validate against the tool's parameters."""

    def answer_grammar(self, answer: str | None, literal: Literal = lark_string) -> str | None:
        """The grammar of an answer without tools: `answer` (a JSON answer's Lark grammar, or
        None for free text) inside whatever the format wraps every answer in."""
        return answer

    @abstractmethod
    def parser(self, tools: Sequence[ToolSpec] = ()) -> CallParser:
        """A fresh streaming parser of one answer; `tools`, the ones offered (for formats
        whose arguments are not JSON, to convert them by their schemas)."""

    def new_call_id(self) -> str | None:
        """An id for a call the model made, where the template insists on its own form
        (Mistral's nine alphanumerics); None: Stratus's `call_...` ids."""
        return None

    def template_id(self, call_id: str) -> str:
        """A call id as the template accepts it (an id from another model, sent back)."""
        return call_id

    @abstractmethod
    def render_calls(self, calls: Sequence[ToolCall]) -> str:
        """Earlier calls as the model writes them, for templates that do not render calls."""


def alphanumeric_id(length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def stable_alphanumeric_id(text: str, length: int) -> str:
    """The same `length` alphanumerics for the same text: an id mapped into a template's form
    keeps linking a call to its result."""
    import hashlib

    alphabet = string.ascii_letters + string.digits
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")
    out = []
    for _ in range(length):
        digest, rest = divmod(digest, len(alphabet))
        out.append(alphabet[rest])
    return "".join(out)


def partial_suffix(text: str, markers: Sequence[str]) -> int:
    """The length of the longest end of `text` that is the start of one of `markers`."""
    best = 0
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), best, -1):
            if marker.startswith(text[-size:]):
                best = size
                break
    return best


def text_without(markers: Sequence[str]) -> str:
    """A Lark terminal body: any non-empty text that contains none of `markers`."""
    alternatives = "|".join(regex_escape(marker) for marker in markers)
    return f"/(.|\\n)+/ & ~/(.|\\n)*({alternatives})(.|\\n)*/"


class JsonScanner:
    """Finds where a JSON value ends in text that arrives in pieces (brackets counted outside
    strings)."""

    def __init__(self) -> None:
        self.depth = 0
        self._in_string = False
        self._escaped = False

    def end(self, text: str) -> int | None:
        """How much of `text` belongs to the value if it ends in it; None if it goes on."""
        for i, char in enumerate(text):
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
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return i + 1
        return None


def arguments_json(arguments: str) -> object:
    """A call's arguments as the object a template renders (the text itself if not JSON)."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
