"""Edge cases of pricing, tolerances and exact money that a review of the columnar engine found
(each failed before its fix). Expected values are worked out by hand in each docstring."""

from __future__ import annotations

import math
from decimal import Decimal

import cvxpy as cp
import numpy as np
import pytest

from market.clearing.book import DOWN, Storage
from market.clearing.decompose import isp_components
from market.clearing.engine import _Columns, _tie_break, clear, solved_components
from market.clearing.model import X
from market.clearing.pricing import optimal_dual
from market.clearing.solve import SolverError
from tests.unit.clearing.builders import book, offer, points, request


def test_a_price_tied_to_one_without_upper_end_takes_its_lower_end():
    """O (F1 up, 10 kW at 10) would relieve F1 but worsens T's down row by 0.5 per kW, which nothing
    can relieve, so nothing is accepted. Dual face: λ_F1 ≥ 100 (Rup unmet), λ_T ≥ 50 (Rdown unmet),
    λ_F1 ≤ 10 + 0.5 λ_T (O rejected). Neither has an upper end: each takes its lowest valid value,
    λ_F1 = 100 and λ_T = 2 (100 − 10) = 180, never a number near the LP's artificial cap."""
    relief = {("F1", "F1"): 1.0, ("F1", "T"): 0.5, ("T", "T"): 1.0}
    result = clear(
        book(
            [offer("O", "F1", 10.0, 10.0)],
            [request("Rup", "F1", 10.0, 100.0), request("Rdown", "T", 10.0, 50.0, direction=DOWN)],
            relief=relief,
        )
    )
    prices = {key: value[3] for key, value in points(result).items()}
    assert prices == {("F1", 0, 1): Decimal("100.0000"), ("T", 0, -1): Decimal("180.0000")}
    assert result.awards == ()


def test_opposing_requests_do_not_make_huge_prices():
    """U (F2 up) and D (F1 down) both relieve T at 0.8 per kW; T has an up and a down request. Every
    price stays between the bids (10-20) and the values (60-100), and U and D are paid that."""
    relief = {("T", "T"): 1.0, ("F1", "F1"): 1.0, ("F1", "T"): 0.8, ("F2", "F2"): 1.0, ("F2", "T"): 0.8}
    result = clear(
        book(
            [offer("U", "F2", 20.0, 10.0, submitted=2), offer("D", "F1", 7.5, 20.0, direction=DOWN, submitted=3)],
            [
                request("Rtd", "T", 15.0, 60.0, direction=DOWN, submitted=5),
                request("Rf2", "F2", 5.0, 100.0, submitted=1),
                request("Rtu", "T", 5.0, 100.0, submitted=2),
            ],
            relief=relief,
        )
    )
    assert all(p.price_per_mwh < 1000 for p in result.points)
    assert {a.offer_id: a.price_per_mwh for a in result.awards} == {
        "D": (Decimal("20.0000"),),
        "U": (Decimal("10.0000"),),
    }


def test_storage_with_energy_left_is_the_marginal_offer():
    """S can discharge 1,000 kWh, 4,000 kW over a 15-minute ISP; 3,999 kW are asked, so 0.25 kWh is
    left: the storage row is slack (a large kWh budget must not widen "binding") and S, accepted
    in part, sets the price: 20."""
    result = clear(
        book(
            [offer("S", "F1", 5000.0, 20.0, storage=Storage(capacity_kwh=2000.0, initial_kwh=1000.0))],
            [request("R", "F1", 3999.0, 100.0)],
        )
    )
    assert points(result)[("F1", 0, 1)][3] == Decimal("20.0000")


def test_a_block_accepted_to_999_7_of_1000_kw_is_marginal():
    """Activation 0.9997 is 0.3 kW from full: the half-watt tolerance is in kW, not in activation."""
    result = clear(book([offer("B", "F1", 1000.0, 20.0, block=True)], [request("R", "F1", 999.7, 100.0)]))
    assert points(result)[("F1", 0, 1)][3] == Decimal("20.0000")


def test_welfare_uses_the_offered_quantity_exactly():
    """q = 0.11699999999999999 kW (a float just under 0.117) at 10, for a request of 1 kW at 20,010.
    The award is published as 0.117 kW; its cost is min(0.117, q) × 10 = 1.1699999999999999, so
    welfare = (20,010 × 0.117 − 1.1699999999999999) × 0.25 / 1000 = 0.58500000000000000025 → 0.59."""
    q = math.nextafter(0.117, 0)
    result = clear(book([offer("O", "F1", q, 10.0)], [request("R", "F1", 1.0, 20010.0)]))
    assert result.welfare == Decimal("0.59")


def test_prices_are_rounded_from_the_exact_decimal():
    """A vertical overlap between 10,000.000749 and 10,000.00075: midpoint 10,000.0007495, which
    rounds to 10,000.0007 (round to 6 decimals, then half-even to 4) in the point and the award."""
    result = clear(book([offer("O", "F1", 10.0, 10000.000749)], [request("R", "F1", 10.0, 10000.00075)]))
    assert points(result)[("F1", 0, 1)][3] == Decimal("10000.0007")
    assert result.awards[0].price_per_mwh == (Decimal("10000.0007"),)


def test_an_interval_end_is_exact_not_loosened_by_a_tolerance():
    """Block B (F2, 0.4 then 10 kW, at 50) relieves T at 0.3 per kW; R asks 5 kW at T in both ISPs
    for 20. B is rejected (its profile costs more than it earns). T's price at ISP 0 runs from 20
    (R unmet) to where B would break even with λ_1 = 20: 0.3·(0.4 λ_0 + 10·20) = 50·10.4, so
    λ_0 = (520 − 60)/0.12 = 3,833.33…; the midpoint is 1,926.6667."""
    relief = {("T", "T"): 1.0, ("F2", "F2"): 1.0, ("F2", "T"): 0.3}
    result = clear(
        book(
            [offer("B", "F2", (0.4, 10.0), 50.0, block=True)],
            [request("R", "T", (5.0, 5.0), 20.0)],
            relief=relief,
            n_isps=2,
        )
    )
    assert points(result)[("T", 0, 1)][3] == Decimal("1926.6667")


def test_tie_break_falls_back_to_welfare_held_when_the_face_is_empty():
    """A dual that no optimum satisfies (every row at 1,000,000: each request's column fixed at 0,
    each offer's at its full kW, rows held binding) leaves the face empty; the tie-break then holds
    welfare at the optimum's instead, and finds the same published solution as from the exact dual:
    the early offer first (5 kW), the late one for the last 1 kW."""
    b = book(
        [offer("late", "F1", 5.0, 80.0, submitted=2), offer("early", "F1", 5.0, 80.0, submitted=1)],
        [request("r1", "F1", 6.0, 150.0)],
    )
    columns = _Columns.of(b)
    components = isp_components(len(b.isps), columns.offers)
    ((component, model, optimum, lb, ub),) = list(solved_components(b, columns, components, "HIGHS"))
    exact = _tie_break(model, optimal_dual(model, optimum, lb, ub), optimum, lb, ub, component)
    bogus = _tie_break(model, np.full(model.G.shape[0], 1e6), optimum, lb, ub, component)
    assert np.allclose(bogus.v, exact.v, atol=1e-6)
    assert sorted(np.round(exact.v[model.col_kind == X], 6).tolist()) == [1.0, 5.0]
    early = model.col_order[model.col_kind == X][np.argmax(exact.v[model.col_kind == X])]
    assert component.offer(int(early)).id == "early"


def test_a_solver_error_status_is_the_engines_error(monkeypatch):
    """cvxpy reports a solver-error status (HiGHS kSolveError, Clarabel NumericalError) by raising its
    own SolverError from unpack_results; clear() turns it into the engine's SolverError, naming the
    solver. The status is injected: no small book makes HiGHS fail."""
    b = book([offer("o", "F1", 5.0, 80.0)], [request("r1", "F1", 6.0, 150.0)])

    def failing_unpack(self, solution, chain, inverse_data):
        raise cp.error.SolverError("Solver 'HIGHS' failed. Try another solver.")

    monkeypatch.setattr(cp.Problem, "unpack_results", failing_unpack)
    with pytest.raises(SolverError, match="HIGHS failed: Solver 'HIGHS' failed"):
        clear(b)
