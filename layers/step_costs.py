"""What one more query row adds to a llama.cpp decode, learned from the decodes themselves
(layers/speculation weighs it against what a draft row is likely to save).

A decode of fewer than 64 rows per sequence is modelled as `base + per_row·rows + per_cell·cells`:
`rows` are the query rows it evaluates and `cells` the KV cells they read in all (each row reads
its sequence's context). Where a row is nearly free (a GPU, whose step is the weights' read),
drafts may be long; on a CPU a row's matrix products cost about 0.4 of a lone token here, and
its read of an 8k context as much again, so only a draft likely to be accepted pays for itself
(docs/PERFORMANCE.md). The fit is least squares over recent decodes (older ones fade), so it
follows the machine: the same code decides on a laptop and on an H100.
"""

from __future__ import annotations

import numpy as np

# Each decode's weight in the fit is multiplied by this at every later one: ~200 decodes
# (a few seconds) make up most of it.
_FADE = 0.995
# The fit says nothing about a row's cost until the decodes it has seen differ in rows: a
# weighted variance of rows of at least this much.
_SPREAD = 1.0
_RIDGE = 1e-6  # keeps the solve defined where cells and rows moved together
_KCELLS = 1024.0  # cells in thousands: the three features of similar size


class StepCosts:
    def __init__(self) -> None:
        self._gram = np.zeros((3, 3))  # Σ weight·x·xᵀ, x = (1, rows, thousands of cells)
        self._moment = np.zeros(3)  # Σ weight·x·seconds
        self._fit: np.ndarray | None = None

    def observe(self, rows: int, cells: int, seconds: float) -> None:
        """A decode of `rows` query rows reading `cells` KV cells in all took `seconds`."""
        x = np.array([1.0, rows, cells / _KCELLS])
        self._gram = self._gram * _FADE + np.outer(x, x)
        self._moment = self._moment * _FADE + x * seconds
        self._fit = None

    def row_share(self, context: int) -> float | None:
        """One more row at `context` cells, as a share of a lone row's decode there (0.1: a
        draft row costs a tenth of a token); None until the decodes seen say."""
        weight, rows, rows_squared = self._gram[0, 0], self._gram[0, 1], self._gram[1, 1]
        if weight <= 0 or rows_squared / weight - (rows / weight) ** 2 < _SPREAD:
            return None
        if self._fit is None:
            ridge = _RIDGE * float(np.max(np.diag(self._gram)))
            self._fit = np.linalg.solve(self._gram + ridge * np.eye(3), self._moment)
        base, per_row, per_kcell = (float(v) for v in self._fit)
        row = max(0.0, per_row + per_kcell * context / _KCELLS)
        lone = max(0.0, base) + row
        return row / lone if lone > 0 else None
