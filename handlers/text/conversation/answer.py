"""A streamed answer collected into a whole one: the rule each dialect's collector (chat.py,
messages.py; the Responses API keeps its whole response beside its events) applies to a tool
call that the token budget cut short, mid-arguments.

The dialects differ here, each as its API documents its non-streamed answer:
- Chat Completions (`LEFT_OUT`): a whole answer lists only calls a client can make; a call cut
  short is left out (a stream showed its start; `finish_reason` says `length`).
- Messages (`PARTIAL_INPUT`): a `tool_use` block stopped by `max_tokens` keeps the input it
  had, parsed as far as it goes.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic_core import from_json

CutCall = Literal["left_out", "partial_input"]
LEFT_OUT: CutCall = "left_out"
PARTIAL_INPUT: CutCall = "partial_input"


def whole_arguments(arguments: str, cut_call: CutCall) -> dict[str, Any] | None:
    """A call's arguments in a whole answer: the JSON object they are when complete (a format's
    grammar makes every complete call's arguments JSON); when cut short, None where the dialect
    leaves the call out, or the object parsed as far as it goes."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        if cut_call == LEFT_OUT:
            return None
        parsed = from_json(arguments or "{}", allow_partial="trailing-strings")
    return parsed if isinstance(parsed, dict) else {}
