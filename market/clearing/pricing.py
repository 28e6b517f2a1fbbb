"""Prices that do not depend on the solver.

The price of relief at (congestion point, ISP, direction) is the dual ``λ`` of its relief row: the
welfare gained per extra kW of request that could be met there. When the optimal dual is unique,
any correct solver finds it. It is not unique when supply and demand overlap vertically (the last
accepted offer exactly meets the request): then every ``λ`` between the marginal offer's price and
the request's value (or the next offer's price) is optimal.

**Rule.** Let ``Λ*`` be the set of optimal duals. Each relief row's price is the midpoint of its
valid price interval ``[min λ_i, max λ_i]`` over ``Λ*``. The two ends are optima of linear
programs, so they are unique numbers whatever solver finds them. They are computed only for rows
whose dual is not already pinned: ``λ_i`` is pinned when the reduced-cost equations of the
columns strictly inside their bounds determine it (``e_i`` lies in the row space of those
equations), and then the solver's own dual is the price.
"""

from __future__ import annotations

import os
import sys

import highspy
import numpy as np
import scipy.sparse as sp

from market.clearing.model import RELIEF, FloatArray, LinearModel
from market.clearing.solve import Solution, SolverError


def _first_highs_quietly() -> None:
    """HiGHS writes its banner to the process's stdout (file descriptor 1, not ``sys.stdout``) when
    the first instance is made, before any option can silence it. Make that instance at import, with
    descriptor 1 pointed at /dev/null, so the CLI's output and logs stay clean."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


_first_highs_quietly()

PRIMAL_TOL = 1e-6
"""kW: a value closer than this to a bound is at the bound."""
PRICE_TOL = 1e-5
SVD_TOL = 1e-9
"""Relative size below which a singular value or a null-space component is zero."""
"""Currency per MWh: reduced costs smaller than this are zero."""


def binding_rows(model: LinearModel, v: FloatArray) -> np.ndarray:
    slack = model.h - model.G @ v
    return np.flatnonzero(np.abs(slack) <= PRIMAL_TOL * (1 + np.abs(model.h)))


def interior_columns(model: LinearModel, v: FloatArray, lb: FloatArray, ub: FloatArray) -> np.ndarray:
    return np.flatnonzero((v > lb + PRIMAL_TOL) & (v < ub - PRIMAL_TOL))


def unpinned_rows(model: LinearModel, v: FloatArray, duals: FloatArray, lb: FloatArray, ub: FloatArray) -> np.ndarray:
    """Relief rows whose dual the equations of the interior columns do not determine."""
    binding = binding_rows(model, v)
    relief = set(np.flatnonzero(model.row_kind == RELIEF).tolist())
    candidates = [i for i in binding.tolist() if i in relief]
    if not candidates:
        return np.zeros(0, dtype=np.int64)
    interior = interior_columns(model, v, lb, ub)
    if len(interior) == 0:
        return np.asarray(candidates, dtype=np.int64)
    # Equations: for each interior column j, Σ_i G[i, j] λ_i = c_j over the binding rows i.
    equations = model.G[binding][:, interior].toarray().T
    _, singular, vt = np.linalg.svd(equations, full_matrices=True)
    rank = int(np.sum(singular > SVD_TOL * max(1.0, float(singular.max(initial=0.0)))))
    null = vt[rank:]  # directions of λ over the binding rows that the equations leave free
    position = {row: k for k, row in enumerate(binding.tolist())}
    free = [i for i in candidates if null.shape[0] and np.any(np.abs(null[:, position[i]]) > SVD_TOL)]
    return np.asarray(free, dtype=np.int64)


def price_intervals(
    model: LinearModel, lb: FloatArray, ub: FloatArray, rows: np.ndarray
) -> tuple[FloatArray, FloatArray]:
    """``min λ_i`` and ``max λ_i`` over the optimal dual face, for each row ``i`` in ``rows``.

    Dual of ``max c·v, G v ≤ h, lb ≤ v ≤ ub``:  ``min h·λ + ub·μ − lb·ν``,
    ``Gᵀλ + μ − ν = c``,  ``λ, μ, ν ≥ 0``. Its optimal face: objective ≤ welfare (+ tolerance).

    The face is built once in HiGHS and only the objective changes from one end to the next, so
    each end is a warm-started re-solve. The ends are optimal values of LPs, so they are the same
    numbers whichever solver cleared the auction; HiGHS computes them in both cases.
    """
    m, n = model.G.shape
    finite_lb = np.where(np.isfinite(lb), lb, 0.0)
    eye = sp.identity(n, format="csr")
    equalities = sp.hstack([model.G.T.tocsr(), eye, -eye], format="csr")
    face = sp.csr_matrix(np.concatenate([model.h, ub, -finite_lb]).reshape(1, -1))
    a = sp.vstack([equalities, face], format="csc")
    lp = highspy.HighsLp()
    lp.num_col_ = m + 2 * n
    lp.num_row_ = n + 1
    lp.col_cost_ = np.zeros(m + 2 * n)
    lp.col_lower_ = np.zeros(m + 2 * n)
    lp.col_upper_ = np.full(m + 2 * n, highspy.kHighsInf)
    lp.row_lower_ = np.concatenate([model.c, [-highspy.kHighsInf]])
    lp.row_upper_ = np.concatenate([model.c, [highspy.kHighsInf]])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = a.indptr
    lp.a_matrix_.index_ = a.indices
    lp.a_matrix_.value_ = a.data
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    # First the dual optimum itself, by this solver, so the face is consistent whatever solver found
    # ``welfare``; then hold the dual objective there and move one λ at a time.
    dual_cost = np.concatenate([model.h, ub, -finite_lb])
    lp.col_cost_ = dual_cost
    highs.passModel(lp)
    highs.run()
    if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise SolverError(f"dual LP ended with {highs.modelStatusToString(highs.getModelStatus())}")
    optimum = highs.getInfo().objective_function_value
    tolerance = 1e-9 * max(1.0, abs(optimum))
    highs.changeRowBounds(n, -highspy.kHighsInf, optimum + tolerance)
    highs.changeColsCost(m + 2 * n, np.arange(m + 2 * n, dtype=np.int32), np.zeros(m + 2 * n))
    low, high = np.zeros(len(rows)), np.zeros(len(rows))
    for k, row in enumerate(rows.tolist()):
        for sign, out in ((1.0, low), (-1.0, high)):
            highs.changeColCost(row, sign)
            highs.run()
            status = highs.getModelStatus()
            if sign < 0 and status == highspy.HighsModelStatus.kUnbounded:
                # No upper end: nothing can relieve the row at the margin (demand left unmet, or
                # opposing requests at one point). Its price is then the lowest valid one.
                out[k] = low[k]
                continue
            if status != highspy.HighsModelStatus.kOptimal:
                raise SolverError(f"price interval LP ended with {highs.modelStatusToString(status)}")
            out[k] = max(sign * highs.getInfo().objective_function_value, 0.0)
        highs.changeColCost(row, 0.0)
    return low, high


def row_prices(model: LinearModel, solution: Solution, lb: FloatArray, ub: FloatArray) -> tuple[FloatArray, bool]:
    """Prices for every row of the model by the rule above; also whether any dual was degenerate."""
    free = unpinned_rows(model, solution.v, solution.duals, lb, ub)
    if len(free) == 0:
        return solution.duals, False
    low, high = price_intervals(model, lb, ub, free)
    prices = solution.duals.copy()
    prices[free] = (low + high) / 2
    return prices, True


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
