"""Hardening of the HTTP surface, through the live server.

- Every route is behind the API key except an explicit list of open paths, whatever the method
  and however the path is spelled (trailing slash, `//`, `.` and `..`, percent-encoding, case).
- What uvicorn answers by itself (a request it cannot parse, an oversized head) is an OpenAI
  envelope, and the server goes on serving.
- No response is a redirect, or carries a Location, built from a forged Host header.
- Storage failures: tests/e2e/test_storage_errors.py.

Requests go out with their target exactly as written (tests/raw_http.py: http.client, or a raw
socket for what is not HTTP at all): httpx would normalise `//`, `.` and `..` before sending.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import API_KEYS, LiveServer
from tests.raw_http import assert_envelope, problems_with, raw, send

# The only paths answered without a key (adapters/http.py: OPEN_PATHS says the same).
OPEN_PATHS = ("/health", "/ping", "/generated-images/{name}", "/", "/playground/{asset}")
METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH")
# No key at all, and wrong keys in each place a key is read from.
NOT_KEYS = (
    {},
    {"Authorization": "Bearer wrong-key"},
    {"x-api-key": "wrong-key"},
    {"Authorization": f"Basic {API_KEYS[0]}"},  # a right key under another scheme
    {"Authorization": "Bearer "},
)


@dataclass(frozen=True)
class Listed:
    path: str  # the route's template, /v1/models/{model:path}
    methods: frozenset[str]
    target: str  # a concrete path for it


@pytest.fixture(scope="module")
def routes(server: LiveServer, tmp_path_factory) -> list[Listed]:
    """The routes of the app the live server runs, made in-process from the same settings."""
    from adapters.http import create_app
    from common.settings import Settings

    settings = Settings(
        api_key=",".join(API_KEYS),
        models=server.registry,
        cache_dir=tmp_path_factory.mktemp("routes-cache"),
    )
    app = create_app(settings)
    listed = []
    for route in app.routes:
        target = re.sub(r"\{model(:path)?\}", "gpt-4", route.path)
        target = re.sub(r"\{name\}", "no-such-image.png", target)
        target = re.sub(r"\{response_id(:path)?\}", "resp_unknown", target)
        target = re.sub(r"\{conversation_id(:path)?\}", "conv_unknown", target)
        target = re.sub(r"\{item_id(:path)?\}", "msg_unknown", target)
        target = re.sub(r"\{asset\}", "swagger-ui.css", target)
        assert "{" not in target, f"a route parameter this test does not fill: {route.path}"
        listed.append(Listed(route.path, frozenset(route.methods or ()), target))
    return listed


def test_the_open_paths_are_listed_in_the_gateway_and_are_routes(routes):
    from adapters.http import OPEN_PATHS as GATEWAY_OPEN_PATHS

    assert tuple(GATEWAY_OPEN_PATHS) == OPEN_PATHS
    assert {r.path for r in routes} >= set(OPEN_PATHS)  # the list names no stale path
    protected = [r.path for r in routes if r.path not in OPEN_PATHS]
    assert "/v1/models" in protected and "/models" in protected  # the LocalAI-style aliases
    assert len(protected) >= 20


def test_every_other_route_needs_the_key_for_every_method(server, routes):
    problems = []
    checked = 0
    for route in routes:
        if route.path in OPEN_PATHS:
            continue
        for method in METHODS:
            for headers in NOT_KEYS:
                answer = send(server, method, route.target, headers)
                where = f"{method} {route.target} {headers}"
                problems += problems_with(answer, method, where)
                if method in route.methods and answer.status != 401:
                    problems.append(f"{where}: {answer.status}, not 401")
                elif answer.status not in (401, 404, 405):
                    problems.append(f"{where}: {answer.status}")
                checked += 1
    assert not problems, "\n".join(problems[:40])
    assert checked >= 20 * len(METHODS) * len(NOT_KEYS)


def spellings(path: str) -> Iterator[str]:
    """The same path written the ways a client, a proxy or an attacker might."""
    segments = path.strip("/").split("/")
    last = segments[-1]
    yield path
    yield path + "/"
    yield path + "//"
    yield "/" + path  # //v1/models
    yield path.replace("/", "//")
    yield path.upper()
    yield path[:-1] + path[-1].upper()
    yield "/" + "/".join([*segments[:-1], f"%{ord(last[0]):02X}{last[1:]}"])  # /v1/%6Dodels
    yield "/" + "/".join([*segments[:-1], f"%{ord(last[0]):02x}{last[1:]}"])
    yield "/" + "%2F".join(segments)  # /v1%2Fmodels
    yield "/" + "/./".join(segments)  # /v1/./models
    yield "/" + "/".join(segments[:-1] + ["x", "..", last])  # /v1/x/../models
    yield "/" + "/".join(segments[:-1] + ["x", "%2e%2e", last])
    yield f"{path}/%2e%2e/{last}"  # /v1/models/%2e%2e/models
    yield f"{path}/../{last}"
    yield path + "%2F"
    yield path + "%20"
    yield path + "%00"
    yield path + ";x=1"
    yield path + "?x=1"
    yield path.replace("/", "\\")
    yield "/v1" + path if not path.startswith("/v1") else path.removeprefix("/v1")
    yield "/v1/v1" + path.removeprefix("/v1")
    yield path.removeprefix("/")  # no leading slash: not a valid target
    yield "http://127.0.0.1" + path  # absolute-form
    yield "http://evil.example" + path


SPELLED = ("/v1/models", "/models", "/v1/models/gpt-4", "/v1/chat/completions", "/embeddings")


@pytest.mark.parametrize("path", SPELLED)
def test_no_spelling_of_a_protected_path_answers_without_the_key(server, path):
    problems = []
    for target in spellings(path):
        for method in ("GET", "HEAD", "OPTIONS", "POST"):
            for headers in NOT_KEYS[:2]:
                answer = send(server, method, target, headers)
                where = f"{method} {target} {headers}"
                problems += problems_with(answer, method, where)
                if answer.status not in (400, 401, 404, 405):  # 400: not a valid target
                    problems.append(f"{where}: {answer.status}")
    assert not problems, "\n".join(problems[:40])


def test_the_same_spellings_reach_the_route_with_the_key(server):
    """The spellings above are not refused by accident: those that name the route do reach it
    (so without a key it is the key that stops them)."""
    key = server.headers()
    assert send(server, "GET", "/v1/%6Dodels", key).json()["object"] == "list"
    assert send(server, "GET", "/models", key).json()["object"] == "list"
    assert send(server, "HEAD", "/v1/models", key).status == 200
    assert send(server, "GET", "/v1/models/gpt-4", key).json()["id"] == "gpt-4"


def test_health_without_a_key_says_ok_and_nothing_more(server):
    for headers in NOT_KEYS:
        for target in ("/health", "/%68ealth", "/health?verbose=1"):
            answer = send(server, "GET", target, headers)
            assert answer.status == 200 and answer.json() == {"status": "ok"}, (target, headers)
        assert send(server, "HEAD", "/health", headers).body == b""
        for method in ("OPTIONS", "POST", "DELETE"):  # 404 today: the gateway maps 405 by
            answer = send(server, method, "/health", headers)  # the operations, not /health
            assert answer.status in (404, 405) and assert_envelope(answer, answer.status)
        for target in ("/health/", "//health", "/HEALTH", "/v1/health"):
            assert_envelope(send(server, "GET", target, headers), 404)
    detailed = send(server, "GET", "/health", server.headers()).json()
    assert set(detailed) == {"status", "active", "waiting", "loaded"}


@pytest.mark.parametrize(
    "target",
    [
        "/generated-images/no-such-image.png",
        "/generated-images/AAAAAAAAAAAAAAAAAAAAAA.png",
        "/generated-images/..%2F..%2Fmodels.yaml",
        "/generated-images/%2e%2e",
        "/generated-images/../health",
        "/generated-images/",
        "/generated-images",
    ],
)
def test_an_image_url_gives_nothing_but_its_image(server, target):
    for headers in NOT_KEYS[:2]:
        assert_envelope(send(server, "GET", target, headers), 404)


# --- what uvicorn answers by itself ---------------------------------------------------------

CLOSE = b"Host: stratus\r\nConnection: close\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="garbage-request-line"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, id="tls"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", id="http2-preface"),
        pytest.param(b"GET /v1/models HTTP/9.9\r\n" + CLOSE + b"\r\n", id="bad-version"),
        pytest.param(b"BREW /v1/models HTTP/1.1\r\n" + CLOSE + b"\r\n", id="unknown-method"),
        pytest.param(b"GET /v1/mo\x00dels HTTP/1.1\r\n" + CLOSE + b"\r\n", id="nul-in-path"),
        pytest.param(b"GET /v1/mo dels HTTP/1.1\r\n" + CLOSE + b"\r\n", id="space-in-path"),
        pytest.param("GET /v1/modèls HTTP/1.1\r\n".encode() + CLOSE + b"\r\n", id="non-ascii"),
        pytest.param(b"GET /v1/models HTTP/1.1\r\n" + CLOSE + b"Bad Name: 1\r\n\r\n", id="header"),
        pytest.param(b"GET /v1/models HTTP/1.1\r\n" + CLOSE + b"X-A: a\x01b\r\n\r\n", id="ctl"),
        pytest.param(b"GET /v1/models HTTP/1.1\r\n" + CLOSE + b"X-A: a\r\n b\r\n\r\n", id="fold"),
        pytest.param(b"GET /v1/models HTTP/1.1\nHost: x\nConnection: close\n\n", id="bare-lf"),
        pytest.param(
            b"POST /v1/chat/completions HTTP/1.1\r\n" + CLOSE + b"Content-Length: abc\r\n\r\n",
            id="content-length-not-a-number",
        ),
        pytest.param(
            b"POST /v1/chat/completions HTTP/1.1\r\n" + CLOSE + b"Content-Length: -1\r\n\r\n",
            id="content-length-negative",
        ),
        pytest.param(
            b"POST /v1/chat/completions HTTP/1.1\r\n" + CLOSE + b"Content-Length: 2\r\n"
            b"Content-Length: 3\r\n\r\n{}",
            id="content-length-twice",
        ),
        pytest.param(
            b"POST /v1/chat/completions HTTP/1.1\r\n" + CLOSE + b"Content-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="content-length-and-chunked",
        ),
        pytest.param(
            b"POST /v1/chat/completions HTTP/1.1\r\n" + CLOSE + b"Transfer-Encoding: chunked\r\n"
            b"\r\nzz\r\n",
            id="bad-chunk",
        ),
        pytest.param(
            b"POST /v1/chat/completions HTTP/1.1\r\n" + CLOSE + b"Transfer-Encoding: gzip\r\n\r\n",
            id="unknown-transfer-encoding",
        ),
    ],
)
def test_a_request_uvicorn_cannot_parse_gets_the_envelope(server, request_bytes):
    answer = raw(server, request_bytes)
    error = assert_envelope(answer, 400, code="invalid_http_request")
    assert error["type"] == "invalid_request_error"
    assert answer.headers["connection"] == "close"
    assert "uvicorn" not in error["message"].lower() and "httptools" not in error["message"]
    assert send(server, "GET", "/health").json() == {"status": "ok"}  # and it goes on serving


def test_an_oversized_head_is_a_431_in_the_envelope(server):
    huge = b"GET /v1/models HTTP/1.1\r\n" + CLOSE + b"X-Long: " + b"a" * 300_000 + b"\r\n\r\n"
    assert_envelope(raw(server, huge), 431, code="request_headers_too_large")
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(2000))
    assert_envelope(raw(server, b"GET /v1/models HTTP/1.1\r\n" + CLOSE + many + b"\r\n"), 431)
    # A large head under the limit is an ordinary request (here refused for want of a key).
    fine = b"GET /v1/models HTTP/1.1\r\n" + CLOSE + b"X-Long: " + b"a" * 30_000 + b"\r\n\r\n"
    assert_envelope(raw(server, fine), 401)
    assert send(server, "GET", "/health").json() == {"status": "ok"}


def test_a_body_near_the_cap_is_not_taken_for_a_long_head(server):
    body = json.dumps({"model": "no-such-model", "input": "x" * 60_000}).encode()
    request = (
        b"POST /v1/embeddings HTTP/1.1\r\n" + CLOSE + b"Authorization: Bearer "
        + API_KEYS[0].encode() + b"\r\nContent-Type: application/json\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip
    assert_envelope(raw(server, request), 404, code="model_not_found")


def test_expect_100_continue_without_a_key_is_refused_before_the_body(server):
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\n" + CLOSE + b"Content-Type: application/json\r\n"
        b"Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
    )
    answer = raw(server, head)  # no body sent: a 100 Continue would come first, then wait
    assert_envelope(answer, 401, code="invalid_api_key")


def test_a_websocket_upgrade_is_an_ordinary_request_behind_the_key(server):
    upgrade = (
        b"GET /v1/models HTTP/1.1\r\nHost: stratus\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    assert_envelope(raw(server, upgrade), 401, code="invalid_api_key")


# --- no redirect built from the Host header -------------------------------------------------

HOST_PATHS = (  # with and without trailing slashes: none may redirect to the forged host
    *("/v1/models/", "/models/", "/v1/chat/completions/", "/health/", "/generated-images/"),
    *("/generated-images/x.png/", "/v1", "/v1/", "/", "//evil.example/", "/v1/models//"),
    "/nothing-here/",
)


@pytest.mark.parametrize("headers", [{}, {"Authorization": f"Bearer {API_KEYS[0]}"}])
def test_a_forged_host_never_becomes_a_location(server, headers):
    problems = []
    for path in HOST_PATHS:
        for method in ("GET", "HEAD", "POST", "OPTIONS"):
            forged = {**headers, "Host": "evil.example", "X-Forwarded-Host": "evil.example"}
            answer = send(server, method, path, forged)
            where = f"{method} {path} {sorted(headers)}"
            if path == "/" and method in ("GET", "HEAD"):  # the playground page, open
                if answer.status != 200 or "location" in answer.headers:
                    problems.append(f"{where}: {answer.status} {answer.headers}")
            else:
                problems += problems_with(answer, method, where)  # no 3xx, no Location
            if b"evil.example" in answer.body and not path.startswith("//evil"):
                problems.append(f"{where}: the forged host is in the body")
    assert not problems, "\n".join(problems)
