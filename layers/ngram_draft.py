"""Drafts from a sequence's own tokens (prompt lookup decoding): when the last few tokens
appeared earlier in the prompt or the output, the tokens that followed them then are proposed
as the next ones now. An agent's edit copies long spans of the file it was sent; each accepted
draft token is one the model did not have to decode alone.

A draft is only a guess: the scheduler (layers/llama_batch) evaluates it in the same decode as
the sequence's last token and keeps the longest prefix that the sampler would have chosen
itself, so the output is the one decoding without drafts gives (layers/speculation).
"""

from __future__ import annotations

from collections.abc import Iterable

# The n-gram lengths looked up, longest first: a longer match predicts better; a shorter one
# finds a match more often.
LONGEST, SHORTEST = 6, 2
# How far back a draft token's chance looks: the tokens that followed its last CONTEXT tokens
# (or fewer, where those never came before) each time they came.
CONTEXT = 4
# A token that followed its context c times of `seen` is given the chance c/(seen+PRIOR/seen):
# 0.83 after one sighting of one, 0.95 after two of two, 0.48 at a 1-of-2 branch. Measured on
# the edit bench's outputs (bench/draft_replay.py): a token seen once after its context came
# next 81% of the time, after two sightings 99%, at 1-of-2 branches 40%.
PRIOR = 0.2


class NgramDrafter:
    """One sequence's tokens, indexed by every n-gram (SHORTEST..LONGEST tokens) with the
    place after its latest occurrence; `draft` proposes what followed the latest earlier
    occurrence of the sequence's last n tokens.

    Once a draft is taken from a place, a cursor follows that place as long as the sequence
    goes on as it did: a copy keeps drafting from the span it copies, where a short n-gram's
    latest occurrence would often be elsewhere (`    def `, `self.`)."""

    def __init__(self, tokens: Iterable[int] = ()) -> None:
        self.tokens: list[int] = []
        # n -> n-gram -> the place after its latest occurrence that is not the sequence's end
        self._after: dict[int, dict[tuple[int, ...], int]] = {
            n: {}
            for n in range(1, LONGEST + 1)  # 1: for `guess`
        }
        self._cursor: int | None = None  # the place whose token the sequence should have next
        # The last 1..CONTEXT tokens -> the tokens that followed them, with how often.
        self._followers: dict[tuple[int, ...], dict[int, int]] = {}
        self.extend(tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        held, followers = self.tokens, self._followers
        for token in tokens:
            cursor = self._cursor
            self._cursor = cursor + 1 if cursor is not None and held[cursor] == token else None
            # The n-grams that end at the old last token now have a follower: indexed, and
            # for the shorter ones counted (each n-gram built once: a long prompt is indexed
            # before its first token).
            end = len(held)
            for n, index in self._after.items():  # n from 1 up
                if n > end:
                    break
                key = tuple(held[end - n : end])
                index[key] = end
                if n <= CONTEXT:
                    counts = followers.get(key)
                    if counts is None:
                        followers[key] = {token: 1}
                    else:
                        counts[token] = counts.get(token, 0) + 1
            held.append(token)

    def chances(self, draft: list[int]) -> list[float]:
        """Each draft token's chance to come next, given the ones before it: how often it
        followed its context (the longest one seen, up to CONTEXT tokens) in the sequence so
        far. Where the sequence branched before, a draft is likely to fail: a sentence repeated
        with another name in it, a copy with an edit."""
        context = self.tokens[-CONTEXT:]
        chances = []
        for token in draft:
            counts = None
            for n in range(min(CONTEXT, len(context)), 0, -1):
                if (counts := self._followers.get(tuple(context[-n:]))) is not None:
                    break
            seen = sum(counts.values()) if counts else 0
            chances.append(counts.get(token, 0) / (seen + PRIOR / seen) if counts else 0.0)
            context = [*context[1 - CONTEXT :], token]
        return chances

    def guess(self) -> int:
        """One token where no n-gram recurs: the one that followed the last token the latest
        time it came before, else the last token again."""
        held = self.tokens
        start = self._after[1].get(tuple(held[-1:]))
        return held[start] if start is not None else held[-1]

    def draft(self, most: int) -> list[int]:
        """Up to `most` tokens that followed the latest earlier occurrence of the longest
        n-gram the sequence ends with (none when no n-gram recurs). When that occurrence is
        close to the end, what followed it is the recurring part itself: the draft repeats it
        (a list, a loop, a repeated line)."""
        held = self.tokens
        if most <= 0:
            return []
        start = self._cursor
        for n in range(LONGEST, SHORTEST - 1, -1):
            if start is not None:
                break
            if len(held) > n:
                start = self._after[n].get(tuple(held[-n:]))
        if start is None:
            return []
        self._cursor = start
        followed = held[start : start + most]
        period = len(held) - start
        while len(followed) < most:
            followed.append(followed[len(followed) - period])
        return followed
