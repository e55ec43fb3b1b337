"""What every text endpoint checks before it generates: request fields turned into sampling
settings and a token budget, and then, in one order (`checked_budget`), the logit bias against
the vocabulary, each prompt against the context, and a request's whole work against what one
request may ask."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields
from typing import Any

from common import metering
from common.errors import InvalidRequest
from handlers.capabilities import require
from layers.text import Sampling, TextModel

SAMPLING_FIELDS = tuple(f.name for f in fields(Sampling))


def asked_sampling(request: object) -> dict[str, Any]:
    """The sampling fields a request has, by layers.text.Sampling's names (None where unset;
    logit_bias as sent, token ids as strings)."""
    return {name: getattr(request, name, None) for name in SAMPLING_FIELDS}


def sampling_for(
    asked: Mapping[str, Any], defaults: Mapping[str, Any], choice: int = 0
) -> Sampling:
    """The fields the request set first, then the model's registry `parameters`, then engine
    defaults.

    Choice i of a seeded request uses seed + i: reproducible, yet the n choices differ.
    """
    values: dict[str, Any] = {}
    for name in SAMPLING_FIELDS:
        value = asked.get(name)
        if value is None:
            value = defaults.get(name)
        if value is not None:
            values[name] = value
    if values.get("seed") is not None:
        values["seed"] += choice
    values["logit_bias"] = tuple(_logit_bias(asked.get("logit_bias") or {}))
    return Sampling(**values)


def check_logit_bias(model: TextModel, bias: Mapping[str, float] | None) -> None:
    for token, _ in _logit_bias(bias or {}):
        if not 0 <= token < model.vocab_size:
            raise InvalidRequest(
                f"logit_bias names token {token}, outside this model's vocabulary "
                f"(0 to {model.vocab_size - 1}).",
                param="logit_bias",
            )


def _logit_bias(bias: Mapping[str, float]) -> Iterator[tuple[int, float]]:
    for key, value in bias.items():
        if not key.lstrip("-").isdigit():
            raise InvalidRequest(
                f"logit_bias keys must be token ids; '{key}' is not.", param="logit_bias"
            )
        yield int(key), value


def text_model(model: Any, model_id: str) -> TextModel:
    return require(model, "generate", model_id, "generate text")


def token_budget(requested: int | None, defaults: Mapping[str, Any]) -> int | None:
    return requested if requested is not None else defaults.get("max_tokens")


# Below this many bytes per context token a text is tokenized as usual; above it, it is first
# compared with the model's longest token, so a huge prompt is refused without tokenizing it.
_CHEAP_BYTES_PER_TOKEN = 16


def check_prompt_size(model: TextModel, text_bytes: int, param: str) -> None:
    """A prompt that cannot fit the context is refused from its length, before tokenizing it
    (a 24 MB prompt took 33-92 s to tokenize, holding the slot, before it was refused)."""
    limit = model.context_length
    if text_bytes <= limit * _CHEAP_BYTES_PER_TOKEN:
        return
    if text_bytes > limit * model.max_token_bytes:
        raise InvalidRequest(
            f"This model's maximum context length is {limit} tokens. However, your prompt "
            f"has {text_bytes} bytes, more than {limit} of this model's tokens can hold. "
            "Please reduce the length of the prompt.",
            param=param,
            code="context_length_exceeded",
        )


def check_context(
    model: TextModel,
    prompt_tokens: int,
    budget: int | None,
    prompt_param: str,
    budget_param: str = "max_tokens",
) -> None:
    """OpenAI's rule: the prompt and the requested completion must fit in the context."""
    limit = model.context_length
    if prompt_tokens == 0:
        raise InvalidRequest("The prompt must not be empty.", param=prompt_param)
    if prompt_tokens >= limit:
        raise InvalidRequest(
            f"This model's maximum context length is {limit} tokens. However, your prompt "
            f"has {prompt_tokens} tokens. Please reduce the length of the prompt.",
            param=prompt_param,
            code="context_length_exceeded",
        )
    if budget is not None and prompt_tokens + budget > limit:
        raise InvalidRequest(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + budget} tokens ({prompt_tokens} in the prompt, {budget} for the "
            "completion). Please reduce the prompt or the maximum number of tokens.",
            param=budget_param,
            code="context_length_exceeded",
        )


def checked_budget(
    model: TextModel,
    prompts: Sequence[tuple[int, str]],
    choices_per_prompt: int,
    budget: int | None,
    *,
    named: bool,
    logit_bias: Mapping[str, float] | None,
    budget_param: str = "max_tokens",
    choices_param: str = "n",
) -> int | None:
    """Every check of a request's work once its prompts are tokens, in one order for every text
    endpoint, and the completion budget each choice then runs with.

    `prompts`: each prompt's length in tokens and the param that names it. The logit bias is
    checked against the vocabulary; each prompt against the context, with the budget when the
    client `named` it; the whole work against what one request may ask. A budget the client did
    not name (the model's or the operator's default) is cut to the room the longest prompt
    leaves, as OpenAI's default (the rest of the context) is. The prompt tokens are metered
    here, once every check passed; output tokens count as they are generated.
    """
    check_logit_bias(model, logit_bias)
    for length, param in prompts:
        check_context(model, length, budget if named else None, param, budget_param)
    lengths = [length for length, _ in prompts]
    if budget is not None and not named:
        budget = min(budget, model.context_length - max(lengths))
    check_total_work(model, lengths, choices_per_prompt, budget, budget_param, choices_param, named)
    metering.count("prompt_tokens", sum(lengths))
    return budget


# Tokens one request may have the engine process in all, in contexts' worth: every choice
# evaluates its prompt and may generate up to its budget (to the end of the context when it has
# none), all while the request holds the slot.
MAX_CONTEXTS_PER_REQUEST = 32


def check_total_work(
    model: TextModel,
    prompts: Sequence[int],
    choices_per_prompt: int,
    budget: int | None,
    budget_param: str,
    choices_param: str,
    budget_named: bool,
) -> None:
    """Refuses a request whose choices x (prompt + completion budget) is more than the engine
    should give one request (10,000 prompts x n 128 was accepted and ran for hours). The 400
    names the budget when the client set it, else the number of choices."""
    limit = model.context_length
    work = choices_per_prompt * sum(
        tokens + (limit - tokens if budget is None else budget) for tokens in prompts
    )
    most = MAX_CONTEXTS_PER_REQUEST * limit
    if work <= most:
        return
    ask = f"Lower '{budget_param}'" if budget_named else f"Set a smaller '{budget_param}'"
    raise InvalidRequest(
        f"This request asks for too much work: {work} tokens to process and generate in all "
        f"(prompts and each choice's completion budget), over the {most} allowed per request. "
        f"{ask}, or ask for fewer choices.",
        param=budget_param if budget_named else choices_param,
    )
