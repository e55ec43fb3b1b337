"""The OpenAI operations every platform serves, in one table, platform-neutral.

Each adapter (HTTP, Lambda through HTTP, RunPod jobs) finds an operation by method and path and
runs it: body and query in, an OpenAI response object or an iterator of chunks out.
"""

from __future__ import annotations

import logging
import re
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.dialects import ANTHROPIC, OPENAI, RESPONSES, Dialect
from adapters.parsed import Publishing
from common.errors import InvalidRequest, NotFound, StratusError
from common.protocol import parse_request
from common.protocol.audio import (
    SpeechAudioDelta,
    SpeechAudioDone,
    SpeechRequest,
    Transcription,
    TranscriptionRequest,
    TranscriptionVerbose,
    TranscriptTextDelta,
    TranscriptTextDone,
    TranslationRequest,
)
from common.protocol.base import BinaryResponse, BinaryStream, OpenAIResponse
from common.protocol.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from common.protocol.completions import Completion, CompletionRequest, Edit, EditRequest
from common.protocol.embeddings import EmbeddingList, EmbeddingRequest
from common.protocol.images import ImageGenerationRequest, ImagesResponse
from common.protocol.messages import (
    Message,
    MessageCountTokensRequest,
    MessageCreateRequest,
    MessageStreamEvent,
    MessageTokensCount,
)
from common.protocol.models import Model, ModelList
from common.protocol.responses import (
    DeletedResponse,
    InputItemList,
    Response,
    ResponsesRequest,
    ResponseStreamEvent,
)
from common.store import ModelStore
from handlers.chat import create_chat_completion
from handlers.completions import create_completion
from handlers.edits import create_edit
from handlers.embeddings import create_embeddings
from handlers.images import create_images
from handlers.messages import count_message_tokens, create_message
from handlers.models import list_models, retrieve_model
from handlers.responses import (
    create_response,
    delete_response,
    input_items_query,
    list_input_items,
    retrieve_response,
)
from handlers.speech import create_speech
from handlers.transcriptions import create_transcription, create_translation
from layers.audio_codec import MEDIA_TYPES as SPEECH_MEDIA_TYPES

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
class Answers:
    """What an operation answers with (for the OpenAPI document): a JSON body of one of
    `json`, server-sent events of `events` when streamed, or a body of one of `media`."""

    json: tuple[type[OpenAIResponse], ...] = ()
    events: tuple[type[OpenAIResponse], ...] = ()
    media: tuple[str, ...] = ()


@dataclass(frozen=True)
class Operation:
    name: str  # OpenAI's operationId: the document's, the metrics' and the cost line's name
    method: str
    path: str  # without the /v1 prefix; {name} is a path parameter
    parse: Parse  # cheap: runs before the request waits for an inference slot
    handle: Handle
    inference: bool  # runs a model: goes through admission control
    summary: str
    body: type | None = None  # the JSON body's (or the form fields') protocol type
    answers: Answers = Answers()
    form: bool = False  # a multipart upload (fields and a `file`), not a JSON body
    publishes: bool = False  # may answer with URLs of files: the adapter says where they go
    query: tuple[tuple[str, str], ...] = ()  # query parameters: (name, description)
    dialect: Dialect = OPENAI
    stateful: bool = False  # reads or writes stored responses: the adapter gives it the store
    reads_images: bool = False  # its messages may hold images: the adapter says how to read them

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>.+)", self.path) + "$")


def _body(request_type: type) -> Parse:
    return lambda body, params: parse_request(request_type, body)


def _upload(request_type: type[TranscriptionRequest]) -> Parse:
    def parse(body: Any, params: Mapping[str, str]) -> tuple[TranscriptionRequest, bytes]:
        if not isinstance(body, Mapping) or not isinstance(body.get("file"), bytes):
            raise InvalidRequest("'file' (the audio) is a required multipart field.", param="file")
        if not body["file"]:
            raise InvalidRequest("'file' is empty.", param="file")
        fields = {k: v for k, v in body.items() if k != "file"}
        return parse_request(request_type, fields), body["file"]

    return parse


def _images(job: Publishing, store: ModelStore) -> Result:
    return create_images(job.request, store, job.urls, job.base_url)


def _reading(handle: Callable[..., Result]) -> Handle:
    """A handler of requests whose messages may hold images, given the adapter's limits."""
    return lambda job, store: handle(job.request, store, job.images)


def query_bool(params: Mapping[str, str], name: str) -> bool:
    value = params.get(name, "false").lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise InvalidRequest(f"'{name}' must be true or false.", param=name)


def _posted(
    name: str, path: str, body: type, handle: Handle, *, form: bool = False, **fields: Any
) -> Operation:
    """An inference operation that takes one protocol type: as a JSON body or, with
    form=True, as the fields of a multipart upload with its `file`."""
    parse = _upload(body) if form else _body(body)
    return Operation(
        name, "POST", path, parse, handle, inference=True, body=body, form=form, **fields
    )


# Transcriptions and translations: JSON, text or subtitles, or events when streamed.
TRANSCRIPTS = Answers(
    json=(Transcription, TranscriptionVerbose),
    events=(TranscriptTextDelta, TranscriptTextDone),
    media=("text/plain", "application/x-subrip", "text/vtt"),
)

OPERATIONS = (
    _posted(
        "createChatCompletion",
        "/chat/completions",
        ChatCompletionRequest,
        _reading(create_chat_completion),
        reads_images=True,
        summary="Chat: a model's reply to a conversation, with tools and structured output",
        answers=Answers(json=(ChatCompletion,), events=(ChatCompletionChunk,)),
    ),
    _posted(
        "createCompletion",
        "/completions",
        CompletionRequest,
        create_completion,
        summary="Completions: text continued from a prompt",
        answers=Answers(json=(Completion,), events=(Completion,)),
    ),
    _posted(
        "createEdit",
        "/edits",
        EditRequest,
        create_edit,
        summary="Edits: an input rewritten by an instruction (OpenAI's retired endpoint)",
        answers=Answers(json=(Edit,)),
    ),
    _posted(
        "createEmbedding",
        "/embeddings",
        EmbeddingRequest,
        create_embeddings,
        summary="Embeddings: a vector for each input",
        answers=Answers(json=(EmbeddingList,)),
    ),
    _posted(
        "createSpeech",
        "/audio/speech",
        SpeechRequest,
        create_speech,
        summary="Speech: text read aloud, as audio or as server-sent events of audio",
        answers=Answers(
            events=(SpeechAudioDelta, SpeechAudioDone),
            media=tuple(dict.fromkeys(SPEECH_MEDIA_TYPES.values())),
        ),
    ),
    _posted(
        "createTranscription",
        "/audio/transcriptions",
        TranscriptionRequest,
        create_transcription,
        summary="Transcription: the text of an audio file",
        answers=TRANSCRIPTS,
        form=True,
    ),
    _posted(
        "createTranslation",
        "/audio/translations",
        TranslationRequest,
        create_translation,
        summary="Translation: an audio file's speech as English text",
        answers=TRANSCRIPTS,
        form=True,
    ),
    _posted(
        "createImage",
        "/images/generations",
        ImageGenerationRequest,
        _images,
        summary="Images: pictures drawn from a prompt, inline or as URLs",
        answers=Answers(json=(ImagesResponse,)),
        publishes=True,
    ),
    _posted(
        "createResponse",
        "/responses",
        ResponsesRequest,
        _reading(create_response),
        reads_images=True,
        summary="Responses: a model's response to input items, with tools, structured output "
        "and stored conversations (previous_response_id)",
        answers=Answers(json=(Response,), events=typing.get_args(ResponseStreamEvent)),
        dialect=RESPONSES,
        stateful=True,
    ),
    Operation(
        "listInputItems",
        "GET",
        "/responses/{response_id}/input_items",
        lambda body, params: (params["response_id"], input_items_query(params)),
        list_input_items,
        inference=False,
        summary="The input items of a stored response",
        query=(
            ("limit", "Items to list, 1 to 100 (default 20)."),
            ("order", "asc or desc (default desc: newest first)."),
            ("after", "An item id: list the items after it."),
        ),
        answers=Answers(json=(InputItemList,)),
        stateful=True,
    ),
    Operation(
        "getResponse",
        "GET",
        "/responses/{response_id}",
        lambda body, params: params["response_id"],
        retrieve_response,
        inference=False,
        summary="A stored response, by its id (only with the key that created it)",
        answers=Answers(json=(Response,)),
        stateful=True,
    ),
    Operation(
        "deleteResponse",
        "DELETE",
        "/responses/{response_id}",
        lambda body, params: params["response_id"],
        delete_response,
        inference=False,
        summary="Deletes a stored response",
        answers=Answers(json=(DeletedResponse,)),
        stateful=True,
    ),
    _posted(
        "createMessage",
        "/messages",
        MessageCreateRequest,
        _reading(create_message),
        reads_images=True,
        summary="Messages: Anthropic's Messages API (the anthropic SDK, Claude Code) over the "
        "same generation, with tools and structured output",
        answers=Answers(json=(Message,), events=typing.get_args(MessageStreamEvent)),
        dialect=ANTHROPIC,
    ),
    _posted(
        "countMessageTokens",
        "/messages/count_tokens",
        MessageCountTokensRequest,
        _reading(count_message_tokens),
        reads_images=True,
        summary="The input tokens a message would count, without generating it (Anthropic's)",
        answers=Answers(json=(MessageTokensCount,)),
        dialect=ANTHROPIC,
    ),
    Operation(
        "listModels",
        "GET",
        "/models",
        lambda body, params: (params.get("filter"), query_bool(params, "excludeConfigured")),
        lambda query, store: list_models(store.registry, *query),
        inference=False,
        summary="Models: every model served here, by its id and its aliases",
        query=(
            ("filter", "A regular expression (RE2) the ids listed must match (LocalAI's)."),
            ("excludeConfigured", "true: only the models not named in the registry (LocalAI's)."),
        ),
        answers=Answers(json=(ModelList,)),
    ),
    Operation(
        "retrieveModel",
        "GET",
        "/models/{model}",
        lambda body, params: params["model"],
        lambda model_id, store: retrieve_model(store.registry, model_id),
        inference=False,
        summary="A model by its id or alias",
        answers=Answers(json=(Model,)),
    ),
)


def _bare(path: str) -> str:
    bare = path.removeprefix("/v1") if path.startswith("/v1/") else path
    return "/" + bare.strip("/")


def dialect_of(path: str, operations: Sequence[Operation] = OPERATIONS) -> Dialect:
    """The dialect a path's answers are in, whatever the method (OpenAI's for unknown paths)."""
    bare = _bare(path)
    return next((op.dialect for op in operations if op.pattern.match(bare)), OPENAI)


def find(
    method: str, path: str, operations: Sequence[Operation] = OPERATIONS
) -> tuple[Operation, dict[str, str]]:
    """The operation for a path (with or without /v1) and its path parameters."""
    bare = _bare(path)
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
