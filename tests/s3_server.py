"""A real S3 endpoint on loopback (moto's server) behind a TCP proxy the tests control.

The proxy counts the HTTP requests that reach S3, can reset connections after some bytes of
a response (a transfer cut mid-way), and can refuse everything (S3 unreachable).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.processes import free_port

# A request's first line and headers (its Range, for ranged GETs).
REQUEST_LINE = re.compile(
    rb"(GET|HEAD|PUT|POST|DELETE) (/\S*) HTTP/1\.[01]\r\n((?:[^\r\n]+\r\n)*)\r\n"
)
RANGE = re.compile(rb"(?i)^range: *(\S+)", re.M)


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        executable = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        self.process = subprocess.Popen(
            [executable, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{self.url}/moto-api/", timeout=1)
                return
            time.sleep(0.1)
        raise RuntimeError("moto_server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a broken network would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        # Wakes the other pump thread blocked in recv() on this socket: until it lets go,
        # close() would not really close, and no reset would be sent.
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.requests: list[tuple[str, str, str]] = []  # (method, path, range)
        self.reset_after: int | None = None  # bytes of a response, then reset
        self.down = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, method: str, path_part: str) -> int:
        with self._lock:
            return sum(1 for m, p, _ in self.requests if m == method and path_part in p)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            if self.down:
                _reset(client)
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            _reset(client)
            return
        threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
        sent = 0
        try:
            while data := upstream.recv(65536):
                limit = self.reset_after
                if limit is not None and sent + len(data) > limit:
                    client.sendall(data[: max(0, limit - sent)])
                    raise ConnectionResetError  # the injected fault
                client.sendall(data)
                sent += len(data)
            _close(client)  # S3 ended the connection: end it the same way
        except OSError:
            _reset(client)
        finally:
            _reset(upstream)

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        seen = b""
        try:
            while data := client.recv(65536):
                seen = seen[-4096:] + data
                for match in REQUEST_LINE.finditer(seen):
                    ranged = RANGE.search(match[3])
                    request = (
                        match[1].decode(),
                        match[2].decode(),
                        ranged[1].decode() if ranged else "",
                    )
                    with self._lock:
                        self.requests.append(request)
                seen = seen[match.end() :] if (match := _last(REQUEST_LINE, seen)) else seen
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)


def _last(pattern: re.Pattern, data: bytes) -> re.Match | None:
    found = None
    for found in pattern.finditer(data):  # noqa: B007 - we want the last one
        pass
    return found
