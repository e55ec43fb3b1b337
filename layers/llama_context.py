"""The context of a batched llama.cpp model, sized to the sequences that run in it.

A context reserves the KV cells of every sequence it can hold when it is created, and llama.cpp
clears them then: about 15 ms per 1,000 cells on these machines, 270 ms for SmolLM2's 8
sequences of 2,048 (and 640 MB per 2,048-token sequence of a 70B model). So a model starts
with a context for two sequences (two, not one: the scheduler decodes a lone token beside a
second stream, layers/llama_batch) and grows it, doubling, when more sequences arrive than it
holds, up to its `parallel`: a cold start pays for two sequences, not eight, and a model that
never runs eight at once never reserves memory for eight.

The larger context is created in a thread of its own while the running streams go on
decoding in the old one (creating it is mostly clearing its cells, which needs no other
context): the sequences that wait for a stream wait for it, and no running one pauses. Between
two steps the scheduler then moves each occupied stream into it with llama.cpp's sequence
state: the cells keep their places and contents, so a sequence's numbers are the ones it would
have had in the larger context from the start (tests/unit/test_llama_context.py). The state is
written for the old context's number of streams and read only by a context with as many;
stream k of n is stream k of the larger context, so the state is rewritten to say so: the
count in its header, and an empty cell count for each added stream after the last one. That
layout is a plain KV cache's; a model whose memory is anything else (sliding-window attention,
recurrent or hybrid layers) is given its whole context at load, as before.
"""

from __future__ import annotations

import ctypes
import logging
import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from common.errors import EngineUnavailable
from layers.llama_api import attention_segment
from layers.llama_threads import ThreadPools
from layers.prefix_cache import BLOCK

log = logging.getLogger(__name__)

# A lone token of a sequence with more cells than this gets the ballast: llama.cpp pads the cells
# in view to 256 and splits them between threads from 512 (a margin of 32 below 256).
BALLAST_AFTER_CELLS = 224
# A sequence's state: llama.cpp's magic (u32), the sequence id (i32), then the KV cache's stream
# count (u32) and each stream's cell count (u32) with, when not 0, its cells.
_STREAMS_AT = 8


class GrowingContext:
    """A llama.cpp context for up to `parallel` sequences (one KV stream each, `n_ctx` cells
    per stream), created as small as allowed and re-created larger by `grow`. Used from one
    thread at a time (the scheduler's)."""

    def __init__(
        self, lib: Any, model: Any, kwargs: Mapping[str, Any], parallel: int, name: str
    ) -> None:
        self._lib, self._model, self._kwargs, self._name = lib, model, kwargs, name
        self.parallel = parallel
        self.growable = _plain_kv_cache(lib, model) and parallel > 2
        self.batch_invariant = bool(kwargs.get("batch_invariant", True))
        # Stratus's build of llama.cpp computes a lone token's flash attention as it does beside
        # others (layers/llama_api.attention_segment): then no token ever needs company.
        self.segmented = kwargs["flash_attn"] is not False and attention_segment(lib) is not None
        self.sequences = 2 if self.growable else parallel
        self._growth: _Growth | None = None
        self._threads = ThreadPools(
            lib, kwargs["n_threads"], kwargs["n_threads_batch"], kwargs["poll"]
        )
        try:
            self.handle = self._create(self.sequences)
        except BaseException:
            self._threads.free()
            raise
        self.memory = lib.llama_get_memory(self.handle)
        self.n_batch: int = lib.llama_n_batch(self.handle)
        self.context_length: int = lib.llama_n_ctx(self.handle) // self.sequences

    def start_growing(self, wanted: int) -> None:
        """Starts creating a context for at least `wanted` sequences (the next power of two,
        at most `parallel`) in a thread of its own, unless one is being created already or
        the context cannot grow. `finish_growing` moves into it once it exists."""
        if not self.growable or self._growth is not None or wanted <= self.sequences:
            return
        size = self.sequences
        while size < wanted:
            size *= 2
        self._growth = _Growth(min(size, self.parallel), self._create)

    def finish_growing(self, occupied: Iterable[int]) -> bool:
        """If the larger context exists, moves the streams of the `occupied` sequence ids
        into it and uses it from now on: True. False while it is being created or when none
        is, and when it cannot be had (llama.cpp refused the memory, or a stream would not
        move): the context stays as it is, and stops growing."""
        growth = self._growth
        if growth is None or not growth.done.is_set():
            return False
        self._growth = None
        larger, size = growth.handle, growth.size
        if larger is None:
            log.warning("%s; running at most %d sequences at once", growth.error, self.sequences)
            self.growable = False
            return False
        for seq_id in occupied:
            if not self._move(larger, seq_id, size):
                self._lib.llama_free(larger)
                log.warning("a sequence could not move to a larger context; staying at %d "
                            "sequences", self.sequences)  # fmt: skip
                self.growable = False
                return False
        self._lib.llama_free(self.handle)
        self.handle, self.sequences = larger, size
        self.memory = self._lib.llama_get_memory(larger)
        self.growable = size < self.parallel
        return True

    def lone_token_needs_company(self, place: int) -> bool:
        """Whether a token decoded alone at `place` needs a second token in the same decode
        (the ballast, or a drafted token of its own sequence) to keep its numbers."""
        return self.batch_invariant and not self.segmented and place >= BALLAST_AFTER_CELLS

    def ballast(self, batch: Any, place: int, streams: Sequence[int]) -> tuple[int, int] | None:
        """Puts a ballast token after the batch's lone token (at `place` in its sequence), if
        its sequence is long enough to need one and the model is batch-invariant, at the end
        of the emptiest of `streams` (the caller removes it after the decode): its (sequence
        id, position), or None.

        Alone, a token of a sequence with 512 cells or more in view has its flash attention
        split between threads and the parts added up (llama.cpp's CPU backend), which
        changes the last bits of its numbers; beside a token of another stream it takes the
        path it takes among other sequences.
        """
        if not self.lone_token_needs_company(place):
            return None
        lib, memory = self._lib, self.memory
        ends = {seq_id: lib.llama_memory_seq_pos_max(memory, seq_id) + 1 for seq_id in streams}
        if not ends or min(ends.values()) >= self.context_length:
            return None
        seq_id = min(ends, key=ends.__getitem__)
        batch.token[1] = batch.token[0]
        batch.pos[1] = ends[seq_id]
        batch.n_seq_id[1] = 1
        batch.seq_id[1][0] = seq_id
        batch.logits[1] = False
        return seq_id, ends[seq_id]

    def free(self) -> None:
        if self._growth is not None:
            self._growth.done.wait()
            if self._growth.handle is not None:
                self._lib.llama_free(self._growth.handle)
        self._lib.llama_free(self.handle)
        self._threads.free()

    def _move(self, larger: Any, seq_id: int, streams: int) -> bool:
        lib = self._lib
        size = lib.llama_state_seq_get_size(self.handle, seq_id)
        state = (ctypes.c_uint8 * size)()
        written = lib.llama_state_seq_get_data(self.handle, state, size, seq_id)
        raw = bytearray(memoryview(state)[:written])
        if written < _STREAMS_AT + 4 or _stream_count(raw) != self.sequences:
            return False
        struct.pack_into("<I", raw, _STREAMS_AT, streams)
        raw += bytes(4 * (streams - self.sequences))
        moved = (ctypes.c_uint8 * len(raw)).from_buffer(raw)
        return lib.llama_state_seq_set_data(larger, moved, len(raw), seq_id) == len(raw)

    def _create(self, sequences: int) -> Any:
        """A context of `sequences` streams of n_ctx cells, with batches large enough for a
        prompt block from every sequence of the largest context at once (the same for every
        size: how a step is cut into decode calls never depends on the size)."""
        lib, kwargs = self._lib, self._kwargs
        params = lib.llama_context_default_params()
        params.n_seq_max = sequences
        params.kv_unified = False
        params.n_ctx = kwargs["n_ctx"] * sequences
        params.n_batch = max(kwargs["n_batch"], self.parallel * BLOCK)
        params.n_ubatch = max(kwargs.get("n_ubatch", params.n_batch), params.n_batch)
        params.n_threads = kwargs["n_threads"]
        params.n_threads_batch = kwargs["n_threads_batch"]
        flash_attn = kwargs["flash_attn"]
        params.flash_attn_type = (
            lib.LLAMA_FLASH_ATTN_TYPE_AUTO
            if flash_attn == "auto"
            else lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if flash_attn
            else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        for key in ("rope_freq_base", "rope_freq_scale"):
            if key in kwargs:
                setattr(params, key, kwargs[key])
        context = lib.llama_init_from_model(self._model, params)
        if context is None:
            raise EngineUnavailable(
                f"llama.cpp could not create a context for '{self._name}' ({sequences} "
                f"sequences of {kwargs['n_ctx']} tokens): lower `parallel` or `n_ctx`."
            )
        self._threads.attach(context)
        return context


class _Growth:
    """A larger context, created in a thread of its own: `handle` once `done`, or `error`."""

    def __init__(self, size: int, create: Callable[[int], Any]) -> None:
        self.size = size
        self.handle: Any = None
        self.error: EngineUnavailable | None = None
        self.done = threading.Event()
        threading.Thread(target=self._run, args=(create,), name="llama-grow", daemon=True).start()

    def _run(self, create: Callable[[int], Any]) -> None:
        try:
            self.handle = create(self.size)
        except EngineUnavailable as error:
            self.error = error
        except Exception as error:  # a bug: the context stops growing, and says why
            self.error = EngineUnavailable(f"creating a larger context failed: {error}")
        finally:
            self.done.set()


def _plain_kv_cache(lib: Any, model: Any) -> bool:
    """Whether the model's memory is one KV cache of full attention (the state layout that
    `finish_growing` rewrites)."""
    return not (
        lib.llama_model_n_swa(model) > 0
        or lib.llama_model_is_recurrent(model)
        or lib.llama_model_is_hybrid(model)
    )


def _stream_count(state: bytearray) -> int:
    return struct.unpack_from("<I", state, _STREAMS_AT)[0]
