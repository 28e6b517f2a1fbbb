"""Solving a :class:`LinearModel` with cvxpy: the LP, the MILP, and the LP with integers fixed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cvxpy as cp
import highspy
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from cvxpy.reductions.solvers.solving_chain import SolvingChain

from market.clearing.model import FloatArray, LinearModel

DEFAULT_SOLVER = "HIGHS"
LP_SOLVERS = ("HIGHS", "CLARABEL")
INTERIOR_POINT_MIN_COLUMNS = 50_000
INTERIOR_POINT_MIN_COLUMNS_PER_ROW = 1_000


def highs_options(rows: int, columns: int) -> dict[str, str]:
    """HiGHS options for an LP of this shape.

    * Presolve off: it spends most of a clearing LP's time looking for reductions among thousands of
      columns that differ only in cost and bound (0.5 s of 0.6 s for 11,000 offers in one ISP), and
      the solver needs no help with a few dozen rows.
    * Interior point for a very wide LP (one ISP with 100,000 offers: 110,000 columns, 60 rows): the
      dual simplex's ratio test then goes through tens of thousands of bounded columns per
      iteration, 2-8 s for 60 iterations on some ISPs, where the interior-point method (with
      crossover, so the result is still a vertex) takes 0.6-0.8 s on every one. Below 50,000
      columns, or with fewer columns per row (the storage day: 533,000 × 10,760; simplex 6.4 s,
      interior point 39 s), the simplex is faster.
    """
    options = {"presolve": "off"}
    if columns >= INTERIOR_POINT_MIN_COLUMNS and columns >= INTERIOR_POINT_MIN_COLUMNS_PER_ROW * max(rows, 1):
        options["solver"] = "ipm"
    return options


MILP_OPTIONS = {"mip_rel_gap": 0.0}
"""A MILP is solved to optimality, not to HiGHS's default 0.01 % gap: the tie-break among its
optima (:func:`solve_highs_mip`) must start from the best welfare, not from a welfare near it."""

CLARABEL_OPTIONS = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}
"""Tighter than Clarabel's defaults (1e-8): an interior-point optimum is read for its face (which
columns sit on a bound, to half a watt), and with requests of tens of thousands of kW a relative
1e-8 leaves columns watts off the bound they belong on."""


class SolverError(RuntimeError):
    """The solver failed or reported the problem infeasible or unbounded (which a valid book never is)."""


@dataclass
class Solution:
    v: FloatArray
    duals: FloatArray
    objective: float


@dataclass
class Compiled:
    """A model compiled by cvxpy for its solver, not yet solved: compiling is Python work, running
    is the solver's (HiGHS releases the GIL), so the two can run in different threads."""

    problem: cp.Problem
    v: cp.Variable
    relief: cp.Constraint | None
    integer: bool
    solver: str
    options: dict[str, object]
    data: dict[str, object]
    chain: SolvingChain
    inverse_data: object
    rows: int

    def run(self) -> Solution:
        """Solve; duals of ``G v ≤ h`` for an LP (zeros for a MILP)."""
        chain = self.chain
        try:
            raw = chain.solve_via_data(self.problem, self.data, False, False, self.options)
            # unpack_results raises cvxpy's SolverError for a solver-error status.
            self.problem.unpack_results(raw, chain, self.inverse_data)
        except cp.error.SolverError as exc:
            raise SolverError(f"{self.solver} failed: {exc}") from exc
        if self.problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or self.v.value is None:
            raise SolverError(f"{self.solver} ended with status {self.problem.status}")
        duals = np.zeros(self.rows)
        if self.relief is not None and not self.integer and self.relief.dual_value is not None:
            duals = np.maximum(np.asarray(self.relief.dual_value, dtype=np.float64).reshape(-1), 0.0)
        value = np.asarray(self.v.value, dtype=np.float64).reshape(-1)
        return Solution(v=value, duals=duals, objective=float(self.problem.value))


def compile_model(
    model: LinearModel,
    solver: str = DEFAULT_SOLVER,
    *,
    integer: bool = False,
    lb: FloatArray | None = None,
    ub: FloatArray | None = None,
) -> Compiled:
    """``max c·v`` over the model's constraints, formulated in cvxpy and compiled for ``solver``.

    ``integer`` keeps the binaries integral (MILP, HiGHS only); otherwise the LP relaxation of the
    given bounds is compiled, and :meth:`Compiled.run` returns duals of ``G v ≤ h``.
    """
    lower = model.lb if lb is None else lb
    upper = model.ub if ub is None else ub
    integral = np.flatnonzero(model.integer) if integer else np.zeros(0, dtype=np.int64)
    # Bounds as the variable's own bounds: HiGHS gets them as column bounds, not as 2n rows.
    v = cp.Variable(model.n, bounds=[lower, upper])
    constraints: list[cp.Constraint] = []
    if len(integral):
        # A separate integer variable tied to the binaries' columns (cvxpy's per-index integrality
        # is unreliable for several indices of a vector).
        z = cp.Variable(len(integral), integer=True)
        constraints.append(v[integral] == z)
    relief = None
    if model.G.shape[0]:
        relief = model.G @ v <= model.h
        constraints.insert(0, relief)
    problem = cp.Problem(cp.Maximize(model.c @ v), constraints)
    options: dict[str, object] = {}
    if solver == "HIGHS":
        options["highs_options"] = MILP_OPTIONS if integer else highs_options(model.G.shape[0], model.n)
    if solver == "CLARABEL":
        options.update(CLARABEL_OPTIONS)
    try:
        data, chain, inverse_data = problem.get_problem_data(solver, solver_opts=options)
    except cp.error.SolverError as exc:
        raise SolverError(f"{solver} failed: {exc}") from exc
    return Compiled(problem, v, relief, integer, solver, options, data, chain, inverse_data, model.G.shape[0])


def solve(
    model: LinearModel,
    solver: str = DEFAULT_SOLVER,
    *,
    integer: bool = False,
    lb: FloatArray | None = None,
    ub: FloatArray | None = None,
) -> Solution:
    """:func:`compile_model`, then :meth:`Compiled.run`: what ``cvxpy.Problem.solve`` does, in two steps."""
    return compile_model(model, solver, integer=integer, lb=lb, ub=ub).run()


def highs_lp(
    a: sp.csc_matrix,
    cost: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    row_lower: FloatArray,
    row_upper: FloatArray,
) -> highspy.HighsLp:
    """``min cost·x``, ``row_lower ≤ a x ≤ row_upper``, ``lower ≤ x ≤ upper`` as a HighsLp."""
    lp = highspy.HighsLp()
    lp.num_col_ = a.shape[1]
    lp.num_row_ = a.shape[0]
    lp.col_cost_ = cost
    lp.col_lower_ = lower
    lp.col_upper_ = upper
    lp.row_lower_ = row_lower
    lp.row_upper_ = row_upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = a.indptr
    lp.a_matrix_.index_ = a.indices
    lp.a_matrix_.value_ = a.data
    return lp


def quiet_highs(options: Mapping[str, object] | None = None) -> highspy.Highs:
    """A HiGHS instance that prints nothing, with ``options`` set."""
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    for name, value in (options or {}).items():
        highs.setOptionValue(name, value)
    return highs


def _run_to_optimum(highs: highspy.Highs, what: str) -> None:
    """Run HiGHS; anything but an optimum is a :class:`SolverError` naming ``what``."""
    highs.run()
    status = highs.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise SolverError(f"{what}: HiGHS ended with {highs.modelStatusToString(status)}")


REDUCED_COST_TOL = 1e-6
"""Absolute part of the tolerance under which a reduced cost or row dual counts as zero (HiGHS
stops at 1e-7 dual infeasibility; the relative part, 1e-9 of the cost, or of the largest cost for
a row, covers its rounding)."""


def solve_highs_lexicographic(
    g: sp.csr_matrix,
    objectives: list[FloatArray],
    row_lower: FloatArray,
    row_upper: FloatArray,
    lb: FloatArray,
    ub: FloatArray,
    what: str,
) -> FloatArray:
    """``max objectives[0]·v`` over ``row_lower ≤ g v ≤ row_upper`` and ``lb ≤ v ≤ ub``; among
    its optima, ``max objectives[1]·v``; and so on.

    Each next LP runs over the previous one's optimal face, read exactly from its optimal basis:
    columns with a non-zero reduced cost stay at their bound, rows with a non-zero dual stay at
    theirs. It starts from that basis, which is feasible there. When no non-basic column or row
    has a zero reduced cost or dual, the optimum is unique and the later objectives are not needed.
    """
    a = g.tocsc()
    inf = highspy.kHighsInf
    lb, ub = lb.copy(), ub.copy()
    row_lower = np.where(np.isfinite(row_lower), row_lower, -inf)
    row_upper = row_upper.copy()
    basis: highspy.HighsBasis | None = None
    for k, objective in enumerate(objectives):
        highs = quiet_highs(highs_options(a.shape[0], a.shape[1]))
        highs.passModel(highs_lp(a, -objective, lb, ub, row_lower, row_upper))
        if basis is not None:
            highs.setBasis(basis)  # refused (never seen): HiGHS solves this stage from scratch
        _run_to_optimum(highs, what)
        solution = highs.getSolution()
        v = np.asarray(solution.col_value, dtype=np.float64)
        if k == len(objectives) - 1:
            return v
        basis = highs.getBasis()
        basic = highspy.HighsBasisStatus.kBasic
        column_open = np.fromiter((s != basic for s in basis.col_status), dtype=bool, count=a.shape[1])
        row_open = np.fromiter((s != basic for s in basis.row_status), dtype=bool, count=a.shape[0])
        rc = np.asarray(solution.col_dual, dtype=np.float64)
        dual = np.asarray(solution.row_dual, dtype=np.float64)
        # Only non-basic entries sit on a bound; a basic one's reduced cost is zero up to noise.
        column_decided = column_open & (np.abs(rc) > REDUCED_COST_TOL + 1e-9 * np.abs(objective))
        row_decided = row_open & (np.abs(dual) > REDUCED_COST_TOL + 1e-9 * float(np.abs(objective).max(initial=0.0)))
        tied = (column_open & ~column_decided & (ub > lb)).any() or (
            row_open & ~row_decided & (row_upper > row_lower)
        ).any()
        if not tied:
            return v
        at_upper = np.abs(v - ub) < np.abs(v - lb)
        held = np.where(at_upper, ub, lb)[column_decided]
        lb[column_decided] = held
        ub[column_decided] = held
        activity = a @ v
        row_at_upper = np.abs(activity - row_upper) < np.abs(activity - row_lower)
        row_held = np.where(row_at_upper, row_upper, row_lower)[row_decided]
        row_lower[row_decided] = row_held
        row_upper[row_decided] = row_held
    raise ValueError("solve_highs_lexicographic needs at least one objective")


def solve_highs_mip(
    g: sp.csr_matrix,
    objective: FloatArray,
    row_upper: FloatArray,
    lb: FloatArray,
    ub: FloatArray,
    integer: npt.NDArray[np.bool_],
    what: str,
    start: FloatArray | None = None,
) -> FloatArray:
    """``max objective·v`` over ``g v ≤ row_upper``, ``lb ≤ v ≤ ub`` and ``v[integer]`` integral, to
    optimality (:data:`MILP_OPTIONS`), by HiGHS directly, from the feasible solution ``start`` if
    one is known (its first incumbent: branches that cannot beat it are cut at once)."""
    a = g.tocsc()
    inf = highspy.kHighsInf
    lp = highs_lp(a, -objective, lb, ub, np.full(a.shape[0], -inf), row_upper)
    lp.integrality_ = [highspy.HighsVarType.kInteger if flag else highspy.HighsVarType.kContinuous for flag in integer]
    highs = quiet_highs(MILP_OPTIONS)
    highs.passModel(lp)
    if start is not None:
        solution = highspy.HighsSolution()
        solution.col_value = np.where(integer, np.round(start), start)
        solution.value_valid = True
        highs.setSolution(solution)
    _run_to_optimum(highs, what)
    return np.asarray(highs.getSolution().col_value, dtype=np.float64)
