"""layers/exllamav2.py on a CUDA GPU: streaming, sampling, stop tokens, a grammar, cancellation.

Skipped, visibly, without a GPU, without exllamav2, or without a model directory in
STRATUS_TEST_EXL2_MODEL (a Hugging Face safetensors directory: EXL2 or FP16/BF16, with its
tokenizer.json and tokenizer_config.json).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from common.registry import ModelConfig
from common.turns import ChatTurn
from layers.text import Sampling

MODEL = os.environ.get("STRATUS_TEST_EXL2_MODEL")


def _cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _cuda(), reason="no CUDA GPU here"),
    pytest.mark.skipif(
        importlib.util.find_spec("exllamav2") is None, reason="exllamav2 is not installed"
    ),
    pytest.mark.skipif(not MODEL, reason="set STRATUS_TEST_EXL2_MODEL to a model directory"),
]


@pytest.fixture(scope="module")
def model():
    from layers.exllamav2 import ExLlamaV2TextModel

    config = ModelConfig(name="exl2-test", backend="exllamav2", source=str(MODEL))
    return ExLlamaV2TextModel(config, Path(str(MODEL)))


def test_greedy_generation_streams_tokens_and_stops_at_its_limit(model):
    prompt = model.chat_prompt([ChatTurn("user", "Count from 1 to 20.")])
    tokens = list(model.generate(prompt, Sampling(temperature=0, ignore_eos=True), limit=16))
    assert len(tokens) == 16
    again = list(model.generate(prompt, Sampling(temperature=0, ignore_eos=True), limit=16))
    assert b"".join(t.piece for t in tokens) == b"".join(t.piece for t in again)


def test_a_closed_stream_frees_its_job(model):
    prompt = model.tokenize("Once upon a time")
    stream = model.generate(prompt, Sampling(ignore_eos=True), limit=4000)
    next(stream)
    stream.close()
    tokens = list(model.generate(prompt, Sampling(temperature=0), limit=4))
    assert 0 < len(tokens) <= 4


def test_a_grammar_constrains_every_token(model):
    prompt = model.tokenize("The answer is")
    tokens = model.generate(prompt, Sampling(temperature=1.0), grammar='start: "yes" | "no"')
    assert b"".join(t.piece for t in tokens).decode() in ("yes", "no")
