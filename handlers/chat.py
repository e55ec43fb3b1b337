"""POST /v1/chat/completions."""

from __future__ import annotations

import time
from collections.abc import Iterator

from common.errors import InvalidRequest
from common.protocol.base import new_id
from common.protocol.chat import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChoiceDelta,
    ResponseMessage,
)
from common.store import ModelStore
from handlers._generation import (
    TextGeneration,
    UsageCounter,
    check_context,
    check_logit_bias,
    collect,
    sampling_for,
    text_model,
    token_budget,
)
from layers.text import ChatTurn, TextModel

_ROLE_ALIASES = {"developer": "system", "function": "tool"}


def create_chat_completion(
    request: ChatCompletionRequest, store: ModelStore
) -> ChatCompletion | Iterator[ChatCompletionChunk]:
    stream = _chat(request, store)
    if request.stream:
        return stream
    return _collect(stream)


def chat_turns(messages: list[ChatMessage]) -> list[ChatTurn]:
    """Messages as plain text turns; a part a text model cannot read is a 400."""
    turns = []
    for i, message in enumerate(messages):
        content = message.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.type not in ("text", "input_text"):
                    raise InvalidRequest(
                        f"This model reads text only; content parts of type '{part.type}' "
                        "are not supported.",
                        param=f"messages[{i}].content[{j}].type",
                    )
                texts.append(part.text or "")
            content = "".join(texts)
        turns.append(ChatTurn(_ROLE_ALIASES.get(message.role, message.role), content or ""))
    return turns


def _chat(request: ChatCompletionRequest, store: ModelStore) -> Iterator[ChatCompletionChunk]:
    """Every chat, streamed or not, is this stream of chunks; errors come before the first."""
    turns = chat_turns(request.messages)
    with store.use(request.model) as loaded:
        model = text_model(loaded, request.model)
        config = store.registry.resolve(request.model)
        prompt = model.tokenize(model.chat_prompt(turns))
        budget = token_budget(request.token_budget, config.parameters)
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        check_context(model, len(prompt), budget, prompt_param="messages", budget_param=param)
        check_logit_bias(model, request)

        chunk_id, created = new_id("chatcmpl"), int(time.time())
        usage = UsageCounter(prompt_tokens=len(prompt))

        def chunk(choices: list[ChatChunkChoice], **extra: object) -> ChatCompletionChunk:
            return ChatCompletionChunk(
                id=chunk_id, created=created, model=request.model, choices=choices, **extra
            )

        for index in range(request.n):
            generation = _generation(model, prompt, request, config.parameters, budget, index)
            yield chunk(
                [ChatChunkChoice(index=index, delta=ChoiceDelta(role="assistant", content=""))]
            )
            for text in generation:
                yield chunk([ChatChunkChoice(index=index, delta=ChoiceDelta(content=text))])
            usage.completion_tokens += generation.completion_tokens
            finish = ChatChunkChoice(
                index=index, delta=ChoiceDelta(), finish_reason=generation.finish_reason
            )
            yield chunk([finish])
        if request.include_usage or not request.stream:
            yield chunk([], usage=usage.usage())


def _generation(
    model: TextModel,
    prompt: list[int],
    request: ChatCompletionRequest,
    defaults: dict,
    budget: int | None,
    index: int,
) -> TextGeneration:
    sampling = sampling_for(request, defaults, choice=index)
    return TextGeneration(model, prompt, sampling, budget, request.stop_sequences)


def _collect(chunks: Iterator[ChatCompletionChunk]) -> ChatCompletion:
    whole = collect(chunks, lambda choice: choice.delta.content)
    choices = [
        ChatChoice(
            index=i,
            message=ResponseMessage(content=text),
            finish_reason=whole.finish_reasons[i],
        )
        for i, text in whole.texts.items()
    ]
    last = whole.last
    return ChatCompletion(
        id=last.id, created=last.created, model=last.model, choices=choices, usage=last.usage
    )
