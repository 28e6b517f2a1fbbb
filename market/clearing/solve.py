"""Solving a :class:`LinearModel` with cvxpy: the LP, the MILP, and the LP with integers fixed."""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from market.clearing.model import FloatArray, LinearModel

DEFAULT_SOLVER = "HIGHS"
LP_SOLVERS = ("HIGHS", "CLARABEL")
HIGHS_OPTIONS = {"presolve": "off"}
"""HiGHS's presolve spends most of a clearing LP's time looking for reductions in thousands of
columns that differ only in cost and bound (0.5 s of 0.6 s for 11,000 offers in one ISP), and the
simplex needs no help with a few dozen rows."""


class SolverError(RuntimeError):
    """The solver failed or reported the problem infeasible or unbounded (which a valid book never is)."""


@dataclass
class Solution:
    v: FloatArray
    duals: FloatArray
    objective: float


def solve(
    model: LinearModel,
    solver: str = DEFAULT_SOLVER,
    *,
    objective: FloatArray | None = None,
    extra_rows: tuple[FloatArray, float] | None = None,
    integer: bool = False,
    lb: FloatArray | None = None,
    ub: FloatArray | None = None,
) -> Solution:
    """``max objective·v`` over the model's constraints (plus one optional row ``g·v ≤ h``).

    ``integer`` keeps the binaries integral (MILP, HiGHS only); otherwise the LP relaxation of the
    given bounds is solved and duals of ``G v ≤ h`` are returned.
    """
    c = model.c if objective is None else objective
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
    if extra_rows is not None:
        g, h = extra_rows
        constraints.append(g @ v <= h)
    problem = cp.Problem(cp.Maximize(c @ v), constraints)
    options: dict[str, object] = dict(HIGHS_OPTIONS) if solver == "HIGHS" else {}
    try:
        problem.solve(solver=solver, verbose=False, **options)
    except cp.error.SolverError as exc:
        raise SolverError(f"{solver} failed: {exc}") from exc
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or v.value is None:
        raise SolverError(f"{solver} ended with status {problem.status}")
    duals = np.zeros(model.G.shape[0])
    if relief is not None and not integer and relief.dual_value is not None:
        duals = np.maximum(np.asarray(relief.dual_value, dtype=np.float64).reshape(-1), 0.0)
    return Solution(v=np.asarray(v.value, dtype=np.float64).reshape(-1), duals=duals, objective=float(problem.value))
