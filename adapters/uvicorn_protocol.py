"""uvicorn's HTTP/1.1 protocol, answering what it rejects by itself in OpenAI's envelope.

uvicorn answers a request it cannot parse (a garbage request line, an invalid header name, a bad
Content-Length, an unknown method under httptools, ...) with a text/plain 400 before the app
sees it. These subclasses send that 400 as JSON in the envelope every other error uses, then
close the connection as uvicorn does. `stratus serve` passes `protocol_class()` as `http=`.

httptools sets no limit on a request's head (request line and headers): a client could send
megabytes of headers that are all kept in memory. Past MAX_HEAD_BYTES the request is refused
with a 431 in the envelope; under h11, uvicorn's `h11_max_incomplete_event_size` is the same
limit (a 400).
"""

from __future__ import annotations

import asyncio
import json

from common.errors import InvalidRequest, StratusError

MAX_HEAD_BYTES = 64 * 1024
# After a refusal the connection is half-closed and what the client still sends is read and
# dropped for a moment: closing at once, with its bytes unread, would send a TCP reset that
# can destroy the answer before the client reads it.
LINGER_SECONDS = 2.0

MALFORMED = (
    "The server could not parse this HTTP request: check its request line, headers and "
    "Content-Length."
)


class HeadersTooLarge(StratusError):
    status = 431
    type = "invalid_request_error"
    code = "request_headers_too_large"


def malformed() -> StratusError:
    """What every request uvicorn cannot parse is told."""
    return InvalidRequest(MALFORMED, code="invalid_http_request")


def headers_too_large() -> StratusError:
    return HeadersTooLarge(
        f"The request line and headers are longer than this server accepts ({MAX_HEAD_BYTES} "
        "bytes)."
    )


def _close_after_answer(transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
    if transport.can_write_eof():
        transport.write_eof()
        loop.call_later(LINGER_SECONDS, transport.close)
    else:
        transport.close()


def protocol_class() -> type[asyncio.Protocol]:
    """The protocol uvicorn's `http="auto"` would pick (httptools if installed, else h11),
    answering in the envelope."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return _h11_protocol()
    return _httptools_protocol()


def _httptools_protocol() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    class EnvelopeHttpToolsProtocol(HttpToolsProtocol):
        _in_head = False  # between a request's first byte and the end of its headers
        _head_bytes = 0
        _refused = False  # answered with an error: the rest of the input is dropped

        def send_400_response(self, msg: str) -> None:
            self._send_error(malformed())

        def _send_error(self, error: StratusError) -> None:
            body = json.dumps(error.envelope()).encode()
            content = [STATUS_LINE[error.status]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend(
                [
                    b"content-type: application/json\r\n",
                    b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                    b"connection: close\r\n",
                    b"\r\n",
                    body,
                ]
            )
            self.transport.write(b"".join(content))
            self._refused = True
            _close_after_answer(self.transport, self.loop)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True

        def on_headers_complete(self) -> None:
            self._in_head, self._head_bytes = False, 0
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)
            if not self._in_head or self._refused or self.transport.is_closing():
                return
            # A head still incomplete: what it has taken so far, counted a read at a time
            # (a read that also ends the previous request counts whole: a little generous).
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self.logger.warning("Request head over %d bytes refused.", MAX_HEAD_BYTES)
                self._send_error(headers_too_large())

    return EnvelopeHttpToolsProtocol


def _h11_protocol() -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

    class EnvelopeH11Protocol(H11Protocol):
        _refused = False  # answered with an error: the rest of the input is dropped

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)

        def send_400_response(self, msg: str) -> None:
            error = malformed()
            body = json.dumps(error.envelope()).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"connection", b"close"),
            ]
            reason = STATUS_PHRASES[error.status]
            event = h11.Response(status_code=error.status, headers=headers, reason=reason)
            self.transport.write(self.conn.send(event))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
            self._refused = True
            _close_after_answer(self.transport, self.loop)

    return EnvelopeH11Protocol
