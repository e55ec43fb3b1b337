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

from common.settings import Settings
from common.store import ModelStore

_handler: Any = None


def make_handler(settings: Settings, store: ModelStore | None = None, **app_options: Any) -> Any:
    from mangum import Mangum

    from adapters.http import create_app
    from adapters.runtime import build_image_urls

    # Lambda containers come and go: no file they keep outlives them, so image URLs need a bucket.
    app_options.setdefault("image_urls", build_image_urls(settings, "AWS Lambda", False))
    return Mangum(create_app(settings, store, **app_options), lifespan="off")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _handler
    if _handler is None:
        _handler = make_handler(Settings())
    return _handler(event, context)
