"""AWS Lambda: the same ASGI gateway behind Mangum (API Gateway REST v1, HTTP API v2, Function
URLs, ALB). Mangum buffers: a streamed response comes back whole, still a valid event stream.
For true streaming, run the HTTP gateway behind the AWS Lambda Web Adapter in response-stream
mode instead (docs/deploy-aws.md).

The handler builds the app on the first invocation and keeps it for the container's life: the
model store, and the models it loads, outlive invocations. Mangum runs ASGI lifespan on every
call; nothing is loaded there ("lifespan": off).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.http import PLATFORM_REQUEST_ID
from common.settings import Settings
from common.store import ModelStore

_handler: Any = None


def make_handler(settings: Settings, store: ModelStore | None = None, **app_options: Any) -> Any:
    from mangum import Mangum

    from adapters.http import create_app
    from adapters.runtime import build_image_urls

    # Lambda containers come and go: no file they keep outlives them, so image URLs need a bucket.
    app_options.setdefault("image_urls", build_image_urls(settings, "AWS Lambda", False))
    app = create_app(settings, store, platform="lambda", **app_options)
    return Mangum(with_invocation_id(app), lifespan="off")


def with_invocation_id(app: ASGIApp) -> ASGIApp:
    """The app, told each invocation's Lambda request id (Mangum puts the context in the
    scope): the cost line carries it, to be matched with the invocation's REPORT line."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        context = scope.get("aws.context")
        request_id = getattr(context, "aws_request_id", None)
        if isinstance(request_id, str):
            scope = {**scope, PLATFORM_REQUEST_ID: request_id}
        await app(scope, receive, send)

    return wrapped


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _handler
    if _handler is None:
        _handler = make_handler(Settings())
    return _handler(event, context)
