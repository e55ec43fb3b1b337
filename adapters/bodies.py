"""Request bodies as they arrive, within the server's cap: JSON, or a multipart upload.

A body over the cap is refused (413) as soon as it is known to be: from its declared length, or
while it arrives (a chunked upload declares none), never buffered or spooled beyond the cap.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartParser
from starlette.requests import Request

from common.errors import InvalidRequest, PayloadTooLarge, StratusError, UnsupportedMediaType


class BodyReader:
    def __init__(self, max_body: int) -> None:
        self.max_body = max_body

    async def form(self, request: Request) -> dict[str, Any]:
        """A multipart upload as a dict: text fields, repeated `x[]` fields as lists, `file`
        as bytes."""
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "multipart/form-data":
            raise UnsupportedMediaType("Send this request as multipart/form-data, with a 'file'.")
        self._refuse_declared_excess(request)
        parser = MultiPartParser(
            request.headers, self._capped_body(request), max_files=1, max_fields=64
        )
        try:
            form = await parser.parse()
        except StratusError:
            raise  # over the cap, while it arrived
        except Exception:  # python-multipart's errors: a malformed body
            raise InvalidRequest("The multipart body could not be parsed.") from None
        fields: dict[str, Any] = {}
        try:
            for name, value in form.multi_items():
                if isinstance(value, str):
                    if name.endswith("[]"):
                        fields.setdefault(name[:-2], []).append(value)
                    else:
                        fields[name] = value
                    continue
                fields[name] = await value.read()  # within the cap: it was counted arriving
        finally:
            await form.close()
        return fields

    def _refuse_declared_excess(self, request: Request) -> None:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise _too_large(self.max_body)

    async def _capped_body(self, request: Request) -> AsyncGenerator[bytes, None]:
        """The body as it arrives, refused (413) once it passes the cap: a chunked upload,
        which declares no length, is never buffered or spooled beyond it."""
        received = 0
        async for part in request.stream():
            received += len(part)
            if received > self.max_body:
                raise _too_large(self.max_body)
            yield part

    async def json(self, request: Request) -> tuple[Any, int]:
        """The body parsed, and its size in bytes."""
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type and media_type != "application/json" and not media_type.endswith("+json"):
            raise UnsupportedMediaType(
                f"Unsupported content type '{media_type}': send the body as application/json."
            )
        self._refuse_declared_excess(request)
        body = bytearray()
        async for part in self._capped_body(request):
            body += part
        try:
            if len(body) <= ON_LOOP_BYTES:
                return _parse_json(body), len(body)
            # Megabytes of JSON take the event loop for a while: every other client (and
            # /health) would wait.
            return await run_in_threadpool(_parse_json, body), len(body)
        except (ValueError, RecursionError):  # UnicodeError is a ValueError
            raise InvalidRequest(
                "We could not parse the JSON body of your request. The body must be a JSON "
                "object; check its syntax and encoding (UTF-8)."
            ) from None


ON_LOOP_BYTES = 64 * 1024


def _parse_json(body: bytes | bytearray) -> Any:
    data = json.loads(body)
    # A lone surrogate ("\ud800") parses, but is not text: refuse it here rather than fail
    # later in a tokenizer or an encoder.
    json.dumps(data, ensure_ascii=False).encode()
    return data


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than this server accepts ({limit} bytes).")
