"""Ending a structure in time: a grammar-constrained answer (a forced tool call, a JSON schema)
that meets its token budget is closed, not cut.

At temperature 1 a small model may write a string value that never ends; cut by `max_tokens`,
the call or the JSON cannot be parsed, and the client gets nothing it can use. So, while the
tokens left are few (`WATCH`), each step looks for the shortest way to finish the grammar from
where it stands; once that needs all the tokens left but `SPARE`, the mask allows only its next
token. The spare tokens cover a step that lengthens the way out at once (a new key and its value
are a few tokens), and keep the last token below the budget, so that the answer is reported as
finished, not as cut. A structure that cannot be finished in the tokens left still ends at the
budget. And with `WATCH` tokens or fewer left after a finished structure, nothing new (a second
call) is begun: the end of sequence comes next.

The shortest way is found greedily on a copy of the grammar's state: the tokens it forces, as
they come; else the longest token made only of closing characters (`"`, `}`, `]`) that leaves
what it closes (a string's end, not the start of one); else a token
that begins the simplest value (`"`, a digit, `[`, `{`, `null`); else the allowed token of the
lowest id (in a BPE vocabulary, the shortest pieces). Free text is never closed: a token that
leaves the mask as it was made no progress, so the text of a reasoning block or of an answer
stays the model's and ends at the budget as it would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

WATCH = 40  # tokens left from which a structure is watched (and the most a closing may take)
SPARE = 6
LONGEST_END = 512  # the most tokens a whole answer's shortest form is looked for in
# Tokens of these characters only close what is open.
_CLOSING = frozenset(b'"}]')
# One-character tokens that begin a value, simplest first.
_STARTERS = (b'"', b"0", b"[", b"{", b"n", b"t", b"f")
# More tokens than this allowed at a finished point: free text may follow, not only structure.
_FREE_TEXT = 64

Mask = Any  # a grammar state's allowed tokens: numpy int32 words, bit t of the vocabulary
MaskOf = Callable[[Any], Mask]  # an llguidance LLMatcher's mask, computed


@dataclass(frozen=True)
class Endings:
    """The tokens of one vocabulary that closing prefers (found once per vocabulary)."""

    closers: tuple[int, ...]  # those that close a string first, then the longest
    starters: tuple[int, ...]
    end_of_sequence: int

    @classmethod
    def of(cls, tokenizer: Any) -> Endings:
        """From an llguidance LLTokenizer."""
        closing: list[tuple[bool, int, int]] = []
        starters: dict[bytes, int] = {}
        for token in range(tokenizer.vocab_size):
            if tokenizer.is_special_token(token):
                continue
            piece = tokenizer.decode_bytes([token])
            if piece and set(piece) <= _CLOSING:
                # A quote first: inside a string `]]` is only more of it.
                closing.append((not piece.startswith(b'"'), -len(piece), token))
            if piece in _STARTERS and piece not in starters:
                starters[piece] = token
        return cls(
            closers=tuple(token for *_, token in sorted(closing)),
            starters=tuple(starters[s] for s in _STARTERS if s in starters),
            end_of_sequence=tokenizer.eos_token,
        )


def allows(mask: Mask, token: int) -> bool:
    return bool((int(mask[token >> 5]) >> (token & 31)) & 1)


def closing_token(
    matcher: Any, mask: Mask, mask_of: MaskOf, endings: Endings, left: int
) -> int | None:
    """The one token the mask (`matcher`'s, computed) must allow now, with `left` tokens of the
    budget left: the next token of the shortest ending when it needs all of them but SPARE; the
    end of sequence after a finished structure near the budget; None when the model chooses
    (the usual case)."""
    if left > WATCH or matcher.is_stopped():
        return None
    if matcher.is_accepting():
        eos = endings.end_of_sequence
        finished = _count(mask) <= _FREE_TEXT
        return eos if finished and allows(mask, eos) else None
    plan = shortest_ending(matcher, mask, mask_of, endings, WATCH)
    if not plan or len(plan) < left - SPARE:
        return None
    return plan[0]


def shortest_ending(
    matcher: Any, mask: Mask, mask_of: MaskOf, endings: Endings, limit: int
) -> list[int] | None:
    """The fewest tokens (found greedily) after which `matcher` (an llguidance LLMatcher, left
    as it is; `mask` its mask now) is finished or may end; None when none is found within
    `limit` tokens (free text, or a structure too far from its end)."""
    if matcher.is_accepting() or matcher.is_stopped():
        return []
    trial = matcher.deep_copy()
    plan: list[int] = []
    while len(plan) < limit:
        token = _simplest(trial, mask, mask_of, endings)
        if token is None or not trial.consume_token(token):
            return None
        plan.append(token)
        forced = trial.compute_ff_tokens()
        if forced and not trial.consume_tokens(forced):
            return None
        plan.extend(forced)
        if trial.is_error():
            return None
        if trial.is_accepting() or trial.is_stopped():
            return plan if len(plan) <= limit else None
        before, mask = mask, mask_of(trial)
        if not forced and (before == mask).all():
            return None  # free text: the token changed nothing the grammar allows
    return None


def _simplest(trial: Any, mask: Mask, mask_of: MaskOf, endings: Endings) -> int | None:
    closers = [token for token in endings.closers if allows(mask, token)]
    for token in closers:
        # One that leaves a string, not one that opens a string of closing characters (`"]]`
        # where a value begins).
        trial.consume_token(token)
        out = trial.is_accepting() or trial.is_stopped() or _count(mask_of(trial)) <= _FREE_TEXT
        trial.rollback(1)
        if out:
            return token
    if closers:
        return closers[0]
    for token in endings.starters:
        if allows(mask, token):
            return token
    import numpy as np

    words = np.flatnonzero(mask)
    if not words.size:
        return None
    word = int(mask[words[0]]) & 0xFFFFFFFF
    return int(words[0]) * 32 + (word & -word).bit_length() - 1


def _count(mask: Mask) -> int:
    import numpy as np

    return int(np.unpackbits(mask.view(np.uint8)).sum())
