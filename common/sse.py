"""Server-Sent Events framing, as OpenAI streams: `data: {json}` events, then `data: [DONE]`."""

from __future__ import annotations

import json

from common.errors import StratusError

DONE = b"data: [DONE]\n\n"


def encode_event(payload_json: str) -> bytes:
    # JSON never contains a raw newline, so one `data:` line per event is always valid SSE.
    return b"data: " + payload_json.encode() + b"\n\n"


def error_event(error: StratusError) -> bytes:
    """An error after the stream began: the status is already sent, so it travels as an event."""
    return encode_event(json.dumps(error.envelope()))
