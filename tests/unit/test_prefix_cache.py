"""The block plan that makes prefix caching reproducible."""

from __future__ import annotations

import pytest

from layers.prefix_cache import BLOCK, prompt_blocks, reusable_blocks


@pytest.mark.parametrize("length", [1, 2, 3, 23, 63, 64, 65, 200, 1000])
def test_blocks_tile_the_prompt_in_a_fixed_plan(length):
    blocks = prompt_blocks(length)
    assert blocks[0][0] == 0 and blocks[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))
    sizes = [end - start for start, end in blocks]
    assert all(s == BLOCK for s in sizes[: length // BLOCK])
    tail = sizes[length // BLOCK :]
    assert tail == sorted(tail, reverse=True) and all(s & (s - 1) == 0 for s in tail)


def test_prompt_blocks_examples():
    assert prompt_blocks(23) == [(0, 16), (16, 20), (20, 22), (22, 23)]
    assert prompt_blocks(130) == [(0, 64), (64, 128), (128, 130)]


def test_same_prompt_reuses_all_but_the_last_block():
    prompt = list(range(23))
    assert reusable_blocks(prompt, prompt_blocks(23), prompt) == 3


def test_only_identical_blocks_with_identical_tokens_are_reused():
    cached = list(range(23))
    blocks = prompt_blocks(23)
    longer = cached + [99] * 7  # 30 = 16, 8, 4, 2: shares only the first block's plan
    assert reusable_blocks(cached, blocks, longer) == 1
    changed = cached[:10] + [-1] + cached[11:]
    assert reusable_blocks(cached, blocks, changed) == 0
    assert reusable_blocks([], [], cached) == 0
    long_cached = list(range(200))
    follow_up = long_cached + list(range(50))  # a conversation that goes on
    assert reusable_blocks(long_cached, prompt_blocks(200), follow_up) == 3
