"""Images for the tests of images in chat: files made with Pillow or by hand, as data: URLs, and
a loopback HTTP server that serves them."""

from __future__ import annotations

import base64
import http.server
import struct
import threading
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from io import BytesIO
from typing import Any


def encoded(picture: Any, format_: str, **options: Any) -> bytes:
    """A Pillow image as a file of `format_` (PNG, JPEG, ...)."""
    out = BytesIO()
    picture.save(out, format_, **options)
    return out.getvalue()


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    return encoded(Image.new("RGB", (width, height), colour), "PNG")


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels, with a body of a few bytes: a
    decompression bomb, as far as a decoder that trusts the header knows."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


class ImageServer(http.server.ThreadingHTTPServer):
    """Serves `files` (path -> body) on 127.0.0.1, counting the connections it accepts."""

    daemon_threads = True
    files: Mapping[str, bytes]
    connections = 0

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server_address[1]}{path}"


class _Files(http.server.BaseHTTPRequestHandler):
    server: ImageServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except ConnectionError:  # a client that stops reading past its cap
            pass

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(files: Mapping[str, bytes]) -> Iterator[ImageServer]:
    server = ImageServer(("127.0.0.1", 0), _Files)
    server.files = files
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
