"""Property-based fuzzing of every operation against the live server, from its own document.

schemathesis (over hypothesis) generates each operation's requests from the server's
/openapi.json: bodies that follow it (positive) and bodies that break it (negative: wrong types,
missing fields, raw bytes sent as JSON). Beside them, garbage: unknown paths and methods, odd
content types, malformed bytes, no or wrong keys.

Every response must hold: no 5xx; every 4xx is JSON in OpenAI's envelope
({"error": {"message": str, "type": str, "param": str|null, "code": str|null}}); a request
without a valid key is a 401; a streamed 200 is well-formed SSE ending in `data: [DONE]`, any
error event in it an envelope. After the run the server still answers /health and is idle.

Violations are collected, not raised: one run reports all of them, each with its request.
`make test` runs 15 examples per test (derandomized: the same requests in every run; about 45 s
on two busy cores); STRATUS_FUZZ_EXAMPLES raises that (`make fuzz`: >= 2,000 requests, with a
summary) and STRATUS_FUZZ_SEED=N draws other requests than CI's.
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from adapters.operations import OPERATIONS as SERVED_OPERATIONS
from tests.conftest import MAX_BODY_BYTES, LiveServer
from tests.fuzz_bodies import bound
from tests.fuzz_checks import (
    AUTH,
    AUTHORIZED,
    Chunked,
    auth_headers,
    describe_body,
    envelope_problem,
    sse_problem,
)

EXAMPLES = int(os.environ.get("STRATUS_FUZZ_EXAMPLES", "15"))  # per test
CLIENT_TIMEOUT = 60.0  # seconds; a bounded request takes a few at most
# Unset, the same requests in every run (CI is reproducible); a seed explores other ones.
SEED = os.environ.get("STRATUS_FUZZ_SEED")
SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=SEED is None,
    database=None,
    deadline=None,  # a request runs a real model: its time is not the generator's
    # Violations are collected, not raised, so there is nothing to shrink; a timeout or a dead
    # server fails at once rather than being replayed.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)

# (method, path): every operation Stratus serves, as its document lists them.
OPERATIONS = [(operation.method, operation.path) for operation in SERVED_OPERATIONS]


@dataclass
class Stats:
    """What a run sent and got, for `make fuzz`'s summary."""

    requests: collections.Counter = field(default_factory=collections.Counter)
    statuses: collections.Counter = field(default_factory=collections.Counter)
    by_operation: dict[str, collections.Counter] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    seconds: collections.Counter = field(default_factory=collections.Counter)
    slowest: list[tuple[float, str]] = field(default_factory=list)  # (seconds, request)
    violations: list[str] = field(default_factory=list)
    server_errors: int = 0
    envelope_violations: int = 0
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        lines = [
            f"fuzz: {sum(self.requests.values())} requests in "
            f"{time.monotonic() - self.started:.0f} s ({EXAMPLES} examples per test)",
            f"  5xx: {self.server_errors}; envelope violations: {self.envelope_violations}; "
            "other violations: "
            f"{len(self.violations) - self.server_errors - self.envelope_violations}",
            "  statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items())),
        ]
        for seconds, request in self.slowest:
            lines.append(f"  slow: {seconds:.1f} s {request[:300]}")
        for operation, count in sorted(self.requests.items()):
            statuses = self.by_operation[operation]
            detail = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
            seconds = self.seconds[operation]
            lines.append(f"  {operation}: {count} in {seconds:.1f} s ({detail})")
        return "\n".join(lines)


STATS = Stats()


class Sender:
    """Sends requests one at a time, checks each response and keeps the numbers."""

    def __init__(self, server: LiveServer, stats: Stats) -> None:
        self.server = server
        self.stats = stats
        self.session = requests.Session()
        self.previous = "(none)"  # the last request answered
        self.unanswered: str | None = None  # the first request the server did not answer

    def send(self, label: str, kwargs: dict[str, Any], authorized: bool) -> None:
        kwargs = {**kwargs, "allow_redirects": False, "stream": True}
        request = f"{kwargs['method']} {kwargs['url']}\n    headers: {kwargs.get('headers')}"
        request += f"\n    body: {describe_body(kwargs)}"
        started = time.monotonic()
        try:
            with self.session.request(**kwargs, timeout=(5, CLIENT_TIMEOUT)) as response:
                body = b""
                for chunk in response.iter_content(65536):
                    body += chunk
                    if time.monotonic() - started > 2 * CLIENT_TIMEOUT:
                        raise requests.Timeout("the response kept streaming")
        except requests.Timeout:
            pytest.fail(
                f"no answer in {CLIENT_TIMEOUT:.0f} s (a fuzzed request hung, or its bounds are "
                f"too loose):\n{request}"
            )
        except requests.ConnectionError as exc:
            # The first such request most likely crashed the server (hypothesis then replays
            # it, on a server that is gone): every later test fails the same way.
            self.unanswered = self.unanswered or f"{request}\n  after {self.previous}"
            pytest.fail(
                f"the server went away ({exc}); the first request it did not answer:\n"
                f"  {self.unanswered}"
            )
        self.previous = request
        status = response.status_code
        self.stats.requests[label] += 1
        took = time.monotonic() - started
        self.stats.seconds[label] += took
        short = f"{kwargs['method']} {kwargs['url']} {describe_body(kwargs)}"
        self.stats.slowest = sorted([*self.stats.slowest, (took, short)], reverse=True)[:3]
        self.stats.statuses[status] += 1
        self.stats.by_operation[label][status] += 1
        content_type = response.headers.get("content-type", "")
        if kwargs["method"] == "HEAD":  # no body: a GET's status and headers only
            problem = self.check(status, content_type, None, authorized)
        else:
            problem = self.check(status, content_type, body, authorized)
        if problem:
            text = body[:600].decode(errors="replace")
            self.stats.violations.append(f"{problem}\n  {request}\n  -> {status} {text}")

    def check(
        self, status: int, content_type: str, body: bytes | None, authorized: bool
    ) -> str | None:
        media_type = content_type.split(";")[0].strip().lower()
        if status >= 500:
            self.stats.server_errors += 1
            return f"5xx ({status})"
        if not authorized and status != 401:
            return f"a request without a valid key got {status}, not 401"
        if status >= 400:
            try:
                payload = json.loads(body) if body and media_type == "application/json" else None
            except ValueError:
                payload = None
            problem = None if body is None else envelope_problem(payload)
            if media_type != "application/json" or problem:
                self.stats.envelope_violations += 1
                return f"a {status} is not an error envelope ({media_type}; {problem})"
            return None
        if status >= 300 or status < 200:
            return f"unexpected status {status}"
        if body is None:
            return None
        if media_type == "text/event-stream":
            if problem := sse_problem(body.decode(errors="replace")):
                self.stats.envelope_violations += "error event" in problem
                return f"a malformed stream: {problem}"
        elif media_type == "application/json":
            try:
                json.loads(body)
            except ValueError:
                return "a 200 says application/json but is not JSON"
        return None


@dataclass(frozen=True)
class Fuzzer:
    server: LiveServer
    strategies: dict[str, Any]  # operation label -> schemathesis Case strategy
    sender: Sender


@pytest.fixture(scope="module")
def fuzzer(server: LiveServer) -> Iterator[Fuzzer]:
    import schemathesis
    from schemathesis import GenerationMode

    strategies: dict[str, Any] = {}
    answer = requests.get(f"{server.url}/openapi.json", headers=server.headers(), timeout=30)
    answer.raise_for_status()
    schema = schemathesis.openapi.from_dict(answer.json())
    for method, path in OPERATIONS:
        selected = schema.include(path=path, method=method)
        (result,) = list(selected.get_all_operations())
        operation = result.ok()
        strategies[f"{method} {path}"] = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )
    sender = Sender(server, STATS)
    yield Fuzzer(server, strategies, sender)
    sender.session.close()


def run_examples(test: Callable[[st.DataObject], None]) -> None:
    """`test` for EXAMPLES examples; then every violation seen in them, at once."""
    before = len(STATS.violations)
    run = SETTINGS(given(st.data())(test))
    (seed(int(SEED))(run) if SEED is not None else run)()
    found = STATS.violations[before:]
    assert not found, f"{len(found)} violation(s):\n\n" + "\n\n".join(found[:20])


@pytest.mark.parametrize("operation", [f"{m} {p}" for m, p in OPERATIONS])
def test_operation_from_the_spec(fuzzer: Fuzzer, operation: str) -> None:
    form = operation.startswith("POST /audio/trans")

    def one(data: st.DataObject) -> None:
        case = data.draw(fuzzer.strategies[operation], "case")
        if isinstance(case.body, dict):
            bound(data, case.path, case.body, form)
        base = data.draw(st.sampled_from(["/v1", "/v1", "/v1", ""]), "prefix")
        kwargs = case.as_transport_kwargs(base_url=fuzzer.server.url + base)
        auth = data.draw(st.sampled_from(AUTH), "auth")
        headers = {
            k: v
            for k, v in kwargs["headers"].items()
            if k.lower() not in ("authorization", "x-api-key")
        }
        kwargs["headers"] = {**headers, **auth_headers(auth)}
        # A model id with a newline matches no route (Starlette's path convertor is `.*`, which
        # stops at a newline): a 404 for an unknown URL, answered before the key is checked.
        unrouted = "%0a" in kwargs["url"].lower()
        fuzzer.sender.send(operation, kwargs, auth in AUTHORIZED or unrouted)

    run_examples(one)


# Garbage: paths Stratus serves and paths it does not, every method, bodies that are no JSON,
# JSON of any shape, content types that do not fit, oversized bodies.
OTHER_PATHS = [
    "/v1/chat/completions/",
    "/v1/",
    "/",
    "/v2/chat/completions",
    "/v1/files",
    "/v1/responses",
    "/v1/images/edits",
    "/v1/models/a/b/../c",
    "/v1/chat//completions",
    "/v1/%00",
    "/health/x",
]
SERVED = {
    (method, prefix + path.replace("{model}", "gpt-4o-mini"))
    for method, path in OPERATIONS
    for prefix in ("", "/v1")
}
SERVED_PATHS = sorted({path for _, path in SERVED})
CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "application/vnd.api+json",
    "text/plain",
    "multipart/form-data",
    "multipart/form-data; boundary=xyz",
    "application/x-www-form-urlencoded",
    "image/png",
    "application/json; boundary=\x7f",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = ["model", "messages", "prompt", "input", "voice", "instruction", "n", "stream", "size"]
bodies = st.one_of(
    st.none(),
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    # objects with the field names the operations read, any values
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5),
    st.text(max_size=60).map(lambda t: ("{" + t).encode("utf-8", "surrogatepass")),
    st.just(b'{"model": "gpt-4o-mini", "messages": [' * 2000),  # deep, and over the body cap
    st.just(b" " * (MAX_BODY_BYTES + 1)),
    st.just(b'{"a": "\\ud800"}'),
    st.just(Chunked((b'{"model": "gpt-4o-mini", "input": "', b"x" * MAX_BODY_BYTES, b'"}'))),
    st.lists(st.binary(min_size=1, max_size=30), min_size=1, max_size=4).map(
        lambda parts: Chunked(tuple(parts))
    ),
)


def test_garbage(fuzzer: Fuzzer) -> None:
    def one(data: st.DataObject) -> None:
        methods = ["POST"] * 5 + ["GET", "GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
        method = data.draw(st.sampled_from(methods), "method")
        where = data.draw(st.sampled_from(["served"] * 4 + ["other", "random"]), "path kind")
        if where == "served":
            path = data.draw(st.sampled_from(SERVED_PATHS), "path")
        elif where == "other":
            path = data.draw(st.sampled_from(OTHER_PATHS), "path")
        else:
            path = "/v1/" + data.draw(st.text(max_size=20), "path")
        body = data.draw(bodies, "body")
        content_type = data.draw(st.sampled_from(CONTENT_TYPES), "content type")
        if isinstance(body, dict):  # a lucky one may be valid: bounded as the others
            bound(data, path, body, form=False, repairs=False)
            body = json.dumps(body).encode()
        auth = data.draw(st.sampled_from(AUTH), "auth")
        headers = auth_headers(auth)
        if content_type is not None:
            headers["Content-Type"] = content_type
        kwargs = {
            "method": method,
            "url": fuzzer.server.url + path,
            "headers": headers,
            "data": body,
        }
        # Only a served method and path asks for a key: an unknown path is a 404, a method the
        # path does not serve a 405, whoever asks (as OpenAI answers). HEAD is served with GET.
        # A header uvicorn cannot parse is a 400 before anything else.
        served = ("GET" if method == "HEAD" else method, path) in SERVED
        served &= content_type is None or content_type.isprintable()
        fuzzer.sender.send("garbage", kwargs, auth in AUTHORIZED or not served)

    run_examples(one)


def test_server_alive_and_idle_after_fuzzing(fuzzer: Fuzzer) -> None:
    """Last in this module: the fuzzing left a server that answers and holds no work."""
    headers = fuzzer.server.headers()
    deadline = time.monotonic() + 10
    while True:
        health = requests.get(f"{fuzzer.server.url}/health", headers=headers, timeout=10)
        assert health.status_code == 200, health.text
        state = health.json()
        if state["active"] == 0 and state["waiting"] == 0:
            break
        assert time.monotonic() < deadline, f"still busy 10 s after fuzzing: {state}"
        time.sleep(0.1)
    assert fuzzer.server.process.poll() is None, "the server process exited"
    print("\n" + STATS.summary())
