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
