"""Checks for decimal amounts arriving from clients (prices, quantities, factors)."""

from __future__ import annotations

from decimal import Context, Decimal

from market.core.errors import FieldError

DECIMAL_PLACES = 6
"""Amounts are stored with 6 decimal places (see :class:`market.core.db.ExactDecimal`)."""


def decimal_places(value: Decimal) -> int:
    """Places after the point once trailing zeros are dropped, counted exactly (``normalize``
    would round to the context's 28 digits first)."""
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int) or not any(digits):
        return 0
    while exponent < 0 and len(digits) > 1 and digits[-1] == 0:
        digits = digits[:-1]
        exponent += 1
    return max(0, -exponent)


_WIDE = Context(prec=60)
_ONE = Decimal(1)
_MICRO = _ONE.scaleb(-DECIMAL_PLACES)


def canonical(value: Decimal) -> Decimal:
    """The shortest plain form of a finite amount: ``5000.000000`` -> ``5000``, ``3000.50`` -> ``3000.5``.

    Stored and echoed amounts then read the same whatever form a client sent or a backend returns.
    Non-finite values, and values too long to normalise exactly, pass through unchanged for
    validation to refuse.
    """
    if not value.is_finite():
        return value
    if not value:
        return Decimal(0)
    if value.adjusted() >= _WIDE.prec - 10:  # absurdly large: leave it for the bounds check
        return value
    normal = value.normalize(_WIDE)
    if normal != value:  # normalising rounded: leave it for the decimal-places check
        return value
    if normal == normal.to_integral_value():
        return normal.quantize(_ONE, context=_WIDE)
    return normal


def amount_errors(field: str, value: Decimal, *, max_abs: Decimal, positive: bool = False) -> list[FieldError]:
    """Why ``value`` is not an acceptable amount, or an empty list."""
    if not value.is_finite():
        return [FieldError(field, "must be a finite number")]
    if abs(value) > max_abs:
        return [FieldError(field, f"must be within ±{max_abs}")]
    if positive and value <= 0:
        return [FieldError(field, "must be greater than zero")]
    if value != value.quantize(_MICRO, context=_WIDE):  # exact below 10**53, far above any max_abs
        return [FieldError(field, f"at most {DECIMAL_PLACES} decimal places")]
    return []
