from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.core.amounts import amount_errors, canonical, decimal_places


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5000.000000", "5000"),
        ("3000.50", "3000.5"),
        ("0.000", "0"),
        ("-0", "0"),
        ("-0.10", "-0.1"),
        ("1E+3", "1000"),
        ("1E+60", "1E+60"),
        ("0.000001", "0.000001"),
        ("1.0000000000000000000000000001", "1.0000000000000000000000000001"),
    ],
)
def test_canonical_forms(raw: str, expected: str) -> None:
    assert str(canonical(Decimal(raw))) == expected


@pytest.mark.parametrize(("raw", "places"), [("1.50", 1), ("0.000", 0), ("1E+3", 0), ("1E-7", 7), ("2.1234560", 6)])
def test_decimal_places(raw: str, places: int) -> None:
    assert decimal_places(Decimal(raw)) == places


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("NaN", "must be a finite number"),
        ("Infinity", "must be a finite number"),
        ("1000001", "must be within ±1000000"),
        ("0", "must be greater than zero"),
        ("1.0000001", "at most 6 decimal places"),
        ("1.0000000000000000000000000001", "at most 6 decimal places"),
    ],
)
def test_amount_errors_name_the_reason(raw: str, reason: str) -> None:
    errors = amount_errors("price", Decimal(raw), max_abs=Decimal(1_000_000), positive=True)
    assert [(e.field, e.reason) for e in errors] == [("price", reason)]


@pytest.mark.parametrize("raw", ["1.000001", "1.50000000000", "1E+6", "0.000001", "999999.999999", "2.5E-3"])
def test_amount_errors_accept_six_places_written_any_way(raw: str) -> None:
    assert amount_errors("price", Decimal(raw), max_abs=Decimal(1_000_000), positive=True) == []


@given(st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-(10**9), max_value=10**9))
def test_canonical_keeps_the_value(value: Decimal) -> None:
    assert canonical(value) == value
    assert "E" not in str(canonical(value))
