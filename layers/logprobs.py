"""Log probabilities from one position's logits: the sampled token's, and the top alternatives.

Computed from the logits the sampler saw (after a grammar's mask, before temperature and
penalties: the model's own distribution over what was allowed), one position at a time, so
nothing is kept per position.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.turns import TokenLogprob


class TokenLogprobs:
    def __init__(self, piece: Callable[[int], bytes]) -> None:
        import numpy as np

        self._np = np
        self._piece = piece

    def score(self, logits: Any, token: int, top: int) -> TokenLogprob:
        np = self._np
        values = logits.astype(np.float64)  # float32 logsumexp loses the small probabilities
        peak = values.max()
        log_total = peak + np.log(np.exp(values - peak).sum())
        alternatives: tuple[tuple[bytes, float], ...] = ()
        if top > 0:
            top = min(top, values.size)
            best = np.argpartition(-values, top - 1)[:top]
            # Highest first; among equals the sampled token first (greedy picks it), then by id.
            order = sorted(best.tolist(), key=lambda t: (-values[t], t != token, t))
            alternatives = tuple(
                (self._piece(t), float(values[t] - log_total))
                for t in order
                if np.isfinite(values[t])  # a token the grammar forbade has no probability
            )
        return TokenLogprob(self._piece(token), float(values[token] - log_total), alternatives)
