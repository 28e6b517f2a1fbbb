"""The dual face's equations solved by elimination (market/clearing/pricing.py), on systems small
enough to solve by hand."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from market.clearing.pricing import Parametrization


def test_a_hand_solved_system_with_a_redundant_equation():
    """λ0 + λ1 = 3, λ1 − λ2 = 1, λ0 + λ2 = 2 (the first minus the second: redundant), 2 λ4 = 5;
    λ3 is in no equation. By hand: λ4 = 2.5 exactly, λ1 = 1 + λ2, λ0 = 2 − λ2, so two unknowns stay
    free (λ2 or one of its partners, and λ3)."""
    a = sp.csr_matrix(
        np.array(
            [
                [1.0, 1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, -1.0, 0.0, 0.0],
                [1.0, 0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 2.0],
            ]
        )
    )
    target = np.array([3.0, 1.0, 2.0, 5.0])
    param = Parametrization.of(a, target)
    assert param.N.shape == (5, 2)
    assert 3 in param.params  # in no equation: free, as itself
    fixed = np.diff(param.N.indptr) == 0
    assert fixed.tolist() == [False, False, False, False, True]
    assert param.beta[4] == 2.5
    for theta in ([0.0, 0.0], [1.5, -2.0], [10.0, 7.0]):
        lam = param.beta + param.N @ np.array(theta)
        assert np.allclose(a @ lam, target)
        assert np.isclose(lam[1], 1 + lam[2])
        assert np.isclose(lam[0], 2 - lam[2])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(min_value=0, max_value=10_000))
def test_every_theta_solves_the_equations_and_spans_their_solutions(seed):
    """Random sparse consistent systems (some equations repeated as sums of others): every θ gives a
    solution, and the number of θ is the dimension of the solution set (unknowns − rank)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 12))
    m = int(rng.integers(1, n + 3))
    dense = np.where(rng.random((m, n)) < 0.3, rng.choice([1.0, -1.0, 0.25, 0.9, 1 / 0.9], (m, n)), 0.0)
    if m > 2:  # a redundant row: the sum of the first two
        dense[-1] = dense[0] + dense[1]
    solution = rng.uniform(0, 100, n)
    target = dense @ solution
    param = Parametrization.of(sp.csr_matrix(dense), target)
    assert param.N.shape[1] == n - np.linalg.matrix_rank(dense)
    for _ in range(3):
        lam = param.beta + param.N @ rng.uniform(-50, 50, param.N.shape[1])
        assert np.allclose(dense @ lam, target, atol=1e-7 * (1 + np.abs(target).max()))
