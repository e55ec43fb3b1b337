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
        self.extend(tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        held = self.tokens
        for token in tokens:
            cursor = self._cursor
            self._cursor = cursor + 1 if cursor is not None and held[cursor] == token else None
            # The n-grams that end at the old last token now have a follower: indexed.
            end = len(held)
            for n, index in self._after.items():
                if end >= n:
                    index[tuple(held[end - n : end])] = end
            held.append(token)

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
