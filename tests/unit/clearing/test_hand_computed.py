"""Small markets cleared by hand (LP duality in the comments), both pricing rules.

Notation: ``x`` kW accepted from an offer, ``y`` kW procured for a request, ``λ`` the dual of a
relief row ``Σ y ≤ Σ S·x`` (the locational price). The LP maximises ``Σ V·y − Σ p·x``. A column
strictly inside its bounds pins its reduced cost to 0; a column at its upper bound needs a reduced
cost ≥ 0, at its lower bound ≤ 0. When those conditions leave an interval of optimal ``λ`` the
engine takes its midpoint (market/clearing/pricing.py). Welfare in currency is
``(Σ V·y − Σ p·x) × 0.25 h / 1000``, rounded half-even to cents.
"""

from __future__ import annotations

import pytest

from market.clearing.book import DOWN, UP, PricingRule, RejectionReason, Storage
from market.clearing.engine import clear
from tests.unit.clearing.builders import (
    RADIAL,
    D,
    awards,
    book,
    kw,
    offer,
    point,
    points,
    price,
    procured,
    rejections,
    request,
)

CLEAR, BID = PricingRule.PAY_AS_CLEAR, PricingRule.PAY_AS_BID
BOTH = pytest.mark.parametrize("rule", [CLEAR, BID], ids=["pay_as_clear", "pay_as_bid"])
ABOVE = RejectionReason.ABOVE_MARGINAL_PRICE.value
NO_REQUEST = RejectionReason.NO_REQUEST.value
NOT_NEEDED = RejectionReason.NOT_NEEDED.value


def _paid(rule: PricingRule, clear_price: str, bid_price: str) -> tuple:
    return price(clear_price if rule is CLEAR else bid_price)


# -- one feeder, merit order ------------------------------------------------------------------------


@BOTH
def test_merit_order_interior_marginal_offer(rule):
    # max 150y − 50x1 − 80x2 − 200x3,  y ≤ x1+x2+x3,  y ≤ 8,  x ≤ 5.
    # x1 = 5, x2 = 3 (interior: −80 + λ = 0 → λ = 80), y = 8 (150 − 80 ≥ 0), x3 = 0 (−200 + 80 ≤ 0).
    # welfare = 150·8 − 50·5 − 80·3 = 710 → 710 × 0.25/1000 = 0.1775 → 0.18
    result = clear(
        book(
            [offer("o1", "F1", 5, 50, submitted=1), offer("o2", "F1", 5, 80, submitted=2), offer("o3", "F1", 5, 200)],
            [request("r1", "F1", 8, 150)],
            rule=rule,
        )
    )
    assert awards(result) == {
        "o1": (kw(5), _paid(rule, "80", "50")),
        "o2": (kw(3), _paid(rule, "80", "80")),
    }
    assert rejections(result) == {"o3": ABOVE}
    assert points(result) == {("F1", 0, UP): point("8", "8", "0", "80")}
    assert procured(result) == {"r1": kw(8)}
    assert result.welfare == D("0.18")


@BOTH
def test_vertical_overlap_price_is_midpoint_of_valid_interval(rule):
    # Offers 5@50, 3@80, 5@200; request 8@150: x1 = 5, x2 = 3, y = 8, all at their upper bounds.
    # Optimal λ: x2 at ub → λ ≥ 80; y at ub → λ ≤ 150; x3 at 0 → λ ≤ 200. Interval [80, 150],
    # midpoint 115. Welfare 710 → 0.18 as above.
    result = clear(
        book(
            [offer("o1", "F1", 5, 50), offer("o2", "F1", 3, 80), offer("o3", "F1", 5, 200)],
            [request("r1", "F1", 8, 150)],
            rule=rule,
        )
    )
    assert awards(result) == {
        "o1": (kw(5), _paid(rule, "115", "50")),
        "o2": (kw(3), _paid(rule, "115", "80")),
    }
    assert rejections(result) == {"o3": ABOVE}
    assert points(result) == {("F1", 0, UP): point("8", "8", "0", "115")}
    assert result.welfare == D("0.18")


@BOTH
@pytest.mark.parametrize("reverse", [False, True], ids=["listed_in_time_order", "listed_reversed"])
def test_flat_overlap_earlier_submission_first(rule, reverse):
    # Two offers 5@80, request 6@150: any x_a + x_b = 6 is optimal. Time priority: the earlier
    # ("b_early", submitted first although its id sorts second) gets 5, the later 1.
    # The later offer is interior → λ = 80. Welfare 150·6 − 80·6 = 420 → 0.105 → 0.10 (half even).
    offers = [offer("b_early", "F1", 5, 80, submitted=1), offer("a_late", "F1", 5, 80, submitted=2)]
    if reverse:
        offers.reverse()
    result = clear(book(offers, [request("r1", "F1", 6, 150)], rule=rule))
    assert awards(result) == {
        "b_early": (kw(5), price("80")),
        "a_late": (kw(1), price("80")),
    }
    assert rejections(result) == {}
    assert points(result) == {("F1", 0, UP): point("6", "6", "0", "80")}
    assert result.welfare == D("0.10")


@BOTH
def test_flat_overlap_between_request_and_offer_procures_most(rule):
    # Request 5@80, offer 10@80: welfare 0 for every y = x ≤ 5; most procured kW → 5.
    # λ: the offer is interior (5 of 10) → λ = 80 (and y at ub needs λ ≤ 80: consistent).
    result = clear(book([offer("o1", "F1", 10, 80)], [request("r1", "F1", 5, 80)], rule=rule))
    assert awards(result) == {"o1": (kw(5), price("80"))}
    assert points(result) == {("F1", 0, UP): point("5", "5", "0", "80")}
    assert procured(result) == {"r1": kw(5)}
    assert result.welfare == D("0.00")


@BOTH
def test_unmet_demand_price_is_request_value(rule):
    # Request 10@100, offer 4@50: x = 4 (ub), y = 4 is strictly inside [0, 10] so its reduced cost
    # is 0: 100 − λ = 0 → λ = 100 (unique; x at ub needs −50 + λ ≥ 0: fine).
    # welfare = 100·4 − 50·4 = 200 → 0.05
    result = clear(book([offer("o1", "F1", 4, 50)], [request("r1", "F1", 10, 100)], rule=rule))
    assert awards(result) == {"o1": (kw(4), _paid(rule, "100", "50"))}
    assert points(result) == {("F1", 0, UP): point("10", "4", "6", "100")}
    assert procured(result) == {"r1": kw(4)}
    assert result.welfare == D("0.05")


# -- rejections: no request on the path -------------------------------------------------------------


def test_offer_without_request_on_its_path_is_no_request():
    # Radial tree: F2 relieves F2 and T, but the only request is at F1 → no row for F2's offer.
    # An offer for ISP 1, where nobody asks for anything, has no request either.
    result = clear(
        book(
            [
                offer("f1", "F1", 5, 50),
                offer("f2", "F2", 5, 10),
                offer("later", "F1", (0.0, 5.0), 10),
            ],
            [request("r1", "F1", 4, 100)],
            relief=RADIAL,
            n_isps=2,
        )
    )
    # f1: 4 of 5 kW, interior → λ = 50.
    assert awards(result) == {"f1": (kw(4), price("50"))}
    assert rejections(result) == {"f2": NO_REQUEST, "later": NO_REQUEST}


def test_offer_at_a_child_feeder_does_not_relieve_the_parent_of_another_request():
    # The request is at F1; the offer at T (the root) relieves T only (a parent does not relieve
    # its children), so it has no request.
    result = clear(
        book([offer("t", "T", 5, 10), offer("f1", "F1", 5, 50)], [request("r1", "F1", 4, 100)], relief=RADIAL)
    )
    assert rejections(result) == {"t": NO_REQUEST}
    assert awards(result) == {"f1": (kw(4), price("50"))}


def test_request_nobody_can_relieve_does_not_break_the_clearing():
    # r2 at F2 cannot be relieved by the only offer (at F1). The F1 part is as in the unmet test
    # above: x = 4, y1 = 4 interior → λ_F1 = 100. Nothing is procured at F2.
    result = clear(
        book(
            [offer("o1", "F1", 4, 50)],
            [request("r1", "F1", 10, 100), request("r2", "F2", 4, 100)],
            relief=RADIAL,
        )
    )
    assert awards(result) == {"o1": (kw(4), price("100"))}
    assert points(result)[("F1", 0, UP)] == point("10", "4", "6", "100")
    assert points(result)[("F2", 0, UP)][:3] == kw(4, 0, 4)


def test_up_offer_with_only_a_down_request_is_rejected_not_an_error():
    # The down row is y_down + x_up ≤ 0 (an up activation aggravates a down congestion), so
    # x_up = 0 and nothing is procured. The offer relieves no request in its direction.
    result = clear(book([offer("u", "F1", 5, 50)], [request("d", "F1", 4, 100, direction=DOWN)]))
    assert awards(result) == {}
    assert rejections(result) == {"u": NO_REQUEST}
    assert points(result)[("F1", 0, DOWN)][:3] == kw(4, 0, 4)


def test_up_and_down_requests_at_one_point_do_not_break_the_clearing():
    # Both rows add up to y_up + y_down ≤ 0, so nothing can be procured in either direction (the
    # engine nets the two directions); the clearing must still finish and report both points.
    result = clear(
        book(
            [offer("u", "F1", 5, 40), offer("d", "F1", 5, 40, direction=DOWN)],
            [request("ru", "F1", 3, 100), request("rd", "F1", 3, 100, direction=DOWN)],
        )
    )
    assert points(result)[("F1", 0, UP)][:3] == kw(3, 0, 3)
    assert points(result)[("F1", 0, DOWN)][:3] == kw(3, 0, 3)


def test_request_without_any_offer_is_reported_unmet():
    # ISP 1 has a request and no offer at all: requested 4, procured 0, unmet 4.
    result = clear(
        book(
            [offer("o1", "F1", 4, 50)],
            [request("r0", "F1", 4, 100), request("r1", "F1", 4, 100, isp=1)],
            n_isps=2,
        )
    )
    assert (("F1", 1, UP)) in points(result)
    assert points(result)[("F1", 1, UP)][:3] == kw(4, 0, 4)


def test_tied_requests_earlier_submission_first():
    # Two requests 5@100 at F1, one offer 6@50: any split of 6 kW is optimal (y interior → λ = 100).
    # Time priority (MARKET.md): the earlier request gets 5, the later 1.
    result = clear(
        book(
            [offer("o1", "F1", 6, 50)],
            [request("r_late", "F1", 5, 100, submitted=2), request("r_early", "F1", 5, 100, submitted=1)],
        )
    )
    assert points(result) == {("F1", 0, UP): point("10", "6", "4", "100")}
    assert procured(result) == {"r_early": kw(5), "r_late": kw(1)}


def test_tie_break_does_not_buy_above_the_request_value():
    # F1: request 300@100, o1 200@50, o2 10@100.01 → y = 200 interior → λ_F1 = 100, o2 at 0
    # (−100.01 + 100 < 0): above the marginal price. F2 (a flat overlap: request 5@80, offer 10@80,
    # procure 5 at λ = 80) only makes the engine run its tie-break on this ISP.
    # welfare = 100·200 − 50·200 + 80·5 − 80·5 = 10000 → 2.50
    result = clear(
        book(
            [offer("o1", "F1", 200, 50), offer("o2", "F1", 10, 100.01), offer("f", "F2", 10, 80)],
            [request("r1", "F1", 300, 100), request("r2", "F2", 5, 80)],
            relief={("F1", "F1"): 1.0, ("F2", "F2"): 1.0},
        )
    )
    assert points(result)[("F1", 0, UP)] == point("300", "200", "100", "100")
    assert rejections(result) == {"o2": ABOVE}
    assert awards(result)["o1"] == (kw(200), price("100"))


def test_unique_price_is_exact_next_to_a_degenerate_point():
    # F1: request 0.1@200, offer a 2@100 → x_a = 0.1 interior → λ_F1 = 100 exactly (unique).
    # F2 (same ISP, own row): request 1000@200, offer b 1000@0, both at ub → λ_F2 ∈ [0, 200] → 100.
    # a must be paid 100, not less than its own price.
    result = clear(
        book(
            [offer("a", "F1", 2, 100), offer("b", "F2", 1000, 0)],
            [request("r1", "F1", 0.1, 200), request("r2", "F2", 1000, 200)],
            relief={("F1", "F1"): 1.0, ("F2", "F2"): 1.0},
        )
    )
    assert points(result) == {
        ("F1", 0, UP): point("0.1", "0.1", "0", "100"),
        ("F2", 0, UP): point("1000", "1000", "0", "100"),
    }
    assert awards(result)["a"] == (kw("0.1"), price("100"))


# -- radial tree ------------------------------------------------------------------------------------


@BOTH
def test_radial_tree_feeder_relieves_feeder_and_root(rule):
    # T root, feeders F1, F2. Requests T 10@100, F1 4@120; offers F1 6@60, F2 6@70.
    # Rows:  F1: y_F1 ≤ x1          T: y_T ≤ x1 + x2
    # A kW at F1 is worth 120 + 100 − 60 > 0 → x1 = 6; then y_F1 = 4 and T has 6 from x1, so
    # x2 = 4 (100 − 70 > 0) → y_T = 10.
    # Duals: F1 row slack 2 → λ_F1 = 0. x2 interior (4 of 6) → λ_T = 70 (unique).
    # Pay as clear: o1 = 1·λ_F1 + 1·λ_T = 70; o2 = 1·λ_T = 70.
    # welfare = 100·10 + 120·4 − 60·6 − 70·4 = 840 → 0.21
    result = clear(
        book(
            [offer("o1", "F1", 6, 60), offer("o2", "F2", 6, 70)],
            [request("rT", "T", 10, 100), request("rF1", "F1", 4, 120)],
            relief=RADIAL,
            rule=rule,
        )
    )
    assert awards(result) == {
        "o1": (kw(6), _paid(rule, "70", "60")),
        "o2": (kw(4), _paid(rule, "70", "70")),
    }
    assert points(result) == {
        ("F1", 0, UP): point("4", "4", "0", "0"),
        ("T", 0, UP): point("10", "10", "0", "70"),
    }
    assert procured(result) == {"rT": kw(10), "rF1": kw(4)}
    assert result.welfare == D("0.21")


@BOTH
def test_radial_tree_congested_feeder_adds_its_price(rule):
    # As above with the F1 request 8@120: x1 = 6 → y_F1 = 6 interior → λ_F1 = 120;
    # y_T = 10 needs x2 = 4, interior → λ_T = 70. o1 earns λ_F1 + λ_T = 190, o2 earns 70.
    # welfare = 100·10 + 120·6 − 60·6 − 70·4 = 1080 → 0.27
    result = clear(
        book(
            [offer("o1", "F1", 6, 60), offer("o2", "F2", 6, 70)],
            [request("rT", "T", 10, 100), request("rF1", "F1", 8, 120)],
            relief=RADIAL,
            rule=rule,
        )
    )
    assert awards(result) == {
        "o1": (kw(6), _paid(rule, "190", "60")),
        "o2": (kw(4), _paid(rule, "70", "70")),
    }
    assert points(result) == {
        ("F1", 0, UP): point("8", "6", "2", "120"),
        ("T", 0, UP): point("10", "10", "0", "70"),
    }
    assert result.welfare == D("0.27")


# -- meshed sensitivities ---------------------------------------------------------------------------

MESHED = {("A", "A"): 1.0, ("A", "B"): 0.5, ("B", "B"): 1.0}
"""A kW at A relieves A fully and B by half; a kW at B relieves only B."""


@BOTH
def test_meshed_half_sensitivity_cheaper_per_kw_of_relief(rule):
    # Request B 4@100; offers oA at A 10@30 (0.5 kW at B per kW: 60 per kW of relief at B),
    # oB at B 3@70. Row B: y_B ≤ 0.5·xA + xB. oA first: xA = 8 (interior) → 0.5·λ_B = 30 → λ_B = 60.
    # xB at 0: −70 + 60 ≤ 0 ✓ (above the marginal price). oA earns 0.5 × 60 = 30.
    # welfare = 100·4 − 30·8 = 160 → 0.04
    result = clear(
        book(
            [offer("oA", "A", 10, 30), offer("oB", "B", 3, 70)],
            [request("rB", "B", 4, 100)],
            relief=MESHED,
            rule=rule,
        )
    )
    assert awards(result) == {"oA": (kw(8), _paid(rule, "30", "30"))}
    assert rejections(result) == {"oB": ABOVE}
    assert points(result) == {("B", 0, UP): point("4", "4", "0", "60")}
    assert result.welfare == D("0.04")


@BOTH
def test_meshed_two_rows(rule):
    # Requests A 2@50, B 4@100; offers oA at A 6@30, oB at B 3@70.
    # Rows: A: y_A ≤ xA;  B: y_B ≤ 0.5·xA + xB.
    # xA = 6 (ub): gives A 6 ≥ 2 (slack → λ_A = 0) and B 3; xB = 1 (interior) → λ_B = 70.
    # xA at ub: −30 + λ_A + 0.5·λ_B = 5 ≥ 0 ✓. oA earns 1·0 + 0.5·70 = 35; oB earns 70.
    # welfare = 50·2 + 100·4 − 30·6 − 70·1 = 250 → 0.0625 → 0.06
    result = clear(
        book(
            [offer("oA", "A", 6, 30), offer("oB", "B", 3, 70)],
            [request("rA", "A", 2, 50), request("rB", "B", 4, 100)],
            relief=MESHED,
            rule=rule,
        )
    )
    assert awards(result) == {
        "oA": (kw(6), _paid(rule, "35", "30")),
        "oB": (kw(1), _paid(rule, "70", "70")),
    }
    assert points(result) == {
        ("A", 0, UP): point("2", "2", "0", "0"),
        ("B", 0, UP): point("4", "4", "0", "70"),
    }
    assert result.welfare == D("0.06")


# -- all or nothing ---------------------------------------------------------------------------------


@BOTH
def test_all_or_nothing_cheap_block_wins(rule):
    # Request 4@100; A 5 kW @10 all-or-nothing, B 3 kW @50 divisible. Candidates:
    #   A alone: y = 4, x_A = 5 → 100·4 − 10·5 = 350;   B alone: y = 3 → 300 − 150 = 150;
    #   A and B: x_B = 0 is best anyway → 350.  So A (z = 1), B nothing; welfare 350 → 0.0875 → 0.09.
    # Prices from the LP with z fixed at 1: y = 4 ≤ x_A + x_B = 5 has slack 1 → λ = 0 in every
    # optimal dual. So A earns 0 under pay as clear (its bid, 10, under pay as bid), and B's price
    # 50 is above the value of relief (0).
    result = clear(
        book(
            [offer("A", "F1", 5, 10, min_fraction=1.0), offer("B", "F1", 3, 50)],
            [request("r1", "F1", 4, 100)],
            rule=rule,
        )
    )
    assert awards(result) == {"A": (kw(5), _paid(rule, "0", "10"))}
    assert rejections(result) == {"B": ABOVE}
    assert points(result) == {("F1", 0, UP): point("4", "4", "0", "0")}
    assert result.welfare == D("0.09")


@BOTH
def test_all_or_nothing_too_expensive_loses(rule):
    # Request 4@100; A 5 kW @90 all-or-nothing, B 3 kW @50. A alone: 400 − 450 = −50; B alone: 150.
    # So z_A = 0, x_B = 3 (ub), y = 3 interior → λ = 100. A (90 ≤ 100) was competitive but is
    # all-or-nothing: not needed. welfare 150 → 0.0375 → 0.04
    result = clear(
        book(
            [offer("A", "F1", 5, 90, min_fraction=1.0), offer("B", "F1", 3, 50)],
            [request("r1", "F1", 4, 100)],
            rule=rule,
        )
    )
    assert awards(result) == {"B": (kw(3), _paid(rule, "100", "50"))}
    assert rejections(result) == {"A": NOT_NEEDED}
    assert points(result) == {("F1", 0, UP): point("4", "3", "1", "100")}
    assert result.welfare == D("0.04")


@BOTH
def test_all_or_nothing_tie_goes_to_the_earlier_offer(rule):
    # Request 10@150; three all-or-nothing offers of 5 kW @80, submitted o2 first, then o1, then o0.
    # Any two of them reach the best welfare, 150·10 − 80·10 = 700 → 0.175 → 0.18 (half even).
    # Time priority: o2 and o1. Prices from the LP with the binaries fixed: x = 10 fixed and y = 10
    # at the request's bound, so λ ∈ [0, 150] (150 − λ ≥ 0 for y, nothing for the fixed x):
    # midpoint 75. o0's 80 is above it.
    result = clear(
        book(
            [offer(f"o{i}", "F1", 5, 80, submitted=9 - i, min_fraction=1.0) for i in range(3)],
            [request("r1", "F1", 10, 150)],
            rule=rule,
        )
    )
    assert awards(result) == {"o1": (kw(5), _paid(rule, "75", "80")), "o2": (kw(5), _paid(rule, "75", "80"))}
    assert rejections(result) == {"o0": ABOVE}
    assert points(result) == {("F1", 0, UP): point("10", "10", "0", "75")}
    assert result.welfare == D("0.18")


@BOTH
def test_min_fraction_half_accepted_in_between(rule):
    # A 5 kW @10 with min fraction 0.5, B 3 kW @50, request 4@100: z_A = 1, x_A = 4 (within
    # [2.5, 5], interior) → λ = 10; B at 0 (−50 + 10 ≤ 0). welfare = 400 − 40 = 360 → 0.09
    result = clear(
        book(
            [offer("A", "F1", 5, 10, min_fraction=0.5), offer("B", "F1", 3, 50)],
            [request("r1", "F1", 4, 100)],
            rule=rule,
        )
    )
    assert awards(result) == {"A": (kw(4), price("10"))}
    assert rejections(result) == {"B": ABOVE}
    assert points(result) == {("F1", 0, UP): point("4", "4", "0", "10")}
    assert result.welfare == D("0.09")


# -- blocks and rebound -----------------------------------------------------------------------------


def _block_book(rule: PricingRule, *, rebound: bool):
    return book(
        [
            offer(
                "blk",
                "F1",
                (4.0, 4.0),
                50,
                block=True,
                rebound_isp=2 if rebound else None,
                rebound_kw=(2.0,) if rebound else (),
                submitted=1,
            ),
            offer("d", "F1", 5, 60, isp=2, submitted=2),
        ],
        [request("r", "F1", (6.0, 6.0, 5.0), 100)],
        n_isps=3,
        rule=rule,
    )


@BOTH
def test_block_with_rebound_reduces_relief_where_it_pays_back(rule):
    # Block "blk": 4 kW up in ISPs 0 and 1 @50 with one activation a ∈ [0, 1], paying back 2 kW
    # (down) in ISP 2. Request up 6, 6, 5 kW @100 in ISPs 0-2; "d" 5 kW @60 in ISP 2.
    # Rows: y0 ≤ 4a;  y1 ≤ 4a;  y2 ≤ x_d − 2a.
    # The activation is worth 100·4 + 100·4 − 50·8 − 100·2 = 200 > 0 → a = 1; x_d = 5 →
    # y2 = 5 − 2 = 3 (2 kW unmet because of the rebound). y0, y1, y2 are interior → λ = 100 at
    # every ISP (unique). blk earns 100 at ISPs 0 and 1 under pay as clear (the rebound is not
    # charged in the engine's payment), d earns 100.
    # welfare = 100·(4 + 4 + 3) − 50·8 − 60·5 = 400 → 0.10
    result = clear(_block_book(rule, rebound=True))
    assert awards(result) == {
        "blk": (kw(4, 4), _paid(rule, "100", "50") * 2),
        "d": (kw(5), _paid(rule, "100", "60")),
    }
    assert result.awards[0].activation == D("1.000")
    assert points(result) == {
        ("F1", 0, UP): point("6", "4", "2", "100"),
        ("F1", 1, UP): point("6", "4", "2", "100"),
        ("F1", 2, UP): point("5", "3", "2", "100"),
    }
    assert result.welfare == D("0.10")


def test_block_without_rebound_leaves_all_of_the_third_isp():
    # Same book without the rebound: ISP 2 is on its own, y2 = x_d = 5, both at their upper bounds
    # → λ2 ∈ [60, 100], midpoint 80. welfare = 100·13 − 400 − 300 = 600 → 0.15
    result = clear(_block_book(CLEAR, rebound=False))
    assert points(result)[("F1", 2, UP)] == point("5", "5", "0", "80")
    assert result.welfare == D("0.15")


def test_block_rebound_counts_towards_a_down_request():
    # Block as above, up requests 6@100 in ISPs 0 and 1, and a down request 4@100 in ISP 2 with no
    # offer there. The down row is y_d ≤ 2a (the payback consumes more). The activation is worth
    # 100·8 − 50·8 + 100·2 > 0 → a = 1, y_d = 2, interior → λ_down = 100.
    # welfare = 100·(4 + 4 + 2) − 50·8 = 600 → 0.15
    result = clear(
        book(
            [offer("blk", "F1", (4.0, 4.0), 50, block=True, rebound_isp=2, rebound_kw=(2.0,))],
            [request("r", "F1", (6.0, 6.0), 100), request("rd", "F1", 4, 100, isp=2, direction=DOWN)],
            n_isps=3,
        )
    )
    assert awards(result) == {"blk": (kw(4, 4), price("100", "100"))}
    assert points(result)[("F1", 2, DOWN)] == point("4", "2", "2", "100")
    assert procured(result) == {"r": kw(4, 4), "rd": kw(2)}
    assert result.welfare == D("0.15")


# -- storage ----------------------------------------------------------------------------------------

BATTERY = Storage(capacity_kwh=1.0, initial_kwh=1.0, efficiency=1.0)


@BOTH
def test_storage_energy_split_over_two_isps(rule):
    # 4 kW up in ISPs 0 and 1 @30, 1 kWh stored: 0.25·x0 ≤ 1 and 0.25·(x0 + x1) ≤ 1 → x0 + x1 ≤ 4.
    # Requests 3@100 (ISP 0) and 3@120 (ISP 1): ISP 1 first, x1 = 3 (y1 at ub), leaving x0 = 1
    # → y0 = 1 (interior → λ0 = 100). x0 interior: −30 + λ0 − 0.25μ = 0 → μ = 280; x1 interior:
    # −30 + λ1 − 0.25·280 = 0 → λ1 = 100 (y1 at ub needs 120 − 100 ≥ 0 ✓). Discharged 4 × 0.25 = 1 kWh.
    # welfare = 100·1 + 120·3 − 30·4 = 340 → 0.085 → 0.08 (half even)
    result = clear(
        book(
            [offer("s", "F1", (4.0, 4.0), 30, storage=BATTERY)],
            [request("r0", "F1", 3, 100), request("r1", "F1", 3, 120, isp=1)],
            n_isps=2,
            rule=rule,
        )
    )
    assert awards(result) == {"s": (kw(1, 3), _paid(rule, "100", "30") * 2)}
    assert points(result) == {
        ("F1", 0, UP): point("3", "1", "2", "100"),
        ("F1", 1, UP): point("3", "3", "0", "100"),
    }
    assert result.welfare == D("0.08")


def test_storage_all_energy_in_the_more_valuable_isp():
    # Requests 4@100 (ISP 0) and 4@120 (ISP 1): the whole kWh goes to ISP 1, x = (0, 4).
    # No column is interior; optimal duals (m = 30 + 0.25μ): λ0 ∈ [100, m], λ1 ∈ [m, 120],
    # m ∈ [100, 120]. Minimising Σλ (incl. μ): m = 100 → (100, 100); maximising: m = 120 → (120, 120).
    # Midpoint: λ0 = λ1 = 110. Nothing is accepted in ISP 0, so the award has no price there.
    # welfare = 120·4 − 30·4 = 360 → 0.09
    result = clear(
        book(
            [offer("s", "F1", (4.0, 4.0), 30, storage=BATTERY)],
            [request("r0", "F1", 4, 100), request("r1", "F1", 4, 120, isp=1)],
            n_isps=2,
        )
    )
    assert points(result) == {
        ("F1", 0, UP): point("4", "0", "4", "110"),
        ("F1", 1, UP): point("4", "4", "0", "110"),
    }
    assert result.welfare == D("0.09")
    assert awards(result) == {"s": (kw(0, 4), price("0", "110"))}


@pytest.mark.parametrize("highs", [None, {"presolve": "off", "simplex_strategy": 4}], ids=["dual", "primal"])
def test_storage_swap_ties_go_to_the_earlier_offer_in_the_earlier_isp(highs, monkeypatch):
    # Solved with HiGHS's default dual simplex and with its primal simplex: both must land here.
    if highs is not None:
        monkeypatch.setattr("market.clearing.solve.highs_options", lambda rows, columns: highs)
    # Two batteries, each 1 kWh (4 kW·ISP at 0.25 h), @30; requests 2@100 (ISP 0), 6@100 (ISP 1),
    # 4@100 (ISP 2), 6@100 (ISP 3). The 8 kW·ISP of energy serve the earliest requests (time
    # priority): r0 (2) and r1 (6). Any split of ISP 0 and 1 between the batteries is optimal and
    # equal under the rank weights (a swap: a +δ in ISP 0, −δ in ISP 1; b the reverse). The swap
    # stage gives the earlier offer the earlier ISP: a = (2, 2), b = (0, 4) (b's 4 kW cap in ISP 1).
    # The unmet requests value energy at 100 in every ISP: λ = 100 (μ = 4·(100 − 30) = 280).
    # welfare = 100·8 − 30·8 = 560 → 560·0.25/1000 = 0.14
    result = clear(
        book(
            [
                offer("b", "F1", (6.0, 4.0, 4.0, 2.0), 30, submitted=2, storage=Storage(2.0, 1.0, 1.0)),
                offer("a", "F1", (4.0, 4.0, 2.0, 2.0), 30, submitted=1, storage=Storage(2.0, 1.0, 1.0)),
            ],
            [
                request("r0", "F1", 2, 100),
                request("r1", "F1", 6, 100, isp=1),
                request("r2", "F1", 4, 100, isp=2),
                request("r3", "F1", 6, 100, isp=3),
            ],
            n_isps=4,
        )
    )
    assert awards(result) == {
        "a": (kw(2, 2, 0, 0), price("100", "100", "0", "0")),
        "b": (kw(0, 4, 0, 0), price("0", "100", "0", "0")),
    }
    assert procured(result) == {"r0": kw(2), "r1": kw(6)}
    assert result.welfare == D("0.14")


# -- tranches ---------------------------------------------------------------------------------------


@BOTH
def test_tranches_fill_cheapest_first(rule):
    # 10 kW with tranches (0.5 @40, 0.5 @90), request 7@100: tranche 1 = 5 kW (ub), tranche 2 = 2 kW
    # (interior → λ = 90). Pay as clear 90; pay as bid (5·40 + 2·90)/7 = 380/7 = 54.285714… → 54.2857.
    # welfare = 100·7 − 380 = 320 → 0.08
    result = clear(
        book([offer("o", "F1", 10, tranches=((0.5, 40.0), (0.5, 90.0)))], [request("r", "F1", 7, 100)], rule=rule)
    )
    assert awards(result) == {"o": (kw(7), _paid(rule, "90", "54.2857"))}
    assert points(result) == {("F1", 0, UP): point("7", "7", "0", "90")}
    assert result.welfare == D("0.08")


def test_rounding_exponents():
    # kW are reported with 3 decimals and prices with 4, whatever the solver's last digits.
    result = clear(
        book([offer("o", "F1", 10, tranches=((0.5, 40.0), (0.5, 90.0)))], [request("r", "F1", 7, 100)], rule=BID)
    )
    (award,) = result.awards
    assert [str(v) for v in award.accepted_kw] == ["7.000"]
    assert [str(v) for v in award.price_per_mwh] == ["54.2857"]
    assert str(result.points[0].price_per_mwh) == "90.0000"
