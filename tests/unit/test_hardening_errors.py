"""Errors that tell the client what it needs and nothing more: uvicorn's own refusals (both
HTTP implementations) in the envelope; S3 failures naming the model, with the bucket and key
in the log only."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from adapters.uvicorn_protocol import MAX_HEAD_BYTES, _h11_protocol, _httptools_protocol
from common.errors import StratusError
from common.s3 import _errors
from common.sources import S3Source
from tests.processes import free_port


async def hello(scope, receive, send) -> None:
    assert scope["type"] == "http"
    headers = [(b"content-length", b"5")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture(params=["httptools", "h11"])
def served(request) -> Iterator[tuple[int, str]]:
    """A uvicorn server on a loopback port with one of the two protocol classes."""
    import uvicorn

    protocol = _httptools_protocol() if request.param == "httptools" else _h11_protocol()
    port = free_port()
    config = uvicorn.Config(
        hello,
        host="127.0.0.1",
        port=port,
        http=protocol,
        ws="none",
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        log_level="critical",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    yield port, request.param
    server.should_exit = True
    thread.join(10)


def exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {n.strip().lower(): v.strip() for n, _, v in (x.partition(":") for x in lines)}
    return int(status_line.split()[1]), headers, body


def envelope(headers: dict[str, str], body: bytes) -> dict:
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


CLOSE = b"Host: x\r\nConnection: close\r\n"


def test_a_request_that_cannot_be_parsed_is_a_400_envelope(served):
    port, _ = served
    for request in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\n" + CLOSE + b"Bad Name: 1\r\n\r\n"):
        status, headers, body = exchange(port, request)
        assert status == 400 and envelope(headers, body)["code"] == "invalid_http_request"
    assert exchange(port, b"GET / HTTP/1.1\r\n" + CLOSE + b"\r\n")[::2] == (200, b"hello")


def test_an_oversized_head_is_refused_in_the_envelope_and_read_to_the_end(served):
    port, implementation = served
    # 300 KB sent in one go: the answer must survive the bytes still arriving (no TCP reset).
    huge = b"GET / HTTP/1.1\r\n" + CLOSE + b"X-Long: " + b"a" * 300_000 + b"\r\n\r\n"
    status, headers, body = exchange(port, huge)
    # httptools has no limit of its own (the subclass's 431); h11's is a parse error (400).
    assert status == (431 if implementation == "httptools" else 400)
    assert envelope(headers, body)["type"] == "invalid_request_error"
    fine = b"GET / HTTP/1.1\r\n" + CLOSE + b"X-Long: " + b"a" * (MAX_HEAD_BYTES // 2) + b"\r\n\r\n"
    assert exchange(port, fine)[::2] == (200, b"hello")


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


@pytest.mark.parametrize(
    "error",
    [
        client_error("AccessDenied", 403),
        client_error("InvalidObjectState", 403),
        client_error("NoSuchKey", 404),
        client_error("InternalError", 500),
        EndpointConnectionError(endpoint_url="https://s3.secret-endpoint.example"),
    ],
)
def test_s3_errors_name_the_model_and_log_the_object(error, caplog):
    source = S3Source("secret-bucket", "secret/prefix/model.gguf")
    with caplog.at_level(logging.WARNING, logger="stratus.s3"):
        with pytest.raises(StratusError) as caught:
            with _errors("my-model", source, "s3:GetObject"):
                raise error
    message = caught.value.message
    assert "my-model" in message
    for secret in ("secret", "s3://", "model.gguf", "https://"):
        assert secret not in message, message
    assert "s3://secret-bucket/secret/prefix/model.gguf" in caplog.text  # the log has it
