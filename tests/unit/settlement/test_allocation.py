"""Aggregator pass-through: largest-remainder allocation to the cent, hand-computed and properties."""

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.runs.allocation import allocate, pass_through
from settlement.runs.money import to_minor

D = Decimal


def test_equal_weights_leftover_cent_goes_to_the_smallest_key() -> None:
    # 100 cents / 3 = 33.33… each: floors 33 + 33 + 33 = 99, 1 cent left, equal remainders → key "a"
    assert allocate(D("1.00"), {"c": D(1), "a": D(1), "b": D(1)}, "EUR") == {
        "a": D("0.34"),
        "b": D("0.33"),
        "c": D("0.33"),
    }


def test_largest_remainder_wins_before_key_order() -> None:
    # 100 cents by 1:2 → 33.33… and 66.66…: floors 33 + 66 = 99; "z" has the larger remainder (2/3)
    assert allocate(D("1.00"), {"a": D(1), "z": D(2)}, "EUR") == {"a": D("0.33"), "z": D("0.67")}
    # 10 cents by 3:3:4 kWh → 3, 3, 4 exactly: nothing left over
    assert allocate(D("0.10"), {"a": D(3), "b": D(3), "c": D(4)}, "EUR") == {
        "a": D("0.03"),
        "b": D("0.03"),
        "c": D("0.04"),
    }


def test_negative_totals_are_allocated_symmetrically() -> None:
    assert allocate(D("-1.00"), {"c": D(1), "a": D(1), "b": D(1)}, "EUR") == {
        "a": D("-0.34"),
        "b": D("-0.33"),
        "c": D("-0.33"),
    }


def test_members_without_delivery_get_nothing() -> None:
    # weights ≤ 0 (no or negative delivered energy) take no part: 5.00 by 1:0:−2 → all to "a"
    assert allocate(D("5.00"), {"a": D(1), "b": D(0), "c": D(-2)}, "EUR") == {
        "a": D("5.00"),
        "b": D("0.00"),
        "c": D("0.00"),
    }
    # nobody delivered: nothing is allocated
    assert allocate(D("5.00"), {"a": D(0), "b": D(-1)}, "EUR") == {"a": D("0.00"), "b": D("0.00")}
    assert allocate(D("5.00"), {}, "EUR") == {}


def test_allocate_refuses_unrounded_totals_and_bad_weights() -> None:
    with pytest.raises(ValueError, match="whole number"):
        allocate(D("1.005"), {"a": D(1)}, "EUR")
    with pytest.raises(ValueError, match="finite"):
        allocate(D("1.00"), {"a": D("NaN")}, "EUR")


def test_jpy_allocation() -> None:
    # 100 yen by 1:1:1 → 34, 33, 33
    assert allocate(D(100), {"x": D(1), "y": D(1), "z": D(1)}, "JPY") == {"x": D(34), "y": D(33), "z": D(33)}


def test_pass_through_keeps_the_fee_share() -> None:
    # pool = 10.00 × (1 − 0.2) = 8.00; 3:1 kWh → 6.00 and 2.00; the aggregator keeps 10.00 − 8.00 = 2.00
    result = pass_through(D("10.00"), {"a": D(3), "b": D(1)}, D("0.2"), "EUR")
    assert result.members == {"a": D("6.00"), "b": D("2.00")}
    assert result.aggregator_keeps == D("2.00")


def test_pass_through_rounds_the_pool_half_even_and_the_aggregator_absorbs_it() -> None:
    # pool = 0.05 × (1 − 0.1) = 0.045, a tie → 0.04 (even); 1:1:1 → 0.02, 0.01, 0.01; keeps 0.01
    result = pass_through(D("0.05"), {"a": D(1), "b": D(1), "c": D(1)}, D("0.1"), "EUR")
    assert result.members == {"a": D("0.02"), "b": D("0.01"), "c": D("0.01")}
    assert result.aggregator_keeps == D("0.01")


def test_pass_through_of_a_net_penalty() -> None:
    # net −10.00, fee share 0.25: members bear −7.50 (2:1 → −5.00, −2.50), the aggregator −2.50
    result = pass_through(D("-10.00"), {"a": D(2), "b": D(1)}, D("0.25"), "EUR")
    assert result.members == {"a": D("-5.00"), "b": D("-2.50")}
    assert result.aggregator_keeps == D("-2.50")


def test_pass_through_with_no_delivery_keeps_everything() -> None:
    result = pass_through(D("3.00"), {"a": D(0), "b": D(-1)}, D("0.2"), "EUR")
    assert result.members == {"a": D("0.00"), "b": D("0.00")}
    assert result.aggregator_keeps == D("3.00")


def test_pass_through_edge_fee_shares() -> None:
    assert pass_through(D("1.00"), {"a": D(1)}, D(0), "EUR").aggregator_keeps == 0
    assert pass_through(D("1.00"), {"a": D(1)}, D(1), "EUR").members == {"a": D("0.00")}
    with pytest.raises(ValueError, match="fee_share"):
        pass_through(D("1.00"), {"a": D(1)}, D("1.5"), "EUR")


# -- properties ---------------------------------------------------------------------------------

cents = st.integers(-(10**12), 10**12).map(lambda c: D(c).scaleb(-2))
weights = st.dictionaries(
    st.uuids().map(str),
    st.one_of(
        st.integers(-5, 5).map(D),
        st.decimals(min_value=-1, max_value=10**6, places=6, allow_nan=False, allow_infinity=False),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(cents, weights)
def test_allocation_sums_exactly_and_stays_within_one_cent(total: Decimal, w: dict[str, Decimal]) -> None:
    shares = allocate(total, w, "EUR")
    assert set(shares) == set(w)
    positive = {k: Fraction(v) for k, v in w.items() if v > 0}
    if not positive:
        assert all(s == 0 for s in shares.values())
        return
    assert sum(shares.values()) == total
    units, weight_sum = to_minor(total, "EUR"), sum(positive.values())
    for key, share in shares.items():
        quota = abs(units) * positive.get(key, Fraction(0)) / weight_sum  # the exact proportional share
        assert quota - 1 < abs(to_minor(share, "EUR")) < quota + 1
        assert share == 0 or (share > 0) == (total > 0)
    assert allocate(-total, w, "EUR") == {k: -v for k, v in shares.items()}


@settings(max_examples=100, deadline=None)
@given(cents, weights)
def test_allocation_ignores_mapping_order(total: Decimal, w: dict[str, Decimal]) -> None:
    assert allocate(total, dict(reversed(list(w.items()))), "EUR") == allocate(total, w, "EUR")


@settings(max_examples=200, deadline=None)
@given(cents, weights, st.decimals(min_value=0, max_value=1, places=6, allow_nan=False, allow_infinity=False))
def test_pass_through_adds_up(net: Decimal, w: dict[str, Decimal], fee_share: Decimal) -> None:
    result = pass_through(net, w, fee_share, "EUR")
    assert result.aggregator_keeps + sum(result.members.values()) == net
    assert set(result.members) == set(w)
    if any(v > 0 for v in w.values()):
        pool = Fraction(net) * (1 - Fraction(fee_share))
        assert abs(Fraction(sum(result.members.values())) - pool) <= Fraction(1, 200)  # the pool's one rounding
    else:
        assert result.aggregator_keeps == net
