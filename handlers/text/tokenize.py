"""POST /tokenize and /detokenize: a text model's own tokenizer, for clients that count and cut
prompts as the server will (llama.cpp's server's and vLLM's shapes: common/protocol/tokenize).

A text is tokenized as a completion's prompt is; chat `messages` as a chat request's are (the
model's template, its tools, its thinking switch), so `count` is the prompt_tokens that chat
request would report."""

from __future__ import annotations

from common.errors import InvalidRequest
from common.protocol.base import parse_request
from common.protocol.chat import ChatCompletionRequest
from common.protocol.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenPiece,
)
from common.store import ModelStore
from handlers.text.chat import chat_conversation
from handlers.text.checks import check_prompt_size, text_model
from handlers.text.completions import prompt_tokens
from handlers.text.conversation.generate import ConversationRequest, conversation_prompt
from layers.text import TextModel

# vLLM's chat switches that Stratus cannot honour: (field, the value it can, why).
_CHAT_ONLY_DEFAULTS = (
    ("add_generation_prompt", True, "the prompt always ends ready for the assistant's answer"),
    ("continue_final_message", False, "the prompt always ends ready for a new answer"),
)


def tokenize(request: TokenizeRequest, store: ModelStore) -> TokenizeResponse:
    conversation = _conversation(request)
    with store.use(request.model) as loaded:
        model = text_model(loaded, request.model)
        if conversation is not None:
            tokens = conversation_prompt(conversation, model, conversation.plan.turns)
        else:
            tokens = _text_tokens(request, model)
        tokens = list(tokens)
        wanted = request.with_pieces or request.return_token_strs
        strings = [model.token_bytes(t) for t in tokens] if wanted else []
        return TokenizeResponse(
            tokens=[TokenPiece(id=t, piece=_piece(s)) for t, s in zip(tokens, strings, strict=True)]
            if request.with_pieces
            else tokens,
            count=len(tokens),
            max_model_len=model.context_length,
            token_strs=[s.decode(errors="replace") for s in strings]
            if request.return_token_strs
            else None,
        )


def detokenize(request: DetokenizeRequest, store: ModelStore) -> DetokenizeResponse:
    with store.use(request.model) as loaded:
        model = text_model(loaded, request.model)
        # Control tokens spelled out, as both servers write them: the inverse of tokenize.
        tokens = prompt_tokens(model, request.tokens, "tokens")
        text = b"".join(model.token_bytes(t) for t in tokens).decode(errors="replace")
        return DetokenizeResponse(content=text, prompt=text)


def _conversation(request: TokenizeRequest) -> ConversationRequest | None:
    """The chat request `messages` stand for (checked as one: each message's fields, the
    tools), or None for a text; every switch is checked here, before a model is loaded, and
    the fields that go with the other kind are refused."""
    given = [
        name for name in ("content", "prompt", "messages") if getattr(request, name) is not None
    ]
    if len(given) != 1:
        raise InvalidRequest(
            "Send exactly one of 'content' (llama.cpp's), 'prompt' or 'messages' (vLLM's)"
            + (f"; this request has {' and '.join(given)}." if given else "."),
            param=given[1] if len(given) > 1 else "content",
        )
    if request.chat_template is not None:
        raise InvalidRequest(
            "A request cannot bring its own chat template: the model's is used.",
            param="chat_template",
        )
    if request.mm_processor_kwargs is not None:
        raise InvalidRequest("'mm_processor_kwargs' is not supported.", param="mm_processor_kwargs")
    if request.add_special is not None and request.add_special_tokens is not None:
        if request.add_special != request.add_special_tokens:
            raise InvalidRequest(
                "'add_special' and 'add_special_tokens' disagree.", param="add_special_tokens"
            )
    if request.messages is None:
        for name in ("tools", "chat_template_kwargs"):
            if getattr(request, name) is not None:
                raise InvalidRequest(f"'{name}' goes with 'messages'.", param=name)
        return None
    for name, value, why in _CHAT_ONLY_DEFAULTS:
        if getattr(request, name) != value:
            raise InvalidRequest(f"'{name}' can only be {str(value).lower()}: {why}.", param=name)
    if request.add_special or request.add_special_tokens:
        raise InvalidRequest(
            "A chat's special tokens are its template's: 'add_special_tokens' goes with a text.",
            param="add_special" if request.add_special else "add_special_tokens",
        )
    fields = {
        "model": request.model,
        "messages": request.messages,
        "tools": request.tools,
        "chat_template_kwargs": request.chat_template_kwargs,
    }
    chat = parse_request(
        ChatCompletionRequest, {name: value for name, value in fields.items() if value is not None}
    )
    conversation = chat_conversation(chat)
    turns = conversation.plan.turns
    media = next((m for turn in turns for m in (*turn.images, *turn.audio)), None)
    if media is not None:
        raise InvalidRequest(
            "Images and audio are not tokenized here: send the messages' text.",
            param=getattr(media, "param", "messages"),
        )
    return conversation


def _text_tokens(request: TokenizeRequest, model: TextModel) -> list[int]:
    text = request.content if request.content is not None else request.prompt
    assert text is not None
    param = "content" if request.content is not None else "prompt"
    check_prompt_size(model, len(text.encode()), param)
    # Each server's own default: llama.cpp's content without, vLLM's prompt with.
    add = request.add_special
    if add is None:
        add = request.add_special_tokens
    if add is None:
        add = request.content is None
    return model.tokenize(text, add_special=add, parse_special=request.parse_special)


def _piece(token: bytes) -> str | list[int]:
    """llama.cpp's piece: the text where the bytes are UTF-8, else the bytes themselves (a
    character split between tokens)."""
    try:
        return token.decode()
    except UnicodeDecodeError:
        return list(token)
