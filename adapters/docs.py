"""GET /openapi.json and GET /docs: the API's document, and a page that renders it.

The page is Swagger UI from its PyPI package (swagger-ui-py ships its static bundle), served by
Stratus itself: nothing comes from a CDN, so it works offline and on private networks. All
URLs in the page are relative, so it works behind a path prefix (an API Gateway stage) too.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from adapters.operations import Operation
from common.errors import EngineUnavailable, NotFound, StratusError

# With API keys set, a browser asks for them (any user name, a key as the password) and then
# sends them along with the page's own requests.
BROWSER_LOGIN = {"WWW-Authenticate": 'Basic realm="Stratus", charset="UTF-8"'}
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Stratus API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      persistAuthorization: true,
      tryItOutEnabled: false,
    });
  </script>
</body>
</html>
"""


class Pages:
    def __init__(self, operations: Sequence[Operation], *, serves_images: bool, metrics: bool):
        self._operations = operations
        self._serves_images = serves_images
        self._metrics = metrics

    def routes(self) -> dict[str, Callable[[Request], Any]]:
        return {"/openapi.json": self.openapi, "/docs": self.page, "/docs/{asset}": self.asset}

    @cached_property
    def document(self) -> bytes:
        """Built on first use (a few hundred ms of schema generation), then kept; the module
        that builds it is imported then too, not at every cold start."""
        from adapters.openapi import build_document

        document = build_document(
            self._operations, serves_images=self._serves_images, metrics=self._metrics
        )
        return json.dumps(document, separators=(",", ":")).encode()

    async def openapi(self, request: Request) -> Response:
        body = await run_in_threadpool(lambda: self.document)
        return Response(body, media_type="application/json")

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def asset(self, request: Request) -> Response:
        name = request.path_params["asset"]
        if name not in ASSETS:  # only the two files the page loads, never a path
            error = NotFound(f"Unknown request URL: {request.url.path}.")
            return JSONResponse(error.envelope(), status_code=error.status)
        try:
            bundle = _bundle()
        except StratusError as error:
            return JSONResponse(error.envelope(), status_code=error.status)
        return FileResponse(
            bundle / name,
            media_type=ASSETS[name],
            headers={"cache-control": "public, max-age=86400"},
        )


def _bundle() -> Path:
    """swagger-ui-py's static directory, found without importing the package (its import pulls
    in its framework glue)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailable("The docs page's files are not installed (swagger-ui-py).")
    return Path(next(iter(spec.submodule_search_locations))) / "static"
