"""The sequences of a batched llama.cpp context: a job (one sequence's request and state), its
slot (a sequence id and the prompt its KV stream holds), and the stream of its tokens that a
consumer thread reads (layers/llama_batch runs them)."""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from common import cancellation, metering
from layers.logprobs import TokenLogprobs
from layers.media_prompt import spans_of
from layers.prefix_cache import Block, reusable
from layers.speculation import Speculation
from layers.text import GeneratedToken


class Scheduler(Protocol):
    def cancel(self, job: Job) -> None: ...


END = object()  # a sequence's last item: it is complete
POLL_SECONDS = 0.1  # how often a waiting consumer looks at its cancellation


@dataclass(eq=False)
class Job:
    """One sequence: a prompt to evaluate, then tokens to sample until it is done."""

    prompt: list[int]
    sampler: Any  # layers.llama_api.SamplerChain, used and closed by the scheduler thread
    mask: Any = None  # layers.structured.TokenMask
    scorer: TokenLogprobs | None = None
    top: int | None = None  # alternatives to score with each token
    ignore_eos: bool = False
    limit: int | None = None  # tokens to generate at most
    on_prompt_logits: Callable[[int, Any], None] | None = None  # scores the prompt, no tokens
    speculation: Speculation | None = None  # drafts of its next tokens (layers/speculation)
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: bool = False
    # The scheduler's own state.
    slot: Slot | None = None
    source: Slot | None = None  # a slot whose stream this job will copy its prefix from
    wanted: int = 0  # blocks it waits for the source to have evaluated
    todo: deque[Block] = field(default_factory=deque)  # prompt blocks still to evaluate
    pending: list[int] = field(default_factory=list)  # sampled tokens to evaluate next
    n_past: int = 0
    emitted: int = 0
    reused_logits: Any = None  # its whole prompt's last logits, found in its slot: none to evaluate

    def emit(self, token: GeneratedToken) -> bool:
        """Hands a token to the consumer; False once the job has all it asked for."""
        self.out.put(token)
        self.emitted += 1
        return self.limit is None or self.emitted < self.limit


class TokenStream:
    """A job's tokens as they come. Closing it, or dropping it, cancels the job: its slot is
    freed at the next step, and the other sequences run on."""

    def __init__(self, scheduler: Scheduler, job: Job) -> None:
        self._scheduler, self._job = scheduler, job
        self._done = False

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> GeneratedToken:
        while not self._done:
            try:
                item = self._job.out.get(timeout=POLL_SECONDS)
            except queue.Empty:
                try:
                    cancellation.check()  # waiting for a slot, or behind a long prompt
                except BaseException:
                    self.close()
                    raise
                continue
            if isinstance(item, GeneratedToken):
                return item
            self.close()
            if isinstance(item, BaseException):
                raise item
        raise StopIteration

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._scheduler.cancel(self._job)
            if (speculation := self._job.speculation) is not None and speculation.drafted:
                # The request's cost line and /metrics (a consumer's thread: its record).
                metering.count("draft_tokens", speculation.drafted)
                metering.count("accepted_draft_tokens", speculation.accepted)

    def __del__(self) -> None:
        self.close()


@dataclass(eq=False)
class Slot:
    seq_id: int
    exact_tail: bool = False  # prompts share tails to the token (layers/prefix_cache)
    tokens: list[int] = field(default_factory=list)  # the prompt its stream holds
    evaluated: int = 0  # how many places of it are evaluated so far
    job: Job | None = None
    # The logits of the prompt's last place (a copy, a C array), once it is evaluated: a
    # repeat of the same prompt (a retry, a regeneration, another request's n choices) samples
    # its first token from them with nothing evaluated, as a fresh evaluation would give them
    # bit for bit (layers/prefix_cache).
    last_logits: Any = None

    def logits_of(self, prompt: Sequence[int]) -> Any:
        """The last logits of `prompt` if this slot holds all of it evaluated, else None."""
        if self.last_logits is None or self.evaluated != len(prompt) or spans_of(prompt):
            return None
        return self.last_logits if self.tokens == prompt else None

    def reusable(self, prompt: Sequence[int], planned: bool = False) -> int:
        """Leading places of `prompt` this slot holds (planned: will hold once its prompt is
        evaluated)."""
        evaluated = len(self.tokens) if planned else self.evaluated
        return reusable(self.tokens, evaluated, prompt, self.exact_tail)
