"""A drafting sequence's part of a llama.cpp step (layers/speculation): how long a draft it
may make this step, and how its verified block is read back, position by position.

The scheduler (layers/llama_batch) puts the draft in the same unit as the sequence's pending
tokens, with logits at every draft position, then hands the block to `read_back`.
"""

from __future__ import annotations

from collections.abc import Callable

from layers.llama_context import GrowingContext
from layers.llama_sequences import Job
from layers.prefix_cache import BLOCK
from layers.step_costs import StepCosts


def draft_for(job: Job, decoding: int, context: GrowingContext, costs: StepCosts) -> list[int]:
    """The tokens `job` drafts after its pending ones this step: none when it does not
    speculate or more than its `busy` sequences decode; at most what its budget, the context
    and the one-pass kernel leave room for, and what its rows are worth at their cost here;
    cut where its grammar would refuse them."""
    speculation = job.speculation
    if speculation is None:
        return []
    # With llama.cpp as released a draft verified beside another sequence's decode was
    # measured to change a long sequence's numbers: there, drafts only when decoding alone.
    busy = speculation.settings.busy if context.segmented else 1
    if decoding > busy:
        return []
    room = min(
        context.context_length - job.n_past - len(job.pending) - 1,
        BLOCK - 1 - len(job.pending),  # a block of 64 takes the tiled kernel
    )
    if job.limit is not None:  # the last token it may emit is sampled, never drafted
        room = min(room, job.limit - job.emitted - 1)
    # Decoded alone, a token past the ballast threshold needs a second one beside it: a
    # token of its own draft serves, and may be accepted where the ballast never is.
    alone = decoding == 1 and len(job.pending) == 1
    company = alone and context.lone_token_needs_company(job.n_past)
    share = costs.row_share(job.n_past)
    draft = speculation.draft(room, int(company), share) if room > 0 else []
    if draft and job.mask is not None:
        draft = draft[: job.mask.allows(draft)]
    return draft


def read_back(job: Job, draft: list[int], index: int, sample: Callable[[int], None]) -> int:
    """Samples `job` at the batch's `index` (its last pending token's logits) and on, as
    decoding one token at a time would: each sampled token that the draft holds next was
    evaluated already, so sampling goes on at its position. Stops at the first token the
    draft does not hold (pending, as usual) or when the job ends. `job.n_past` counts the
    accepted tokens; returns how many were accepted."""
    slot, accepted = job.slot, 0
    job.pending = []
    sample(index)
    while job.slot is slot and job.pending:
        sampled, rest = job.pending, draft[accepted:]
        matched = 0
        while matched < min(len(sampled), len(rest)) and sampled[matched] == rest[matched]:
            matched += 1
        job.n_past += matched
        accepted += matched
        job.pending = sampled[matched:]
        if job.pending:  # a token the draft did not hold: evaluated at the next step
            break
        index += matched  # every sampled token was drafted: sampling goes on after them
        sample(index)
    if job.speculation is not None:
        job.speculation.judged(len(draft), accepted)
    return accepted
