"""RunPod serverless worker: the same operations, reached through RunPod jobs.

    python -m adapters.runpod_worker                      # on RunPod
    python -m adapters.runpod_worker --rp_serve_api ...   # the SDK's local test API

Accepted job inputs (one pure function turns each into method, path, body and query):
    {"openai_route": "/v1/chat/completions", "openai_input": {...}}   RunPod's OpenAI endpoint;
        an empty openai_input means GET (as for /v1/models)
    {"route": "/v1/models", "method": "GET", "body": {...}}            a generic request

An audio upload (transcriptions, translations) carries `file` base64-encoded or as a URL.
Images asked for as `url` need STRATUS_IMAGE_BUCKET (presigned S3 URLs); without it, a 400.
A streamed chat or completion yields SSE-framed strings ("data: {...}\\n\\n", then
"data: [DONE]\\n\\n") as they are produced; a binary answer (audio) yields
{"content_type", "data": base64} — streamed speech one such part per sentence, as it is
synthesized: the audio is the decoded parts joined in order; anything else yields its JSON
object once. Errors
yield OpenAI's envelope with the HTTP status it would have had: {"error": {...}, "status": 404}.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from adapters.operations import OPERATIONS, Operation, Publishing, find, start
from common.errors import InternalError, InvalidRequest, PayloadTooLarge, StratusError
from common.image_urls import ImageUrls, NoImageUrls
from common.protocol.base import BinaryResponse, BinaryStream, OpenAIResponse
from common.settings import Settings
from common.sse import DONE, encode_event
from common.store import ModelStore

log = logging.getLogger("stratus.runpod")


@dataclass(frozen=True)
class JobRequest:
    method: str
    path: str
    body: Any = None
    query: Mapping[str, str] = field(default_factory=dict)


def normalize_job(job_input: Any) -> JobRequest:
    """Every accepted job shape as one request: method, path, body, query."""
    if not isinstance(job_input, Mapping):
        raise InvalidRequest("The job input must be an object.")
    if "openai_route" in job_input:
        route, body = job_input["openai_route"], job_input.get("openai_input") or None
        method = "POST" if body else "GET"
    elif "route" in job_input:
        route, body = job_input["route"], job_input.get("body")
        method = str(job_input.get("method") or ("POST" if body else "GET")).upper()
    else:
        raise InvalidRequest(
            "A job input needs 'openai_route' (with 'openai_input') or 'route' (with 'method' "
            "and 'body').",
            param="input",
        )
    if not isinstance(route, str) or not route.startswith("/"):
        raise InvalidRequest(
            "The route must be a path such as /v1/chat/completions.", param="route"
        )
    url = urlsplit(route)
    return JobRequest(method, url.path, body, dict(parse_qsl(url.query)))


MAX_UPLOAD_BYTES = 25 * 1024 * 1024


def uploaded_file(body: Any) -> Any:
    """A job's upload as the form fields the operation expects: `file` arrives base64-encoded
    (optionally as a data: URL) or as an http(s) URL to fetch."""
    if not isinstance(body, Mapping) or not isinstance(body.get("file"), str):
        return body  # the operation says what is missing
    value = body["file"]
    if value.startswith(("http://", "https://")):
        data = _download(value)
    else:
        try:
            data = base64.b64decode(value.split(",", 1)[-1], validate=True)
        except ValueError:
            raise InvalidRequest(
                "'file' must be base64-encoded audio or an http(s) URL.", param="file"
            ) from None
    return {**body, "file": data}


def _download(url: str) -> bytes:
    import httpx

    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=30) as response:
            response.raise_for_status()
            data = bytearray()
            for part in response.iter_bytes():
                data += part
                if len(data) > MAX_UPLOAD_BYTES:
                    raise PayloadTooLarge(f"The file at '{url}' is over {MAX_UPLOAD_BYTES} bytes.")
            return bytes(data)
    except httpx.HTTPError:
        raise InvalidRequest(f"The file could not be fetched from '{url}'.", param="file") from None


class Worker:
    def __init__(
        self,
        store: ModelStore,
        operations: Sequence[Operation] = OPERATIONS,
        image_urls: ImageUrls | None = None,
    ) -> None:
        self.store = store
        self.operations = operations
        self.image_urls = image_urls or NoImageUrls("RunPod")

    async def handle(self, job: Mapping[str, Any]) -> AsyncIterator[Any]:
        """The RunPod handler: an async generator, so the SDK's loop stays free meanwhile."""
        request_id = str(job.get("id") or secrets.token_hex(8))
        chunks = None
        try:
            request = normalize_job(job.get("input"))
            operation, path_params = find(request.method, request.path, self.operations)
            body = request.body
            if operation.form:
                body = await asyncio.to_thread(uploaded_file, body)
            parsed = operation.parse(body, {**request.query, **path_params})
            if operation.publishes:
                parsed = Publishing(parsed, self.image_urls)
            result, first = await asyncio.to_thread(start, operation.handle, parsed, self.store)
            if isinstance(result, BinaryResponse):  # audio, say: base64, with its type
                yield _binary(result.media_type, result.content)
                return
            if isinstance(result, BinaryStream):
                chunks = result.chunks
                yield _binary(result.media_type, first)  # type: ignore[arg-type]
                while (data := await asyncio.to_thread(next, chunks, None)) is not None:
                    if data:
                        yield _binary(result.media_type, data)
                return
            if first is None:
                yield result.model_dump(mode="json")
                return
            chunks = result
            yield _event(first)
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                yield _event(chunk)
            yield DONE.decode()
        except StratusError as error:
            yield {**error.envelope(), "status": error.status}
        except Exception:
            log.exception("job %s failed", request_id)
            error = InternalError(request_id)
            yield {**error.envelope(), "status": error.status}
        finally:
            if chunks is not None:
                chunks.close()  # type: ignore[attr-defined]


def _binary(media_type: str, data: bytes) -> dict[str, str]:
    return {"content_type": media_type, "data": base64.b64encode(data).decode()}


def _event(chunk: OpenAIResponse) -> str:
    return encode_event(chunk.to_json()).decode()


def concurrency_modifier(settings: Settings) -> Callable[[int], int]:
    return lambda current: settings.runpod_concurrency


def main() -> None:
    import runpod

    from adapters.runtime import build_image_urls, build_store

    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper())
    image_urls = build_image_urls(settings, "RunPod", serves_files=False)
    worker = Worker(build_store(settings), image_urls=image_urls)
    runpod.serverless.start(
        {
            "handler": worker.handle,
            "return_aggregate_stream": True,
            "concurrency_modifier": concurrency_modifier(settings),
        }
    )


if __name__ == "__main__":
    main()
