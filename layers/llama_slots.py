"""The slots of a batched llama.cpp context (layers/llama_batch) and how jobs are placed in
them: a new job takes the free slot that holds most of its prompt, or waits to copy the stream
of a slot that holds more (layers/prefix_cache); with no free slot, the context grows, and the
streams that hold something move into the larger one between two steps."""

from __future__ import annotations

from collections import deque
from typing import Any

from layers.llama_context import GrowingContext
from layers.llama_sequences import Job, Slot
from layers.media_prompt import Prompt, position
from layers.prefix_cache import plan


class Slots:
    """Every slot of one context (`all`, a slot per stream); used by the scheduler thread."""

    def __init__(self, lib: object, context: GrowingContext, exact_tail: bool) -> None:
        self._lib: Any = lib
        self._context = context
        self._exact_tail = exact_tail
        self.all = [Slot(i, exact_tail) for i in range(context.sequences)]

    def admit(self, inbox: deque[Job]) -> None:
        """Gives waiting jobs free slots: the one that shares most of the prompt, or copies
        from a busier slot that shares more. With no free slot, the context grows (in the
        background: the running streams go on, the waiting jobs wait for it)."""
        self._adopt_larger_context()
        while inbox:
            free = [slot for slot in self.all if slot.job is None]
            if not free:
                busy = sum(slot.job is not None for slot in self.all)
                self._context.start_growing(busy + len(inbox))
                return
            job = inbox.popleft()
            prompt = job.prompt
            slot = max(free, key=lambda s: (s.reusable(prompt), -s.seq_id))
            job.slot, slot.job = slot, job
            own = slot.reusable(prompt)
            others = [s for s in self.all if s is not slot]
            source = max(others, key=lambda s: s.reusable(prompt, planned=True), default=None)
            if (
                job.on_prompt_logits is None
                and source is not None
                and source.reusable(prompt, planned=True) > own
            ):
                job.source, job.wanted = source, source.reusable(prompt, planned=True)
            else:
                self.start(job, 0 if job.on_prompt_logits else own)

    def _adopt_larger_context(self) -> None:
        """Once a larger context exists, the streams that hold something (a running sequence
        or a cached prompt) move into it, between two steps."""
        # Lazily: listed only if a larger context is ready (this runs at every step).
        occupied = (s.seq_id for s in self.all if s.job is not None or s.evaluated)
        if not self._context.finish_growing(occupied):
            return
        added = range(len(self.all), self._context.sequences)
        self.all += [Slot(i, self._exact_tail) for i in added]

    def start(self, job: Job, keep: int) -> None:
        """Trims the job's slot to the `keep` places it shares and plans the rest."""
        slot = job.slot
        assert slot is not None
        logits = None if job.on_prompt_logits else slot.logits_of(job.prompt)
        if logits is not None:
            keep = len(job.prompt)  # all of it: the first token is sampled from `logits`
        cut = position(job.prompt, keep)
        if not self._lib.llama_memory_seq_rm(self._context.memory, slot.seq_id, cut, -1):
            self._lib.llama_memory_seq_rm(self._context.memory, slot.seq_id, -1, -1)
            keep, logits = 0, None
        # The slot remembers the prompt's places, not its images' pixels.
        prompt = job.prompt
        slot.tokens = prompt.detached() if isinstance(prompt, Prompt) else prompt
        slot.evaluated, slot.last_logits = keep, logits
        job.todo, job.n_past = deque(plan(prompt, keep)), keep
        job.reused_logits = logits

    def copy_prefixes(self) -> None:
        """Jobs waiting on another slot's prompt copy its stream once the blocks they share
        are evaluated (or once that slot stops evaluating)."""
        for slot in self.all:
            job = slot.job
            if job is None or job.source is None:
                continue
            source = job.source
            have = source.reusable(job.prompt)
            still_evaluating = source.job is not None and bool(source.job.todo)
            if have < job.wanted and still_evaluating:
                continue
            job.source = None
            own = slot.reusable(job.prompt)
            if have <= own:
                self.start(job, own)
                continue
            # A whole stream is copied, at the next decode (before anything is written there).
            self._lib.llama_memory_seq_cp(self._context.memory, source.seq_id, slot.seq_id, -1, -1)
            slot.tokens, slot.evaluated = source.tokens, source.evaluated
            slot.last_logits = source.last_logits
            self.start(job, have)
