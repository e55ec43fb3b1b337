"""The operations every platform serves, in one table, platform-neutral: OpenAI's API, the
Responses API with its stored responses, and Anthropic's Messages.

Each adapter (HTTP, Lambda through HTTP, RunPod jobs) finds an operation by method and path and
runs it: body and query in, its dialect's response object, a stream of its chunks or events, or
bytes out. Handlers are named ("module:function") and imported on first use.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.dialects import ANTHROPIC, OPENAI, RESPONSES, Dialect
from adapters.parsed import Publishing
from common.errors import InvalidRequest, NotFound, StratusError
from common.lazy import imported, later
from common.protocol.base import BinaryResponse, BinaryStream, OpenAIResponse, parse_request
from common.store import ModelStore

log = logging.getLogger("stratus.requests")


ANTHROPIC_CLIENT = "anthropic-version"
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

    json: tuple[str, ...] = ()  # the types' names ("module:Type", imported when documented)
    events: tuple[str, ...] = ()  # the same; a union's name stands for its members
    # The media types, or the name of a mapping whose values they are ("module:NAME"): the
    # protocol module that holds it is imported only when documented.
    media: tuple[str, ...] | str = ()

    def media_types(self) -> tuple[str, ...]:
        if isinstance(self.media, str):
            return tuple(dict.fromkeys(imported(self.media).values()))
        return self.media


@dataclass(frozen=True)
class Operation:
    name: str  # OpenAI's operationId: the document's, the metrics' and the cost line's name
    method: str
    path: str  # without the /v1 prefix; {name} is a path parameter
    parse: Parse  # cheap: runs before the request waits for an inference slot
    handle: Handle
    inference: bool  # runs a model: goes through admission control
    summary: str
    body_type: str | None = None  # the JSON body's (or the form fields') protocol type's name
    answers: Answers = Answers()
    form: bool = False  # a multipart upload (fields and a `file`), not a JSON body
    publishes: bool = False  # may answer with URLs of files: the adapter says where they go
    query: tuple[tuple[str, str], ...] = ()  # query parameters: (name, description)
    dialect: Dialect = OPENAI
    stateful: bool = False  # reads or writes stored responses: the adapter gives it the store
    reads_images: bool = False  # its messages may hold images: the adapter says how to read them
    signs: bool = False  # signs what it answers, for the caller to hand back: the adapter's signer
    # An Anthropic client (its ANTHROPIC_CLIENT header, as every Anthropic SDK and Claude Code
    # send) gets Anthropic's shapes and errors: the adapter puts the header in the parameters.
    anthropic_clients: bool = False

    def dialect_for(self, headers: Mapping[str, str]) -> Dialect:
        """The dialect a request with these headers is answered in (its errors' envelope)."""
        return ANTHROPIC if self.anthropic_clients and ANTHROPIC_CLIENT in headers else self.dialect

    @property
    def body(self) -> type | None:
        return imported(self.body_type) if self.body_type else None

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>.+)", self.path) + "$")


def _body(request_type: str) -> Parse:
    return lambda body, params: parse_request(imported(request_type), body)


def _upload(request_type: str) -> Parse:
    def parse(body: Any, params: Mapping[str, str]) -> tuple[Any, bytes]:
        if not isinstance(body, Mapping) or not isinstance(body.get("file"), bytes):
            raise InvalidRequest("'file' (the audio) is a required multipart field.", param="file")
        if not body["file"]:
            raise InvalidRequest("'file' is empty.", param="file")
        fields = {k: v for k, v in body.items() if k != "file"}
        return parse_request(imported(request_type), fields), body["file"]

    return parse


def _images(job: Publishing, store: ModelStore) -> Result:
    return imported("handlers.images:create_images")(job.request, store, job.urls, job.base_url)


def _reading(handler: str) -> Handle:
    """A handler of requests whose messages may hold images, given the adapter's limits."""
    return lambda job, store: imported(handler)(job.request, store, job.images)


def _signing(handler: str) -> Handle:
    """A handler of requests that may hand back what was signed for them (Messages' thinking),
    with images in their messages too: given the adapter's limits and the caller's signer."""
    return lambda job, store: imported(handler)(
        job.request.request, store, job.images, job.request.signer
    )


def query_int(params: Mapping[str, str], name: str, default: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an integer.", param=name) from None


def query_bool(params: Mapping[str, str], name: str) -> bool:
    value = params.get(name, "false").lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise InvalidRequest(f"'{name}' must be true or false.", param=name)


def _posted(
    name: str, path: str, body: str, handle: Handle | str, *, form: bool = False, **fields: Any
) -> Operation:
    """An inference operation that takes one protocol type (named "module:Type"): as a JSON
    body or, with form=True, as the fields of a multipart upload with its `file`. `handle`: a
    handler, or the name of one ("module:function")."""
    parse = _upload(body) if form else _body(body)
    handler = later(handle) if isinstance(handle, str) else handle
    return Operation(
        name, "POST", path, parse, handler, inference=True, body_type=body, form=form, **fields
    )


# Transcriptions and translations: JSON, text or subtitles, or events when streamed.
TRANSCRIPTS = Answers(
    json=("common.protocol.audio:Transcription", "common.protocol.audio:TranscriptionVerbose"),
    events=(
        "common.protocol.audio:TranscriptTextDelta",
        "common.protocol.audio:TranscriptTextDone",
    ),
    media=("text/plain", "application/x-subrip", "text/vtt"),
)
RESPONSE = "common.protocol.responses:Response"

_CONVERSATIONS = "handlers.text.responses.conversations"
_ITEM_QUERY = (
    ("limit", "Items to list, 1 to 100 (default 20)."),
    ("order", "asc or desc (default desc: newest first)."),
    ("after", "An item id: list the items after it."),
)
_CONVERSATION = "common.protocol.conversations:Conversation"
_ITEMS = "common.protocol.conversations:ConversationItemList"


def _no_include(params: Mapping[str, str]) -> None:
    if params.get("include"):
        raise InvalidRequest(
            "'include' is not supported on conversation items: they are kept as they were "
            "given and made.",
            param="include",
        )


def _stored(
    name: str,
    method: str,
    path: str,
    parse: Parse,
    handler: str,
    summary: str,
    answer: str,
    **fields: Any,
) -> Operation:
    """An operation on what the response store keeps for the caller (not inference)."""
    return Operation(
        name, method, path, parse, later(f"{_CONVERSATIONS}:{handler}"), inference=False,
        summary=summary, answers=Answers(json=(answer,)), stateful=True, **fields,
    )  # fmt: skip


def _with_body(request_type: str) -> Parse:
    """(the path's conversation id, the parsed body)"""
    return lambda body, params: (
        params["conversation_id"],
        parse_request(imported(request_type), body),
    )


def _items_query(params: Mapping[str, str]) -> tuple[str, Any]:
    _no_include(params)
    query = imported("handlers.text.responses.stored:input_items_query")(params)
    return params["conversation_id"], query


def _added_items(body: Any, params: Mapping[str, str]) -> tuple[str, Any]:
    _no_include(params)
    return _with_body("common.protocol.conversations:AddItemsRequest")(body, params)


def _item(body: Any, params: Mapping[str, str]) -> tuple[str, str]:
    _no_include(params)
    return params["conversation_id"], params["item_id"]


# The Conversations API, the most specific paths first (a path parameter matches "/").
CONVERSATION_OPERATIONS = (
    _stored(
        "getConversationItem", "GET", "/conversations/{conversation_id}/items/{item_id}",
        _item, "retrieve_item", "A conversation's item",
        "common.protocol.responses:StoredItem", query=(("include", "Not supported."),),
    ),
    _stored(
        "deleteConversationItem", "DELETE", "/conversations/{conversation_id}/items/{item_id}",
        _item, "delete_item", "Deletes an item from a conversation", _CONVERSATION,
    ),
    _stored(
        "listConversationItems", "GET", "/conversations/{conversation_id}/items",
        lambda body, params: _items_query(params), "list_items", "A conversation's items",
        _ITEMS, query=(*_ITEM_QUERY, ("include", "Not supported.")),
    ),
    _stored(
        "createConversationItems", "POST", "/conversations/{conversation_id}/items",
        _added_items, "add_items", "Adds up to 20 items to a conversation", _ITEMS,
        body_type="common.protocol.conversations:AddItemsRequest",
        query=(("include", "Not supported."),),
    ),
    _stored(
        "getConversation", "GET", "/conversations/{conversation_id}",
        lambda body, params: params["conversation_id"], "retrieve_conversation",
        "A conversation, by its id (only with the key that created it)", _CONVERSATION,
    ),
    _stored(
        "updateConversation", "POST", "/conversations/{conversation_id}",
        _with_body("common.protocol.conversations:UpdateConversationRequest"),
        "update_conversation", "Replaces a conversation's metadata", _CONVERSATION,
        body_type="common.protocol.conversations:UpdateConversationRequest",
    ),
    _stored(
        "deleteConversation", "DELETE", "/conversations/{conversation_id}",
        lambda body, params: params["conversation_id"], "delete_conversation",
        "Deletes a conversation and its items",
        "common.protocol.conversations:DeletedConversation",
    ),
    _stored(
        "createConversation", "POST", "/conversations",
        _body("common.protocol.conversations:CreateConversationRequest"),
        "create_conversation", "Conversations: a conversation that responses continue "
        "(`conversation` on POST /v1/responses), with up to 20 first items", _CONVERSATION,
        body_type="common.protocol.conversations:CreateConversationRequest",
    ),
)  # fmt: skip


OPERATIONS = (
    _posted(
        "createChatCompletion",
        "/chat/completions",
        "common.protocol.chat:ChatCompletionRequest",
        _reading("handlers.text.chat:create_chat_completion"),
        reads_images=True,
        summary="Chat: a model's reply to a conversation, with tools and structured output",
        answers=Answers(
            json=("common.protocol.chat:ChatCompletion",),
            events=("common.protocol.chat:ChatCompletionChunk",),
        ),
    ),
    _posted(
        "createCompletion",
        "/completions",
        "common.protocol.completions:CompletionRequest",
        "handlers.text.completions:create_completion",
        summary="Completions: text continued from a prompt",
        answers=Answers(
            json=("common.protocol.completions:Completion",),
            events=("common.protocol.completions:Completion",),
        ),
    ),
    _posted(
        "createEdit",
        "/edits",
        "common.protocol.completions:EditRequest",
        "handlers.text.edits:create_edit",
        summary="Edits: an input rewritten by an instruction (OpenAI's retired endpoint)",
        answers=Answers(json=("common.protocol.completions:Edit",)),
    ),
    _posted(
        "createEmbedding",
        "/embeddings",
        "common.protocol.embeddings:EmbeddingRequest",
        "handlers.embeddings:create_embeddings",
        summary="Embeddings: a vector for each input",
        answers=Answers(json=("common.protocol.embeddings:EmbeddingList",)),
    ),
    _posted(
        "rerank",
        "/rerank",
        "common.protocol.rerank:RerankRequest",
        "handlers.rerank:rerank",
        summary="Rerank: the documents ordered by relevance to a query (Jina's and vLLM's "
        "shape, infinity's `data` beside `results`)",
        answers=Answers(json=("common.protocol.rerank:RerankResponse",)),
    ),
    _posted(
        "rerankCohere",
        "/v2/rerank",
        "common.protocol.rerank:RerankRequest",
        "handlers.rerank:rerank_cohere",
        summary="Rerank in Cohere's v2 shape",
        answers=Answers(json=("common.protocol.rerank:CohereRerankResponse",)),
    ),
    _posted(
        "createSpeech",
        "/audio/speech",
        "common.protocol.audio:SpeechRequest",
        "handlers.speech:create_speech",
        summary="Speech: text read aloud, as audio or as server-sent events of audio",
        answers=Answers(
            events=(
                "common.protocol.audio:SpeechAudioDelta",
                "common.protocol.audio:SpeechAudioDone",
            ),
            media="common.protocol.audio:SPEECH_MEDIA_TYPES",
        ),
    ),
    _posted(
        "createTranscription",
        "/audio/transcriptions",
        "common.protocol.audio:TranscriptionRequest",
        "handlers.transcriptions:create_transcription",
        summary="Transcription: the text of an audio file",
        answers=TRANSCRIPTS,
        form=True,
    ),
    _posted(
        "createTranslation",
        "/audio/translations",
        "common.protocol.audio:TranslationRequest",
        "handlers.transcriptions:create_translation",
        summary="Translation: an audio file's speech as English text",
        answers=TRANSCRIPTS,
        form=True,
    ),
    _posted(
        "createImage",
        "/images/generations",
        "common.protocol.images:ImageGenerationRequest",
        _images,
        summary="Images: pictures drawn from a prompt, inline or as URLs",
        answers=Answers(json=("common.protocol.images:ImagesResponse",)),
        publishes=True,
    ),
    _posted(
        "createResponse",
        "/responses",
        "common.protocol.responses:ResponsesRequest",
        _reading("handlers.text.responses.create:create_response"),
        reads_images=True,
        summary="Responses: a model's response to input items, with tools, structured output "
        "and stored conversations (previous_response_id)",
        answers=Answers(
            json=(RESPONSE,), events=("common.protocol.responses:ResponseStreamEvent",)
        ),
        dialect=RESPONSES,
        stateful=True,
    ),
    Operation(
        "listInputItems",
        "GET",
        "/responses/{response_id}/input_items",
        lambda body, params: (
            params["response_id"],
            imported("handlers.text.responses.stored:input_items_query")(params),
        ),
        later("handlers.text.responses.stored:list_input_items"),
        inference=False,
        summary="The input items of a stored response",
        query=(
            ("limit", "Items to list, 1 to 100 (default 20)."),
            ("order", "asc or desc (default desc: newest first)."),
            ("after", "An item id: list the items after it."),
        ),
        answers=Answers(json=("common.protocol.responses:InputItemList",)),
        stateful=True,
    ),
    Operation(
        "getResponse",
        "GET",
        "/responses/{response_id}",
        lambda body, params: params["response_id"],
        later("handlers.text.responses.stored:retrieve_response"),
        inference=False,
        summary="A stored response, by its id (only with the key that created it)",
        answers=Answers(json=(RESPONSE,)),
        stateful=True,
    ),
    Operation(
        "deleteResponse",
        "DELETE",
        "/responses/{response_id}",
        lambda body, params: params["response_id"],
        later("handlers.text.responses.stored:delete_response"),
        inference=False,
        summary="Deletes a stored response",
        answers=Answers(json=("common.protocol.responses:DeletedResponse",)),
        stateful=True,
    ),
    *CONVERSATION_OPERATIONS,
    _posted(
        "createMessage",
        "/messages",
        "common.protocol.messages:MessageCreateRequest",
        _signing("handlers.text.messages:create_message"),
        reads_images=True,
        signs=True,
        summary="Messages: Anthropic's Messages API (the anthropic SDK, Claude Code) over the "
        "same generation, with tools and structured output",
        answers=Answers(
            json=("common.protocol.messages:Message",),
            events=("common.protocol.messages:MessageStreamEvent",),
        ),
        dialect=ANTHROPIC,
    ),
    _posted(
        "countMessageTokens",
        "/messages/count_tokens",
        "common.protocol.messages:MessageCountTokensRequest",
        _signing("handlers.text.messages:count_message_tokens"),
        reads_images=True,
        signs=True,
        summary="The input tokens a message would count, without generating it (Anthropic's)",
        answers=Answers(json=("common.protocol.messages:MessageTokensCount",)),
        dialect=ANTHROPIC,
    ),
    _posted(
        "tokenize",
        "/tokenize",
        "common.protocol.tokenize:TokenizeRequest",
        "handlers.text.tokenize:tokenize",
        summary="Tokenize: a text's or a chat's tokens with the model's own tokenizer "
        "(llama.cpp's server's and vLLM's shapes)",
        answers=Answers(json=("common.protocol.tokenize:TokenizeResponse",)),
    ),
    _posted(
        "detokenize",
        "/detokenize",
        "common.protocol.tokenize:DetokenizeRequest",
        "handlers.text.tokenize:detokenize",
        summary="Detokenize: the text of token ids (llama.cpp's server's and vLLM's shapes)",
        answers=Answers(json=("common.protocol.tokenize:DetokenizeResponse",)),
    ),
    Operation(
        "listModels",
        "GET",
        "/models",
        lambda body, params: _model_query(params),
        lambda query, store: _list_models(query, store.registry),
        inference=False,
        summary="Models: every model served here, by its id and its aliases (Anthropic's "
        "Models API shape for a request with an `anthropic-version` header)",
        query=(
            ("filter", "A regular expression (RE2) the ids listed must match (LocalAI's)."),
            ("excludeConfigured", "true: only the models not named in the registry (LocalAI's)."),
            ("limit", "Anthropic clients: models per page, 1-1000 (20)."),
            ("after_id", "Anthropic clients: the page after this id."),
            ("before_id", "Anthropic clients: the page before this id."),
        ),
        answers=Answers(
            json=("common.protocol.models:ModelList", "common.protocol.models:AnthropicModelList")
        ),
        anthropic_clients=True,
    ),
    Operation(
        "retrieveModel",
        "GET",
        "/models/{model}",
        lambda body, params: (params["model"], ANTHROPIC_CLIENT in params),
        lambda query, store: imported(
            "handlers.models:retrieve_anthropic_model"
            if query[1]
            else "handlers.models:retrieve_model"
        )(store.registry, query[0]),
        inference=False,
        summary="A model by its id or alias",
        answers=Answers(
            json=("common.protocol.models:Model", "common.protocol.models:AnthropicModel")
        ),
        anthropic_clients=True,
    ),
)


def _model_query(params: Mapping[str, str]) -> tuple[Any, ...]:
    if ANTHROPIC_CLIENT in params:
        return (
            True,
            query_int(params, "limit", 20),
            params.get("after_id"),
            params.get("before_id"),
        )
    return (False, params.get("filter"), query_bool(params, "excludeConfigured"))


def _list_models(query: tuple[Any, ...], registry: Any) -> Result:
    anthropic, *arguments = query
    handler = "list_anthropic_models" if anthropic else "list_models"
    return imported(f"handlers.models:{handler}")(registry, *arguments)


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
