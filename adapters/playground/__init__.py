"""GET /: the playground, a page to try every endpoint of this server from a browser.

Plain HTML, CSS and JavaScript modules beside this module, inside the package: no build
step, no CDN (deployments may be offline). The page talks only to the public OpenAI paths, with
relative URLs (it works behind a path prefix) and the key a person types in (kept in the
browser, sent as Bearer), so the page itself is open: it holds nothing but code. A content
security policy lets it load only its own files and talk only to this server; model output is
rendered as text nodes, never as HTML.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from common.errors import NotFound

DIRECTORY = Path(__file__).resolve().parent
ROUTE = "/playground"
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; media-src 'self' data: blob:; connect-src 'self'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Small files, revalidated on every load (their ETag): a deployment's update shows at once.
    "cache-control": "no-cache",
}


async def page(request: Request) -> Response:
    return FileResponse(
        DIRECTORY / "index.html", media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS
    )


async def asset(request: Request) -> Response:
    """One of the page's own files, by name only (never a path)."""
    name = request.path_params["asset"]
    path = DIRECTORY / name
    media_type = MEDIA_TYPES.get(path.suffix)
    if "/" in name or name.startswith(".") or media_type is None or not path.is_file():
        error = NotFound(f"Unknown request URL: {request.url.path}.")
        return JSONResponse(error.envelope(), status_code=error.status)
    return FileResponse(path, media_type=media_type, headers=SECURITY_HEADERS)
