from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.core.errors import InvalidInput
from settlement.runs.money import from_minor, minor_units, round_half_even_div, round_money, to_minor


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        # Ties go to the even neighbour, in both directions and for negatives.
        ("0.125", "EUR", "0.12"),
        ("0.135", "EUR", "0.14"),
        ("-0.125", "EUR", "-0.12"),
        ("-0.135", "EUR", "-0.14"),
        ("0.1125", "EUR", "0.11"),  # not a tie: ordinary rounding down
        ("0.12500001", "EUR", "0.13"),  # just above the tie
        ("2.5", "JPY", "2"),
        ("3.5", "JPY", "4"),
        ("1.0005", "KWD", "1.000"),
        ("0.4", "EUR", "0.40"),  # always the minor unit's places
        ("40", "JPY", "40"),
    ],
)
def test_round_money_is_half_even(amount: str, currency: str, expected: str) -> None:
    rounded = round_money(Decimal(amount), currency)
    assert str(rounded) == expected


def test_round_money_of_fractions_is_exact() -> None:
    assert round_money(Fraction(1, 8), "EUR") == Decimal("0.12")  # 0.125, a tie → even
    assert round_money(Fraction(27, 200), "EUR") == Decimal("0.14")  # 0.135
    # 1/12 EUR = 0.08333… → 0.08; 1/12 + 1/200 = 0.08833… → 0.09
    assert round_money(Fraction(1, 12), "EUR") == Decimal("0.08")
    assert round_money(Fraction(1, 12) + Fraction(1, 200), "EUR") == Decimal("0.09")


def test_minor_units_table_and_unknown_currencies() -> None:
    assert (minor_units("EUR"), minor_units("JPY"), minor_units("KWD")) == (2, 0, 3)
    with pytest.raises(InvalidInput) as caught:
        minor_units("XYZ")
    assert caught.value.errors[0].field == "currency"
    assert "no known minor unit" in caught.value.errors[0].reason
    with pytest.raises(InvalidInput, match="3-letter ISO 4217"):
        minor_units("eur")


def test_minor_conversions() -> None:
    assert to_minor(Decimal("1.25"), "EUR") == 125
    assert to_minor(Decimal("-0.01"), "EUR") == -1
    assert to_minor(Decimal(40), "JPY") == 40
    assert from_minor(125, "EUR") == Decimal("1.25")
    assert str(from_minor(40, "EUR")) == "0.40"
    assert str(from_minor(40, "JPY")) == "40"
    with pytest.raises(ValueError, match="whole number"):
        to_minor(Decimal("1.255"), "EUR")
    with pytest.raises(ValueError, match="whole number"):
        to_minor(Decimal("0.5"), "JPY")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(10**30), max_value=10**30), st.integers(min_value=1, max_value=10**20))
def test_round_half_even_div_matches_decimal(numerator: int, denominator: int) -> None:
    expected = round(Fraction(numerator, denominator))  # Python rounds Fractions half to even
    assert round_half_even_div(numerator, denominator) == expected


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=-(10**9), max_value=10**9, places=6, allow_nan=False, allow_infinity=False))
def test_round_money_agrees_for_decimal_and_fraction(amount: Decimal) -> None:
    rounded = round_money(amount, "EUR")
    assert rounded == round_money(Fraction(amount), "EUR")
    assert abs(rounded - amount) <= Decimal("0.005")
    assert from_minor(to_minor(rounded, "EUR"), "EUR") == rounded
