"""Continuous batching on llama.cpp: every generation of a model shares one context.

Each generation is a sequence in a slot of its own (a llama.cpp sequence id with its own KV
stream). One thread runs the steps. A step evaluates, for every sequence in a slot, its next
unit of work (the next block of its prompt, or the token it sampled last with any the grammar
forces after it), then samples each sequence whose unit ended with logits, with that
sequence's own sampler chain, grammar and log-probability scorer, and hands the tokens to the
thread that consumes them. A sequence joins at the next step and leaves without stalling the
others; a long prompt goes one block per step, so the streams already running keep getting
tokens while it is evaluated (alone, its full blocks go together: layers/prefix_cache).

A sequence's numbers do not depend on its neighbours (temperature 0 stays reproducible),
which holds because, as measured on llama.cpp's CPU backend:
- each row of a batched matrix product is computed on its own: a sequence's logits are
  bit-identical alone or beside others in the same batch;
- attention reads the sequence's own KV stream only (`kv_unified` off; with one unified
  buffer the other sequences' cells change the last bits, and near-ties flip tokens);
- Stratus's build of llama.cpp (patches/) computes a block's flash attention in segments of KV
  cells at fixed places, whatever the batch. With llama.cpp as released, a lone token of a
  sequence past 224 cells goes beside a ballast token in another stream (layers/llama_context;
  registry `batch_invariant`, on by default), or beside a draft token of its own: alone, with
  512 cells in view, llama.cpp splits its flash attention between threads and adds the parts up;
- a prompt is evaluated in blocks that depend on its length only (layers/prefix_cache), and
  llama.cpp splits a batch of several streams into equal parts per sequence: so only units of
  equal length are decoded together, and no block is ever split.

A slot is a stream of the context, which doubles when more sequences arrive than it holds,
up to `parallel` (layers/llama_context). Prefix caching is per slot (layers/prefix_cache): a
new sequence takes the free slot that holds most of its prompt, or copies a slot's stream that
holds more (the n choices of one request evaluate their prompt once), trimmed after.

A sequence that drafts (layers/speculation) has its draft evaluated in the same unit as its
last sampled token, every draft position with logits; the scheduler then samples position by
position and keeps the draft up to the first token it would not have chosen
(layers/llama_drafts).

An image in a prompt (layers/media_prompt) is a unit of its own: the model's projector encodes
it and decodes its embeddings into the sequence's stream (`evaluate_media`). One image a step,
after the step's other units: a running stream waits for one image's encode at most.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from common.errors import EngineUnavailable
from layers.llama_context import GrowingContext
from layers.llama_drafts import draft_for, read_back
from layers.llama_sequences import END, Job, TokenStream
from layers.llama_slots import Slots
from layers.media_prompt import MediaSpan, Prompt, position, spans_of
from layers.prefix_cache import BLOCK, joinable
from layers.step_costs import StepCosts
from layers.text import GeneratedToken

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Unit:
    job: Job
    tokens: Sequence[int]
    start: int  # place of the first token in the sequence (layers/media_prompt: its position)
    logits: str  # "none", "last" or "all"
    blocks: int = 1  # of the job's prompt plan that it evaluates
    drafted: int = 0  # its last tokens are a draft (layers/speculation): each needs logits


# (context, image chunks, first position, sequence id, keep the last logits): evaluates an
# image into a sequence's stream; raises if the engine cannot.
EvaluateMedia = Callable[[Any, Any, int, int, bool], None]


class BatchScheduler:
    """Runs every sequence of one llama.cpp context; `generate` is safe from any thread."""

    def __init__(
        self,
        lib: Any,
        context: GrowingContext,
        vocab_size: int,
        piece: Callable[[int], bytes],
        is_eog: Callable[[int], bool],
        evaluate_media: EvaluateMedia | None = None,
        exact_tail: bool = False,  # prompts share tails to the token (layers/prefix_cache)
    ) -> None:
        self._lib, self._context = lib, context
        self._ctx, self._memory = context.handle, context.memory
        self._context_length = context.context_length
        self._vocab_size = vocab_size
        self._piece, self._is_eog = piece, is_eog
        self._evaluate_media = evaluate_media
        self._exact_tail = exact_tail
        self._placement = Slots(lib, context, exact_tail)
        self._costs = StepCosts()  # what a draft row adds to a step here (layers/llama_drafts)
        self._n_batch = context.n_batch
        self._batch = lib.llama_batch_init(self._n_batch, 0, 1)
        self._inbox: deque[Job] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="llama-batch", daemon=True)
        self._thread.start()

    # The consumers' side.

    def tokens(self, job: Job) -> TokenStream:
        """Submits `job` and returns its tokens."""
        self._submit(job)
        return TokenStream(self, job)

    def run(self, job: Job) -> None:
        """Submits `job` and waits until it is done (prompt scoring)."""
        for _ in self.tokens(job):
            pass

    def cancel(self, job: Job) -> None:
        with self._wake:
            job.cancelled = True
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()
        self._lib.llama_batch_free(self._batch)
        self._context.free()

    def _submit(self, job: Job) -> None:
        with self._wake:
            if self._closed:
                raise EngineUnavailable("The model was unloaded; please retry the request.")
            self._inbox.append(job)
            self._wake.notify()

    # The scheduler thread.

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self._inbox and not self._busy():
                    self._wake.wait()
                if self._closed:
                    break
                try:
                    self._drop_cancelled()
                    self._placement.admit(self._inbox)
                    self._ctx, self._memory = self._context.handle, self._context.memory
                except Exception as error:
                    self._fail_running(error)
            try:
                self._step()
            except Exception as error:
                self._fail_running(error)
        for job in [*self._inbox, *(s.job for s in self._placement.all if s.job is not None)]:
            self._finish(job, EngineUnavailable("The model was unloaded; please retry."))

    def _fail_running(self, error: Exception) -> None:
        """A bug, not a request's fault: what is running fails, the engine goes on."""
        log.exception("llama.cpp batch step failed")
        for slot in self._placement.all:
            if slot.job is not None:
                self._finish(slot.job, EngineUnavailable(f"The engine failed: {error}"))

    def _busy(self) -> bool:
        return any(slot.job is not None for slot in self._placement.all)

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._inbox if j.cancelled]:
            self._inbox.remove(job)
            job.sampler.close()
        for slot in self._placement.all:
            if slot.job is not None and slot.job.cancelled:
                self._finish(slot.job)

    def _step(self) -> None:
        self._placement.copy_prefixes()
        units: dict[int, list[_Unit]] = {}
        images: list[tuple[Job, MediaSpan]] = []
        for job in [s.job for s in self._placement.all if s.job is not None]:
            if job.reused_logits is not None:  # a repeated prompt: nothing to evaluate
                import numpy as np

                logits = np.ctypeslib.as_array(job.reused_logits).copy()  # the mask writes
                job.reused_logits = None
                self._sample(job, logits=logits)
        running = [s.job for s in self._placement.all if s.job is not None and s.job.source is None]
        decoding = sum(1 for job in running if not job.todo and job.pending)
        for job in running:
            if job.todo:
                start, end = job.todo[0]
                if isinstance(job.prompt, Prompt) and (span := job.prompt.span_at(start)):
                    images.append((job, span))
                    continue
                alone = len(running) == 1 and self._exact_tail
                blocks = joinable(job.prompt, job.todo, self._n_batch) if alone else 1
                end = job.todo[blocks - 1][1]
                if job.on_prompt_logits:
                    wants = "all"
                else:
                    wants = "last" if end == len(job.prompt) else "none"
                unit = _Unit(job, job.prompt[start:end], start, wants, blocks)
            elif job.pending:
                draft = draft_for(job, decoding, self._context, self._costs)
                unit = _Unit(job, [*job.pending, *draft], job.n_past, "last", drafted=len(draft))
            else:
                continue
            units.setdefault(len(unit.tokens), []).append(unit)
        # Units of one length at a time: llama.cpp would split unequal ones into equal parts.
        for group in units.values():
            for part in self._parts(group):
                self._decode(part)
        if images:
            self._evaluate_image(*images[0])

    def _evaluate_image(self, job: Job, span: MediaSpan) -> None:
        slot = job.slot
        assert slot is not None and self._evaluate_media is not None
        last = span.end == len(job.prompt)
        try:
            start = position(job.prompt, span.start)
            self._evaluate_media(self._ctx, span.chunk, start, slot.seq_id, last)
        except Exception as error:
            log.warning("an image could not be evaluated: %s", error)
            return self._finish(job, error)
        job.todo.popleft()
        job.n_past = slot.evaluated = span.end
        if last:  # a prompt that ends with an image: its last embedding's logits
            self._sample(job, -1)
        return None

    def _parts(self, group: list[_Unit]) -> Iterator[list[_Unit]]:
        size = len(group[0].tokens)
        per_call = max(1, self._n_batch // size)
        for i in range(0, len(group), per_call):
            yield group[i : i + per_call]

    def _decode(self, units: list[_Unit]) -> None:
        batch, lib = self._batch, self._lib
        index = 0
        for unit in units:
            seq_id = unit.job.slot.seq_id  # type: ignore[union-attr]
            last = len(unit.tokens) - 1
            for offset, token in enumerate(unit.tokens):
                batch.token[index] = token
                batch.pos[index] = position(unit.job.prompt, unit.start + offset)
                batch.n_seq_id[index] = 1
                batch.seq_id[index][0] = seq_id
                batch.logits[index] = unit.logits == "all" or (
                    unit.logits == "last" and offset >= last - unit.drafted
                )
                index += 1
        ballast = None
        if index == 1:  # a lone token
            others = [s.seq_id for s in self._placement.all if s.seq_id != batch.seq_id[0][0]]
            ballast = self._context.ballast(batch, units[0].start, others)
        batch.n_tokens = index + (ballast is not None)
        started = time.perf_counter()
        status = lib.llama_decode(self._ctx, batch)
        lib.llama_synchronize(self._ctx)  # a GPU computes after decode returns: its real time
        if status == 0 and len(units[0].tokens) < BLOCK:  # the one-pass kernel: drafts' cost
            cells = sum(len(u.tokens) * (u.start + len(u.tokens)) for u in units)
            self._costs.observe(index, cells, time.perf_counter() - started)
        if ballast is not None:
            lib.llama_memory_seq_rm(self._memory, *ballast, -1)
        if status != 0:
            error = EngineUnavailable(f"llama.cpp could not evaluate the batch (status {status}).")
            for unit in units:
                self._finish(unit.job, error)
            return
        index = 0
        for unit in units:
            index += len(unit.tokens)
            try:
                self._advance(unit, index - len(unit.tokens))
            except Exception as error:  # this sequence's grammar or scorer: its own failure
                log.exception("sampling failed")
                self._finish(unit.job, error)

    def _advance(self, unit: _Unit, first: int) -> None:
        job = unit.job
        end = unit.start + len(unit.tokens)
        if job.todo:  # prompt blocks
            for _ in range(unit.blocks):
                job.todo.popleft()
            job.n_past = job.slot.evaluated = end  # type: ignore[union-attr]
            if job.on_prompt_logits:
                for offset in range(len(unit.tokens)):
                    job.on_prompt_logits(unit.start + offset, self._logits(first + offset))
                if not job.todo:
                    self._finish(job)
                return
            if unit.logits == "none":
                return
            if not spans_of(job.prompt):  # kept for a repeat of this prompt (before the mask)
                slot = job.slot
                assert slot is not None
                slot.last_logits = self._kept_logits(first + len(unit.tokens) - 1)
        elif unit.drafted:
            return self._verify(unit, first)
        else:
            job.n_past = end
            job.pending = []
        self._sample(job, first + len(unit.tokens) - 1)
        return None

    def _verify(self, unit: _Unit, first: int) -> None:
        """Reads back a drafting job's block (layers/llama_drafts); the cells of the draft
        tokens it did not accept are removed."""
        job, slot = unit.job, unit.job.slot
        assert slot is not None
        kept = len(unit.tokens) - unit.drafted
        draft = list(unit.tokens[kept:])
        job.n_past = unit.start + kept
        accepted = read_back(job, draft, first + kept - 1, lambda i: self._sample(job, i))
        if accepted < len(draft):
            start = position(job.prompt, job.n_past)
            self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, start, -1)

    def _sample(self, job: Job, index: int = -1, logits: Any = None) -> None:
        """Samples the job's next token from the context's logits at `index`, or from `logits`
        (a copy of its prompt's, kept in its slot)."""
        mask, scorer, lib = job.mask, job.scorer, self._lib
        kept = logits is not None
        if not kept and (mask or scorer):
            logits = self._logits(index)
        if mask:
            mask.apply(logits, None if job.limit is None else job.limit - job.emitted)
        if kept:
            token = job.sampler.sample(logits)
        else:
            token = lib.llama_sampler_sample(job.sampler.sampler, self._ctx, index)
        if mask and not mask.accept(token):
            return self._finish(job)  # nothing the grammar allows could be sampled (logit_bias)
        if not self._is_eog(token):
            scored = scorer.score(logits, token, job.top) if scorer else None
            if not job.emit(GeneratedToken(self._piece(token), scored)):
                return self._finish(job)
        elif not job.ignore_eos or mask:
            return self._finish(job)
        if mask and mask.complete:
            return self._finish(job)
        room = self._context_length - job.n_past - 1
        # The grammar allows nothing else: no need to ask the model (jump-forward decoding);
        # they are evaluated in one unit with the sampled token.
        forced = (mask.forced() if mask and scorer is None else [])[:room]
        for next_token in forced:
            lib.llama_sampler_accept(job.sampler.sampler, next_token)
            if not job.emit(GeneratedToken(self._piece(next_token))):
                return self._finish(job)
        if mask and mask.complete:
            return self._finish(job)
        job.pending = [token, *forced]
        if job.speculation is not None:
            job.speculation.extend(job.pending)
        if job.n_past + len(job.pending) >= self._context_length:
            self._finish(job)  # the context is full
        return None

    def _logits(self, index: int) -> Any:
        """A position's logits: a writable numpy view of llama.cpp's buffer (numpy on first use)."""
        import numpy as np

        pointer = self._lib.llama_get_logits_ith(self._ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self._vocab_size,))

    def _kept_logits(self, index: int) -> Any:
        """A copy of a position's logits, in a C array: numpy stays unloaded (a chat's cold
        start) until a prompt is repeated."""
        pointer = self._lib.llama_get_logits_ith(self._ctx, index)
        kept = (ctypes.c_float * self._vocab_size)()
        ctypes.memmove(kept, pointer, ctypes.sizeof(kept))
        return kept

    def _finish(self, job: Job, error: BaseException | None = None) -> None:
        slot = job.slot
        if slot is not None and slot.job is job:
            slot.job = None
        job.slot = None
        job.source = None
        job.todo.clear()
        job.sampler.close()
        job.out.put(error if error is not None else END)
