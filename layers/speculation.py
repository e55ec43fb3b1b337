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
keep failing stops drafting for a while, longer each time (free text recurs little).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from layers.ngram_draft import NgramDrafter

Mode = Literal["off", "ngram"]

# Drafting pauses after this many verifications in a row that accepted nothing.
_MISSES_BEFORE_PAUSE = 4
_FIRST_PAUSE, _LONGEST_PAUSE = 8, 256  # steps


@dataclass(frozen=True)
class DraftSettings:
    """The registry's `speculative` and its lengths (layers/llama_files)."""

    mode: Mode = "ngram"
    longest: int = 16  # tokens drafted at most per step
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

    def __post_init__(self) -> None:
        self.length = self.length or self.settings.first

    def extend(self, tokens: Iterable[int]) -> None:
        """Tokens of the sequence, in order: its prompt, then each one it emits."""
        self.drafter.extend(tokens)

    def draft(self, room: int, at_least: int = 0) -> list[int]:
        """The next draft, at most `room` tokens (what the budget and the context leave); none
        while paused. `at_least` 1: a token is guessed where nothing recurs (a lone sequence
        decodes one draft token where it would otherwise need a ballast token, and the draft
        may be right: layers/llama_batch)."""
        drafted = []
        if self._paused > 0:
            self._paused -= 1
        else:
            drafted = self.drafter.draft(min(self.length, room))
        if not drafted and at_least and room > 0 and self.drafter.tokens:
            drafted = [self.drafter.guess()]
        return drafted

    def judged(self, drafted: int, accepted: int) -> None:
        """How a draft of `drafted` tokens fared: its first `accepted` were sampled too."""
        self.drafted += drafted
        self.accepted += accepted
        longest = self.settings.longest
        if accepted == drafted:
            self.length = min(longest, self.length * 2)
        else:
            self.length = max(1, min(longest, accepted + 1))
        if accepted:
            self._misses, self._pause = 0, _FIRST_PAUSE
            return
        self._misses += 1
        if self._misses >= _MISSES_BEFORE_PAUSE:
            self._misses, self._paused = 0, self._pause
            self._pause = min(_LONGEST_PAUSE, self._pause * 2)
