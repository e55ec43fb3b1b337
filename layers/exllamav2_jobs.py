"""What a generation asks of exllamav2's dynamic generator, as plain values: the sampler
settings of a request's Sampling, its token bias, its stop conditions, and the finish reason of
a finished job.

Pure (no torch, no CUDA), so it is tested on any machine. The exllamav2 layer turns these
values into the library's objects (`ExLlamaV2Sampler.Settings(**fields)`, a bias tensor,
`ExLlamaV2DynamicJob(stop_conditions=...)`).
Semantics checked against exllamav2 0.3.2's sampler: top_k 0 is off, top_p 0 or 1 is off,
min_p 0 is off, and the bias is added to the logits (-inf bans a token).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from layers.text import Sampling

# logit_bias -100 bans a token (as OpenAI documents it); anything else is added to its logit.
BAN = -100.0
# exllamav2 pads its bias tensor to a multiple of 32 entries (ExLlamaV2Sampler.Settings).
BIAS_PADDING = 32
# A finished job's `eos_reason` -> OpenAI's finish_reason. "end_filter": the grammar (the
# structured output's filter) is complete, an ordinary end.
FINISH_REASONS = {
    "stop_token": "stop",
    "stop_string": "stop",
    "end_filter": "stop",
    "max_new_tokens": "length",
}


def sampler_fields(sampling: Sampling) -> dict[str, Any]:
    """Keyword arguments of ExLlamaV2Sampler.Settings for a request's sampling. Temperature 0
    is greedy, as Settings.greedy() makes it (top_k 1); penalties keep applying there."""
    fields: dict[str, Any] = {
        "token_repetition_penalty": sampling.repeat_penalty,
        "token_frequency_penalty": sampling.frequency_penalty,
        "token_presence_penalty": sampling.presence_penalty,
    }
    if sampling.temperature == 0:
        return {**fields, "temperature": 1.0, "top_k": 1, "top_p": 0.0, "min_p": 0.0}
    return {
        **fields,
        "temperature": sampling.temperature,
        "top_k": max(0, sampling.top_k),
        "top_p": sampling.top_p if 0.0 < sampling.top_p < 1.0 else 0.0,
        "min_p": sampling.min_p,
    }


def token_bias(logit_bias: Iterable[tuple[int, float]], vocab_size: int) -> list[float] | None:
    """The dense bias vector exllamav2 adds to the logits (padded as it pads), or None when the
    request has none."""
    biases = list(logit_bias)
    if not biases:
        return None
    size = vocab_size + (-vocab_size % BIAS_PADDING)
    dense = [0.0] * size
    for token, bias in biases:
        if not 0 <= token < vocab_size:
            raise ValueError(f"token {token} is outside the vocabulary")
        dense[token] = -math.inf if bias <= BAN else float(bias)
    return dense


def stop_conditions(end_tokens: Iterable[int], ignore_eos: bool) -> list[int]:
    """The job's stop conditions: the model's end-of-generation tokens (its EOS and the chat
    template's end-of-turn), none with ignore_eos. Stop strings are not the engine's: the
    handlers match them on the decoded text, the same for every engine."""
    return [] if ignore_eos else sorted(set(end_tokens))


def finish_reason(result: Mapping[str, Any]) -> str | None:
    """OpenAI's finish_reason for a job's result: None while it streams."""
    if not result.get("eos"):
        return None
    return FINISH_REASONS.get(result.get("eos_reason", ""), "stop")
