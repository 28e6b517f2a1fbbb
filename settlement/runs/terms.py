"""A market's settlement terms: penalty price and tolerance band, sliding scale, availability price,
operator fee and aggregator fee share (MARKET.md, Settlement).

Terms are stored as JSON (:meth:`SettlementTerms.to_dict`), decimals as strings so they survive
exactly. :func:`terms_errors` names every invalid field and why; :func:`SettlementTerms.from_dict`
refuses a bad document with all its errors at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

from market.core.amounts import DECIMAL_PLACES, canonical, decimal_places
from market.core.errors import FieldError, InvalidInput
from settlement.runs.money import MINOR_UNITS, currency_reason

MAX_PRICE_PER_MWH = Decimal(1_000_000)
"""Bound on every price in the terms; the same as the markets' price bound, and the range
:func:`settlement.runs.amounts.frame_amounts` is proven not to overflow in."""

_PRICES = ("penalty_price_per_mwh", "availability_price_per_mw_h", "operator_fee_per_mwh")
_DECIMALS = (*_PRICES, "tolerance", "aggregator_fee_share")


@dataclass(frozen=True, slots=True)
class SettlementTerms:
    """How a market settles awards. All zero (the default) means: pay utilisation only.

    * ``currency``: ISO 4217 code; amounts round to its minor unit (:mod:`settlement.runs.money`).
    * ``penalty_price_per_mwh`` (≥ 0): paid by the seller per MWh of shortfall beyond the tolerance band.
    * ``tolerance`` (in [0, 1)): the share of the ordered energy that may be missing with no
      penalty and, with the sliding scale, with full payment (e.g. 0.05).
    * ``sliding_scale``: scale the utilisation payment between 50% and 100% delivery
      (:func:`settlement.runs.amounts.sliding_factor`).
    * ``availability_price_per_mw_h`` (≥ 0): paid per MW of ordered (contracted) capacity per hour.
    * ``operator_fee_per_mwh`` (≥ 0): paid by the seller to the operator per MWh delivered (capped at ordered).
    * ``aggregator_fee_share`` (in [0, 1]): the share of an aggregator's net revenue it keeps before
      passing the rest through to its member sites (:func:`settlement.runs.allocation.pass_through`).
    """

    currency: str = "EUR"
    penalty_price_per_mwh: Decimal = Decimal(0)
    tolerance: Decimal = Decimal(0)
    sliding_scale: bool = False
    availability_price_per_mw_h: Decimal = Decimal(0)
    operator_fee_per_mwh: Decimal = Decimal(0)
    aggregator_fee_share: Decimal = Decimal(0)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: decimals as canonical strings (``"0.05"``), the rest as is."""
        out: dict[str, Any] = {"currency": self.currency, "sliding_scale": self.sliding_scale}
        for name in _DECIMALS:
            out[name] = str(canonical(getattr(self, name)))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, prefix: str = "") -> SettlementTerms:
        """Terms from their JSON form. Missing keys take the defaults; unknown keys, non-decimal
        strings, floats (inexact) and invalid values are refused with every reason at once."""
        errors: list[FieldError] = []
        known = {f.name for f in fields(cls)}
        errors += [FieldError(f"{prefix}{key}", "unknown field") for key in sorted(set(data) - known, key=str)]
        values: dict[str, Any] = {}
        if "currency" in data:
            if isinstance(data["currency"], str):
                values["currency"] = data["currency"]
            else:
                errors.append(FieldError(f"{prefix}currency", "must be a string"))
        if "sliding_scale" in data:
            if isinstance(data["sliding_scale"], bool):
                values["sliding_scale"] = data["sliding_scale"]
            else:
                errors.append(FieldError(f"{prefix}sliding_scale", "must be true or false"))
        for name in _DECIMALS:
            if name not in data:
                continue
            raw = data[name]
            # bool is an int; a float is already inexact: both are refused.
            if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
                errors.append(FieldError(f"{prefix}{name}", 'must be a decimal string, e.g. "0.05"'))
                continue
            try:
                values[name] = Decimal(raw)
            except InvalidOperation:
                errors.append(FieldError(f"{prefix}{name}", 'must be a decimal string, e.g. "0.05"'))
        if errors:
            raise InvalidInput(detail="invalid settlement terms", errors=errors)
        terms = cls(**values)
        errors = terms_errors(terms, prefix=prefix)
        if errors:
            raise InvalidInput(detail="invalid settlement terms", errors=errors)
        return terms


def terms_errors(terms: SettlementTerms, *, prefix: str = "") -> list[FieldError]:
    """Why ``terms`` are not acceptable, one :class:`FieldError` per bad field, or an empty list.

    Prices must be in [0, 1 000 000] per MWh, ``tolerance`` in [0, 1), ``aggregator_fee_share``
    in [0, 1], every decimal finite with at most 6 places, ``currency`` a supported ISO 4217 code.
    ``prefix`` is put before each field name (e.g. ``"terms."``).
    """
    errors: list[FieldError] = []
    if not isinstance(terms.currency, str) or terms.currency not in MINOR_UNITS:
        errors.append(FieldError(f"{prefix}currency", currency_reason(str(terms.currency))))
    if not isinstance(terms.sliding_scale, bool):
        errors.append(FieldError(f"{prefix}sliding_scale", "must be true or false"))
    for name in _DECIMALS:
        field = f"{prefix}{name}"
        value = getattr(terms, name)
        if not isinstance(value, Decimal):
            errors.append(FieldError(field, "must be a Decimal"))
            continue
        errors += _decimal_errors(field, value, name)
    return errors


def _decimal_errors(field: str, value: Decimal, name: str) -> list[FieldError]:
    reason = ""
    if not value.is_finite():
        reason = "must be a finite number"
    elif value < 0:
        reason = "must not be negative"
    elif name in _PRICES and value > MAX_PRICE_PER_MWH:
        reason = f"must be at most {MAX_PRICE_PER_MWH}"
    elif name == "tolerance" and value >= 1:
        reason = "must be below 1 (it is a share of the ordered energy)"
    elif name == "aggregator_fee_share" and value > 1:
        reason = "must be at most 1 (it is a share of the revenue)"
    elif decimal_places(value) > DECIMAL_PLACES:
        reason = f"at most {DECIMAL_PLACES} decimal places"
    return [FieldError(field, reason)] if reason else []
