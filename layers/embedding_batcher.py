"""Dynamic batching for embedding engines: concurrent requests share forward passes.

Several /v1/embeddings requests for one model may run at once. Encoding each alone wastes the
engine: a forward pass over 16 one-text requests costs little more than over one. As infinity
(infinity-emb) does, callers here only submit their texts and wait; one worker thread per model
takes what is pending, encodes it in batches of at most `batch_size`, and hands each request
exactly its own rows, in its own input order. All encoding happens on that one thread, so the
engine keeps one thread team (torch's, llama.cpp's) and never runs two passes at once.

When to start a batch. An idle worker starts at once on what it finds: a lone client sending one
text per request pays no wait. Only when the last batch carried several requests (concurrent
traffic) does it wait, at most `max_wait` seconds or until a batch is full, for more to arrive;
while it encodes, new requests queue up and join the next batch anyway.

Fairness. A batch is filled from the pending requests in arrival order, and a request that does
not fit whole goes to the back of the queue with its rest. A request of 2048 texts therefore
takes one batch in turn with every request that arrived behind it, instead of 64 batches ahead
of them: a small request waits at most one batch for each request queued before it.

Equality. A text's vector is what the engine gives it in a batch with other texts. For
sentence-transformers the padding of a batch with longer texts changes only its last bits: for
all-MiniLM-L6-v2 on CPU (texts of 1 to 150 words, mixed at random in batches of 32) the largest
difference from the text encoded alone was 1.8e-7 per component, the smallest cosine 0.9999999;
the tests allow 1e-5.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from common import cancellation
from common.errors import EngineUnavailable

log = logging.getLogger("stratus.embeddings")

Encode = Callable[[list[str]], np.ndarray]

POLL_SECONDS = 0.05  # how often a waiting caller looks at its cancellation

_running: weakref.WeakSet[EmbeddingBatcher] = weakref.WeakSet()  # batchers with a worker
_running_guard = threading.Lock()
_exit_hook = False  # registered with the first worker, not at import


def _close_running() -> None:
    """At interpreter exit, each worker finishes the batch it is encoding (a cancelled
    request's, say): a thread still inside torch when the interpreter goes aborts the process
    ("terminate called without an active exception")."""
    for batcher in list(_running):
        batcher.close()


def _track(batcher: EmbeddingBatcher, running: bool) -> None:
    global _exit_hook
    with _running_guard:
        if not running:
            _running.discard(batcher)
            return
        if not _exit_hook:
            atexit.register(_close_running)
            _exit_hook = True
        _running.add(batcher)


class _Request:
    """One caller's texts, longest first (batches of similar lengths pad least), and its rows."""

    def __init__(self, texts: Sequence[str], dimensions: int) -> None:
        self.texts = texts
        self.order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        self.taken = 0  # texts of `order` handed to the worker so far
        self.encoded = 0  # rows filled so far
        self.rows = np.zeros((len(texts), dimensions), dtype=np.float32)
        self.error: BaseException | None = None
        self.withdrawn = False  # the caller left (cancelled) or the request failed
        self.done = threading.Event()

    @property
    def left(self) -> int:
        return len(self.order) - self.taken


_Batch = list[tuple[_Request, list[int]]]  # each request's share: indices into its texts


class EmbeddingBatcher:
    """Wraps `encode(texts) -> (len(texts), dimensions) float32`; `embed` may be called from
    any number of threads. The worker starts on first use; `close()` stops it."""

    def __init__(
        self,
        encode: Encode,
        dimensions: int,
        *,
        batch_size: int = 32,
        max_wait: float = 0.002,
        name: str = "embeddings",
    ) -> None:
        self._encode = encode
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.max_wait = max_wait
        self.name = name
        self._cond = threading.Condition()  # guards everything below
        self._pending: deque[_Request] = deque()
        self._pending_texts = 0
        self._concurrent = False  # the last batch carried more than one request
        self._closed = False
        self._worker: threading.Thread | None = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One vector per text, in input order. Waits for the worker, looking at the request's
        cancellation meanwhile: a request that must stop withdraws the texts not yet started."""
        cancellation.check()
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        request = _Request(texts, self.dimensions)
        self._submit(request)
        try:
            while not request.done.wait(POLL_SECONDS):
                cancellation.check()
        except BaseException:
            self._withdraw(request)
            raise
        if request.error is not None:
            # The same exception object in each caller of the failed batch, as a
            # concurrent.futures.Future raises it in each thread that waits on it.
            raise request.error
        return request.rows

    def close(self) -> None:
        """Stops the worker after the batch it is encoding; requests still waiting fail."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join()
        _track(self, running=False)
        self._fail_pending(EngineUnavailable(f"The model '{self.name}' was unloaded."))

    def _submit(self, request: _Request) -> None:
        with self._cond:
            if self._closed:
                raise EngineUnavailable(f"The model '{self.name}' was unloaded.")
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._run, name=f"embed-batcher-{self.name}", daemon=True
                )
                self._worker.start()
                _track(self, running=True)
            self._pending.append(request)
            self._pending_texts += request.left
            self._cond.notify_all()

    def _withdraw(self, request: _Request) -> None:
        """Drops the request's texts not yet started (under the lock or not)."""
        with self._cond:
            if request.withdrawn:
                return
            request.withdrawn = True
            if request in self._pending:
                self._pending.remove(request)
                self._pending_texts -= request.left

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._encode_batch(batch)
        except BaseException:  # a bug here: fail the waiting requests rather than strand them
            log.exception("the embedding worker of %s stopped", self.name)
            with self._cond:
                self._closed = True
            self._fail_pending(EngineUnavailable(f"The model '{self.name}' stopped serving."))

    def _next_batch(self) -> _Batch | None:
        """Waits for work (None once closed) and takes one batch of it."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            if self._concurrent:  # others are likely on their way: give them a moment
                deadline = time.monotonic() + self.max_wait
                while self._pending_texts < self.batch_size and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._closed or not self._pending:  # closed, or all withdrawn meanwhile
                    return None if self._closed else []
            batch: _Batch = []
            room = self.batch_size
            while room and self._pending:
                request = self._pending.popleft()
                share = request.order[request.taken : request.taken + room]
                request.taken += len(share)
                room -= len(share)
                batch.append((request, share))
                if request.left:  # its rest waits behind everyone queued (see the docstring)
                    self._pending.append(request)
            self._pending_texts -= self.batch_size - room
            self._concurrent = len(batch) > 1
            return batch

    def _encode_batch(self, batch: _Batch) -> None:
        batch = [(request, share) for request, share in batch if not request.withdrawn]
        if not batch:  # all withdrawn since they were taken: nothing to encode
            return
        texts = [request.texts[i] for request, share in batch for i in share]
        try:
            vectors = np.asarray(self._encode(texts), dtype=np.float32)
            if vectors.shape != (len(texts), self.dimensions):
                raise RuntimeError(
                    f"encode gave shape {vectors.shape} for {len(texts)} texts "
                    f"of {self.dimensions} dimensions"
                )
        except Exception as error:  # the requests of this batch fail; the others go on
            for request, _ in batch:
                self._withdraw(request)
                if request.error is None:
                    request.error = error
                request.done.set()
            return
        start = 0
        for request, share in batch:
            request.rows[share] = vectors[start : start + len(share)]
            start += len(share)
            request.encoded += len(share)
            if request.encoded == len(request.order):
                request.done.set()

    def _fail_pending(self, error: BaseException) -> None:
        with self._cond:
            failed = list(self._pending)
            self._pending.clear()
            self._pending_texts = 0
        for request in failed:
            request.withdrawn = True
            request.error = error
            request.done.set()
