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
from market.clearing.solve import Solution, SolverError, highs_lp, quiet_highs


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
"""Relative: two ends of a face row this close make it an equation. Also the slack each row gets
only if the substituted prices leave the rest of the face empty by rounding."""
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
        rows = np.flatnonzero(np.abs(slack) <= BOUND_TOL)  # kW (relief) or kWh (storage): absolute
        g = model.G[rows].tocsc()
        near = BOUND_TOL / model.kw_per_unit()  # half a watt in each column's own unit
        movable = (ub - lb > near) & (np.diff(g.indptr) > 0)
        at_lb = v <= lb + near
        at_ub = v >= ub - near
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

        The pinned values are substituted, leaving an LP in the unknown ``λ`` only (:class:`_FaceLP`).
        An end is known without an LP when some optimal dual seen so far already sits on a bound that
        a single constraint puts on that ``λ`` (``λ ≥ 0``, ``λ ≥ value`` of a request left unmet,
        ``λ ≤ value`` of a request met in full): the bound is then the end, exactly. Two LPs first
        push all free ``λ`` down and all up at once, which settles most ends that way.
        """
        unknown = np.flatnonzero(np.isnan(pinned))
        position = np.full(len(self.rows), -1)
        position[unknown] = np.arange(len(unknown))
        known = np.where(np.isnan(pinned), 0.0, pinned)
        shift = self.A @ known
        sub = self.A[:, unknown].tocsr()
        sub.eliminate_zeros()
        use = np.diff(sub.indptr) > 0
        cols = position[free]
        try:
            face = _FaceLP(sub[use], self.low[use] - shift[use], self.high[use] - shift[use])
            face.push(cols, 1.0)
        except SolverError:
            # The substituted prices miss the remaining rows in the last digits: give each row the
            # equation tolerance (the ends move by as much).
            face = _FaceLP(sub[use], self.low[use] - shift[use], self.high[use] - shift[use], slack=True)
            face.push(cols, 1.0)
        face.push(cols, -1.0)
        low, high = np.zeros(len(free)), np.zeros(len(free))
        for k, col in enumerate(cols.tolist()):
            if face.seen_low[col] <= face.floor[col] + _settled(face.floor[col]):
                low[k] = face.floor[col]
            else:
                low[k] = max(face.extreme(col, 1.0), face.floor[col])
            if face.seen_high[col] >= face.ceiling[col] - _settled(face.ceiling[col]):
                high[k] = face.ceiling[col]
            else:
                top = face.extreme(col, -1.0)
                # No upper end: nothing can relieve the row at the margin (demand left unmet, or
                # opposing requests at one point). Its price is then the lowest valid one.
                high[k] = low[k] if np.isinf(top) else min(top, face.ceiling[col])
        return np.maximum(low, 0.0), np.maximum(high, 0.0)


def _settled(bound: float) -> float:
    """How close a seen dual must come to a bound to have reached it (the LP's feasibility tolerance)."""
    return 1e-6 * (1 + abs(bound))


class _FaceLP:
    """``low ≤ A λ ≤ high``, ``0 ≤ λ``, optimised one objective after another in one HiGHS instance.

    The face has a row per column pattern, most of which never bind. So HiGHS gets only the
    equations, the single-variable rows and whatever rows an optimum has broken so far (constraint
    generation: solve, add every row the optimum violates, re-solve warm; the optimum that violates
    none is the optimum of the whole face). ``λ ≤ big`` keeps each round bounded. An optimum with
    any ``λ`` at ``big`` may owe its value to the cap (a price tied to one that has no upper end), so
    that end is solved again over the whole face without caps, where HiGHS reports an unbounded
    end as such.
    """

    def __init__(self, a: sp.csr_matrix, low: FloatArray, high: FloatArray, *, slack: bool = False) -> None:
        self.a = a
        self.tolerance = FACE_TOL * (1 + np.abs(np.where(np.isfinite(low), low, np.where(np.isfinite(high), high, 0))))
        give = self.tolerance if slack else 0.0
        self.low = np.where(np.isfinite(low), low - give, -highspy.kHighsInf)
        self.high = np.where(np.isfinite(high), high + give, highspy.kHighsInf)
        n = a.shape[1]
        counts = np.diff(a.indptr)
        one = np.flatnonzero(counts == 1)
        var, coef = a.indices[a.indptr[one]], a.data[a.indptr[one]]
        with np.errstate(invalid="ignore"):
            lower = np.where(coef > 0, low[one], high[one]) / coef
            upper = np.where(coef > 0, high[one], low[one]) / coef
        self.floor = np.zeros(n)
        self.ceiling = np.full(n, np.inf)
        np.maximum.at(self.floor, var, np.nan_to_num(lower, nan=-np.inf))
        np.minimum.at(self.ceiling, var, np.nan_to_num(upper, nan=np.inf))
        finite = np.concatenate([np.abs(low[np.isfinite(low)]), np.abs(high[np.isfinite(high)]), [1.0]])
        self.big = 1e6 * (1 + float(finite.max()))
        self.seen_low = np.full(n, np.inf)
        self.seen_high = np.full(n, -np.inf)
        self.highs = quiet_highs()
        self.highs.addVars(n, np.zeros(n), np.full(n, self.big))
        equal = np.isfinite(low) & np.isfinite(high) & (high - low <= self.tolerance)
        self.added = np.zeros(a.shape[0], dtype=bool)
        self._add(np.flatnonzero(equal | (counts == 1)))
        self.uncapped: highspy.Highs | None = None

    def _add(self, rows: IntArray) -> None:
        if not len(rows):
            return
        part = self.a[rows]
        self.highs.addRows(
            len(rows),
            self.low[rows],
            self.high[rows],
            part.nnz,
            part.indptr[:-1].astype(np.int32),
            part.indices.astype(np.int32),
            part.data,
        )
        self.added[rows] = True

    def _solve(self) -> FloatArray:
        while True:
            self.highs.run()
            status = self.highs.getModelStatus()
            if status != highspy.HighsModelStatus.kOptimal:
                raise SolverError(f"price interval LP ended with {self.highs.modelStatusToString(status)}")
            x = np.asarray(self.highs.getSolution().col_value)
            r = self.a @ x
            check = 1e-2 * self.tolerance
            broken = np.flatnonzero(~self.added & ((r < self.low - check) | (r > self.high + check)))
            if not len(broken):
                np.minimum(self.seen_low, x, out=self.seen_low)
                np.maximum(self.seen_high, x, out=self.seen_high)
                return x
            self._add(broken)

    def push(self, cols: IntArray, sign: float) -> None:
        """Optimise ``sign · Σ λ[cols]`` (all down, or all up) and remember what was seen."""
        n = self.a.shape[1]
        cost = np.zeros(n)
        cost[cols] = sign
        self.highs.changeColsCost(n, np.arange(n, dtype=np.int32), cost)
        self._solve()
        self.highs.changeColsCost(n, np.arange(n, dtype=np.int32), np.zeros(n))

    def extreme(self, col: int, sign: float) -> float:
        """``min λ[col]`` (sign 1) or ``max λ[col]`` (sign −1) over the face; ``inf`` if unbounded."""
        self.highs.changeColCost(col, sign)
        x = self._solve()
        self.highs.changeColCost(col, 0.0)
        if sign < 0 and np.any(x >= self.big * (1 - 1e-9)):
            return self._uncapped_max(col)
        return float(x[col])

    def _uncapped_max(self, col: int) -> float:
        if self.uncapped is None:
            n = self.a.shape[1]
            self.uncapped = quiet_highs()
            self.uncapped.passModel(
                highs_lp(self.a.tocsc(), np.zeros(n), np.zeros(n), np.full(n, highspy.kHighsInf), self.low, self.high)
            )
        self.uncapped.changeColCost(col, -1.0)
        self.uncapped.run()
        status = self.uncapped.getModelStatus()  # read before the model changes again
        top = float(self.uncapped.getSolution().col_value[col])
        self.uncapped.changeColCost(col, 0.0)
        if status == highspy.HighsModelStatus.kUnbounded:
            return np.inf
        if status != highspy.HighsModelStatus.kOptimal:
            raise SolverError(f"price interval LP ended with {self.uncapped.modelStatusToString(status)}")
        return top


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
