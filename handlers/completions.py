"""POST /v1/completions: one choice per prompt, times n; `echo` repeats the prompt."""

from __future__ import annotations

import time
from collections.abc import Iterator

from common.errors import InvalidRequest
from common.protocol.base import new_id
from common.protocol.completions import Completion, CompletionChoice, CompletionRequest
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
from layers.text import TextModel


def create_completion(
    request: CompletionRequest, store: ModelStore
) -> Completion | Iterator[Completion]:
    stream = _complete(request, store)
    if request.stream:
        return stream
    return _collect(stream)


def prompt_tokens(model: TextModel, prompt: str | list[int], param: str) -> list[int]:
    if isinstance(prompt, str):
        return model.tokenize(prompt)
    bad = next((t for t in prompt if not 0 <= t < model.vocab_size), None)
    if bad is not None:
        raise InvalidRequest(
            f"Token id {bad} is outside this model's vocabulary (0 to {model.vocab_size - 1}).",
            param=param,
        )
    return list(prompt)


def _complete(request: CompletionRequest, store: ModelStore) -> Iterator[Completion]:
    """Every completion, streamed or not, is this stream of chunks; errors come before the first."""
    with store.use(request.model) as loaded:
        model = text_model(loaded, request.model)
        config = store.registry.resolve(request.model)
        budget = token_budget(request.max_tokens, config.parameters)
        check_logit_bias(model, request)
        prompts = request.prompts
        batch = []
        for p, prompt in enumerate(prompts):
            param = "prompt" if len(prompts) == 1 else f"prompt[{p}]"
            tokens = prompt_tokens(model, prompt, param)
            check_context(model, len(tokens), budget, prompt_param=param)
            batch.append((prompt, tokens))

        chunk_id, created = new_id("cmpl"), int(time.time())
        usage = UsageCounter(prompt_tokens=sum(len(tokens) for _, tokens in batch))

        def chunk(index: int, text: str, finish_reason: str | None = None) -> Completion:
            choice = CompletionChoice(text=text, index=index, finish_reason=finish_reason)
            return Completion(id=chunk_id, created=created, model=request.model, choices=[choice])

        for p, (prompt, tokens) in enumerate(batch):
            for i in range(request.n):
                index = p * request.n + i
                sampling = sampling_for(request, config.parameters, choice=i)
                generation = TextGeneration(model, tokens, sampling, budget, request.stop_sequences)
                if request.echo:
                    yield chunk(
                        index, prompt if isinstance(prompt, str) else model.detokenize(tokens)
                    )
                for text in generation:
                    yield chunk(index, text)
                usage.completion_tokens += generation.completion_tokens
                yield chunk(index, "", generation.finish_reason)
        if request.include_usage or not request.stream:
            yield Completion(
                id=chunk_id, created=created, model=request.model, choices=[], usage=usage.usage()
            )


def _collect(chunks: Iterator[Completion]) -> Completion:
    whole = collect(chunks, lambda choice: choice.text)
    choices = [
        CompletionChoice(text=text, index=i, finish_reason=whole.finish_reasons[i])
        for i, text in whole.texts.items()
    ]
    last = whole.last
    return Completion(
        id=last.id, created=last.created, model=last.model, choices=choices, usage=last.usage
    )
