"""Prompt prefix caching that keeps generation reproducible.

An engine's numbers depend on how tokens were batched: the key/values of a prompt evaluated in
one batch differ in their last bits from the same prompt evaluated in pieces. Reusing a cached
prefix naively therefore changes the logits, and temperature 0 stops being reproducible.

So a prompt is always evaluated in the same blocks, a pure function of its length: full blocks
of BLOCK tokens, then the remainder in descending powers of two (23 -> 16, 4, 2, 1). A later
prompt reuses the cached blocks that it would itself evaluate identically (same boundaries,
same tokens): the result is bitwise what a fresh evaluation gives. The last block is always
evaluated again, as its logits are the ones sampled from; usually it is one or two tokens.

A prompt with images (layers/media_prompt) is planned the same way between its images, and
each image is one block of its own: it is evaluated whole, by the model's projector.

Reuse to the token (`exact_tail`): measured on llama.cpp's CPU backend with flash attention
(tests/unit/test_prefix_reuse.py), a token's numbers depend only on whether it was evaluated in
a block of 64 tokens or more (the tiled kernel) or fewer (the one-pass kernel), not on how the
blocks were cut otherwise. The tail of a plan (after its last full block) is all one-pass; so a
later prompt with the same full blocks reuses the tail it shares to the token, and evaluates
the rest of its tail in any blocks under 64. Elsewhere (flash attention off: a single-token
block differs there; other backends: not measured) reuse stays whole blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

from layers.media_prompt import spans_of

BLOCK = 64

Block = tuple[int, int]  # [start, end) token positions


def prompt_blocks(length: int, block: int = BLOCK) -> list[Block]:
    blocks = [(start, start + block) for start in range(0, length - length % block, block)]
    start = length - length % block
    size = block // 2
    while start < length:
        while size > length - start:
            size //= 2
        blocks.append((start, start + size))
        start += size
    return blocks


def joinable(tokens: Sequence[int], todo: Sequence[Block], limit: int) -> int:
    """How many of a plan's next blocks to evaluate as one (at most `limit` tokens): the full
    blocks of a text prompt, which take the tiled kernel however they are cut (where
    `exact_tail` holds), joined when a sequence runs alone: fewer, larger decode calls for a
    long prompt. A prompt with images goes block by block (an image is a block of its own)."""
    if spans_of(tokens):
        return 1
    count, start = 0, todo[0][0] if todo else 0
    for block_start, block_end in todo:
        if block_end - block_start < BLOCK or block_end - start > limit:
            break
        count += 1
    return max(count, 1)


def body_end(length: int, block: int = BLOCK) -> int:
    """Where a prompt's full blocks end and its tail begins."""
    return length - length % block


def plan(tokens: Sequence[int], keep: int = 0) -> list[Block]:
    """The blocks left to evaluate once the first `keep` places are cached: `keep` is 0, the
    end of a block of blocks_of(tokens), or a place in a text prompt's tail (`reusable`)."""
    if keep > body_end(len(tokens)) and not spans_of(tokens):
        return [(keep + a, keep + b) for a, b in prompt_blocks(len(tokens) - keep)]
    return [(a, b) for a, b in blocks_of(tokens) if a >= keep]


def reusable(
    cached_tokens: Sequence[int],
    evaluated: int,
    prompt: Sequence[int],
    exact_tail: bool,
) -> int:
    """How many leading places of `prompt` the cache holds bit for bit (`evaluated`: how many
    of `cached_tokens` it holds): the end of the last block of its plan it shares, or with
    `exact_tail`, a place in a shared tail. Never all: the last place is evaluated again, for
    the logits to sample."""
    common = 0
    for a, b in zip(cached_tokens[:evaluated], prompt, strict=False):
        if a != b:
            break
        common += 1
    common = min(common, len(prompt) - 1)
    if exact_tail and not spans_of(prompt) and not spans_of(cached_tokens):
        body = body_end(len(prompt))
        if common > body and body_end(len(cached_tokens)) == body:
            return common  # the shared tail: one-pass in both
    cached_blocks = [b for b in blocks_of(cached_tokens) if b[1] <= evaluated]
    reused = reusable_blocks(cached_tokens, cached_blocks, prompt)
    return blocks_of(prompt)[reused - 1][1] if reused else 0


def blocks_of(tokens: Sequence[int], block: int = BLOCK) -> list[Block]:
    """The blocks a prompt is evaluated in: prompt_blocks of its length, or, with images in
    it, of each run of text between them, and each image whole."""
    spans = spans_of(tokens)
    if not spans:
        return prompt_blocks(len(tokens), block)
    blocks: list[Block] = []
    start = 0
    for span in (*spans, None):
        end = len(tokens) if span is None else span.start
        blocks += [(start + a, start + b) for a, b in prompt_blocks(end - start, block)]
        if span is not None:
            blocks.append((span.start, span.end))
            start = span.end
    return blocks


def reusable_blocks(
    cached_tokens: Sequence[int], cached_blocks: Sequence[Block], prompt: Sequence[int]
) -> int:
    """How many leading blocks of `prompt` are already in the cache, bit for bit.

    Never all of them: the last block is evaluated again so that there are logits to sample.
    """
    common = 0
    for a, b in zip(cached_tokens, prompt, strict=False):
        if a != b:
            break
        common += 1
    wanted = blocks_of(prompt)
    reused = 0
    for cached, new in zip(cached_blocks, wanted[:-1], strict=False):
        if cached != new or new[1] > common:
            break
        reused += 1
    return reused
