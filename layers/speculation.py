"""Speculative decoding from n-gram drafts, exact by construction.

A sequence that drafts (layers/ngram_draft) has its draft evaluated in the same decode as its
last sampled token. The scheduler (layers/llama_drafts) then samples position by position, with
the sequence's own sampler chain, grammar and scorer, exactly as it would have one token at a
time, and stops at the first position whose sampled token is not the draft's: the tokens
sampled so far are the output, the rejected draft's cells are removed.

Why this is exact: each token is sampled once, from the same logits (a draft is evaluated in a
block of fewer than 64 tokens, the kernel a lone token takes: layers/prefix_cache), with the
same sampler state and random draws. At temperature 0 the text, tokens and log probabilities
are those of decoding without drafts. Above it too, draw for draw: a token drawn from the
model's distribution and kept only where it equals the draft is speculative sampling's rule
for a deterministic draft (accept d with probability p(d); otherwise a token from p without
d), and a seeded request draws the same numbers either way.

What is left to choose is how much to draft, per sequence, from how its drafts fared: a draft
grows while whole drafts are accepted and shrinks to what was accepted; a sequence whose drafts
keep failing stops drafting for a while, longer each time (free text recurs little). And from
what a draft costs: each drafted row is evaluated whether it is accepted or not, so a draft is
only as long as the tokens it is likely to save pay for its rows (layers/step_costs). A draft
token's chance is how often it followed its context in the sequence so far (layers/ngram_draft:
a draft stops where the text branched before), scaled by how the sequence's drafts have fared
against those chances (sampling at a temperature, or a model that does not copy, accepts fewer).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from layers.ngram_draft import NgramDrafter

Mode = Literal["off", "ngram"]

# Drafting pauses after this many verifications in a row that accepted nothing.
_MISSES_BEFORE_PAUSE = 4
_FIRST_PAUSE, _LONGEST_PAUSE = 8, 256  # steps
# A draft that was wholly accepted is followed by one this many times as long: a copy reaches
# the longest draft in three steps.
_GROWTH = 4
# A sequence's drafts' accepted tokens over what their chances promised, at the positions tried
# (accepted, or the first one refused); older drafts fade by this at each one judged. It starts
# at 1 of 1: the chances are taken as they are until drafts are judged.
_FADE = 0.8
# Where no draft is worth its rows, a one-token draft every this many steps measures the
# sequence's acceptance again (it may have started copying).
_PROBE_EVERY = 8


@dataclass(frozen=True)
class DraftSettings:
    """The registry's `speculative` and its lengths (layers/llama_files)."""

    mode: Mode = "ngram"
    longest: int = 63  # tokens drafted at most per step (a block stays under 64 rows)
    first: int = 4  # the first draft's length, before any has been judged
    # Sequences decoding at once above which none drafts: a full batch already keeps the
    # cores busy, and a verified draft is a unit of its own length (decoded apart).
    busy: int = 2


@dataclass
class Speculation:
    """One sequence's drafting: its tokens (prompt and output), how long a draft it makes
    now, and what its drafts gave (the cost line's and /metrics' counts)."""

    settings: DraftSettings
    drafter: NgramDrafter = field(default_factory=NgramDrafter)
    length: int = 0
    drafted: int = 0
    accepted: int = 0
    _misses: int = 0
    _paused: int = 0
    _pause: int = _FIRST_PAUSE
    _accepted: float = 1.0  # faded
    _promised: float = 1.0  # faded: the sum of the tried positions' chances
    _unprobed: int = 0
    _chances: list[float] = field(default_factory=list)  # of the draft last made

    def __post_init__(self) -> None:
        self.length = self.length or self.settings.first

    def extend(self, tokens: Iterable[int]) -> None:
        """Tokens of the sequence, in order: its prompt, then each one it emits."""
        self.drafter.extend(tokens)

    def draft(self, room: int, at_least: int = 0, row_share: float | None = None) -> list[int]:
        """The next draft, at most `room` tokens (what the budget and the context leave); none
        while paused. `row_share`: what a drafted row costs, as a share of the step without
        it (layers/step_costs), None where unknown. `at_least` 1: a token is guessed where
        nothing recurs (a lone sequence decodes one draft token where it would otherwise need
        a ballast token, and the draft may be right: layers/llama_batch)."""
        drafted: list[int] = []
        chances: list[float] = []
        if self._paused > 0:
            self._paused -= 1
        else:
            drafted = self.drafter.draft(min(self.length, room))
            chances = self.drafter.chances(drafted) if drafted else []
            if row_share is not None and drafted:
                keep = self._worth(chances, row_share)
                drafted, chances = drafted[:keep], chances[:keep]
        self._chances = chances
        if not drafted and at_least and room > 0 and self.drafter.tokens:
            drafted = [self.drafter.guess()]  # not a draft to judge the chances by
        return drafted

    def _worth(self, chances: list[float], row_share: float) -> int:
        """How much of a draft to keep at `row_share` a row: its tokens' chances, scaled by
        how this sequence's drafts fared; one token every _PROBE_EVERY steps where none pays."""
        scale = min(1.0, self._accepted / self._promised)
        keep = worth_drafting([min(1.0, scale * chance) for chance in chances], row_share)
        self._unprobed = 0 if keep else self._unprobed + 1
        if self._unprobed >= _PROBE_EVERY:
            keep, self._unprobed = 1, 0
        return keep

    def judged(self, drafted: int, accepted: int) -> None:
        """How a draft of `drafted` tokens fared: its first `accepted` were sampled too."""
        self.drafted += drafted
        self.accepted += accepted
        if self._chances:  # a draft from the n-grams, not a guess
            tried = self._chances[: accepted + int(accepted < drafted)]
            self._accepted = self._accepted * _FADE + accepted
            self._promised = self._promised * _FADE + sum(tried)
        longest = self.settings.longest
        if accepted == drafted:
            self.length = min(longest, self.length * _GROWTH)
        else:
            self.length = max(1, min(longest, accepted + 1))
        if accepted:
            self._misses, self._pause = 0, _FIRST_PAUSE
            return
        self._misses += 1
        if self._misses >= _MISSES_BEFORE_PAUSE:
            self._misses, self._paused = 0, self._pause
            self._pause = min(_LONGEST_PAUSE, self._pause * 2)


def worth_drafting(chances: Sequence[float], row_share: float) -> int:
    """The draft length, up to all of `chances`, that emits the most tokens per unit of time
    when each draft token is accepted with its chance once those before it were, and each
    drafted row adds `row_share` to the step's time: 0 where no draft beats decoding alone."""
    best, best_length = 1.0, 0
    emitted, chance = 1.0, 1.0  # tokens a step emits on average: its own, then the draft's
    for length, rate in enumerate(chances, start=1):
        chance *= rate
        emitted += chance
        value = emitted / (1.0 + length * row_share)
        if value > best:
            best, best_length = value, length
    return best_length
