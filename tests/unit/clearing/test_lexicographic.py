"""``solve_highs_lexicographic``: each objective chooses only among the optima of the ones before."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from market.clearing.solve import SolverError, solve_highs_lexicographic

NO_LOWER = np.array([-np.inf])


def _solve(objectives: list[list[float]], row: list[float], upper: float) -> list[float]:
    g = sp.csr_matrix(np.array([row]))
    n = len(row)
    v = solve_highs_lexicographic(
        g, [np.array(o) for o in objectives], NO_LOWER, np.array([upper]), np.zeros(n), np.ones(n), "test LP"
    )
    return [round(float(x), 9) for x in v]


def test_the_second_objective_decides_a_tie_of_the_first():
    # max x1 + x2 over x1 + x2 ≤ 1: every split is optimal; then max x2 picks (0, 1), max x1 (1, 0).
    assert _solve([[1, 1], [0, 1]], [1, 1], 1) == [0, 1]
    assert _solve([[1, 1], [1, 0]], [1, 1], 1) == [1, 0]


def test_the_second_objective_cannot_undo_the_first():
    # max 2 x1 + x2 over x1 + x2 ≤ 1 has the one optimum (1, 0); max x2 afterwards must keep it.
    assert _solve([[2, 1], [0, 1]], [1, 1], 1) == [1, 0]


def test_a_tie_on_a_slack_row_is_decided_too():
    # max x1 over x1 + x2 ≤ 1.5: x1 = 1, x2 anywhere in [0, 0.5]; then max x2 → 0.5, min x2 → 0.
    assert _solve([[1, 0], [0, 1]], [1, 1], 1.5) == [1, 0.5]
    assert _solve([[1, 0], [0, -1]], [1, 1], 1.5) == [1, 0]


def test_three_objectives_in_turn():
    # max x1 + x2 + x3 over their sum ≤ 2 (ties), then max x3 (x3 = 1), then max x1 over what is left.
    assert _solve([[1, 1, 1], [0, 0, 1], [1, 0, 0]], [1, 1, 1], 2) == [1, 0, 1]


def test_an_infeasible_lp_is_a_solver_error():
    g = sp.csr_matrix(np.array([[1.0, 1.0]]))
    with pytest.raises(SolverError, match="test LP"):
        solve_highs_lexicographic(g, [np.ones(2)], np.array([3.0]), np.array([4.0]), np.zeros(2), np.ones(2), "test LP")
