"""Prefix reuse to the token in a prompt's tail (layers/prefix_cache `exact_tail`): what it rests
on, measured on llama.cpp's CPU backend with flash attention, and that a prompt reusing another
one's tail gets the numbers it gets from scratch (the embedded SmolLM2)."""

from __future__ import annotations

import hashlib
import threading

import pytest

from common.sources import local_path
from layers import llama_batch, llama_slots
from layers.media_prompt import MediaSpan, Prompt, placeholders
from layers.prefix_cache import blocks_of, plan, reusable
from layers.text import Sampling
from tests.unit.test_llama_context import SOURCE, _model


@pytest.fixture(scope="module")
def path():
    return local_path("smollm2", SOURCE)


def test_a_shared_tail_is_reused_to_the_token_only_where_the_full_blocks_agree():
    start = list(range(45))
    cached, prompt = start + [7, 8, 9], start + [5, 6]
    assert reusable(cached, len(cached), prompt, exact_tail=True) == 45
    assert plan(prompt, 45) == [(45, 47)]
    assert reusable(cached, len(cached), prompt, exact_tail=False) == 32  # whole blocks
    assert reusable(cached, 40, prompt, exact_tail=True) == 40  # only what was evaluated
    long = list(range(150))  # 128 in full blocks, then the tail
    assert reusable(long + [1], 151, long + [2, 3], exact_tail=True) == 150
    # 150 -> 200: places 128-191 are a full block in the new prompt, tail in the old one
    assert reusable(long, 150, long + list(range(50)), exact_tail=True) == 128
    assert reusable(cached, len(cached), cached, exact_tail=True) == len(cached) - 1


def _kernel_classes(path, splits: list[list[int]]) -> list[str]:
    """Hashes of the last logits and of 8 greedy steps after a 200-token prompt evaluated in
    the given blocks, in a context of one stream (no scheduler)."""
    import llama_cpp
    import numpy as np

    model = llama_cpp.llama_model_load_from_file(
        str(path).encode(), llama_cpp.llama_model_default_params()
    )
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = 1024, 512, 512
    params.n_threads = params.n_threads_batch = 2
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
    context = llama_cpp.llama_init_from_model(model, params)
    memory = llama_cpp.llama_get_memory(context)
    vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    prompt = [int(t) for t in np.random.RandomState(1).randint(100, 40000, 200)]

    def decode(tokens: list[int], start: int) -> np.ndarray:
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, i == len(tokens) - 1
        batch.n_tokens = len(tokens)
        assert llama_cpp.llama_decode(context, batch) == 0
        pointer = llama_cpp.llama_get_logits_ith(context, len(tokens) - 1)
        return np.ctypeslib.as_array(pointer, shape=(vocab,)).copy()

    hashes = []
    try:
        for sizes in splits:
            llama_cpp.llama_memory_seq_rm(memory, -1, -1, -1)
            place = 0
            for size in sizes:
                logits = decode(prompt[place : place + size], place)
                place += size
            digest = hashlib.sha256(logits.tobytes())
            for step in range(8):
                logits = decode([int(logits.argmax())], place + step)
                digest.update(logits.tobytes())
            hashes.append(digest.hexdigest())
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(context)
        llama_cpp.llama_model_free(model)
    return hashes


def test_a_tokens_numbers_depend_on_its_kernel_class_not_on_its_block(path):
    """The fact exact_tail rests on (re-measure it when llama.cpp changes)."""
    splits = [[192, 8], [192, 1, 1, 1, 1, 1, 1, 1, 1], [192, 3, 5], [100, 92, 8], [64] * 3 + [8]]
    *same, different = _kernel_classes(path, [*splits, [150, 42, 8]])
    assert len(set(same)) == 1  # tail (under 64) cut anywhere, full blocks cut at 64 or more
    assert different != same[0]  # 150-191 one-pass instead of tiled: other numbers


def _greedy(model, prompt: list[int]) -> list:
    return [
        (token.piece, token.logprob)
        for token in model.generate(
            prompt, Sampling(temperature=0, ignore_eos=True), logprobs=3, limit=12
        )
    ]


@pytest.mark.parametrize("shared", [45, 150])
def test_a_prompt_reusing_a_cached_tail_gets_what_it_gets_from_scratch(path, shared, monkeypatch):
    first = _model(path, parallel=2)
    try:
        start = first.tokenize(" ".join(f"{n} and" for n in range(200)))[:shared]
        cached, prompt = start + first.tokenize(" cats"), start + first.tokenize(" dogs run")
        assert len(cached) // 64 == len(prompt) // 64  # the same full blocks
        scratch = _greedy(first, prompt)
    finally:
        first.close()
    kept: list[int] = []
    monkeypatch.setattr(
        llama_slots, "plan", lambda tokens, keep=0: kept.append(keep) or plan(tokens, keep)
    )
    model = _model(path, parallel=2, token_prefix_reuse=True)
    try:
        _greedy(model, cached)
        assert _greedy(model, prompt) == scratch
        assert kept == [0, shared]  # the second prompt reused its shared tail to the token
    finally:
        model.close()


def test_the_n_choices_of_a_request_evaluate_their_prompt_once_and_agree(path):
    model = _model(path, parallel=4, token_prefix_reuse=True)
    try:
        prompt = model.tokenize("Tell me about the sea, the sky and the hills.")
        alone = _greedy(model, prompt)
        results: dict[int, list] = {}
        threads = [
            threading.Thread(target=lambda i=i: results.__setitem__(i, _greedy(model, prompt)))
            for i in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert [results[i] for i in range(3)] == [alone] * 3
    finally:
        model.close()


def test_a_long_prompt_alone_goes_in_larger_blocks_with_the_same_numbers(path, monkeypatch):
    """Alone, a prompt's full blocks are evaluated together (fewer decode calls); the tiled
    kernel gives the same bits however they are cut, so the tokens and log-probabilities are
    those of 64-token blocks."""
    from layers import prefix_cache

    joined: list[int] = []
    monkeypatch.setattr(
        llama_batch, "joinable",
        lambda tokens, todo, limit: joined.append(prefix_cache.joinable(tokens, todo, limit))
        or joined[-1],
    )  # fmt: skip
    model = _model(path, parallel=2)
    try:
        prompt = model.tokenize(" ".join(f"{n} and" for n in range(150)))
        assert len(prompt) > 4 * 64
        together = _greedy(model, prompt)
    finally:
        model.close()
    assert max(joined) >= 4  # the full blocks went in one decode call
    monkeypatch.setattr(llama_batch, "joinable", lambda tokens, todo, limit: 1)
    model = _model(path, parallel=2, token_prefix_reuse=False)
    try:
        assert _greedy(model, prompt) == together  # 64-token blocks, no reuse
    finally:
        model.close()
    text = list(range(168))
    assert prefix_cache.joinable(text, [(0, 64), (64, 128), (128, 160), (160, 168)], 512) == 2
    assert prefix_cache.joinable(text, [(0, 64), (64, 128), (128, 192)], 128) == 2
    assert prefix_cache.joinable(text, [(0, 32)], 512) == 1
    # An image is a block of its own, evaluated by the projector: never joined with text.
    image = Prompt(list(range(128)) + placeholders("red", 64), [MediaSpan(128, 64, 64)])
    assert prefix_cache.joinable(image, blocks_of(image), 512) == 1


GRAMMAR = 'start: "{\\"colours\\": [" c ("," c)* "]}"\nc: "\\"" /[a-z]{1,12}/ "\\""\n'


def test_a_repeated_prompt_is_sampled_from_its_kept_logits_with_the_same_results(path, monkeypatch):
    """The second time a prompt comes, nothing of it is evaluated: its first token is sampled
    from the logits its slot kept. Greedy with log-probabilities, seeded sampling, and a
    grammar's mask give what they gave the first time, from scratch."""
    kept: list[int] = []
    monkeypatch.setattr(
        llama_slots, "plan", lambda tokens, keep=0: kept.append(keep) or plan(tokens, keep)
    )
    model = _model(path, parallel=2)
    try:
        cases = {
            "Name three colours:": (Sampling(temperature=0, ignore_eos=True), None),
            "Write a line about rain:": (Sampling(temperature=1.0, seed=7, ignore_eos=True), None),
            "List colours as JSON:": (Sampling(temperature=0.8, seed=3), GRAMMAR),
        }
        for text, (sampling, grammar) in cases.items():
            prompt = model.tokenize(text)
            runs = [
                [
                    (t.piece, t.logprob)
                    for t in model.generate(prompt, sampling, grammar, logprobs=3, limit=16)
                ]
                for _ in range(2)
            ]
            assert runs[0] == runs[1] and len(runs[0]) > 1, text
            assert kept[-2:] == [0, len(prompt)], text  # the repeat evaluated nothing
    finally:
        model.close()
