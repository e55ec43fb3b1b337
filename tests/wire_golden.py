"""Recorded wire output of the text endpoints: what a client receives, byte for byte, for a set
of requests at temperature 0, plain and streamed, compared with what was recorded. It holds the
dialects' output still while the code under them moves (issue 36: "byte-identical before and
after").

What differs between two runs of the same request is made neutral first: ids become `<id1>`,
`<id2>`... in order of appearance (so two places that must carry the same id still must),
timestamps `0`, sealed reasoning `<sealed>` (its nonce is random) and the Responses stream's
random padding its length. Everything else, key
order and spacing included, is compared as sent.

    STRATUS_RECORD_WIRE=1 .venv/bin/python -m pytest tests/e2e/test_wire_golden.py   # record
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

GOLDEN_DIR = Path(__file__).parent / "golden"
RECORD = os.environ.get("STRATUS_RECORD_WIRE") == "1"

# Every id shape the dialects send: OpenAI's (chatcmpl-, cmpl-, resp_, msg_, rs_, fc_, call_),
# Anthropic's (msg_, toolu_).
_ID = re.compile(
    r'"(id|item_id|call_id|tool_use_id|response_id|previous_response_id)"(:\s*)"([^"]+)"'
)
_TIME = re.compile(r'"(created|created_at|completed_at)"(:\s*)[0-9.]+')
_SEALED = re.compile(r'"encrypted_content"(:\s*)"[^"]*"')
_PADDING = re.compile(r'"obfuscation"(:\s*)"([^"]*)"')


def neutral(text: str) -> str:
    ids: dict[str, str] = {}

    def name(match: re.Match[str]) -> str:
        value = ids.setdefault(match.group(3), f"<id{len(ids) + 1}>")
        return f'"{match.group(1)}"{match.group(2)}"{value}"'

    text = _ID.sub(name, text)
    text = _TIME.sub(lambda match: f'"{match.group(1)}"{match.group(2)}0', text)
    text = _PADDING.sub(lambda m: f'"obfuscation"{m.group(1)}"<{len(m.group(2))} chars>"', text)
    return _SEALED.sub(lambda match: f'"encrypted_content"{match.group(1)}"<sealed>"', text)


def exchange(
    http: httpx.Client, path: str, body: Mapping[str, Any], headers: Mapping[str, str]
) -> str:
    """One request's answer as the client receives it: status, content type, body."""
    response = http.post(path, json=body, headers=dict(headers), timeout=120)
    kind = response.headers.get("content-type", "").split(";")[0]
    return f"{response.status_code} {kind}\n{neutral(response.text)}"


def check(name: str, answers: Mapping[str, str]) -> None:
    """Compares `answers` (request name -> wire text) with tests/golden/<name>.json, or writes
    it when recording."""
    path = GOLDEN_DIR / f"{name}.json"
    if RECORD:
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(json.dumps(answers, indent=1, ensure_ascii=False) + "\n")
        return
    recorded = json.loads(path.read_text())
    changed: list[str] = []
    for request in sorted(set(recorded) | set(answers)):
        before, after = recorded.get(request, ""), answers.get(request, "")
        if before != after:
            diff = difflib.unified_diff(
                before.splitlines(), after.splitlines(), "recorded", "now", lineterm="", n=1
            )
            changed.append(f"--- {request}\n" + "\n".join(list(diff)[:40]))
    assert not changed, "the wire output changed:\n" + "\n".join(changed)
