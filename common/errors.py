"""The one error hierarchy. Handlers raise these; each adapter maps them once.

Every error renders as OpenAI's envelope: {"error": {"message", "type", "param", "code"}}.
Anything that is not a StratusError is a bug: adapters answer it with a generic 500
and log it with a request id, never showing its text to the client.
"""

from __future__ import annotations

from typing import Any


class StratusError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return error_envelope(self.message, self.type, self.param, self.code)


def error_envelope(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class InvalidRequest(StratusError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(StratusError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(StratusError):
    status = 404
    type = "invalid_request_error"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist. GET /v1/models lists the models served here.",
            param="model",
        )


class PayloadTooLarge(StratusError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class UnsupportedMediaType(StratusError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class Overloaded(StratusError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ClientGone(StratusError):
    """The client left before its answer was ready: nobody reads this (nginx's 499)."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class RequestTimeout(StratusError):
    """The request ran past the operator's deadline (STRATUS_REQUEST_TIMEOUT): its work was
    stopped. A 504, as a proxy's deadline would answer."""

    status = 504
    type = "server_error"
    code = "request_timeout"


class ServerStopping(StratusError):
    status = 503
    type = "server_error"
    code = "server_shutting_down"


class EngineUnavailable(StratusError):
    status = 503
    type = "server_error"
    code = "engine_unavailable"


class InternalError(StratusError):
    """The generic answer to a bug: the message never carries the exception's text."""

    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(self, request_id: str) -> None:
        super().__init__(f"The server had an error while processing the request (id {request_id}).")
