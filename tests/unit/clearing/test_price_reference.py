"""The engine's prices against the pricing rule computed the slow, direct way.

The rule (market/clearing/pricing.py): each relief row's price is the midpoint of ``[min λ_i,
max λ_i]`` over all optimal duals, or the lower end where there is no upper end. The engine finds
that set from complementary slackness, solves its equations by elimination and prices what is left
in small components. The reference here uses none of that: it writes the dual LP of the model in
full,

    min h·λ + ub·α − lb·β   s.t.   Gᵀλ + α − β = c,   λ, α, β ≥ 0,

solves it for its optimum, then minimises and maximises each relief row's ``λ_i`` over the duals
within a hair of that optimum: two LPs per row with scipy's HiGHS, over every column of the model.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given
from scipy.optimize import linprog

from market.clearing.book import OrderBook
from market.clearing.decompose import isp_components
from market.clearing.engine import _Columns, solved_components
from market.clearing.model import RELIEF, FloatArray, LinearModel
from market.clearing.pricing import optimal_dual, row_prices
from tests.unit.clearing.test_properties import PROPERTY_SETTINGS, random_books

OPTIMUM_SLACK = 1e-9
"""Relative: duals this close to the optimal dual objective count as optimal (the LP's own
tolerance makes an exact bound unusable)."""


def reference_prices(model: LinearModel, lb: FloatArray, ub: FloatArray) -> dict[int, float]:
    """Relief row → price by the rule, from the full dual LP."""
    m, n = model.G.shape
    equality = sp.hstack([model.G.T, sp.identity(n), -sp.identity(n)], format="csr")
    objective = np.concatenate([model.h, ub, -lb])
    bounds = [(0, None)] * (m + 2 * n)
    dual = linprog(objective, A_eq=equality, b_eq=model.c, bounds=bounds, method="highs")
    assert dual.status == 0, dual.message
    within = objective.reshape(1, -1), [dual.fun + OPTIMUM_SLACK * (1 + abs(dual.fun))]
    prices = {}
    for row in np.flatnonzero(model.row_kind == RELIEF).tolist():
        unit = np.zeros(m + 2 * n)
        unit[row] = 1.0
        ends = []
        for sign in (1.0, -1.0):
            end = linprog(sign * unit, A_ub=within[0], b_ub=within[1], A_eq=equality, b_eq=model.c, bounds=bounds)
            assert end.status in (0, 3), end.message  # 3: unbounded (no upper end)
            ends.append(np.inf if end.status == 3 else sign * end.fun)
        low, high = ends
        prices[row] = low if np.isinf(high) else (low + high) / 2
    return prices


def check_against_reference(book: OrderBook) -> None:
    columns = _Columns.of(book)
    components = isp_components(len(book.isps), columns.offers)
    for _, model, optimum, lb, ub in solved_components(book, columns, components, "HIGHS"):
        priced = row_prices(model, optimum, lb, ub)
        for row, expected in reference_prices(model, lb, ub).items():
            price = priced.prices[row]
            assert abs(price - expected) <= 1e-5 * (1 + abs(expected)), (row, price, expected)
        # The dual the tie-break uses is optimal: its Lagrangian bound h·λ + Σ max(rc·lb, rc·ub),
        # rc = c − Gᵀλ, is the optimal welfare (and λ ≥ 0).
        dual = optimal_dual(model, optimum, lb, ub)
        rc = model.c - model.G.T @ dual
        bound = model.h @ dual + np.maximum(rc * lb, rc * ub).sum()
        welfare = model.c @ optimum.v
        assert np.all(dual >= 0)
        assert abs(bound - welfare) <= 1e-6 * (1 + abs(welfare)), (bound, welfare)


@PROPERTY_SETTINGS
@given(random_books(all_or_nothing=False))
def test_prices_match_the_rule_computed_from_the_full_dual(book):
    check_against_reference(book)


@PROPERTY_SETTINGS
@given(random_books(all_or_nothing=True))
def test_prices_match_the_rule_with_all_or_nothing_offers(book):
    check_against_reference(book)
