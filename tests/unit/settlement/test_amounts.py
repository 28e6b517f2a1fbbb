"""Settlement amounts of one award in one ISP: hand-computed cases (arithmetic in the comments),
then properties, then the vectorised :func:`frame_amounts` against the reference :func:`line_amounts`."""

import itertools
from decimal import Decimal
from fractions import Fraction

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.core.errors import InvalidInput
from settlement.runs.amounts import (
    MONEY_COLUMNS,
    LineAmounts,
    SettlementLine,
    frame_amounts,
    line_amounts,
    lines_frame,
    sliding_factor,
)
from settlement.runs.money import from_minor, round_money
from settlement.runs.terms import SettlementTerms

D = Decimal
PLAIN = SettlementTerms()
SPEC = SettlementTerms(penalty_price_per_mwh=D(300), tolerance=D("0.05"))
"""The brief's example terms: penalty 300 EUR/MWh, 5% tolerance band."""


def amounts(ordered: str, delivered: str, price: str, terms: SettlementTerms = PLAIN, minutes: int = 15) -> LineAmounts:
    return line_amounts(SettlementLine(D(ordered), D(delivered), D(price), minutes), terms)


def money(result: LineAmounts) -> tuple[str, ...]:
    return tuple(
        str(x)
        for x in (
            result.utilisation,
            result.availability,
            result.penalty,
            result.operator_fee,
            result.seller_net,
            result.utility_cost,
        )
    )


# -- hand-computed ------------------------------------------------------------------------------


def test_under_delivery_with_tolerance_and_penalty() -> None:
    result = amounts("10", "8", "200", SPEC)
    # utilisation = 200 × 8 × 0.25 / 1000 = 0.40
    # penalised = shortfall − tolerance × ordered = (10 − 8) − 0.05 × 10 = 1.5 kW
    # penalty = 300 × 1.5 × 0.25 / 1000 = 0.1125 → 0.11 (below the 0.115 tie: rounds down)
    assert result.delivered_capped_kw == 8
    assert result.shortfall_kw == 2
    assert result.penalised_kw == D("1.5")
    assert result.delivery_ratio == D("0.8")
    assert money(result) == ("0.40", "0.00", "0.11", "0.00", "0.29", "0.29")
    # energies: 10 kW × 0.25 h = 2.5 kWh = 0.0025 MWh; 8 kW → 0.002 MWh
    assert (result.ordered_mwh, result.delivered_mwh, result.delivered_capped_mwh) == (
        D("0.0025"),
        D("0.002"),
        D("0.002"),
    )


def test_shortfall_inside_the_band_is_not_penalised_and_only_the_excess_is() -> None:
    # shortfall 0.4 kW ≤ 0.05 × 10 = 0.5 kW: no penalty; utilisation 200 × 9.6 × 0.25 / 1000 = 0.48
    inside = amounts("10", "9.6", "200", SPEC)
    assert (inside.penalised_kw, inside.utilisation, inside.penalty) == (D(0), D("0.48"), D("0.00"))
    # shortfall 0.6 kW: only 0.6 − 0.5 = 0.1 kW is penalised: 300 × 0.1 × 0.25 / 1000 = 0.0075 → 0.01
    outside = amounts("10", "9.4", "200", SPEC)
    assert (outside.penalised_kw, outside.penalty) == (D("0.1"), D("0.01"))


def test_over_delivery_is_not_paid() -> None:
    result = amounts("10", "12", "200", SPEC)
    # capped at 10 kW: 200 × 10 × 0.25 / 1000 = 0.50, no shortfall
    assert (result.delivered_capped_kw, result.shortfall_kw, result.penalised_kw) == (D(10), D(0), D(0))
    assert money(result) == ("0.50", "0.00", "0.00", "0.00", "0.50", "0.50")
    assert result.delivered_mwh == D("0.003")  # the raw delivery is still reported: 12 × 0.25 / 1000


def test_negative_delivery_earns_nothing_and_is_penalised_as_zero_delivery() -> None:
    result = amounts("10", "-3", "200", SPEC)
    # capped at 0; shortfall 10; penalised 10 − 0.5 = 9.5 kW; 300 × 9.5 × 0.25 / 1000 = 0.7125 → 0.71
    assert (result.delivered_capped_kw, result.shortfall_kw, result.penalised_kw) == (D(0), D(10), D("9.5"))
    assert money(result) == ("0.00", "0.00", "0.71", "0.00", "-0.71", "-0.71")
    assert result.delivered_mwh == D("-0.00075")


SLIDING = SettlementTerms(tolerance=D("0.05"), sliding_scale=True)


@pytest.mark.parametrize(
    ("delivered", "factor", "utilisation"),
    [
        # full payment at delivered kW: 200 × Dc × 0.25 / 1000 = 0.05 × Dc; f = (r − 0.5) / 0.5
        ("4", "0", "0.00"),  # 40%: below 50% → f = 0
        ("5", "0", "0.00"),  # 50%: f = (0.5 − 0.5) / 0.5 = 0
        ("7.5", "0.5", "0.19"),  # 75%: f = 0.5; 0.05 × 7.5 × 0.5 = 0.1875 → 0.19
        ("9.4", "0.88", "0.41"),  # 94%, outside the 5% band: f = 0.88; 0.05 × 9.4 × 0.88 = 0.4136 → 0.41
        ("9.5", "1", "0.48"),  # 95% = 1 − tolerance: f = 1; 0.05 × 9.5 = 0.475, a tie → 0.48 (8 is even)
        ("10", "1", "0.50"),  # 100%
        ("11", "1", "0.50"),  # over-delivery: capped, f = 1
    ],
)
def test_sliding_scale(delivered: str, factor: str, utilisation: str) -> None:
    result = amounts("10", delivered, "200", SLIDING)
    assert result.sliding_factor == D(factor)
    assert str(result.utilisation) == utilisation


def test_sliding_scale_without_tolerance() -> None:
    # 95% with no band: f = 0.9; 0.05 × 9.5 × 0.9 = 0.4275 → 0.43
    result = amounts("10", "9.5", "200", SettlementTerms(sliding_scale=True))
    assert (result.sliding_factor, result.utilisation) == (D("0.9"), D("0.43"))


def test_sliding_factor_band_first_then_linear_then_zero() -> None:
    f = Fraction
    assert sliding_factor(f(95), f(100), f(5, 100)) == 1
    assert sliding_factor(f(94), f(100), f(5, 100)) == f(88, 100)  # the step: 0.88 just below the band
    assert sliding_factor(f(40), f(100), f(6, 10)) == 1  # a band wider than 50% wins below 50% too
    assert sliding_factor(f(49), f(100), f(0)) == 0
    assert sliding_factor(f(2), f(3), f(0)) == f(1, 3)  # not a finite decimal: kept exact


def test_availability_is_paid_on_ordered_capacity() -> None:
    # 10 EUR per MW·h × 10 kW / 1000 × 0.25 h = 0.025, a tie → 0.02 (even)
    result = amounts("10", "0", "200", SettlementTerms(availability_price_per_mw_h=D(10)))
    assert money(result) == ("0.00", "0.02", "0.00", "0.00", "0.02", "0.02")
    # 14 × 10 / 1000 × 0.25 = 0.035, a tie → 0.04 (even)
    assert amounts("10", "0", "200", SettlementTerms(availability_price_per_mw_h=D(14))).availability == D("0.04")


def test_operator_fee_is_on_capped_delivery_and_paid_by_the_seller() -> None:
    terms = SettlementTerms(operator_fee_per_mwh=D(4))
    # 4 × 8 × 0.25 / 1000 = 0.008 → 0.01; the seller nets 0.40 − 0.01, the utility pays 0.40
    assert money(amounts("10", "8", "200", terms)) == ("0.40", "0.00", "0.00", "0.01", "0.39", "0.40")
    # over-delivery: fee on the capped 10 kW: 4 × 10 × 0.25 / 1000 = 0.01
    assert amounts("10", "30", "200", terms).operator_fee == D("0.01")


def test_everything_together() -> None:
    terms = SettlementTerms(
        penalty_price_per_mwh=D(300),
        tolerance=D("0.05"),
        sliding_scale=True,
        availability_price_per_mw_h=D(10),
        operator_fee_per_mwh=D(4),
    )
    result = amounts("10", "8", "200", terms)
    # r = 0.8 → f = 0.6: 0.40 × 0.6 = 0.24; availability 0.025 → 0.02; penalty 0.1125 → 0.11;
    # fee 0.008 → 0.01; seller 0.24 + 0.02 − 0.11 − 0.01 = 0.14; utility 0.24 + 0.02 − 0.11 = 0.15
    assert money(result) == ("0.24", "0.02", "0.11", "0.01", "0.14", "0.15")


@pytest.mark.parametrize(
    ("ordered", "delivered", "price", "utilisation"),
    [
        ("5", "5", "100", "0.12"),  # 100 × 5 × 0.25 / 1000 = 0.125, a tie → 0.12 (down to even)
        ("5", "5", "108", "0.14"),  # 108 × 5 × 0.25 / 1000 = 0.135, a tie → 0.14 (up to even)
        ("5", "5", "108.000001", "0.14"),
        ("5", "5", "99.999999", "0.12"),
    ],
)
def test_halfway_cases_round_to_even(ordered: str, delivered: str, price: str, utilisation: str) -> None:
    assert str(amounts(ordered, delivered, price).utilisation) == utilisation


def test_jpy_has_no_minor_unit() -> None:
    jpy = SettlementTerms(currency="JPY")
    assert str(amounts("10", "8", "20000", jpy).utilisation) == "40"  # 20000 × 8 × 0.25 / 1000
    assert str(amounts("5", "5", "2000", jpy).utilisation) == "2"  # 2000 × 5 × 0.25 / 1000 = 2.5 → 2
    assert str(amounts("5", "5", "2800", jpy).utilisation) == "4"  # 3.5 → 4


def test_short_isps_are_exact() -> None:
    # 5 minutes = 1/12 h: 100 × 1 / 12 / 1000 = 0.008333… → 0.01
    five = amounts("1", "1", "100", minutes=5)
    assert five.utilisation == D("0.01")
    assert five.ordered_mwh == D("0.000083333333")  # rounded at 12 places: not a finite decimal
    # 10 minutes = 1/6 h: 300 × 1 / 6 / 1000 = 0.05 exactly
    assert amounts("1", "1", "300", minutes=10).utilisation == D("0.05")
    # 5 minutes, 6 kW at 100: 100 × 6 / 12 / 1000 = 0.05 exactly (no rounding through 0.0833… h)
    assert amounts("6", "6", "100", minutes=5).utilisation == D("0.05")


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (SettlementLine(D(0), D(1), D(1)), "ordered_kw"),
        (SettlementLine(D(1), D(1), D(-1)), "price_per_mwh"),
        (SettlementLine(D(1), D("NaN"), D(1)), "delivered_kw"),
        (SettlementLine(D(1), D(1), D(1), 0), "isp_minutes"),
    ],
)
def test_invalid_lines_are_refused(line: SettlementLine, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        line_amounts(line, PLAIN)
    assert caught.value.errors[0].field == field


# -- properties ---------------------------------------------------------------------------------


def _micro(n: int) -> Decimal:
    return Decimal(n).scaleb(-6)


@st.composite
def lines(draw: st.DrawFn, fine: bool | None = None) -> SettlementLine:
    """A line with 6-place decimals: either fine (the whole range) or coarse (0.25 kW and whole-price
    steps, which make exact half-cent ties common)."""
    if fine is None:
        fine = draw(st.booleans())
    minutes = draw(st.sampled_from([5, 10, 15, 15, 30, 60, 1, 1440]))
    if fine:
        ordered = draw(st.integers(1, 10**13))
        price = draw(st.integers(0, 10**12))
    else:
        ordered = draw(st.integers(1, 400)) * 250_000
        price = draw(st.integers(0, 2_000)) * 10**6
    delivered = draw(
        st.one_of(
            st.integers(-2 * ordered, 2 * ordered),
            st.sampled_from([0, ordered, ordered // 2, ordered + 1, ordered - 1, -1]),
            st.integers(0, 8).map(lambda q: q * ordered // 4),
            st.integers(-(2**63), 2**63 - 1),
        )
    )
    return SettlementLine(_micro(ordered), _micro(delivered), _micro(price), minutes)


@st.composite
def terms(draw: st.DrawFn) -> SettlementTerms:
    def price() -> Decimal:
        return draw(st.one_of(st.just(D(0)), st.integers(0, 2_000).map(D), st.integers(0, 10**12).map(_micro)))

    return SettlementTerms(
        currency=draw(st.sampled_from(["EUR", "EUR", "JPY", "KWD"])),
        penalty_price_per_mwh=price(),
        tolerance=draw(
            st.one_of(st.sampled_from(["0", "0.05", "0.1", "0.5", "0.75"]).map(D), st.integers(0, 999_999).map(_micro))
        ),
        sliding_scale=draw(st.booleans()),
        availability_price_per_mw_h=price(),
        operator_fee_per_mwh=price(),
    )


@settings(max_examples=200, deadline=None)
@given(lines(), terms())
def test_line_invariants(line: SettlementLine, t: SettlementTerms) -> None:
    result = line_amounts(line, t)
    hours = Fraction(line.isp_minutes, 60)
    assert result.seller_net + result.operator_fee == result.utility_cost
    assert result.seller_net == result.utilisation + result.availability - result.penalty - result.operator_fee
    assert result.penalty >= 0
    assert result.utilisation >= 0
    # never more than the whole order at the award price (rounded by the same rule)
    assert result.utilisation <= round_money(
        Fraction(line.price_per_mwh) * Fraction(line.ordered_kw) * hours / 1000, t.currency
    )
    assert 0 <= result.delivered_capped_kw <= line.ordered_kw
    assert result.delivered_capped_kw + result.shortfall_kw == line.ordered_kw
    assert 0 <= result.penalised_kw <= result.shortfall_kw
    # each amount is within half a minor unit of its exact value
    half = Fraction(1, 2 * 10 ** {"EUR": 2, "JPY": 0, "KWD": 3}[t.currency])
    exact_penalty = Fraction(t.penalty_price_per_mwh) * Fraction(result.penalised_kw) * hours / 1000
    assert abs(Fraction(result.penalty) - exact_penalty) <= half


@settings(max_examples=100, deadline=None)
@given(lines(), st.integers(0, 999_999).map(_micro))
def test_more_delivery_never_pays_less(line: SettlementLine, tolerance: Decimal) -> None:
    t = SettlementTerms(penalty_price_per_mwh=D(300), tolerance=tolerance, sliding_scale=True)
    more = SettlementLine(
        line.ordered_kw, line.delivered_kw + line.ordered_kw / 10, line.price_per_mwh, line.isp_minutes
    )
    less_result, more_result = line_amounts(line, t), line_amounts(more, t)
    assert more_result.utilisation >= less_result.utilisation
    assert more_result.penalty <= less_result.penalty


# -- frame_amounts == line_amounts --------------------------------------------------------------


def assert_frame_matches_lines(batch: list[SettlementLine], t: SettlementTerms) -> int:
    """Compare every row; return how many exact half-minor-unit ties the utilisation hit."""
    frame = frame_amounts(lines_frame(batch), t)
    assert frame.height == len(batch)
    ties = 0
    for line, row in zip(batch, frame.iter_rows(named=True), strict=True):
        expected = line_amounts(line, t)
        got = {c: from_minor(row[c], t.currency) for c in MONEY_COLUMNS}
        assert got == {
            "utilisation_minor": expected.utilisation,
            "availability_minor": expected.availability,
            "penalty_minor": expected.penalty,
            "operator_fee_minor": expected.operator_fee,
            "seller_net_minor": expected.seller_net,
            "utility_cost_minor": expected.utility_cost,
        }, line
        assert _micro(row["delivered_capped_kw"]) == expected.delivered_capped_kw
        assert _micro(row["shortfall_kw"]) == expected.shortfall_kw
        k = {"EUR": 2, "JPY": 0, "KWD": 3}[t.currency]
        factor = sliding_factor(
            Fraction(expected.delivered_capped_kw), Fraction(line.ordered_kw), Fraction(t.tolerance)
        )
        exact = Fraction(line.price_per_mwh) * Fraction(expected.delivered_capped_kw) * line.isp_minutes / 60 / 1000
        exact *= 10**k * (factor if t.sliding_scale else 1)
        ties += exact.denominator == 2
    return ties


@settings(max_examples=150, deadline=None)
@given(st.lists(lines(), min_size=1, max_size=25), terms())
def test_frame_equals_lines(batch: list[SettlementLine], t: SettlementTerms) -> None:
    assert_frame_matches_lines(batch, t)


@pytest.mark.parametrize("sliding", [False, True])
@pytest.mark.parametrize("currency", ["EUR", "JPY", "KWD"])
def test_frame_equals_lines_on_a_grid_full_of_ties(sliding: bool, currency: str) -> None:
    t = SettlementTerms(
        currency=currency,
        penalty_price_per_mwh=D(300),
        tolerance=D("0.05"),
        sliding_scale=sliding,
        availability_price_per_mw_h=D(10),
        operator_fee_per_mwh=D(4),
    )
    grid = [
        SettlementLine(D(o), D(d), D(p), m)
        for o, d, p, m in itertools.product(
            ["5", "10", "7.5"],
            ["-1", "0", "2.5", "5", "7.25", "9.5", "12"],
            ["100", "108", "2000", "2800", "123.456"],
            [5, 15, 60],
        )
    ]
    assert assert_frame_matches_lines(grid, t) >= 5  # the grid really exercises half-unit ties


@pytest.mark.parametrize("currency", ["EUR", "JPY", "KWD"])
def test_frame_is_exact_at_the_range_limits(currency: str) -> None:
    """The largest accepted values, where a 64-bit (or careless 128-bit) product would overflow."""
    top = SettlementTerms(
        currency=currency,
        penalty_price_per_mwh=D(1_000_000),
        tolerance=D("0.000001"),
        sliding_scale=True,
        availability_price_per_mw_h=D(1_000_000),
        operator_fee_per_mwh=D(1_000_000),
    )
    big, price = D(10_000_000), D(1_000_000)
    batch = [
        SettlementLine(big, big, price, 1440),
        SettlementLine(big, big - D("0.000001"), price, 1440),
        SettlementLine(big, D("7499999.999999"), price, 1440),
        SettlementLine(big, D("-9223372036854.775808"), price, 1440),
        SettlementLine(D("0.000001"), D("9223372036854.775807"), price, 1440),
        SettlementLine(D("9999999.999999"), D("6666666.666667"), D("999999.999999"), 1439),
    ]
    assert_frame_matches_lines(batch, top)


def test_frame_keeps_other_columns_and_types() -> None:
    frame = lines_frame([SettlementLine(D(10), D(8), D(200))]).with_columns(offer_id=pl.lit("o-1"))
    out = frame_amounts(frame, SPEC)
    assert out.columns[:5] == ["ordered_kw", "delivered_kw", "price_per_mwh", "isp_minutes", "offer_id"]
    assert all(out.schema[c] == pl.Int64 for c in MONEY_COLUMNS)
    assert out.row(0, named=True) | {"offer_id": "o-1"} == out.row(0, named=True)
    assert (out["utilisation_minor"][0], out["penalty_minor"][0], out["seller_net_minor"][0]) == (40, 11, 29)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("ordered_kw", 0, "must be in (0, 10000000] kW"),
        ("ordered_kw", 10**13 + 1, "must be in (0, 10000000] kW"),
        ("price_per_mwh", -1, "must be in [0, 1000000]"),
        ("price_per_mwh", 10**12 + 1, "must be in [0, 1000000]"),
        ("isp_minutes", 0, "must be in [1, 1440]"),
        ("delivered_kw", None, "must not be null"),
    ],
)
def test_frame_refuses_rows_out_of_range(column: str, value: int | None, reason: str) -> None:
    frame = lines_frame([SettlementLine(D(10), D(8), D(200))] * 3)
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(pl.lit(value, pl.Int64)).otherwise(pl.col(column)).alias(column)
    )
    with pytest.raises(InvalidInput) as caught:
        frame_amounts(frame, SPEC)
    assert caught.value.errors[0].field == f"lines.{column}"
    assert reason in caught.value.errors[0].reason
    assert "1 rows, first row 1" in caught.value.errors[0].reason


def test_frame_refuses_wrong_columns() -> None:
    frame = lines_frame([SettlementLine(D(10), D(8), D(200))])
    with pytest.raises(InvalidInput, match="missing column"):
        frame_amounts(frame.drop("isp_minutes"), SPEC)
    with pytest.raises(InvalidInput, match="must be Int64"):
        frame_amounts(frame.with_columns(pl.col("price_per_mwh").cast(pl.Float64)), SPEC)


def test_empty_frame() -> None:
    out = frame_amounts(lines_frame([]), SPEC)
    assert out.height == 0
    assert set(MONEY_COLUMNS) <= set(out.columns)


def test_lines_frame_refuses_values_it_cannot_hold() -> None:
    with pytest.raises(InvalidInput, match="at most 6 decimal places"):
        lines_frame([SettlementLine(D("1.0000001"), D(1), D(1))])
    with pytest.raises(InvalidInput, match="range of Int64"):
        lines_frame([SettlementLine(D(1), D(10**13), D(1))])


@settings(max_examples=50, deadline=None)
@given(st.lists(lines(fine=False), min_size=1, max_size=20), terms())
def test_one_step_and_two_step_sliding_divisions_agree(batch: list[SettlementLine], t: SettlementTerms) -> None:
    """Small frames take the one-step Int128 division; one huge row sends the frame down the
    two-step path. The small rows' amounts must not change."""
    t = SettlementTerms(t.currency, t.penalty_price_per_mwh, t.tolerance, True, t.availability_price_per_mw_h)
    huge = SettlementLine(D(10_000_000), D(7_654_321), D(1_000_000), 1440)
    small = frame_amounts(lines_frame(batch), t)
    mixed = frame_amounts(lines_frame([*batch, huge]), t)
    assert mixed.head(len(batch)).equals(small)
