"""POST /v1/completions: one choice per prompt, times n; `echo` repeats the prompt, `suffix`
fills in the middle, `best_of` keeps the most likely of several, `logprobs` scores tokens."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from common.errors import InvalidRequest
from common.protocol.base import new_id
from common.protocol.completions import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from common.store import ModelStore
from common.turns import TokenLogprob
from handlers.text.checks import (
    asked_sampling,
    check_prompt_size,
    checked_budget,
    sampling_for,
    text_model,
    token_budget,
)
from handlers.text.logprobs import CompletionLogprobsBuilder
from handlers.text.stream import UsageCounter, started_choices
from layers.text import TextModel


def create_completion(
    request: CompletionRequest, store: ModelStore
) -> Completion | Iterator[Completion]:
    check_request(request)
    stream = _complete(request, store)
    if request.stream:
        return stream
    return _collect(stream, request)


# Choices per request (prompts x n, or x best_of): the slot is held until all are generated.
MAX_CHOICES = 128


def check_request(request: CompletionRequest) -> None:
    best_of = request.best_of
    if best_of is not None and best_of < request.n:
        raise InvalidRequest(
            f"best_of ({best_of}) must be at least n ({request.n}).", param="best_of"
        )
    if best_of is not None and best_of > request.n and request.stream:
        raise InvalidRequest(
            "best_of cannot be streamed: the best completions are known only at the end.",
            param="best_of",
        )
    if request.suffix is not None and request.echo:
        raise InvalidRequest("echo cannot be combined with suffix.", param="suffix")
    choices = len(request.prompts) * (best_of or request.n)
    if choices > MAX_CHOICES:
        raise InvalidRequest(
            f"This request asks for {choices} completions ({len(request.prompts)} prompts x "
            f"{best_of or request.n}); at most {MAX_CHOICES} are allowed per request.",
            param="prompt" if len(request.prompts) > 1 else "n",
        )


def prompt_tokens(model: TextModel, prompt: str | list[int], param: str) -> list[int]:
    if isinstance(prompt, str):
        check_prompt_size(model, len(prompt.encode()), param)
        return model.tokenize(prompt)
    return _checked_ids(model, prompt, param)


def _checked_ids(model: TextModel, tokens: list[int], param: str) -> list[int]:
    """Token ids a client sent, each within the vocabulary: an id past it would crash the
    engine (llama.cpp aborts the process), so none reaches it unchecked."""
    bad = next((t for t in tokens if not 0 <= t < model.vocab_size), None)
    if bad is not None:
        raise InvalidRequest(
            f"Token id {bad} is outside this model's vocabulary (0 to {model.vocab_size - 1}).",
            param=param,
        )
    return list(tokens)


def _infill_tokens(model: TextModel, prompt: str | list[int], suffix: str, param: str) -> list[int]:
    if isinstance(prompt, str):
        check_prompt_size(model, len(prompt.encode()), param)
        prefix = prompt
    else:
        prefix = model.detokenize(_checked_ids(model, prompt, param))
    tokens = model.infill_prompt(prefix, suffix)
    if tokens is None:
        raise InvalidRequest(
            f"The model '{model.name}' has no fill-in-the-middle tokens, so it cannot complete "
            "text before a suffix.",
            param="suffix",
        )
    return tokens


def _complete(request: CompletionRequest, store: ModelStore) -> Iterator[Completion]:
    """Every completion, streamed or not, is this stream of chunks; errors come before the first.

    With best_of, each prompt's best_of candidates come out as choices numbered past the
    others; _collect keeps the n best.
    """
    with store.use(request.model) as loaded:
        model = text_model(loaded, request.model)
        config = store.registry.resolve(request.model)
        prompts = request.prompts
        batch = []
        for p, prompt in enumerate(prompts):
            param = "prompt" if len(prompts) == 1 else f"prompt[{p}]"
            if request.suffix is not None:
                tokens = _infill_tokens(model, prompt, request.suffix, param)
            else:
                tokens = prompt_tokens(model, prompt, param)
            batch.append((prompt, tokens, param))
        tries = request.best_of or request.n
        budget = checked_budget(
            model,
            [(len(tokens), param) for _, tokens, param in batch],
            tries,
            token_budget(request.max_tokens, config.parameters),
            named=request.max_tokens is not None,
            logit_bias=request.logit_bias,
            choices_param="best_of" if request.best_of else "n",
        )
        chunk_id, created = new_id("cmpl-"), int(time.time())
        usage = UsageCounter(prompt_tokens=sum(len(tokens) for _, tokens, _ in batch))
        # best_of ranks candidates by their tokens' log probabilities: score them even when
        # the client did not ask to see them.
        scoring = (
            request.logprobs if request.logprobs is not None else (0 if tries > request.n else None)
        )

        def chunk(
            index: int,
            text: str,
            logprobs: CompletionLogprobs | None = None,
            finish: str | None = None,
        ) -> Completion:
            choice = CompletionChoice(
                text=text, index=index, logprobs=logprobs, finish_reason=finish
            )
            return Completion(
                id=chunk_id,
                created=created,
                model=request.model,
                choices=[choice],
                system_fingerprint=model.fingerprint,
            )

        for p, (prompt, tokens, _) in enumerate(batch):
            echo = None
            if request.echo:
                text = prompt if isinstance(prompt, str) else model.detokenize(tokens)
                echo = (text, _echo_scores(model, tokens, request))
            asked = asked_sampling(request)
            samplings = [sampling_for(asked, config.parameters, choice=i) for i in range(tries)]
            with started_choices(
                model, tokens, samplings, budget, request.stop_sequences, logprobs=scoring
            ) as choices:
                for i, choice in enumerate(choices):
                    index = p * tries + i
                    scores = CompletionLogprobsBuilder()
                    if echo is not None:
                        text, scored = echo
                        yield chunk(index, text, scores.add(*scored) if scored else None)
                    for piece in choice:
                        logprobs = None
                        if scoring is not None:
                            logprobs = scores.add(piece.tokens, [t.piece for t in piece.tokens])
                        yield chunk(index, piece.text, logprobs)
                    usage.completion_tokens += choice.completion_tokens
                    yield chunk(index, "", None, choice.finish_reason)
        if request.include_usage or not request.stream:
            yield Completion(
                id=chunk_id,
                created=created,
                model=request.model,
                choices=[],
                usage=usage.usage(),
                system_fingerprint=model.fingerprint,
            )


def _echo_scores(
    model: TextModel, tokens: list[int], request: CompletionRequest
) -> tuple[list[TokenLogprob | None], list[bytes]] | None:
    """The prompt's own log probabilities and pieces, once for all its choices."""
    if request.logprobs is None:
        return None
    scored = model.prompt_logprobs(tokens, request.logprobs)
    first = model.detokenize(tokens[:1]).encode()
    pieces = [first] + [s.piece for s in scored[1:] if s is not None]
    return scored, pieces


@dataclass
class _Choice:
    text: str = ""
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


def _collect(chunks: Iterator[Completion], request: CompletionRequest) -> Completion:
    choices: dict[int, _Choice] = {}
    last = None
    for last in chunks:
        for c in last.choices:
            choice = choices.setdefault(c.index, _Choice())
            choice.text += c.text
            if c.logprobs is not None:
                choice.logprobs = _joined(choice.logprobs, c.logprobs)
            choice.finish_reason = c.finish_reason or choice.finish_reason
    assert last is not None and last.usage is not None
    tries = request.best_of or request.n
    kept = []
    for p in range(len(request.prompts)):
        candidates = [choices[p * tries + i] for i in range(tries)]
        if tries > request.n:
            candidates.sort(key=_mean_logprob, reverse=True)
        kept.extend(candidates[: request.n])
    return Completion(
        id=last.id,
        created=last.created,
        model=last.model,
        choices=[
            CompletionChoice(
                text=c.text,
                index=i,
                logprobs=c.logprobs if request.logprobs is not None else None,
                finish_reason=c.finish_reason,
            )
            for i, c in enumerate(kept)
        ],
        usage=last.usage,
        system_fingerprint=last.system_fingerprint,
    )


def _joined(a: CompletionLogprobs | None, b: CompletionLogprobs) -> CompletionLogprobs:
    if a is None:
        return b
    return CompletionLogprobs(
        tokens=a.tokens + b.tokens,
        token_logprobs=a.token_logprobs + b.token_logprobs,
        top_logprobs=a.top_logprobs + b.top_logprobs,
        text_offset=a.text_offset + b.text_offset,
    )


def _mean_logprob(choice: _Choice) -> float:
    """OpenAI's best_of criterion: the highest log probability per generated token."""
    values = [
        v for v in (choice.logprobs.token_logprobs if choice.logprobs else []) if v is not None
    ]
    return sum(values) / len(values) if values else float("-inf")
