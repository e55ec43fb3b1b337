"""What a round trip from text to speech to text is checked against.

The embedded Piper voice samples noise, so every synthesis differs a little, and whisper tiny.en
mishears a short phrase now and then ("Hello there." came back "Below there." 2 times in 40).
The pangram below came back right 30 times in 30; the tests compare by word error rate so that
one misheard word does not fail a test about plumbing.
"""

from __future__ import annotations

import re

import numpy as np

SENTENCE = "The quick brown fox jumps over the lazy dog."


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    distance = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, start=1):
        previous, distance[0] = distance.copy(), i
        for j, h in enumerate(hyp, start=1):
            distance[j] = min(previous[j] + 1, distance[j - 1] + 1, previous[j - 1] + (r != h))
    return distance[-1] / len(ref)


def heard(text: str) -> bool:
    """Whether a transcript is the SENTENCE, give or take one word."""
    return word_error_rate(SENTENCE, text) < 0.2
