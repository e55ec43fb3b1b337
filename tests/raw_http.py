"""Requests with their target sent exactly as written (http.client, or a raw socket for what is
not HTTP at all: httpx would normalise `//`, `.` and `..`), and what an error answer must be:
OpenAI's envelope, never a redirect. Shared by the hardening tests."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from tests.conftest import LiveServer

ENVELOPE_KEYS = {"message", "type", "param", "code"}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self):
        return json.loads(self.body)


def send(
    server: LiveServer,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> Answer:
    """One request with its target sent verbatim; Host is the server's unless given."""
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    try:
        headers = headers or {}
        skip_host = any(name.lower() == "host" for name in headers)
        connection.putrequest(method, target, skip_host=skip_host, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body or method in ("POST", "PUT", "PATCH"):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        content = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, content)
    finally:
        connection.close()


def raw(server: LiveServer, data: bytes) -> Answer:
    """Bytes on a fresh connection, and the one response read back (by its Content-Length)."""
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed the connection without an answer: {received!r}"
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection before the whole body"
            body += chunk
    return Answer(int(status_line.split(" ")[1]), headers, body)


def problems_with(answer: Answer, method: str, where: str) -> list[str]:
    """What is wrong with an answer that must be an error: data, a redirect, anything but the
    envelope."""
    problems = []
    if answer.status < 400:
        problems.append(f"{where}: {answer.status}")
    if "location" in answer.headers:
        problems.append(f"{where}: Location {answer.headers['location']}")
    if method == "HEAD":
        if answer.body:
            problems.append(f"{where}: a body on HEAD")
        return problems
    if not answer.headers.get("content-type", "").startswith("application/json"):
        problems.append(f"{where}: {answer.headers.get('content-type')} {answer.body[:80]!r}")
        return problems
    body = answer.json()
    anthropic = "/messages" in where  # Anthropic's paths answer in Anthropic's envelope
    if anthropic and (body.get("type") != "error" or set(body["error"]) != {"type", "message"}):
        problems.append(f"{where}: not Anthropic's envelope: {answer.body[:200]!r}")
    elif not anthropic and (set(body) != {"error"} or set(body["error"]) != ENVELOPE_KEYS):
        problems.append(f"{where}: not the envelope: {answer.body[:200]!r}")
    return problems


def assert_envelope(answer: Answer, status: int, code: str | None = None) -> dict:
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    error = answer.json()["error"]
    assert set(error) == ENVELOPE_KEYS and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error
