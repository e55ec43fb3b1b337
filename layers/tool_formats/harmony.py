"""GPT-OSS's harmony format: every answer is a series of messages on channels, and a tool call
is a message addressed to a function.

The prompt ends with `<|start|>assistant`, so the model's first message starts in its header:

    <|channel|>analysis<|message|>thinking<|end|>
    <|start|>assistant<|channel|>final<|message|>the answer<|return|>
    <|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>{}<|call|>

A header holds a channel (`analysis`: reasoning; `final`: the answer; `commentary`: a preamble
shown to users, or calls), an optional recipient (`to=functions.NAME` makes the message a
call) and an optional content type (` json`, ` <|constrain|>json`). The recipient may come
before the channel (`<|start|>assistant to=functions.NAME<|channel|>commentary json`), as the
chat template renders earlier calls and openai/harmony's renderer writes headers, or after it,
as the model usually writes; the parser takes either. `<|return|>` and `<|call|>` end the
generation, so the engine may never show them: a message also ends where the output does.

Sources: OpenAI's cookbook (articles/openai-harmony.md), openai/harmony's renderer
(src/encoding.rs), the template itself, and llama.cpp's parser and tests
(common/parsers/gpt-oss.cpp, tests/test-chat.cpp: calls on the analysis channel, a stray
`<|channel|>commentary to=assistant` before a channel, built-in tools the client never offered).
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
    Literal,
    Reasoning,
    StreamParser,
    Text,
    ToolFormat,
    arguments_json,
    partial_suffix,
    text_without,
)

log = logging.getLogger("stratus.tool_calls")

START, END, MESSAGE = "<|start|>", "<|end|>", "<|message|>"
CHANNEL, CONSTRAIN, CALL, RETURN = "<|channel|>", "<|constrain|>", "<|call|>", "<|return|>"
MARKERS = (CHANNEL, MESSAGE, END, START, CONSTRAIN, CALL, RETURN)
_ENDS = (END, CALL, RETURN)  # consumed; any other marker also ends a message, and starts the next
# A header is a few words on one line; text that is longer or breaks a line is no header.
_HEADER_LIMIT = 256
_RECIPIENT = re.compile(r"to=([^\s<]+)")
_CHANNEL = re.compile(r"<\|channel\|>([^\s<]*)")
_NOT_RECIPIENTS = ("assistant", "all")  # gpt-oss-20b's stray `to=assistant` addresses no one
_ROLE = re.compile(r"\s*(?:<\|start\|>)?\s*(?!to=)([A-Za-z][\w.:-]*)")
# How a header can begin; other text where a header belongs is no header (it streams as text).
_OPENERS = ("<|", "to=", "assistant")
_KINDS = {"analysis": "reasoning", "final": "text", "commentary": "text", None: "text"}


class Harmony(ToolFormat):
    name = "harmony"
    markers = MARKERS
    parses_every_answer = True  # channels shape every answer, tools or not
    # `<|call|>` ends the generation, and the template renders only an assistant turn's first
    # call: a second one would vanish from the next prompt.
    single_call = True

    def grammar(
        self,
        tools: Sequence[ToolSpec],
        required: bool,
        parallel: bool,
        literal: Literal = lark_string,
    ) -> str:
        """An optional analysis message, then the final answer (`auto` only) or calls, each
        written as the model writes it (recipient after the channel, `<|constrain|>json`)."""
        header = f"{literal(START)} {lark_string('assistant')}"
        many = parallel and not self.single_call
        lines = [
            "start: analysis? " + ("calls" if required else "(final | calls)"),
            f"calls: call ({header} call)*" if many else "calls: call",
            "call: " + " | ".join(f"call_{i}" for i in range(len(tools))),
            *_common_rules(literal),
        ]
        for i, tool in enumerate(tools):
            to = lark_string(f"commentary to=functions.{tool.name} ")
            lines.append(
                f"call_{i}: {literal(CHANNEL)} {to} {literal(CONSTRAIN)} {lark_string('json')} "
                f"{literal(MESSAGE)} arguments_{i} {literal(CALL)}"
            )
            lines.append(f"arguments_{i}: {inline_json(tool.parameters or ANY_OBJECT)}")
        return "\n".join(lines) + "\n"

    def answer_grammar(self, answer: str | None, literal: Literal = lark_string) -> str:
        """An answer without tools: optional analysis, then the final message, whose content is
        `answer` (a Lark grammar with a `start` rule, e.g. a response_format's JSON schema) or
        free text."""
        lines = ["start: analysis? final"]
        if answer is None:
            lines += _common_rules(literal)
        else:
            lines += _common_rules(literal, final="final_content")
            lines.append(re.sub(r"^start:", "final_content:", answer.strip(), count=1, flags=re.M))
        return "\n".join(lines) + "\n"

    def parser(self, tools: Sequence[ToolSpec] = ()) -> _Parser:
        return _Parser()

    def render_calls(self, calls: Sequence[ToolCall]) -> str:
        """As the chat template renders an earlier call (recipient before the channel)."""
        return "".join(
            f"{START}assistant to=functions.{call.name}{CHANNEL}commentary json{MESSAGE}"
            f"{json.dumps(arguments_json(call.arguments), ensure_ascii=False)}{CALL}"
            for call in calls
        )


def _common_rules(literal: Literal, final: str = "TEXT?") -> list[str]:
    """The analysis message (its `<|end|>` and the next header's start included) and the final
    message, whose content is `final`. TEXT never spells a marker, so that where special tokens
    are plain strings (a vocabulary without them) the grammar stays unambiguous."""
    return [
        f"analysis: {literal(CHANNEL)} {lark_string('analysis')} {literal(MESSAGE)} TEXT? "
        f"{literal(END)} {literal(START)} {lark_string('assistant')}",
        f"final: {literal(CHANNEL)} {lark_string('final')} {literal(MESSAGE)} {final}",
        f"TEXT: {text_without(MARKERS)}",
    ]


def _read_header(header: str) -> tuple[str, str | None, str | None, bool]:
    """(role, channel, recipient, odd): the role if written (the prompt's is assistant), the
    last channel named (a stray one may come first), the first real recipient (a function
    before others), and whether more than a role and a content type (`json`) is left."""
    role = _ROLE.match(header)
    channels = _CHANNEL.findall(header)
    recipients = [r for r in _RECIPIENT.findall(header) if r not in _NOT_RECIPIENTS]
    calls = [r for r in recipients if r.startswith("functions.")]
    rest = _CHANNEL.sub(" ", _RECIPIENT.sub(" ", header)).replace(START, " ")
    rest = rest.replace(CONSTRAIN, " ", 1)
    words = rest.split()[1:] if role else rest.split()
    return (
        role.group(1) if role else "assistant",
        channels[-1] if channels else None,
        (calls or recipients or [None])[0],
        len(words) > 1 or "<|" in rest,
    )


def _first_marker(text: str) -> tuple[int, str] | None:
    found = [(at, m) for m in MARKERS if (at := text.find(m)) >= 0]
    return min(found) if found else None


class _Parser(StreamParser):
    """One harmony answer, split as it streams.

    States: `header` (held whole until `<|message|>`: nothing in it is ever shown), `content`
    of a message of some kind (reasoning, text, call, or skip for one addressed elsewhere),
    and `plain` for text outside any message (a model that wrote no header).
    """

    def __init__(self) -> None:
        # The prompt's `<|start|>assistant` opened the first header.
        super().__init__("header")
        self._kind = "text"
        self._started = 0  # calls begun: the next call's index
        self._arguments: list[str] = []
        self._warned_plain = False

    def finish(self) -> Iterator[Event]:
        held, self._held = self._held, ""
        if self._state == "header":
            if held.strip() and (_first_marker(held) or "to=" in held or _partial_only(held)):
                log.warning("The model's harmony answer ended in a message header: %r", held[:200])
            elif held.strip():
                self._note_plain(held)
                yield Text(held)
            return
        if held:
            yield from self._content(held)
        if self._state == "content" and self._kind == "call":
            self._end_call(finished=False)

    def _in_header(self) -> Iterator[Event]:
        text = self._held
        at = text.find(MESSAGE)
        candidate = text[: at if at >= 0 else len(text)].lstrip()
        if not _may_be_header(candidate):
            self._state = "plain"
            self._note_plain(candidate)
        elif at >= 0:
            self._held = text[at + len(MESSAGE) :]
            yield from self._open(text[:at])

    def _in_plain(self) -> Iterator[Event]:
        yield from self._in_content()

    def _in_content(self) -> Iterator[Event]:
        text = self._held
        found = _first_marker(text)
        if found is None:
            keep = partial_suffix(text, MARKERS)
            piece, self._held = text[: len(text) - keep], text[len(text) - keep :]
            yield from self._content(piece)
            return
        at, marker = found
        yield from self._content(text[:at])
        self._held = text[at + len(marker) :] if marker in _ENDS else text[at:]
        if self._state == "content" and self._kind == "call":
            self._end_call(finished=True)
        self._state = "header"

    def _open(self, header: str) -> Iterator[Event]:
        role, channel, recipient, odd = _read_header(header)
        if odd:
            log.warning("Unexpected words in a harmony message header, ignored: %r", header)
        self._state = "content"
        if role != "assistant":
            self._kind = "skip"  # the model went on to write another's turn
            log.warning("The model wrote a %s message; it is left out", role)
        elif recipient is not None and recipient.startswith("functions."):
            self._kind, self._arguments = "call", []
            yield CallStarted(self._started, recipient.removeprefix("functions."))
            self._started += 1
        elif recipient is not None or channel not in _KINDS:
            self._kind = "skip"
            log.warning(
                "The model wrote to %s on channel %s, which Stratus does not offer; left out",
                recipient,
                channel,
            )
        else:
            self._kind = _KINDS[channel]

    def _content(self, piece: str) -> Iterator[Event]:
        if not piece:
            return
        if self._state == "plain" or self._kind == "text":
            yield Text(piece)
        elif self._kind == "reasoning":
            yield Reasoning(piece)
        elif self._kind == "call":
            self._arguments.append(piece)
            yield Arguments(self._started - 1, piece)

    def _end_call(self, finished: bool) -> None:
        """A call's message ended (its marker, or the output's end): complete if its arguments
        are JSON; otherwise the log says so, and it does not count."""
        arguments = "".join(self._arguments)
        try:
            json.loads(arguments)
        except ValueError:
            log.warning(
                "The model's harmony tool call %s without JSON arguments: %r",
                "ended" if finished else "was cut off",
                arguments[:200],
            )
        else:
            self._calls += 1

    def _note_plain(self, text: str) -> None:
        if not self._warned_plain:
            self._warned_plain = True
            log.warning("The model wrote text outside any harmony message, from %r", text[:200])


def _may_be_header(candidate: str) -> bool:
    """Whether text where a header belongs (leading whitespace stripped) may still be one.
    Once false it stays false as text arrives, so the answer does not depend on its cuts."""
    if "\n" in candidate[:_HEADER_LIMIT] or len(candidate) > _HEADER_LIMIT:
        return False
    return any(opener.startswith(candidate[: len(opener)]) for opener in _OPENERS)


def _partial_only(text: str) -> bool:
    """Only the start of a marker: a header cut short, not text."""
    stripped = text.strip()
    return any(marker.startswith(stripped) for marker in MARKERS)


HARMONY = Harmony()
FORMATS = (HARMONY,)
