"""Errors as HTTP answers: a StratusError in its dialect's envelope, with the request id, and
Starlette's own 404/405 for paths no route serves, in the envelope of the API that path is in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapters.operations import dialect_of, find
from common.errors import NotFound, StratusError


def error_response(
    error: StratusError,
    request_id: str,
    envelope: Callable[[StratusError], dict[str, Any]] = StratusError.envelope,
) -> Response:
    headers = {"x-request-id": request_id, **error.headers}
    return JSONResponse(envelope(error), status_code=error.status, headers=headers)


async def unrouted(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 for unknown routes, in the envelope every platform uses."""
    try:
        find(request.method, request.url.path)
        error: StratusError = NotFound(f"Unknown request URL: {request.url.path}.")
    except StratusError as found:
        error = found
    envelope = dialect_of(request.url.path).envelope
    return JSONResponse(envelope(error), status_code=error.status)
