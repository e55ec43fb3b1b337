"""Server-Sent Events framing. OpenAI's chat and completions stream `data: {json}` events, then
`data: [DONE]`; the Responses and Messages APIs name each event (`event: <type>` beside its
`data:`) and end without a sentinel."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from common.errors import StratusError

DONE = b"data: [DONE]\n\n"


def encode_event(payload_json: str, name: str | None = None) -> bytes:
    # JSON never contains a raw newline, so one `data:` line per event is always valid SSE.
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + payload_json.encode() + b"\n\n"


def error_event(
    error: StratusError, envelope: Callable[[StratusError], dict[str, Any]], named: bool = False
) -> bytes:
    """An error after the stream began: the status is already sent, so it travels as an event
    (in the dialect's own envelope; named `error` where events are named)."""
    return encode_event(json.dumps(envelope(error)), "error" if named else None)
