"""What the engine is compared with: HiGHS called directly on the same matrices, and the per-offer
cvxpy model a user would write by hand.

* :func:`highs_on_engine_models`: the engine's own components and :func:`build_model` matrices
  (built once, not timed), each passed to ``highspy.Highs`` directly and solved once: the floor.
* :func:`highs_on_direct_models`: the same LP per ISP built straight from the book's numpy columns
  (:func:`direct_models`), for books without linking offers. It is the floor for a size whose
  engine models are too slow to build; on the smaller sizes it is checked against the engine's.
* :func:`naive_cvxpy`: one ``cp.Variable`` per offer and tranche over the offer's ISPs, its bounds
  and storage rows added offer by offer, one relief constraint per congestion point and ISP summing
  the offers' variables in Python loops, the whole day as one problem, solved with HiGHS.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cvxpy as cp
import highspy
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from benchmarks.clearing_books import N_ISPS, Columns
from market.clearing import engine
from market.clearing.book import UP, OrderBook
from market.clearing.decompose import isp_components
from market.clearing.model import FlatBook, LinearModel, build_model
from market.clearing.solve import highs_options

FloatArray = npt.NDArray[np.float64]


# -- the engine's components, as clear() makes them ----------------------------------------------


def engine_components(book: OrderBook) -> Iterator[FlatBook]:
    """The components ``clear(book)`` solves, made with the engine's own helpers (the first lines
    of :func:`market.clearing.engine.clear`)."""
    columns = engine._Columns.of(book)
    components = isp_components(len(book.isps), columns.offers)
    component_of = np.empty(len(book.isps), dtype=np.int64)
    for c, isps in enumerate(components):
        component_of[isps] = c
    for component in columns.components(components, component_of, book.isp_hours):
        if component.n_requests and component.n_offers:
            yield component


# -- raw HiGHS -----------------------------------------------------------------------------------


@dataclass
class HighsTimes:
    """Seconds spent per step, summed over the LPs, and what was solved."""

    pass_model: float = 0.0
    run: float = 0.0
    get_solution: float = 0.0
    lps: int = 0
    milps: int = 0
    rows: int = 0
    cols: int = 0
    nonzeros: int = 0
    objective: float = 0.0
    setup: float = 0.0
    """Building the matrices (not part of the floor)."""
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.pass_model + self.run + self.get_solution

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_s": self.total,
            "pass_model_s": self.pass_model,
            "run_s": self.run,
            "get_solution_s": self.get_solution,
            "lps": self.lps,
            "milps": self.milps,
            "rows": self.rows,
            "cols": self.cols,
            "nonzeros": self.nonzeros,
            "objective": self.objective,
            "setup_not_timed_s": self.setup,
            "statuses": self.statuses,
        }


def _highs_lp(
    c: FloatArray, lb: FloatArray, ub: FloatArray, G: sp.csr_matrix, h: FloatArray, integer: npt.NDArray[np.bool_]
) -> highspy.HighsLp:
    """``max c·v, G v ≤ h, lb ≤ v ≤ ub`` as a HighsLp, the matrix passed row-wise as it is (CSR)."""
    m, n = G.shape
    lp = highspy.HighsLp()
    lp.num_col_ = n
    lp.num_row_ = m
    lp.sense_ = highspy.ObjSense.kMaximize
    lp.col_cost_ = c
    lp.col_lower_ = lb
    lp.col_upper_ = ub
    lp.row_lower_ = np.full(m, -highspy.kHighsInf)
    lp.row_upper_ = h
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.num_col_ = n
    lp.a_matrix_.num_row_ = m
    lp.a_matrix_.start_ = G.indptr.astype(np.int32)
    lp.a_matrix_.index_ = G.indices.astype(np.int32)
    lp.a_matrix_.value_ = G.data
    if integer.any():
        lp.integrality_ = [
            highspy.HighsVarType.kInteger if flag else highspy.HighsVarType.kContinuous for flag in integer.tolist()
        ]
    return lp


def _highs(rows: int, columns: int) -> highspy.Highs:
    """A HiGHS instance with the engine's options for an LP of this shape
    (:func:`market.clearing.solve.highs_options`), so the floor is HiGHS at its best on these LPs: its
    presolve would add more than the solve itself, and its simplex stalls on the widest ones."""
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    for name, value in highs_options(rows, columns).items():
        highs.setOptionValue(name, value)
    return highs


def _solve_highs(
    times: HighsTimes,
    c: FloatArray,
    lb: FloatArray,
    ub: FloatArray,
    G: sp.csr_matrix,
    h: FloatArray,
    integer: npt.NDArray[np.bool_],
) -> tuple[FloatArray, FloatArray]:
    """One LP (or a MILP, then the LP with the integers fixed, as the engine does): timed from the
    arrays to the primal values and the row duals."""
    start = time.perf_counter()
    highs = _highs(*G.shape)
    highs.passModel(_highs_lp(c, lb, ub, G, h, integer))
    passed = time.perf_counter()
    highs.run()
    ran = time.perf_counter()
    if integer.any():
        fixed = np.round(np.asarray(highs.getSolution().col_value)[integer])
        lb, ub = lb.copy(), ub.copy()
        lb[integer], ub[integer] = fixed, fixed
        highs = _highs(*G.shape)
        highs.passModel(_highs_lp(c, lb, ub, G, h, np.zeros(len(c), dtype=bool)))
        times.milps += 1
        passed2 = time.perf_counter()
        highs.run()
        ran2 = time.perf_counter()
        times.pass_model += passed2 - ran
        times.run += ran2 - passed2
        ran = ran2
    solution = highs.getSolution()
    v = np.asarray(solution.col_value)
    duals = np.asarray(solution.row_dual)
    status = highs.modelStatusToString(highs.getModelStatus())
    objective = highs.getInfo().objective_function_value
    done = time.perf_counter()
    times.pass_model += passed - start
    times.run += ran - passed
    times.get_solution += done - ran
    times.lps += 1
    times.rows += G.shape[0]
    times.cols += G.shape[1]
    times.nonzeros += G.nnz
    times.objective += objective
    times.statuses[status] = times.statuses.get(status, 0) + 1
    return v, duals


def highs_on_engine_models(book: OrderBook) -> HighsTimes:
    """Every component's :class:`LinearModel` (built by the engine, not timed), solved by HiGHS."""
    times = HighsTimes()
    components = engine_components(book)
    while True:
        start = time.perf_counter()
        component = next(components, None)
        if component is None:
            times.setup += time.perf_counter() - start
            break
        model: LinearModel = build_model(component)
        times.setup += time.perf_counter() - start
        _solve_highs(times, model.c, model.lb, model.ub, model.G, model.h, model.integer)
    return times


def direct_models(cols: Columns) -> Iterator[tuple[FloatArray, FloatArray, FloatArray, sp.csr_matrix, FloatArray]]:
    """Per ISP, the engine's LP for a book without linking offers, straight from the columns::

        max Σ value·y − Σ price·x   s.t.   Σ_{r at c} y_r − Σ_o S[c_o, c]·dir_o·x_o ≤ 0  per (c, t) with requests,
        0 ≤ x[o,k,t] ≤ share_k·kW[o,t],  0 ≤ y[r,t] ≤ kW[r,t]

    (all requests are upward). Yields ``(c, lb, ub, G, h)``.
    """
    if cols.capacity is not None:
        raise ValueError("storage offers link ISPs: use the engine's models")
    e_offer, e_isp, e_kw = cols.entries()
    order = np.argsort(e_isp, kind="stable")
    e_offer, e_isp, e_kw = e_offer[order], e_isp[order], e_kw[order]
    e_bounds = np.searchsorted(e_isp, np.arange(N_ISPS + 1))
    r_order = np.argsort(cols.request_isp, kind="stable")
    r_bounds = np.searchsorted(cols.request_isp[r_order], np.arange(N_ISPS + 1))
    relief = sp.csr_matrix(cols.grid.relief_matrix)
    n_points = relief.shape[0]
    share2 = np.round(1 - cols.share1, 1)
    for t in range(N_ISPS):
        offer = e_offer[e_bounds[t] : e_bounds[t + 1]]
        kw = e_kw[e_bounds[t] : e_bounds[t + 1]]
        req = r_order[r_bounds[t] : r_bounds[t + 1]]
        if len(offer) == 0 or len(req) == 0:
            continue
        two = cols.two[offer]
        x_offer = np.concatenate([offer, offer[two]])
        x_ub = np.concatenate([cols.share1[offer] * kw, share2[offer[two]] * kw[two]])
        x_cost = -np.concatenate([cols.price1[offer], cols.price2[offer[two]]])
        n_x, n_y = len(x_offer), len(req)
        # Rows: the points with a request at t.
        row_points, y_row = np.unique(cols.request_point[req], return_inverse=True)
        row_of_point = np.full(n_points, -1, dtype=np.int64)
        row_of_point[row_points] = np.arange(len(row_points))
        # x entries: every target the offer's feeder relieves that has a row.
        source = cols.offer_point[x_offer]
        counts = np.diff(relief.indptr)[source]
        x_rep = np.repeat(np.arange(n_x), counts)
        within = np.arange(len(x_rep)) - np.repeat(np.cumsum(counts) - counts, counts)
        at = relief.indptr[source][x_rep] + within
        x_row = row_of_point[relief.indices[at]]
        keep = x_row >= 0
        x_val = -(cols.direction[x_offer][x_rep] * relief.data[at])
        rows = np.concatenate([x_row[keep], y_row])
        columns = np.concatenate([x_rep[keep], n_x + np.arange(n_y)])
        values = np.concatenate([x_val[keep], np.ones(n_y)])
        G = sp.csr_matrix((values, (rows, columns)), shape=(len(row_points), n_x + n_y))
        c = np.concatenate([x_cost, cols.request_value[req]])
        ub = np.concatenate([x_ub, cols.request_kw[req]])
        yield c, np.zeros(n_x + n_y), ub, G, np.zeros(len(row_points))


def highs_on_direct_models(cols: Columns, progress: Callable[[str], None] | None = None) -> HighsTimes:
    times = HighsTimes()
    models = direct_models(cols)
    t = 0
    while True:
        start = time.perf_counter()
        model = next(models, None)
        times.setup += time.perf_counter() - start
        if model is None:
            break
        c, lb, ub, G, h = model
        _solve_highs(times, c, lb, ub, G, h, np.zeros(len(c), dtype=bool))
        t += 1
        if progress is not None and t % 24 == 0:
            progress(f"    direct HiGHS: {t} ISPs, {times.total:.1f} s in HiGHS")
    return times


# -- the per-offer cvxpy model ----------------------------------------------------------------------


def naive_cvxpy(book: OrderBook, solver: str = "HIGHS") -> dict[str, Any]:
    """The straightforward model (module docstring): build, solve, read the relief duals."""
    start = time.perf_counter()
    targets: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for (source, target), factor in book.relief.items():
        targets[source].append((target, factor))
    constraints: list[cp.Constraint] = []
    costs: list[cp.Expression] = []
    relief: dict[tuple[str, int], list[cp.Expression]] = defaultdict(list)
    for offer in book.offers:
        q = np.asarray(offer.quantities_kw)
        parts = []
        for share, price in offer.tranches:
            x = cp.Variable(len(q), nonneg=True)
            constraints.append(x <= share * q)
            costs.append(price * cp.sum(x))
            parts.append(x)
        kw = parts[0] if len(parts) == 1 else sum(parts[1:], parts[0])
        if offer.storage is not None:
            s = offer.storage
            per_kw = book.isp_hours / s.efficiency if offer.direction == UP else book.isp_hours * s.efficiency
            budget = s.initial_kwh if offer.direction == UP else s.capacity_kwh - s.initial_kwh
            constraints.append(per_kw * cp.cumsum(kw) <= budget)
        for j, quantity in enumerate(offer.quantities_kw):
            if quantity <= 0:
                continue
            for target, factor in targets[offer.congestion_point]:
                # kW relieving ``target`` upward (a downward offer counts against it).
                relief[(target, offer.first_isp + j)].append(factor * offer.direction * kw[j])
    values: list[cp.Expression] = []
    asked: dict[tuple[str, int, int], list[cp.Expression]] = defaultdict(list)
    for request in book.requests:
        y = cp.Variable(len(request.quantities_kw), nonneg=True)
        constraints.append(y <= np.asarray(request.quantities_kw))
        values.append(request.value_per_mwh * cp.sum(y))
        for j in range(len(request.quantities_kw)):
            asked[(request.congestion_point, request.first_isp + j, request.direction)].append(y[j])
    rows = []
    for (point, isp, direction), ys in asked.items():
        offered = relief.get((point, isp), [])
        row = cp.sum(ys) <= (direction * cp.sum(offered) if offered else 0)
        rows.append(row)
    constraints += rows
    problem = cp.Problem(cp.Maximize(cp.sum(values) - cp.sum(costs)), constraints)
    built = time.perf_counter()
    problem.solve(solver=solver)
    solved = time.perf_counter()
    duals = np.asarray([float(row.dual_value) for row in rows])
    done = time.perf_counter()
    return {
        "total_s": done - start,
        "build_s": built - start,
        "solve_s": solved - built,
        "compile_s": problem.compilation_time,
        "solver_interface_s": problem._solve_time,
        "duals_s": done - solved,
        "status": problem.status,
        "objective": float(problem.value),
        "variables": len(problem.variables()),
        "constraints": len(constraints),
        "relief_rows": len(rows),
        "max_relief_dual": float(duals.max()) if len(duals) else 0.0,
    }
