"""The OpenAPI 3.1 document of what this gateway serves (GET /openapi.json), generated from the
operation table and the protocol types' own JSON schemas (pydantic), never written by hand.

Each operation is served at /v1/PATH (OpenAI's) and at /PATH (LocalAI's): the document says so
with two servers rather than every path twice. Relative server URLs resolve against the
document's own URL, so the document stays right behind a prefix (an API Gateway stage).
What OpenAI's API does not have is marked `x-stratus-extension: true`: request fields (on the
protocol types), and the operations and pages of Stratus' own.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from adapters.dialects import Dialect
from adapters.operations import Operation
from adapters.playground import ROUTE as PLAYGROUND
from common.image_urls import ROUTE as IMAGES_ROUTE
from common.lazy import types_named
from common.protocol.base import EXTENSION as EXTENSION_MARK
from common.protocol.base import ErrorResponse

(EXTENSION,) = EXTENSION_MARK
SECURITY = [{"bearerAuth": []}, {"apiKeyHeader": []}, {"basicAuth": []}]
SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "One of the server's API keys (API_KEY), as OpenAI's SDKs send it.",
    },
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "basicAuth": {
        "type": "http",
        "scheme": "basic",
        "description": "Any user name and an API key as the password: how a browser opens "
        "/docs and /metrics on a server with keys.",
    },
}
# Status -> (component name, description) of the errors, each in OpenAI's envelope.
ERRORS = {
    400: ("BadRequest", "A field is missing or invalid: `param` names it."),
    401: ("Unauthorized", "No API key, or a wrong one (only when the server has keys)."),
    404: ("NotFound", "No such model (`code`: model_not_found) or URL."),
    413: ("PayloadTooLarge", "The body is over the server's cap (STRATUS_MAX_BODY_BYTES)."),
    415: ("UnsupportedMediaType", "The body is not of the content type the operation reads."),
    429: ("TooManyRequests", "The queue is full; retry after `Retry-After` seconds."),
    500: ("InternalError", "A bug: the message carries the request id of its log entry."),
    503: ("Unavailable", "The model could not be loaded, or the server is shutting down."),
    504: ("Timeout", "The request ran past the server's deadline (STRATUS_REQUEST_TIMEOUT)."),
}
INFERENCE_ERRORS = (400, 401, 404, 413, 415, 429, 500, 503, 504)
LISTING_ERRORS = (400, 401, 404, 500)
SSE_NOTE = (
    "Streamed (`stream: true`, or `stream_format: sse` for speech): server-sent events, each "
    "`data: {json}` one of the schemas here; chat and completions end with `data: [DONE]`. "
    'An error after the first event is an event of its own: `data: {"error": {...}}`.'
)
NAMED_SSE_NOTE = (
    "Streamed (`stream: true`): server-sent events named by their type (`event: <type>`, then "
    "`data: {json}`, one of the schemas here), without a [DONE] sentinel. An error after the "
    "first event is an event named `error`."
)


def error_responses(dialect: Dialect) -> str:
    """The prefix of a dialect's shared error responses' names (OpenAI's have none)."""
    return dialect.error_schema.__name__.removesuffix("ErrorResponse")


def build_document(
    operations: Sequence[Operation], *, serves_images: bool, metrics: bool
) -> dict[str, Any]:
    requests = [op.body for op in operations if op.body is not None]
    answers = [m for op in operations for m in types_named((*op.answers.json, *op.answers.events))]
    dialects = list(dict.fromkeys(op.dialect for op in operations))
    envelopes = [dialect.error_schema for dialect in dialects]
    schemas = _schemas(requests, [*answers, ErrorResponse, *envelopes])
    paths: dict[str, Any] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(
            operation, schemas
        )
    paths.update(_own_pages(serves_images, metrics))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Stratus",
            "version": _version(),
            "summary": "OpenAI's API over open models, as stateless serverless handlers.",
            "description": "Point any OpenAI client at a server below. Fields and operations "
            f"marked `{EXTENSION}` are Stratus' (or LocalAI's, llama.cpp's, vLLM's) additions "
            "to OpenAI's API. Each response carries `x-request-id` (the id in the server's "
            "logs and cost line) and `Server-Timing` (queue, fetch, load, compute).",
        },
        "servers": [
            {"url": "./v1", "description": "OpenAI's paths"},
            {"url": ".", "description": "The same operations without /v1, as LocalAI serves"},
        ],
        "security": SECURITY,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": SECURITY_SCHEMES,
            "responses": {
                error_responses(dialect) + name: _json_response(
                    description, dialect.error_schema.__name__
                )
                for dialect in dialects
                for name, description in ERRORS.values()
            },
            "headers": {
                "RequestId": {
                    "description": "This request's id, as in the server's logs and cost line.",
                    "schema": {"type": "string"},
                },
                "ServerTiming": {
                    "description": "Where the time went until the answer (or a stream's "
                    "first event) was ready: queue, fetch, load, compute (milliseconds).",
                    "schema": {"type": "string"},
                },
            },
        },
    }


def _version() -> str:
    try:
        return version("stratus")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


def _schemas(requests: list[type[BaseModel]], answers: list[type[BaseModel]]) -> dict[str, Any]:
    """Every protocol type's JSON schema, by its class name. Answers too are described by their
    fields (their "validation" schema): the serializers that leave absent fields out would
    otherwise describe them as any object (protocol/base.py's absent_when_none marks those)."""
    models = [(m, "validation") for m in dict.fromkeys([*requests, *answers])]
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    return top.get("$defs", {})


def _ref(schemas: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    assert model.__name__ in schemas, f"no schema for {model.__name__}"
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(operation: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": operation.name,
        "summary": operation.summary,
        "tags": [operation.path.strip("/").split("/")[0]],
    }
    if operation.name == "createEdit":
        doc["deprecated"] = True  # OpenAI retired it; LocalAI and Stratus still serve it
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in operation.pattern.groupindex
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "description": text,
         "schema": {"type": "string"}, EXTENSION: True}
        for name, text in operation.query
    ]  # fmt: skip
    if parameters:
        doc["parameters"] = parameters
    if operation.body is not None:
        body = _ref(schemas, operation.body)
        if operation.form:
            content = {"multipart/form-data": {"schema": _form(schemas, body)}}
        else:
            content = {"application/json": {"schema": body}}
        doc["requestBody"] = {"required": True, "content": content}
    doc["responses"] = {
        "200": _success(operation, schemas),
        **{
            str(status): {
                "$ref": "#/components/responses/"
                + error_responses(operation.dialect)
                + ERRORS[status][0]
            }
            for status in (INFERENCE_ERRORS if operation.inference else LISTING_ERRORS)
        },
    }
    return doc


def _form(schemas: dict[str, Any], body: dict[str, str]) -> dict[str, Any]:
    """A multipart form: the body type's fields as the SDKs send them (a list as repeated
    `name[]` fields) and the `file`."""
    name = body["$ref"].rsplit("/", 1)[-1]
    fields = copy.deepcopy(schemas[name])
    properties = {
        (f"{key}[]" if value.get("type") == "array" else key): value
        for key, value in fields.get("properties", {}).items()
    }
    properties["file"] = {
        "type": "string",
        "format": "binary",
        "contentMediaType": "application/octet-stream",
        "description": "The audio file (any format ffmpeg decodes).",
    }
    fields["properties"] = properties
    fields["required"] = ["file", *fields.get("required", [])]
    fields["title"] = f"{name}Form"
    return fields


def _success(operation: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    answers = operation.answers
    content: dict[str, Any] = {}
    if answers.json:
        content["application/json"] = {"schema": _one_of(schemas, types_named(answers.json))}
    if answers.events:
        events = types_named(answers.events)
        content["text/event-stream"] = {"schema": _one_of(schemas, events)}
    for media in answers.media_types():
        if media.startswith("text/") or media == "application/x-subrip":
            content[media] = {"schema": {"type": "string"}}
        else:
            content[media] = {"schema": {"type": "string", "contentMediaType": media}}
    description = "OK."
    if answers.events:
        description += " " + (NAMED_SSE_NOTE if operation.dialect.named_events else SSE_NOTE)
    return {
        "description": description,
        "headers": {
            "x-request-id": {"$ref": "#/components/headers/RequestId"},
            "Server-Timing": {"$ref": "#/components/headers/ServerTiming"},
        },
        "content": content,
    }


def _one_of(schemas: dict[str, Any], models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    refs = [_ref(schemas, m) for m in models]
    return refs[0] if len(refs) == 1 else {"oneOf": refs}


def _json_response(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _own_pages(serves_images: bool, metrics: bool) -> dict[str, Any]:
    """Stratus' own routes, at the server's root (not under /v1)."""

    def page(
        operation_id: str,
        summary: str,
        media: str,
        schema: dict[str, Any],
        open_: bool = False,
        parameter: str | None = None,  # a path parameter: a name, answered 404 when unknown
    ) -> dict[str, Any]:
        get: dict[str, Any] = {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["operating"],
            EXTENSION: True,
            "responses": {"200": {"description": "OK.", "content": {media: {"schema": schema}}}},
        }
        if open_:
            get["security"] = [{}]
        else:
            get["responses"]["401"] = {"$ref": "#/components/responses/Unauthorized"}
        if parameter:
            get["parameters"] = [
                {"name": parameter, "in": "path", "required": True, "schema": {"type": "string"}}
            ]
            get["responses"]["404"] = {"$ref": "#/components/responses/NotFound"}
        return {"servers": [{"url": "."}], "get": get}

    text, html, files = {"type": "string"}, "text/html", "application/octet-stream"
    health = {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"enum": ["ok", "loading", "unavailable"]},
            "active": {"type": "integer"},
            "waiting": {"type": "integer"},
            "loaded": {"type": "array", "items": {"type": "string"}},
            "failed": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    pages = {
        "/health": page(
            "health",
            "Readiness, open to load balancers (503 while preloaded models load, or when one "
            "could not be); with a key also what runs, waits and failed",
            "application/json",
            health,
            open_=True,
        ),
        "/ping": page(
            "ping",
            "RunPod's load-balancer health check: 204 while preloaded models load, 200 once "
            "they have, 503 when one could not be",
            "application/json",
            {"type": "object", "properties": {"status": {"const": "healthy"}}},
            open_=True,
        ),
        "/": page(
            "playground", "A page to try every endpoint from a browser", html, text, open_=True
        ),  # fmt: skip
        PLAYGROUND + "/{asset}": page(
            "playgroundAsset",
            "The playground's scripts and style sheet",
            files,
            {},
            open_=True,
            parameter="asset",
        ),  # fmt: skip
        "/openapi.json": page("openapi", "This document", "application/json", {"type": "object"}),
        "/docs": page("docs", "This document as a page (Swagger UI)", html, text),
        "/docs/{asset}": page(
            "docsAsset", "The docs page's script and style sheet", files, {}, parameter="asset"
        ),
    }
    unready = {"description": "Not ready.", "content": {"application/json": {"schema": health}}}
    pages["/health"]["get"]["responses"]["503"] = unready
    pages["/ping"]["get"]["responses"]["204"] = {"description": "Preloaded models are loading."}
    pages["/ping"]["get"]["responses"]["503"] = {"$ref": "#/components/responses/Unavailable"}
    if metrics:
        pages["/metrics"] = page(
            "metrics",
            "Prometheus metrics (text format): requests, tokens, latency, queue, model loads",
            "text/plain",
            text,
        )
    if serves_images:
        pages[IMAGES_ROUTE + "/{name}"] = page(
            "generatedImage",
            "An image this server generated (`response_format: url`), until it expires",
            "image/png",
            {"type": "string", "contentMediaType": "image/png"},
            open_=True,
            parameter="name",
        )
    return pages
