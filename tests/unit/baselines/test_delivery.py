"""Delivery math by hand, and its sign property."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from market.core.errors import InvalidInput
from settlement.delivery.math import add_delivered, kwh_to_kw, portfolio_delivery

DAY = date(2025, 3, 14)


def rows(*values: tuple[int, int, str, float | None, float | None]) -> pl.DataFrame:
    return pl.DataFrame(
        [(r, DAY, s, direction, b, a) for r, s, direction, b, a in values],
        schema={
            "resource": pl.UInt32,
            "day": pl.Date,
            "slot": pl.UInt16,
            "direction": pl.String,
            "baseline_kw": pl.Float64,
            "actual_kw": pl.Float64,
        },
        orient="row",
    )


def test_delivered_is_sign_times_baseline_minus_actual() -> None:
    out = add_delivered(rows((0, 4, "up", 10.0, 7.0), (0, 5, "down", 10.0, 13.0), (1, 4, "up", 10.0, None)))
    # up: 10 − 7 = 3 kW less consumption; down: −(10 − 13) = 3 kW more; no actual: unverifiable.
    assert out["delivered_kw"].to_list() == [3.0, 3.0, None]


def test_unknown_direction_is_refused() -> None:
    with pytest.raises(InvalidInput, match="direction"):
        add_delivered(rows((0, 4, "sideways", 1.0, 1.0)))


def test_portfolio_sums_its_members_and_is_null_when_one_is_missing() -> None:
    sites = add_delivered(
        rows(
            (0, 4, "up", 10.0, 7.0),
            (1, 4, "up", 5.0, 5.5),
            (2, 4, "up", 3.0, 1.0),
            (0, 5, "up", 10.0, 8.0),
            (1, 5, "up", 5.0, None),
            (9, 5, "up", 1.0, 0.0),
        )
    )
    membership = pl.DataFrame(
        {"resource": [0, 1, 2], "portfolio": [100, 100, 200]},
        schema_overrides={"resource": pl.UInt32, "portfolio": pl.UInt32},
    )
    out = portfolio_delivery(sites, membership)
    want = pl.DataFrame(
        [
            (100, DAY, 4, "up", 15.0, 12.5, 2.5, 2),
            (100, DAY, 5, "up", 15.0, None, None, 2),
            (200, DAY, 4, "up", 3.0, 1.0, 2.0, 1),
        ],
        schema={
            "portfolio": pl.UInt32,
            "day": pl.Date,
            "slot": pl.UInt16,
            "direction": pl.String,
            "baseline_kw": pl.Float64,
            "actual_kw": pl.Float64,
            "delivered_kw": pl.Float64,
            "members": pl.UInt32,
        },
        orient="row",
    )
    assert_frame_equal(out, want)


def test_kwh_to_kw() -> None:
    assert kwh_to_kw(0.5, 15) == 2.0
    assert kwh_to_kw(Decimal("0.25"), 15) == Decimal("1.00")
    assert kwh_to_kw(pl.Series([1.0, 3.0]), 30).to_list() == [2.0, 6.0]
    with pytest.raises(InvalidInput):
        kwh_to_kw(1.0, 0)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(-400, 400), st.integers(-400, 400)), min_size=1, max_size=20))
def test_delivered_flips_sign_with_direction(pairs: list[tuple[int, int]]) -> None:
    up = add_delivered(rows(*[(0, i, "up", b / 4, a / 4) for i, (b, a) in enumerate(pairs)]))
    down = add_delivered(rows(*[(0, i, "down", b / 4, a / 4) for i, (b, a) in enumerate(pairs)]))
    assert up["delivered_kw"].to_list() == [-v for v in down["delivered_kw"].to_list()]
    assert up["delivered_kw"].to_list() == [(b - a) / 4 for b, a in pairs]
