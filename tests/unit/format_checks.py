"""What the tool-format tests share: a parser's events as a client sees them, and every way a
stream can cut a model's output."""

from __future__ import annotations

from collections.abc import Iterator

from layers.tool_formats import Arguments, CallParser, Reasoning, Text


def merged(events: list) -> list:
    """Consecutive pieces of the same text, reasoning or call's arguments as one."""
    out: list = []
    for event in events:
        last = out[-1] if out else None
        if type(event) is type(last) and isinstance(event, Text | Reasoning):
            out[-1] = type(event)(last.text + event.text)
        elif isinstance(event, Arguments) and isinstance(last, Arguments):
            if last.index == event.index:
                out[-1] = Arguments(event.index, last.text + event.text)
            else:
                out.append(event)
        else:
            out.append(event)
    return out


def run(parser: CallParser, pieces: list[str]) -> tuple[list, int]:
    """The parser's events for the pieces, merged, and the calls it counted."""
    events = [e for piece in pieces for e in parser.feed(piece)] + list(parser.finish())
    return merged(events), parser.calls


def every_cut(text: str) -> Iterator[list[str]]:
    """The text whole, a character at a time, and in two pieces at every position."""
    yield [text]
    yield list(text)
    for at in range(len(text) + 1):
        yield [text[:at], text[at:]]
