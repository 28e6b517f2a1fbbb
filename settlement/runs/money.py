"""Money: exact ``Decimal`` amounts in a currency's minor unit, and THE rounding rule of settlement.

**The rounding rule.** Every settlement amount is first computed exactly (as a rational number: no
float, no intermediate rounding, not even of a sliding-scale factor or of 5-minute ISP hours), then
rounded **once per settlement line** — one award (FlexOrder) × one ISP × one kind of amount
(utilisation, availability, penalty, operator fee) — to the currency's minor unit (:data:`MINOR_UNITS`:
2 places for EUR, 0 for JPY, 3 for KWD) with ``ROUND_HALF_EVEN``: a value exactly halfway between
two minor units goes to the even one (0.125 → 0.12, 0.135 → 0.14, 2.5 JPY → 2). Net amounts
(seller net, utility cost) and every total are sums of the rounded line amounts, never rounded
again, so a statement always adds up to the cent and the ledger posts exactly the statement's figures.

Half-even ("banker's rounding") is the default of Python's ``decimal`` contexts and IEEE 754's
``roundTiesToEven``; Java documents ``RoundingMode.HALF_EVEN`` as "the rounding mode that
statistically minimizes cumulative error when applied repeatedly over a sequence of calculations
... sometimes known as Banker's rounding". Settlement sums many rounded lines, and half-up would
bias every tie in the same direction (ties are common: 15-minute ISPs quarter the amounts).
Note that EU Council Regulation 1103/97 art. 5 rounds ties *up*, but only for converting national
currencies into euro, which settlement never does.

A currency not in :data:`MINOR_UNITS` is refused rather than guessed: a wrong minor unit would
silently mis-round every amount.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction
from types import MappingProxyType

from market.core.errors import InvalidInput

CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")
"""An ISO 4217 alphabetic code."""

MINOR_UNITS: MappingProxyType[str, int] = MappingProxyType(
    {
        # ISO 4217 "minor unit" column: decimal places of the currency's smallest unit.
        **dict.fromkeys(("EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF", "RON", "BGN"), 2),
        **dict.fromkeys(("CAD", "AUD", "NZD", "SGD", "HKD", "CNY", "INR", "ZAR", "BRL", "MXN", "TRY", "RSD"), 2),
        **dict.fromkeys(("JPY", "KRW", "ISK", "CLP", "VND"), 0),
        **dict.fromkeys(("BHD", "KWD", "OMR", "JOD", "TND"), 3),
    }
)
"""Decimal places of each supported currency's minor unit (ISO 4217)."""

_WIDE = Context(prec=80, rounding=ROUND_HALF_EVEN)
"""Wide enough that quantizing any amount this system can hold never runs out of digits."""


def minor_units(currency: str) -> int:
    """Decimal places of ``currency``'s minor unit (2 for EUR, 0 for JPY); unknown codes are refused."""
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise InvalidInput.on("currency", currency_reason(currency)) from None


def currency_reason(currency: str) -> str:
    """Why ``currency`` cannot be settled in (for a :class:`~market.core.errors.FieldError`)."""
    if not CURRENCY_PATTERN.fullmatch(currency):
        return "must be a 3-letter ISO 4217 code in capitals, e.g. EUR"
    return f"{currency} has no known minor unit; supported: {', '.join(sorted(MINOR_UNITS))}"


def round_half_even_div(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded to an integer, ties to even (exact integer arithmetic)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    quotient, remainder = divmod(numerator, denominator)  # floor division: 0 <= remainder < denominator
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        return quotient + 1
    return quotient


def round_money(amount: Decimal | Fraction | int, currency: str) -> Decimal:
    """``amount`` rounded half-even to ``currency``'s minor unit: ``round_money(Fraction(1, 8), "EUR") == 0.12``.

    A ``Fraction`` is rounded exactly (settlement amounts such as a 5-minute ISP's 1/12 h are not
    finite decimals); the result always carries exactly the minor unit's places (``0.40``, not ``0.4``).
    """
    places = minor_units(currency)
    if isinstance(amount, Decimal):
        if not amount.is_finite():
            raise ValueError(f"{amount} is not a finite amount")
        return amount.quantize(Decimal(1).scaleb(-places), context=_WIDE)
    exact = Fraction(amount) * 10**places
    return from_minor(round_half_even_div(exact.numerator, exact.denominator), currency)


def to_minor(amount: Decimal, currency: str) -> int:
    """``amount`` as a whole number of minor units (``1.25`` EUR → ``125``).

    The amount must already be rounded (:func:`round_money`): an amount with more places than the
    currency's minor unit is refused, never silently rounded.
    """
    scaled = amount.scaleb(minor_units(currency), context=_WIDE)
    if not scaled.is_finite() or scaled != scaled.to_integral_value(context=_WIDE):
        raise ValueError(f"{amount} is not a whole number of {currency} minor units")
    return int(scaled)


def from_minor(units: int, currency: str) -> Decimal:
    """``units`` minor units as an amount with exactly the minor unit's places (``125`` EUR → ``1.25``)."""
    return Decimal(units).scaleb(-minor_units(currency), context=_WIDE)
