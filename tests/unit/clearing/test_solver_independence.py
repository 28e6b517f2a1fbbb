"""Prices and quantities must not depend on the solver, nor on the order of the input (MARKET.md).

Degenerate books (flat and vertical overlaps, ties at several congestion points, several ISPs) are
cleared with HiGHS (simplex: a vertex) and Clarabel (interior point: the centre of the optimal
face); everything a participant is told must be identical, down to the result hash.
"""

from __future__ import annotations

import random

import pytest

from market.clearing.book import DOWN, OrderBook, PricingRule, Storage
from market.clearing.engine import clear
from tests.unit.clearing.builders import RADIAL, RADIAL3, book, offer, request, summary

MESHED = {("A", "A"): 1.0, ("A", "B"): 0.5, ("B", "B"): 1.0, ("B", "A"): 0.25}


def _books() -> dict[str, OrderBook]:
    return {
        "vertical_overlap": book(
            [offer("o1", "F1", 5, 50), offer("o2", "F1", 3, 80), offer("o3", "F1", 5, 200)],
            [request("r1", "F1", 8, 150)],
        ),
        "flat_overlap_two_offers": book(
            [offer("late", "F1", 5, 80, submitted=2), offer("early", "F1", 5, 80, submitted=1)],
            [request("r1", "F1", 6, 150)],
        ),
        "flat_overlap_three_offers_same_time_and_price": book(
            [offer(f"o{i}", "F1", 2, 80, submitted=5) for i in range(3)],
            [request("r1", "F1", 5, 150)],
        ),
        "flat_overlap_request_and_offer": book([offer("o1", "F1", 10, 80)], [request("r1", "F1", 5, 80)]),
        "offer_priced_at_request_value_and_vertical": book(
            [offer("o1", "F1", 4, 60), offer("o2", "F1", 2, 100)],
            [request("r1", "F1", 6, 100)],
        ),
        "ties_at_two_feeders": book(
            [
                offer("a1", "F1", 4, 60, submitted=2),
                offer("a2", "F1", 4, 60, submitted=1),
                offer("b1", "F2", 3, 50),
                offer("b2", "F2", 3, 90),
                offer("c1", "F3", 5, 70),
            ],
            [request("r1", "F1", 5, 100), request("r2", "F2", 3, 90), request("r3", "F3", 5, 70)],
            relief=RADIAL3,
        ),
        "tie_at_root_offers_at_two_feeders": book(
            [offer("a", "F1", 4, 60, submitted=2), offer("b", "F2", 4, 60, submitted=1), offer("c", "T", 2, 60)],
            [request("rT", "T", 6, 100)],
            relief=RADIAL,
        ),
        "all_or_nothing_tie": book(
            [offer(f"o{i}", "F1", 5, 80, submitted=9 - i, min_fraction=1.0) for i in range(3)],
            [request("r1", "F1", 10, 150)],
        ),
        "several_isps": book(
            [
                offer("o1", "F1", (5.0, 5.0, 5.0), 50, submitted=1),
                offer("o2", "F1", (5.0, 3.0, 5.0), 80, submitted=2),
                offer("o3", "F1", (0.0, 5.0, 5.0), 80, submitted=3),
            ],
            [request("r1", "F1", (8.0, 8.0, 12.0), 150)],
            n_isps=3,
        ),
        "both_directions": book(
            [
                offer("u1", "F1", 5, 40, submitted=1),
                offer("u2", "F1", 5, 40, submitted=2),
                offer("d1", "F2", 3, 30, direction=DOWN),
                offer("d2", "F2", 3, 45, direction=DOWN),
            ],
            [request("ru", "F1", 7, 90), request("rd", "F2", 6, 45, direction=DOWN)],
            relief=RADIAL,
        ),
        "tranches_flat_against_another_offer": book(
            [offer("t", "F1", 10, tranches=((0.5, 40.0), (0.5, 70.0)), submitted=2), offer("o", "F1", 4, 70)],
            [request("r1", "F1", 8, 100)],
        ),
        "meshed_vertical": book(
            [offer("oA", "A", 6, 30), offer("oB", "B", 2, 70)],
            [request("rB", "B", 5, 100)],
            relief=MESHED,
        ),
        "storage_interior": book(
            [offer("s", "F1", (4.0, 4.0), 30, storage=Storage(1.0, 1.0, 1.0))],
            [request("r0", "F1", 3, 100), request("r1", "F1", 3, 120, isp=1)],
            n_isps=2,
        ),
        "block_nondegenerate": book(
            [
                offer("blk", "F1", (4.0, 4.0), 50, block=True, rebound_isp=2, rebound_kw=(2.0,)),
                offer("d", "F1", 5, 60, isp=2),
            ],
            [request("r", "F1", (6.0, 6.0, 5.0), 100)],
            n_isps=3,
        ),
    }


def _known_bug_books() -> list:
    """Degenerate books on which the two solvers once disagreed (each was a bug, see the reasons)."""
    return [
        pytest.param(
            book(
                [offer("o1", "F1", 4, 60)],
                [request("rT", "T", 4, 100), request("rF", "F1", 4, 120)],
                relief=RADIAL,
            ),
            id="radial_feeder_and_root_both_exactly_met",
        ),
        pytest.param(
            book(
                [
                    offer("b", "F1", (4.0, 4.0), 50, block=True, rebound_isp=2, rebound_kw=(2.0,)),
                    offer("d", "F1", 5, 60, isp=2),
                ],
                [request("r", "F1", (4.0, 4.0, 5.0), 100)],
                n_isps=3,
            ),
            id="block_exactly_meets_two_isps",
        ),
        pytest.param(
            book(
                [offer("o1", "F1", 6, 50)],
                [request("r_late", "F1", 5, 100, submitted=2), request("r_early", "F1", 5, 100, submitted=1)],
            ),
            id="two_requests_tie_for_scarce_supply",
        ),
        pytest.param(
            book(
                [offer("s", "F1", (4.0, 4.0), 30, storage=Storage(1.0, 1.0, 1.0))],
                [request("r0", "F1", 4, 100), request("r1", "F1", 4, 120, isp=1)],
                n_isps=2,
            ),
            id="storage_all_in_one_isp",
        ),
        pytest.param(
            book(
                [offer("o1", "F1", 200, 50), offer("o2", "F1", 10, 100.01)],
                [request("r1", "F1", 300, 100)],
            ),
            id="offer_just_above_request_value",
        ),
        pytest.param(
            book(
                [offer("a", "F1", 2, 100), offer("b", "F2", 1000, 0)],
                [request("r1", "F1", 0.1, 200), request("r2", "F2", 1000, 200)],
                relief={("F1", "F1"): 1.0, ("F2", "F2"): 1.0},
            ),
            id="unique_price_next_to_a_degenerate_point",
        ),
    ]


@pytest.mark.parametrize("rule", list(PricingRule), ids=[r.value for r in PricingRule])
@pytest.mark.parametrize("name", list(_books()))
def test_highs_and_clarabel_agree(name, rule):
    b = _books()[name]
    b = OrderBook(b.isps, b.isp_hours, b.offers, b.requests, b.relief, rule)
    highs, clarabel = clear(b, "HIGHS"), clear(b, "CLARABEL")
    assert summary(highs) == summary(clarabel)
    assert highs.input_hash == clarabel.input_hash


@pytest.mark.parametrize("b", _known_bug_books())
def test_highs_and_clarabel_agree_known_bugs(b):
    assert summary(clear(b, "HIGHS")) == summary(clear(b, "CLARABEL"))


def _shuffled(b: OrderBook, rng: random.Random) -> OrderBook:
    offers, requests, relief = list(b.offers), list(b.requests), list(b.relief.items())
    rng.shuffle(offers)
    rng.shuffle(requests)
    rng.shuffle(relief)
    return OrderBook(b.isps, b.isp_hours, tuple(offers), tuple(requests), dict(relief), b.pricing_rule)


@pytest.mark.parametrize("solver", ["HIGHS", "CLARABEL"])
@pytest.mark.parametrize("name", list(_books()))
def test_result_does_not_depend_on_input_order(name, solver):
    b = _books()[name]
    reference = clear(b, solver)
    rng = random.Random(20270101)  # noqa: S311 - a fixed seed: reproducible permutations
    for _ in range(4):
        shuffled = _shuffled(b, rng)
        result = clear(shuffled, solver)
        assert summary(result) == summary(reference)
        assert result.input_hash == reference.input_hash


def test_input_hash_sees_a_changed_book():
    b = _books()["vertical_overlap"]
    changed = OrderBook(b.isps, b.isp_hours, b.offers, (request("r1", "F1", 8, 151),), b.relief)
    assert clear(b).input_hash != clear(changed).input_hash
    assert clear(b).result_hash != clear(changed).result_hash


def _storage_day(seed: int) -> OrderBook:
    """60 storage offers (and 20 plain ones) at three feeders over 8 ISPs, with requests at T and
    the feeders: scarce stored energy can serve any of an offer's ISPs, so the optimal face is wide
    (the shape of the benchmark's storage day, small). Before the tie-break read the optimal face
    from an exact dual, HiGHS and Clarabel split a storage offer's energy over different ISPs."""
    rng = random.Random(seed)  # noqa: S311 - a fixed seed: a reproducible book
    feeders = ["F1", "F2", "F3"]
    offers = []
    for i in range(80):
        kws = tuple(rng.choice([0.5, 1.0, 2.0, 3.5]) for _ in range(8))
        capacity = rng.choice([1.0, 2.0, 4.0])
        offers.append(
            offer(
                f"o{i}",
                rng.choice(feeders),
                kws,
                rng.choice([20.0, 30.0, 30.0, 45.5, 60.0]),
                submitted=rng.randrange(60),
                storage=Storage(capacity, capacity / 2, 0.9) if i < 60 else None,
            )
        )
    requests = [
        request(
            f"r{k}",
            point,
            tuple(rng.choice([0.0, 1.0, 2.5, 4.0]) for _ in range(8)),
            rng.choice([50.0, 60.0]),
            submitted=k,
        )
        for k, point in enumerate(["T", "F1", "F2", "F3", "T"])
    ]
    return book(offers, requests, relief=RADIAL3, n_isps=8)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_highs_and_clarabel_agree_on_a_storage_day(seed):
    b = _storage_day(seed)
    highs, clarabel = clear(b, "HIGHS"), clear(b, "CLARABEL")
    assert highs.awards  # the book clears: storage energy is sold
    assert summary(highs) == summary(clarabel)
    assert highs.result_hash == clarabel.result_hash


_HIGHS_VARIANTS = {
    "primal_simplex": {"presolve": "off", "simplex_strategy": 4},
    "interior_point": {"presolve": "off", "solver": "ipm"},
    "presolve_on": {"presolve": "on"},
}


def _swap_ties() -> OrderBook:
    """Three storage offers whose energy (4 kW·ISP each) is scarce at one feeder over three ISPs:
    every optimum uses it all, and optima differ only in which offer serves which ISP."""
    battery = Storage(capacity_kwh=1.0, initial_kwh=1.0, efficiency=1.0)
    return book(
        [
            offer("o0", "F1", (2.0, 4.0, 6.0), 30, submitted=1, storage=Storage(2.0, 1.0, 1.0)),
            offer("o1", "F1", (4.0, 4.0, 4.0), 40, submitted=2, storage=battery),
            offer("o2", "F1", (6.0, 2.0, 4.0), 30, submitted=3, storage=battery),
        ],
        [request("r0", "F1", 6, 100), request("r1", "F1", 4, 100, isp=1), request("r2", "F1", 6, 100, isp=2)],
        n_isps=3,
    )


@pytest.mark.parametrize("variant", list(_HIGHS_VARIANTS))
@pytest.mark.parametrize("name", ["swap_ties", "storage_day_1", "storage_day_2"])
def test_awards_do_not_depend_on_the_highs_algorithm(name, variant, monkeypatch):
    """Every LP (the auction and the tie-breaks) solved by another HiGHS algorithm, which stops at
    another optimal vertex where there are several: the awards must not move. Before the tie-break
    had its swap stage (engine._tie_break), most storage awards did, as the weights of a swap of
    ISPs between two offers summed to zero."""
    b = _swap_ties() if name == "swap_ties" else _storage_day(int(name[-1]))
    reference = clear(b)
    monkeypatch.setattr("market.clearing.solve.highs_options", lambda rows, columns: _HIGHS_VARIANTS[variant])
    assert summary(clear(b)) == summary(reference)


_MILP_VARIANTS = {
    "no_presolve": {"mip_rel_gap": 0.0, "presolve": "off"},
    "no_heuristics": {"mip_rel_gap": 0.0, "mip_heuristic_effort": 0.0},
}


def _all_or_nothing_ties() -> OrderBook:
    """Six all-or-nothing offers at two feeders, equal in price and size within each feeder, and
    requests for fewer than all of them: many choices of binaries reach the best welfare."""
    return book(
        [
            *(offer(f"a{i}", "F1", 5, 80, submitted=10 - i, min_fraction=1.0) for i in range(3)),
            *(offer(f"b{i}", "F2", 4, 60, submitted=20 - i, min_fraction=1.0) for i in range(3)),
        ],
        [request("r1", "F1", 10, 150), request("r2", "F2", 8, 150), request("rT", "T", 15, 120)],
        relief=RADIAL,
    )


@pytest.mark.parametrize("variant", list(_MILP_VARIANTS))
def test_all_or_nothing_awards_do_not_depend_on_the_milp_search(variant, monkeypatch):
    """Both MILPs (welfare, then the time-priority tie-break) searched another way: the same
    binaries must be chosen, the earliest offers among equals."""
    b = _all_or_nothing_ties()
    reference = clear(b)
    assert {a.offer_id for a in reference.awards} == {"a1", "a2", "b1", "b2"}
    monkeypatch.setattr("market.clearing.solve.MILP_OPTIONS", _MILP_VARIANTS[variant])
    assert summary(clear(b)) == summary(reference)
