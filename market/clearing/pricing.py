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
one two-sided constraint with the tightest ends (:class:`DualFace`).

**Computing the intervals.** Each column between its bounds makes an equation. Sparse Gaussian
elimination (:class:`Parametrization`) writes every unknown as ``λ = beta + N θ`` over the few
unknowns ``θ`` the equations leave free; a ``λ`` that no ``θ`` moves is exact, computed from the
bids. Written over ``θ``, most of the face's inequalities hold one ``θ`` only (bounds on it), and
the rest couple ``θ`` into small independent components (:class:`ParamFace`). The interval of a
``θ`` alone is its two bounds; within a component, two LPs push every ``θ`` down and up, and only
ends those leave short of a ``θ``'s own bound get an LP of their own (:class:`_ComponentLP`). On
the storage day (5,000 storage offers over 96 ISPs, 8,337 binding rows) 2,123 ``θ`` remain, of
which 6 components of more than one: pricing takes a fraction of a second where one pair of LPs
per free row over the whole face took hours.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

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

BOUND_TOL = 5e-4
"""kW: where a column or a row's slack sits for the dual face. Results are published to the watt
(the engine snaps values within half a watt of a bound to it), so the face is that of the published
solution; an interior-point solver's 1e-5 kW left on a rejected offer must not make it marginal."""
PRICE_TOL = 1e-5
"""Currency per MWh: reduced costs smaller than this are zero."""
FACE_TOL = 1e-7
"""Relative: two ends of a face row this close make it an equation; a price's two bounds crossed by
no more than this are one value (rounding), by more, the face is empty."""
_PATTERN_SEED = 20_270_101


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

    def equations(self) -> tuple[IntArray, FloatArray]:
        """The rows whose two ends meet (a column between its bounds, or two that pin one pattern),
        and the value each fixes."""
        finite = np.isfinite(self.low) & np.isfinite(self.high)
        equal = np.flatnonzero(finite & (self.high - self.low <= FACE_TOL * (1 + np.abs(self.low))))
        return equal, (self.low[equal] + self.high[equal]) / 2


_ZERO = 1e-10
"""A coefficient this small, after elimination, is rounding left by a cancellation."""


@dataclass
class Parametrization:
    """Every ``λ`` that solves the face's equations, as ``λ = beta + N θ``.

    ``θ`` are the unknowns the equations leave free (``params``, in index order); a row of ``N``
    with no entry is a ``λ`` the equations fix, to ``beta``.
    """

    beta: FloatArray
    N: sp.csr_matrix
    params: IntArray

    @classmethod
    def of(cls, a: sp.csr_matrix, target: FloatArray) -> Parametrization:
        """Gaussian elimination of ``a λ = target`` (:class:`_Elimination`), equations with fewest
        unknowns first, so an equation with one unknown fixes it before it is used elsewhere."""
        n = a.shape[1]
        elimination = _Elimination()
        counts = np.diff(a.indptr)
        for r in np.lexsort((np.arange(len(counts)), counts)).tolist():
            start, end = int(a.indptr[r]), int(a.indptr[r + 1])
            elimination.add(a.indices[start:end].tolist(), a.data[start:end].tolist(), float(target[r]))
        expression = elimination.expression
        free = np.array(sorted(set(range(n)) - set(expression)), dtype=np.int64)
        index = np.full(n, -1, dtype=np.int64)
        index[free] = np.arange(len(free))
        beta = np.zeros(n)
        rows: list[int] = free.tolist()
        cols: list[int] = list(range(len(free)))
        data: list[float] = [1.0] * len(free)
        for v, (value, rest) in expression.items():
            beta[v] = value
            for w, d in rest.items():
                rows.append(v)
                cols.append(int(index[w]))
                data.append(d)
        matrix = sp.csr_matrix((data, (rows, cols)), shape=(n, len(free)))
        return cls(beta=beta, N=matrix, params=free)


class _Elimination:
    """Sparse Gaussian elimination, one equation at a time.

    ``expression[v] = (value, {w: coef})`` writes an eliminated unknown over the unknowns still free:
    ``λ_v = value + Σ coef · λ_w``. Each new equation is written over the free unknowns; one of them
    (the one in fewest expressions so far, then the largest coefficient, then the lowest index: the
    same choice on every run) is solved for and substituted into every expression that holds it. An
    equation left with no unknown is implied by the others up to rounding and is dropped.
    """

    def __init__(self) -> None:
        self.expression: dict[int, tuple[float, dict[int, float]]] = {}
        self.used_in: dict[int, set[int]] = {}

    def add(self, unknowns: list[int], coefs: list[float], target: float) -> None:
        constant = 0.0
        terms: dict[int, float] = {}
        for v, coef in zip(unknowns, coefs, strict=True):
            if v in self.expression:
                value, rest = self.expression[v]
                constant += coef * value
                for w, d in rest.items():
                    terms[w] = terms.get(w, 0.0) + coef * d
            else:
                terms[v] = terms.get(v, 0.0) + coef
        terms = {v: coef for v, coef in terms.items() if abs(coef) > _ZERO}
        if not terms:
            return
        pivot = min(terms, key=lambda v: (len(self.used_in.get(v, ())), -abs(terms[v]), v))
        scale = terms.pop(pivot)
        value = (target - constant) / scale
        rest = {w: -d / scale for w, d in terms.items()}
        for u in sorted(self.used_in.pop(pivot, ())):
            self._substitute(u, pivot, value, rest)
        self.expression[pivot] = (value, rest)
        for w in rest:
            self.used_in.setdefault(w, set()).add(pivot)

    def _substitute(self, u: int, pivot: int, value: float, rest: dict[int, float]) -> None:
        """Replace ``λ_pivot = value + Σ rest`` in the expression of ``u``."""
        u_value, u_rest = self.expression[u]
        share = u_rest.pop(pivot)
        for w, d in rest.items():
            coef = u_rest.get(w, 0.0) + share * d
            if abs(coef) > _ZERO:
                u_rest[w] = coef
                self.used_in.setdefault(w, set()).add(u)
            else:
                u_rest.pop(w, None)
                self.used_in.get(w, set()).discard(u)
        self.expression[u] = (u_value + share * value, u_rest)


class ParamFace:
    """The face over ``θ``: what its inequalities (and ``λ ≥ 0``) leave of ``θ``.

    A row over one ``θ`` is a bound on it (``floor ≤ θ ≤ ceiling``); rows over several couple them.
    ``θ`` that no row couples form components of their own: the interval of a ``θ`` alone is its two
    bounds, with no LP. Each component of coupled ``θ`` gets one small LP (:class:`_ComponentLP`).
    """

    def __init__(self, face: DualFace, param: Parametrization, equations: IntArray) -> None:
        self.param = param
        p = len(param.params)
        inequality = np.ones(face.A.shape[0], dtype=bool)
        inequality[equations] = False  # satisfied by construction
        a = face.A[inequality]
        shift = a @ param.beta
        rows = sp.vstack([(a @ param.N).tocsr(), param.N], format="csr")  # the face, then λ ≥ 0
        rows.data[np.abs(rows.data) <= _ZERO] = 0.0
        rows.eliminate_zeros()
        low = np.concatenate([face.low[inequality] - shift, -param.beta])
        high = np.concatenate([face.high[inequality] - shift, np.full(len(param.beta), np.inf)])
        counts = np.diff(rows.indptr)
        one = np.flatnonzero(counts == 1)
        var, coef = rows.indices[rows.indptr[one]], rows.data[rows.indptr[one]]
        # No coefficient is zero here (those at or below _ZERO were dropped), so each division is a
        # number or an infinite end that stays infinite.
        lower = np.where(coef > 0, low[one], high[one]) / coef
        upper = np.where(coef > 0, high[one], low[one]) / coef
        self.floor = np.full(p, -np.inf)
        self.ceiling = np.full(p, np.inf)
        np.maximum.at(self.floor, var, lower)
        np.minimum.at(self.ceiling, var, upper)
        crossed = self.floor > self.ceiling
        if np.any(self.floor - self.ceiling > FACE_TOL * (1 + np.abs(self.floor))):
            raise SolverError("the optimal dual face is empty: a price's bounds cross")
        # Crossed by rounding only: the two ends are one value.
        self.floor[crossed] = self.ceiling[crossed] = (self.floor[crossed] + self.ceiling[crossed]) / 2
        several = counts >= 2  # noqa: PLR2004 - a row over two or more θ couples them
        self.coupling = rows[several]
        self.coupling_low, self.coupling_high = low[several], high[several]
        # θ and coupling rows as one graph (a row joins the θ it holds): its components.
        entries = self.coupling.tocoo()
        vertices = p + self.coupling.shape[0]
        graph = sp.coo_array(
            (np.ones(entries.nnz, dtype=np.int8), (p + entries.row, entries.col)), shape=(vertices, vertices)
        )
        _, label = connected_components(graph, directed=False)
        self.component = label[:p]
        self.size = np.bincount(self.component, minlength=int(label.max(initial=0)) + 1)[self.component]
        self.row_component = self.component[self.coupling.indices[self.coupling.indptr[:-1]]]
        self._lps: dict[int, _ComponentLP] = {}

    def lp(self, component: int) -> _ComponentLP:
        if component not in self._lps:
            members = np.flatnonzero(self.component == component)
            rows = np.flatnonzero(self.row_component == component)
            self._lps[component] = _ComponentLP(
                members,
                self.coupling[rows][:, members].tocsc(),
                self.floor[members],
                self.ceiling[members],
                self.coupling_low[rows],
                self.coupling_high[rows],
            )
        return self._lps[component]

    def point(self) -> FloatArray:
        """One ``θ`` of the face: a ``θ`` alone at its floor; a component's ``θ`` where the LP that
        pushes them all down left them."""
        theta = self.floor.copy()
        for component in np.unique(self.component[self.size > 1]).tolist():
            lp = self.lp(component)
            theta[lp.members] = lp.pushed()[0]
        return theta

    def interval(self, unknown: int) -> tuple[float, float]:
        """``min λ`` and ``max λ`` of one unknown over the face (``inf`` if unbounded above)."""
        start, end = self.param.N.indptr[unknown], self.param.N.indptr[unknown + 1]
        params = self.param.N.indices[start:end].astype(np.int64)
        coefs = self.param.N.data[start:end]
        beta = float(self.param.beta[unknown])
        if len(params) == 1:
            k, coef = int(params[0]), float(coefs[0])
            if self.size[k] == 1:
                low, high = float(self.floor[k]), float(self.ceiling[k])
            else:
                low, high = self.lp(int(self.component[k])).param_interval(k)
            ends = (coef * low, coef * high) if coef > 0 else (coef * high, coef * low)
            return beta + ends[0], beta + ends[1]
        # λ ≥ 0 couples every θ of one λ, so they share a component.
        low, high = self.lp(int(self.component[params[0]])).form_interval(params, coefs)
        return beta + low, beta + high


class _ComponentLP:
    """One component of coupled ``θ``: ``floor ≤ θ ≤ ceiling``, ``low ≤ C θ ≤ high``, in one HiGHS
    instance that each extreme re-solves warm with a new objective."""

    def __init__(
        self,
        members: IntArray,
        c: sp.csc_matrix,
        floor: FloatArray,
        ceiling: FloatArray,
        low: FloatArray,
        high: FloatArray,
    ) -> None:
        self.members = members
        self.position = {int(k): i for i, k in enumerate(members.tolist())}
        self.floor, self.ceiling = floor, ceiling
        n = len(members)
        # The primal simplex: each new objective starts from a feasible point.
        self.highs = quiet_highs({"presolve": "off", "simplex_strategy": 4})
        inf = highspy.kHighsInf
        self.highs.passModel(
            highs_lp(
                c,
                np.zeros(n),
                np.where(np.isfinite(floor), floor, -inf),
                np.where(np.isfinite(ceiling), ceiling, inf),
                np.where(np.isfinite(low), low, -inf),
                np.where(np.isfinite(high), high, inf),
            )
        )
        self._pushed: tuple[FloatArray, FloatArray | None] | None = None

    def _optimum(self, cost: FloatArray) -> FloatArray | None:
        """``argmin cost·θ``; None if unbounded."""
        n = len(cost)
        self.highs.changeColsCost(n, np.arange(n, dtype=np.int32), cost)
        self.highs.run()
        status = self.highs.getModelStatus()
        if status in (highspy.HighsModelStatus.kUnbounded, highspy.HighsModelStatus.kUnboundedOrInfeasible):
            # Feasible: the first optimum (all θ pushed down, bounded by λ ≥ 0) proved it.
            return None
        if status != highspy.HighsModelStatus.kOptimal:
            raise SolverError(f"price interval LP ended with {self.highs.modelStatusToString(status)}")
        return np.asarray(self.highs.getSolution().col_value, dtype=np.float64)

    def param_interval(self, k: int) -> tuple[float, float]:
        """``θ_k``'s interval. Two LPs (once per component) first push all ``θ`` down and all up; an
        end such an optimum leaves on the ``θ``'s own bound is that bound exactly, with no LP."""
        down, up = self.pushed()
        i = self.position[k]
        floor, ceiling = float(self.floor[i]), float(self.ceiling[i])
        low = floor if down[i] <= floor + _settled(floor) else self._end(i, 1.0)
        high = ceiling if up is not None and up[i] >= ceiling - _settled(ceiling) else self._end(i, -1.0)
        return low, max(high, low)

    def pushed(self) -> tuple[FloatArray, FloatArray | None]:
        """The optima of ``min Σ θ`` and ``max Σ θ`` (None if unbounded), solved once."""
        if self._pushed is None:
            n = len(self.floor)
            down = self._optimum(np.ones(n))
            if down is None:
                raise SolverError("price interval LP is unbounded below, but every price is at least 0")
            self._pushed = (down, self._optimum(-np.ones(n)))
        return self._pushed

    def _end(self, i: int, sign: float) -> float:
        cost = np.zeros(len(self.floor))
        cost[i] = sign
        x = self._optimum(cost)
        return np.inf if x is None else float(x[i])

    def form_interval(self, params: IntArray, coefs: FloatArray) -> tuple[float, float]:
        cost = np.zeros(len(self.floor))
        cost[[self.position[int(k)] for k in params.tolist()]] = coefs
        low = self._optimum(cost)
        high = self._optimum(-cost)
        if low is None:
            raise SolverError("price interval LP is unbounded below, but every price is at least 0")
        return float(cost @ low), np.inf if high is None else float(cost @ high)


def _settled(bound: float) -> float:
    """How close an optimum must come to a bound to have reached it (the LP's feasibility tolerance);
    an infinite bound is never reached."""
    return 1e-6 * (1 + abs(bound)) if np.isfinite(bound) else -np.inf


@dataclass
class RowPrices:
    prices: FloatArray
    """The price of every relief row by the rule above (0 for other rows: a storage or minimum
    fraction row has no price)."""
    degenerate: bool
    """Whether any relief row's dual was not unique."""


def _parametrized(
    model: LinearModel, solution: Solution, lb: FloatArray, ub: FloatArray
) -> tuple[DualFace, Parametrization, ParamFace | None]:
    """The dual face of ``solution``, its equations solved, and the rest over ``θ`` (None if the
    equations fix every unknown)."""
    face = DualFace.of(model, solution.v, lb, ub)
    equations, target = face.equations()
    param = Parametrization.of(face.A[equations], target)
    return face, param, ParamFace(face, param, equations) if len(param.params) else None


def row_prices(model: LinearModel, solution: Solution, lb: FloatArray, ub: FloatArray) -> RowPrices:
    face, param, param_face = _parametrized(model, solution, lb, ub)
    value = np.where(np.diff(param.N.indptr) == 0, param.beta, np.nan)
    free = np.flatnonzero(np.isnan(value) & (model.row_kind[face.rows] == RELIEF))
    for unknown in free.tolist():
        assert param_face is not None  # noqa: S101 - a free unknown is written over some θ
        low, high = param_face.interval(unknown)
        # No upper end: nothing can relieve the row at the margin (demand left unmet, or opposing
        # requests at one point). Its price is then the lowest valid one.
        value[unknown] = low if np.isinf(high) else (low + high) / 2
    relief = model.row_kind[face.rows] == RELIEF
    prices = np.zeros(model.G.shape[0])
    prices[face.rows[relief]] = np.maximum(value[relief], 0.0)
    return RowPrices(prices=prices, degenerate=bool(len(free)))


def optimal_dual(model: LinearModel, solution: Solution, lb: FloatArray, ub: FloatArray) -> FloatArray:
    """One optimal dual for every row, exact to rounding: a point of the face of ``solution`` (each
    free ``θ`` at its lowest, pushed down together within a component), found from the bids, not
    read from the solver. Complementary slackness with it describes the optimal primal face exactly.
    No price interval is computed."""
    face, param, param_face = _parametrized(model, solution, lb, ub)
    point = param.beta if param_face is None else param.beta + param.N @ param_face.point()
    dual = np.zeros(model.G.shape[0])
    dual[face.rows] = np.maximum(point, 0.0)
    return dual


def reduced_costs(model: LinearModel, duals: FloatArray) -> FloatArray:
    return np.asarray(model.c - model.G.T @ duals, dtype=np.float64)
