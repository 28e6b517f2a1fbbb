"""Prices that do not depend on the solver.

The price of relief at (congestion point, ISP, direction) is the dual ``λ`` of its relief row: the
welfare gained per extra kW of request that could be met there. When the optimal dual is unique,
any correct solver finds it. It is not unique when supply and demand overlap vertically (the last
accepted offer exactly meets the request): then every ``λ`` between the marginal offer's price and
the request's value (or the next offer's price) is optimal.

**Rule.** Let ``Λ*`` be the set of optimal duals. Each row's price is the midpoint of the two
extreme optimal dual vectors that minimise and maximise ``Σ λ`` over ``Λ*``. With a radial grid
``Λ*`` is a lattice, so both extremes are unique and the price is the midpoint of the row's valid
price interval. The extremes are computed only when the dual is not unique, which is checked
from the primal solution: ``λ`` is pinned if the reduced-cost equations of the columns strictly
inside their bounds determine every binding row's dual.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from market.clearing.model import FloatArray, LinearModel
from market.clearing.solve import Solution, SolverError

PRIMAL_TOL = 1e-6
"""kW: a value closer than this to a bound is at the bound."""
PRICE_TOL = 1e-5
"""Currency per MWh: reduced costs smaller than this are zero."""


def binding_rows(model: LinearModel, v: FloatArray) -> np.ndarray:
    slack = model.h - model.G @ v
    return np.flatnonzero(np.abs(slack) <= PRIMAL_TOL * (1 + np.abs(model.h)))


def interior_columns(model: LinearModel, v: FloatArray, lb: FloatArray, ub: FloatArray) -> np.ndarray:
    return np.flatnonzero((v > lb + PRIMAL_TOL) & (v < ub - PRIMAL_TOL))


def dual_is_unique(model: LinearModel, v: FloatArray, lb: FloatArray, ub: FloatArray) -> bool:
    """True if the reduced-cost equations of interior columns pin every binding row's dual."""
    binding = binding_rows(model, v)
    if len(binding) == 0:
        return True
    interior = interior_columns(model, v, lb, ub)
    if len(interior) < len(binding):
        return False
    sub = model.G[binding][:, interior].toarray()
    return bool(np.linalg.matrix_rank(sub) == len(binding))


def extreme_duals(
    model: LinearModel, welfare: float, lb: FloatArray, ub: FloatArray, solver: str
) -> tuple[FloatArray, FloatArray]:
    """The optimal duals that minimise and maximise ``Σ λ`` (see the module docstring).

    Dual of ``max c·v, G v ≤ h, lb ≤ v ≤ ub``:  ``min h·λ + ub·μ − lb·ν``,
    ``Gᵀλ + μ − ν = c``,  ``λ, μ, ν ≥ 0``. Its optimal face: objective ≤ welfare (+ tolerance).
    """
    m, n = model.G.shape
    lam = cp.Variable(m, nonneg=True)
    mu = cp.Variable(n, nonneg=True)
    nu = cp.Variable(n, nonneg=True)
    finite_lb = np.where(np.isfinite(lb), lb, 0.0)
    dual_objective = model.h @ lam + ub @ mu - finite_lb @ nu
    tolerance = 1e-7 * max(1.0, abs(welfare))
    constraints = [sp.csr_matrix(model.G.T) @ lam + mu - nu == model.c, dual_objective <= welfare + tolerance]
    extremes = []
    for sense in (cp.Minimize, cp.Maximize):
        problem = cp.Problem(sense(cp.sum(lam)), constraints)
        problem.solve(solver=solver, verbose=False)
        if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or lam.value is None:
            raise SolverError(f"{solver}: dual face LP ended with status {problem.status}")
        extremes.append(np.maximum(np.asarray(lam.value, dtype=np.float64), 0.0))
    return extremes[0], extremes[1]


def row_prices(
    model: LinearModel, solution: Solution, welfare: float, lb: FloatArray, ub: FloatArray, solver: str
) -> tuple[FloatArray, bool]:
    """Prices for every row of the model by the rule above; also whether the dual was degenerate."""
    if dual_is_unique(model, solution.v, lb, ub):
        return solution.duals, False
    low, high = extreme_duals(model, welfare, lb, ub, solver)
    return (low + high) / 2, True


def reduced_costs(model: LinearModel, duals: FloatArray) -> FloatArray:
    return np.asarray(model.c - model.G.T @ duals, dtype=np.float64)


def has_alternative_optima(model: LinearModel, solution: Solution, lb: FloatArray, ub: FloatArray) -> bool:
    """True if the primal optimum may not be unique (a flat overlap: equal prices, or an offer priced
    exactly at a request's value). Conservative: a false alarm only costs one more LP.

    Signs: a column at a bound with zero reduced cost, a binding row with zero dual (either can
    move along an optimal edge), or more interior columns than binding rows (not a vertex, as an
    interior-point solver returns on a non-unique optimum).
    """
    rc = reduced_costs(model, solution.duals)
    at_bound = (solution.v <= lb + PRIMAL_TOL) | (solution.v >= ub - PRIMAL_TOL)
    movable = ub - lb > PRIMAL_TOL
    zero = np.abs(rc) <= PRICE_TOL * (1 + np.abs(model.c))
    if np.any(at_bound & movable & zero):
        return True
    binding = binding_rows(model, solution.v)
    if np.any(solution.duals[binding] <= PRICE_TOL):
        return True
    return len(interior_columns(model, solution.v, lb, ub)) > len(binding)
