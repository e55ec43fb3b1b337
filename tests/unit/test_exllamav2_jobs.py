"""The request -> exllamav2 job mapping (layers/exllamav2_jobs.py), without CUDA: sampler
settings, token bias, stop conditions, finish reasons."""

from __future__ import annotations

import math

import pytest

from layers.exllamav2_jobs import finish_reason, sampler_fields, stop_conditions, token_bias
from layers.text import Sampling


def test_temperature_zero_is_greedy_with_the_penalties_kept():
    fields = sampler_fields(Sampling(temperature=0, top_p=0.5, presence_penalty=0.4))
    assert (fields["top_k"], fields["top_p"], fields["temperature"]) == (1, 0.0, 1.0)
    assert fields["token_presence_penalty"] == 0.4


def test_sampling_fields_map_one_to_one_with_off_values_as_exllamav2_reads_them():
    fields = sampler_fields(
        Sampling(temperature=0.8, top_p=0.9, top_k=20, min_p=0.05, repeat_penalty=1.1,
                 frequency_penalty=0.2, presence_penalty=0.3)
    )  # fmt: skip
    assert fields == {
        "temperature": 0.8,
        "top_p": 0.9,
        "top_k": 20,
        "min_p": 0.05,
        "token_repetition_penalty": 1.1,
        "token_frequency_penalty": 0.2,
        "token_presence_penalty": 0.3,
    }
    # OpenAI's top_p 1 (no cut) and top_k 0 (none) are exllamav2's 0: off.
    off = sampler_fields(Sampling(temperature=1.0, top_p=1.0, top_k=0))
    assert (off["top_p"], off["top_k"]) == (0.0, 0)


def test_logit_bias_becomes_a_padded_dense_vector_with_bans():
    assert token_bias((), 100) is None
    dense = token_bias(((3, -100.0), (5, 2.5)), 100)
    assert len(dense) == 128  # padded to a multiple of 32, as exllamav2 pads its own
    assert dense[3] == -math.inf and dense[5] == 2.5 and dense[4] == 0.0
    with pytest.raises(ValueError):
        token_bias(((100, 1.0),), 100)


def test_end_tokens_stop_the_job_unless_ignore_eos():
    assert stop_conditions([2, 7, 2], ignore_eos=False) == [2, 7]
    assert stop_conditions([2, 7], ignore_eos=True) == []


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ({"eos": False}, None),
        ({"eos": True, "eos_reason": "stop_token"}, "stop"),
        ({"eos": True, "eos_reason": "max_new_tokens"}, "length"),
        ({"eos": True, "eos_reason": "end_filter"}, "stop"),
        ({"eos": True, "eos_reason": "stop_string"}, "stop"),
    ],
)
def test_finish_reasons(result, reason):
    assert finish_reason(result) == reason
