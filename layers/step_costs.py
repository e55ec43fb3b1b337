"""What one more query row adds to a llama.cpp decode, learned from the decodes themselves
(layers/speculation weighs it against what a draft row is likely to save).

A decode of fewer than 64 rows per sequence is modelled as `base + per_row·rows + per_cell·cells`:
`rows` are the query rows it evaluates and `cells` the KV cells they read in all (each row reads
its sequence's context). Where a row is nearly free (a GPU, whose step is the weights' read),
drafts may be long; on a CPU a row costs 0.4–0.55 of a lone token here (its matrix products,
then its read of the context), so only a draft likely to be accepted pays for itself
(docs/PERFORMANCE.md). The fit is least squares over recent decodes (older ones fade), so it
follows the machine: the same code decides on a laptop and on an H100.
"""

from __future__ import annotations

# Each decode's weight in the fit is multiplied by this at every later one: ~200 decodes
# (a few seconds) make up most of it.
_FADE = 0.995
# The fit says nothing about a row's cost until the decodes it has seen differ in rows: a
# weighted variance of rows of at least this much.
_SPREAD = 1.0
_RIDGE = 1e-6  # keeps the solve defined where cells and rows moved together
_KCELLS = 1024.0  # cells in thousands: the three features of similar size


class StepCosts:
    """Pure Python (3 features): a chat imports no numpy before it needs one (test_cold_imports)."""

    def __init__(self) -> None:
        self._gram = [[0.0] * 3 for _ in range(3)]  # Σ weight·x·xᵀ, x = (1, rows, kcells)
        self._moment = [0.0] * 3  # Σ weight·x·seconds
        self._fit: list[float] | None = None

    def observe(self, rows: int, cells: int, seconds: float) -> None:
        """A decode of `rows` query rows reading `cells` KV cells in all took `seconds`."""
        x = (1.0, float(rows), cells / _KCELLS)
        for i in range(3):
            self._moment[i] = self._moment[i] * _FADE + x[i] * seconds
            for j in range(3):
                self._gram[i][j] = self._gram[i][j] * _FADE + x[i] * x[j]
        self._fit = None

    def row_share(self, context: int) -> float | None:
        """One more row at `context` cells, as a share of a lone row's decode there (0.1: a
        draft row costs a tenth of a token); None until the decodes seen say."""
        weight, rows, rows_squared = self._gram[0][0], self._gram[0][1], self._gram[1][1]
        if weight <= 0 or rows_squared / weight - (rows / weight) ** 2 < _SPREAD:
            return None
        if self._fit is None:
            ridge = _RIDGE * max(self._gram[i][i] for i in range(3))
            system = [
                [*(v + (ridge if i == j else 0.0) for j, v in enumerate(row)), self._moment[i]]
                for i, row in enumerate(self._gram)
            ]
            self._fit = _solve(system)
        base, per_row, per_kcell = self._fit
        row = max(0.0, per_row + per_kcell * context / _KCELLS)
        lone = max(0.0, base) + row
        return row / lone if lone > 0 else None


def _solve(a: list[list[float]]) -> list[float]:
    """The solution of a small linear system given as its augmented rows (Gaussian elimination
    with partial pivoting; the ridge keeps it regular)."""
    n = len(a)
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(col + 1, n):
            factor = a[r][col] / a[col][col]
            for c in range(col, n + 1):
                a[r][c] -= factor * a[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (a[r][n] - sum(a[r][c] * x[c] for c in range(r + 1, n))) / a[r][r]
    return x
