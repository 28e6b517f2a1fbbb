"""Prices that do not depend on the solver.

The price of relief at (congestion point, ISP, direction) is the dual ``λ`` of its relief row: the
welfare gained per extra kW of request that could be met there. When the optimal dual is unique,
any correct solver finds it. It is not unique when supply and demand overlap vertically (the last
accepted offer exactly meets the request): then every ``λ`` between the marginal offer's price and
the request's value (or the next offer's price) is optimal.

**Rule.** Let ``Λ*`` be the set of optimal duals. Each relief row's price is the midpoint of its
valid price interval ``[min λ_i, max λ_i]`` over ``Λ*``. The two ends are optima of linear
programs, so they are unique numbers whatever solver finds them. A row whose interval has no upper
end (nothing can relieve it at the margin) takes its lower end.

**How ``Λ*`` is found.** Complementary slackness with any optimal primal solution ``v`` describes
every optimal dual of ``max c·v, G v ≤ h, lb ≤ v ≤ ub``: ``λ ≥ 0``, ``λ_i = 0`` where row ``i`` has
slack, and per column ``j`` (``G_j`` its column over the binding rows)::

    G_j·λ ≥ c_j  if v_j is at its lower bound,   G_j·λ ≤ c_j  at its upper bound,   = c_j  between.

So ``Λ*`` lives in the space of the *binding* rows only, a few per congestion point and ISP, and
columns with the same ``G_j`` (every offer of one congestion point, direction and ISP) collapse into
one two-sided constraint with the tightest ends. Equations with a single unknown pin that ``λ``;
substituting pinned values pins more (a row's price is then exact, computed from the bids, not
read from the solver). Only rows still free need the two interval LPs, over the few unknowns left,
each a warm-started re-solve in one HiGHS instance.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp

from market.clearing.model import RELIEF, FloatArray, IntArray, LinearModel
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
BOUND_TOL = 5e-4
"""kW: where a column or a row's slack sits for the dual face. Results are published to the watt
(the engine snaps values within half a watt of a bound to it), so the face is that of the published
solution; an interior-point solver's 1e-5 kW left on a rejected offer must not make it marginal."""
PRICE_TOL = 1e-5
"""Currency per MWh: reduced costs smaller than this are zero."""
FACE_TOL = 1e-7
"""Currency per MWh: slack given to each face constraint, so the solver's last digits in ``v`` (which
decide at which bound a column sits) cannot make the face empty."""
_PATTERN_SEED = 20_270_101


def binding_rows(model: LinearModel, v: FloatArray) -> IntArray:
    slack = model.h - model.G @ v
    return np.flatnonzero(np.abs(slack) <= PRIMAL_TOL * (1 + np.abs(model.h)))


def interior_columns(model: LinearModel, v: FloatArray, lb: FloatArray, ub: FloatArray) -> IntArray:
    return np.flatnonzero((v > lb + PRIMAL_TOL) & (v < ub - PRIMAL_TOL))


@dataclass
class DualFace:
    """``Λ*`` over the binding rows: ``low ≤ A λ_B ≤ high``, ``λ_B ≥ 0``.

    Each row of ``A`` is one distinct column pattern ``G_j`` restricted to the binding rows ``rows``.
    """

    rows: IntArray
    A: sp.csr_matrix
    low: FloatArray
    high: FloatArray

    @classmethod
    def of(cls, model: LinearModel, v: FloatArray, lb: FloatArray, ub: FloatArray) -> DualFace:
        slack = model.h - model.G @ v
        rows = np.flatnonzero(np.abs(slack) <= BOUND_TOL * (1 + np.abs(model.h)))
        g = model.G[rows].tocsc()
        movable = (ub - lb > BOUND_TOL) & (np.diff(g.indptr) > 0)
        at_lb = v <= lb + BOUND_TOL
        at_ub = v >= ub - BOUND_TOL
        # Same pattern, same key: two random projections of the column (identical columns give
        # identical floats, as the sparse product sums the same entries in the same order).
        rng = np.random.default_rng(_PATTERN_SEED)
        cols = np.flatnonzero(movable)
        projections = g[:, cols].T @ rng.standard_normal((len(rows), 2))
        order = np.lexsort((projections[:, 1], projections[:, 0]))
        ordered = projections[order]
        starts = np.ones(len(cols), dtype=bool)
        starts[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
        group = np.empty(len(cols), dtype=np.int64)
        group[order] = np.cumsum(starts) - 1
        first = order[starts]
        c = model.c[cols]
        low = np.full(len(first), -np.inf)
        high = np.full(len(first), np.inf)
        # At its lower bound (or between): G_j·λ ≥ c_j; at its upper bound (or between): ≤ c_j.
        below = ~at_ub[cols] | at_lb[cols]
        above = ~at_lb[cols] | at_ub[cols]
        np.maximum.at(low, group[below], c[below])
        np.minimum.at(high, group[above], c[above])
        return cls(rows=rows, A=g[:, cols[first]].T.tocsr(), low=low, high=high)

    def pinned(self) -> FloatArray:
        """``λ`` of each binding row that the equations fix, by substitution; NaN where free."""
        value = np.full(len(self.rows), np.nan)
        finite = np.isfinite(self.low) & np.isfinite(self.high)
        equal = finite & (self.high - self.low <= FACE_TOL * (1 + np.abs(self.low)))
        a = self.A[equal].tocsr()
        target = (self.low[equal] + self.high[equal]) / 2
        while a.shape[0]:
            unknown = np.isnan(value)
            known = np.where(unknown, 0.0, value)
            rest = target - a @ known
            a_unknown = a @ sp.diags(unknown.astype(np.float64))
            a_unknown.eliminate_zeros()
            counts = np.diff(a_unknown.indptr)
            single = np.flatnonzero(counts == 1)
            if not len(single):
                break
            var = a_unknown.indices[a_unknown.indptr[single]]
            coef = a_unknown.data[a_unknown.indptr[single]]
            # One equation per variable (the first); others that pin it agree up to rounding.
            var, pick = np.unique(var, return_index=True)
            value[var] = np.maximum(rest[single[pick]] / coef[pick], 0.0)
            keep = counts > 1
            a, target = a[keep], target[keep]
        return value

    def intervals(self, free: IntArray, pinned: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``min λ`` and ``max λ`` over the face for the binding rows at positions ``free``.

        The pinned values are substituted, leaving an LP in the unknown ``λ`` only; it is passed to
        HiGHS once and each end is a warm-started re-solve with another objective.
        """
        unknown = np.flatnonzero(np.isnan(pinned))
        position = np.full(len(self.rows), -1)
        position[unknown] = np.arange(len(unknown))
        known = np.where(np.isnan(pinned), 0.0, pinned)
        shift = self.A @ known
        rows = self.A[:, unknown].tocsr()
        use = np.diff(rows.indptr) > 0
        a = rows[use].tocsc()
        slack = FACE_TOL * (1 + np.abs(np.where(np.isfinite(self.low), self.low, 0.0)))[use]
        lp = highspy.HighsLp()
        lp.num_col_ = len(unknown)
        lp.num_row_ = a.shape[0]
        lp.col_cost_ = np.zeros(len(unknown))
        lp.col_lower_ = np.zeros(len(unknown))
        lp.col_upper_ = np.full(len(unknown), highspy.kHighsInf)
        lp.row_lower_ = np.where(np.isfinite(self.low[use]), self.low[use] - shift[use] - slack, -highspy.kHighsInf)
        lp.row_upper_ = np.where(np.isfinite(self.high[use]), self.high[use] - shift[use] + slack, highspy.kHighsInf)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = a.indptr
        lp.a_matrix_.index_ = a.indices
        lp.a_matrix_.value_ = a.data
        highs = highspy.Highs()
        highs.setOptionValue("output_flag", False)
        highs.passModel(lp)
        low, high = np.zeros(len(free)), np.zeros(len(free))
        for k, col in enumerate(position[free].tolist()):
            for sign, out in ((1.0, low), (-1.0, high)):
                highs.changeColCost(col, sign)
                highs.run()
                status = highs.getModelStatus()
                if sign < 0 and status == highspy.HighsModelStatus.kUnbounded:
                    # No upper end: nothing can relieve the row at the margin (demand left unmet,
                    # or opposing requests at one point). Its price is then the lowest valid one.
                    out[k] = low[k]
                    continue
                if status != highspy.HighsModelStatus.kOptimal:
                    raise SolverError(f"price interval LP ended with {highs.modelStatusToString(status)}")
                out[k] = max(sign * highs.getInfo().objective_function_value, 0.0)
            highs.changeColCost(col, 0.0)
        return low, high


def row_prices(model: LinearModel, solution: Solution, lb: FloatArray, ub: FloatArray) -> tuple[FloatArray, bool]:
    """Prices for every row of the model by the rule above; also whether any relief row's dual was
    not unique."""
    face = DualFace.of(model, solution.v, lb, ub)
    pinned = face.pinned()
    prices = np.zeros(model.G.shape[0])
    free = np.flatnonzero(np.isnan(pinned) & (model.row_kind[face.rows] == RELIEF))
    if len(free):
        low, high = face.intervals(free, pinned)
        pinned = pinned.copy()
        pinned[free] = (low + high) / 2
    prices[face.rows] = np.nan_to_num(pinned, nan=0.0)
    return prices, bool(len(free))


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
