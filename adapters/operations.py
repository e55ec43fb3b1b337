"""The OpenAI operations every platform serves, in one table, platform-neutral.

Each adapter (HTTP, Lambda through HTTP, RunPod jobs) finds an operation by method and path and
runs it: body and query in, an OpenAI response object or an iterator of chunks out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.errors import InvalidRequest, NotFound, StratusError
from common.image_urls import ImageUrls
from common.protocol import parse_request
from common.protocol.audio import SpeechRequest, TranscriptionRequest
from common.protocol.base import BinaryResponse, BinaryStream, OpenAIResponse
from common.protocol.chat import ChatCompletionRequest
from common.protocol.completions import CompletionRequest, EditRequest
from common.protocol.embeddings import EmbeddingRequest
from common.protocol.images import ImageGenerationRequest
from common.store import ModelStore
from handlers.chat import create_chat_completion
from handlers.completions import create_completion
from handlers.edits import create_edit
from handlers.embeddings import create_embeddings
from handlers.images import create_images
from handlers.models import list_models, retrieve_model
from handlers.speech import create_speech
from handlers.transcriptions import create_transcription, create_translation

log = logging.getLogger("stratus.requests")

Whole = OpenAIResponse | BinaryResponse  # answered at once
Result = Whole | BinaryStream | Iterator[OpenAIResponse]  # or a stream of bytes or of chunks
# (decoded JSON body or None, path and query parameters) -> the handler's request
Parse = Callable[[Any, Mapping[str, str]], Any]
Handle = Callable[[Any, ModelStore], Result]


class MethodNotAllowed(StratusError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # without the /v1 prefix; {name} is a path parameter
    parse: Parse  # cheap: runs before the request waits for an inference slot
    handle: Handle
    inference: bool  # runs a model: goes through admission control
    form: bool = False  # a multipart upload (fields and a `file`), not a JSON body
    publishes: bool = False  # may answer with URLs of files: the adapter says where they go

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>.+)", self.path) + "$")


def _body(request_type: type) -> Parse:
    return lambda body, params: parse_request(request_type, body)


def _upload(body: Any, params: Mapping[str, str]) -> tuple[TranscriptionRequest, bytes]:
    if not isinstance(body, Mapping) or not isinstance(body.get("file"), bytes):
        raise InvalidRequest("'file' (the audio) is a required multipart field.", param="file")
    if not body["file"]:
        raise InvalidRequest("'file' is empty.", param="file")
    fields = {k: v for k, v in body.items() if k != "file"}
    return parse_request(TranscriptionRequest, fields), body["file"]


@dataclass(frozen=True)
class Publishing:
    """A parsed request of an operation that publishes, with where its files go (the adapter's
    ImageUrls) and the request's own base URL (scheme://host[:port]; None off HTTP)."""

    request: Any
    urls: ImageUrls
    base_url: str | None = None


def requested_model(parsed: Any) -> str:
    """The model id a parsed inference request names (or its operation's default)."""
    if isinstance(parsed, Publishing):
        parsed = parsed.request
    elif isinstance(parsed, tuple):  # an upload: (its form fields, the audio)
        parsed = parsed[0]
    return getattr(parsed, "model", None) or getattr(parsed, "default_model", "")


def _images(job: Publishing, store: ModelStore) -> Result:
    return create_images(job.request, store, job.urls, job.base_url)


def query_bool(params: Mapping[str, str], name: str) -> bool:
    value = params.get(name, "false").lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise InvalidRequest(f"'{name}' must be true or false.", param=name)


OPERATIONS = (
    Operation(
        "POST",
        "/chat/completions",
        _body(ChatCompletionRequest),
        create_chat_completion,
        inference=True,
    ),
    Operation("POST", "/completions", _body(CompletionRequest), create_completion, inference=True),
    Operation("POST", "/edits", _body(EditRequest), create_edit, inference=True),
    Operation("POST", "/embeddings", _body(EmbeddingRequest), create_embeddings, inference=True),
    Operation("POST", "/audio/speech", _body(SpeechRequest), create_speech, inference=True),
    Operation(
        "POST", "/audio/transcriptions", _upload, create_transcription, inference=True, form=True
    ),
    Operation(
        "POST", "/audio/translations", _upload, create_translation, inference=True, form=True
    ),
    Operation(
        "POST",
        "/images/generations",
        _body(ImageGenerationRequest),
        _images,
        inference=True,
        publishes=True,
    ),
    Operation(
        "GET",
        "/models",
        lambda body, params: (params.get("filter"), query_bool(params, "excludeConfigured")),
        lambda query, store: list_models(store.registry, *query),
        inference=False,
    ),
    Operation(
        "GET",
        "/models/{model}",
        lambda body, params: params["model"],
        lambda model_id, store: retrieve_model(store.registry, model_id),
        inference=False,
    ),
)


def find(
    method: str, path: str, operations: Sequence[Operation] = OPERATIONS
) -> tuple[Operation, dict[str, str]]:
    """The operation for a path (with or without /v1) and its path parameters."""
    bare = path.removeprefix("/v1") if path.startswith("/v1/") else path
    bare = "/" + bare.strip("/")
    allowed = []
    for operation in operations:
        match = operation.pattern.match(bare)
        if match is None:
            continue
        if operation.method == method.upper():
            return operation, match.groupdict()
        allowed.append(operation.method)
    if allowed:
        raise MethodNotAllowed(f"Method {method.upper()} is not allowed on {path}.")
    raise NotFound(f"Unknown request URL: {method.upper()} {path}.", code="unknown_url")


def start(
    handle: Handle, request: Any, store: ModelStore
) -> tuple[Result, OpenAIResponse | bytes | None]:
    """Run a handler; for a stream, also pull its first chunk (one thread hop for both).

    Every error a request can cause comes before a stream's first chunk, so an adapter can
    still answer it with its status rather than as an event in the stream.
    """
    user = getattr(request, "user", None)
    if user:  # OpenAI's end-user id: recorded for abuse tracing, nothing else
        log.info("%s for model %s by user %r", type(request).__name__, request.model, user)
    result = handle(request, store)
    if isinstance(result, Whole):
        return result, None
    if isinstance(result, BinaryStream):
        return result, next(result.chunks, b"")
    return result, next(result)
