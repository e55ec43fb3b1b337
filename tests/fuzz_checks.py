"""How the fuzzer (tests/e2e/test_fuzz.py) asks and judges: who is asking (the keys it sends),
bodies sent in chunks, and what makes an answer OpenAI's error envelope or well-formed SSE."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.conftest import API_KEYS


@dataclass(frozen=True)
class Chunked:
    """A body sent with Transfer-Encoding: chunked, so the server learns its size as it reads."""

    parts: tuple[bytes, ...]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.parts)


# Who is asking: mostly with a valid key; else no key, a wrong one, or a scheme that is not
# Bearer. The expected answer to all but the first three is a 401.
AUTH = ["bearer", "bearer", "bearer", "bearer", "second", "x-api-key", "none", "wrong", "basic"]
AUTHORIZED = {"bearer", "second", "x-api-key"}


def auth_headers(kind: str) -> dict[str, str]:
    return {
        "bearer": {"Authorization": f"Bearer {API_KEYS[0]}"},
        "second": {"Authorization": f"bearer  {API_KEYS[1]} "},
        "x-api-key": {"x-api-key": API_KEYS[0]},
        "none": {},
        "wrong": {"Authorization": f"Bearer {API_KEYS[0]}x"},
        "basic": {"Authorization": f"Basic {API_KEYS[0]}"},
    }[kind]


def envelope_problem(payload: Any) -> str | None:
    """What keeps `payload` (decoded JSON) from being an error envelope, or None: OpenAI's
    ({"error": {message, type, param, code}}) or, on the Messages paths, Anthropic's
    ({"type": "error", "error": {type, message}})."""
    if not isinstance(payload, dict) or not isinstance(payload.get("error"), dict):
        return "no 'error' object"
    error = payload["error"]
    problems = [f"'{k}' is not a string" for k in ("message", "type") if not _is(error, k, str)]
    if payload.get("type") == "error":  # Anthropic's
        return "; ".join(problems) or None
    problems += [
        f"'{k}' is not a string or null" for k in ("param", "code") if not _nullable(error, k)
    ]
    return "; ".join(problems) or None


def _is(error: dict, key: str, kind: type) -> bool:
    return key in error and isinstance(error[key], kind)


def _nullable(error: dict, key: str) -> bool:
    return key in error and (error[key] is None or isinstance(error[key], str))


def sse_problem(text: str) -> str | None:
    """What keeps a streamed body from being SSE, or None: `data:` events that end in [DONE]
    (chat, completions), or events named by their data's type without a sentinel (Responses,
    Messages)."""
    if not text.endswith("\n\n"):
        return "the stream does not end with a blank line"
    events = text[:-2].split("\n\n")
    named = events[0].startswith("event: ")
    datas = []
    for event in events:
        lines = [line for line in event.split("\n") if not line.startswith(":")]
        name = lines.pop(0).removeprefix("event: ") if named and lines else None
        if not lines or not all(line.startswith("data: ") for line in lines):
            return f"not an SSE data event: {event[:200]!r}"
        datas.append((name, "\n".join(line[len("data: ") :] for line in lines)))
    if not named and datas[-1][1] != "[DONE]":
        return f"the last event is not [DONE]: {datas[-1][1][:200]!r}"
    for name, data in datas if named else datas[:-1]:
        try:
            payload = json.loads(data)
        except ValueError:
            return f"an event is not JSON: {data[:200]!r}"
        if named and (not isinstance(payload, dict) or payload.get("type") != name):
            if name != "error":
                return f"an event's name is not its type: {name!r}, {data[:200]!r}"
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            if problem := envelope_problem(payload):
                return f"an error event is not an envelope ({problem}): {data[:300]}"
    return None


def describe_body(kwargs: dict[str, Any]) -> str:
    if "json" in kwargs:
        return json.dumps(kwargs["json"], ensure_ascii=True)[:1500]
    if kwargs.get("files"):
        fields = [(n, f"<{len(v[1])} bytes>" if v[0] else v[1]) for n, v in kwargs["files"]]
        return f"multipart {fields!r}"[:1500]
    if isinstance(kwargs.get("data"), Chunked):
        return f"chunked, no content-length: {b''.join(kwargs['data'].parts)!r}"[:1500]
    if kwargs.get("data") is not None:
        return f"data {kwargs['data']!r}"[:1500]
    return "(no body)"
