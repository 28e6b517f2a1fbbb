"""Aggregator pass-through: an aggregator's revenue allocated to its member sites in proportion to
their delivered energy, less the aggregator's fee share (MARKET.md, Settlement).

Allocation uses the largest-remainder (Hamilton) method on whole minor units, so the shares always
add up exactly to the amount allocated and no share is off its exact proportional value by a full
minor unit:

1. each member with a positive weight w gets ⌊T · w / Σw⌋ minor units of the total T (members
   with weight ≤ 0, i.e. no delivered energy, get 0);
2. the L = T − Σ⌊…⌋ minor units left over (L < number of members) go one each to the L members
   with the largest remainders T · w / Σw − ⌊…⌋; equal remainders are broken by key order,
   smallest key first (keys must be sortable, e.g. site UUIDs or their strings), which makes the
   result independent of the mapping's order.

A negative total (a net penalty passed on to members) is allocated symmetrically:
``allocate(-T) == -allocate(T)`` member by member, so members share a penalty by the same rule
they share revenue. If no member has a positive weight, nothing is allocated (every member gets 0)
and :func:`pass_through` leaves the whole amount with the aggregator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Generic, TypeVar

from settlement.runs.money import from_minor, round_money, to_minor

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

K = TypeVar("K", bound="SupportsRichComparison")


def allocate(total: Decimal, weights: Mapping[K, Decimal], currency: str) -> dict[K, Decimal]:
    """``total`` (whole minor units of ``currency``) split over the keys of ``weights`` by the
    largest-remainder method (module docstring); every key is in the result.

    The shares sum exactly to ``total`` whenever some weight is positive; otherwise all are 0.
    Example: 1.00 EUR over weights 1/1/1 for keys a, b, c → a 0.34, b 0.33, c 0.33.
    """
    units = to_minor(total, currency)
    positive = {key: Fraction(w) for key, w in weights.items() if _finite(w) > 0}
    weight_sum = sum(positive.values(), Fraction(0))
    if weight_sum == 0 or units == 0:
        return {key: from_minor(0, currency) for key in weights}
    shares = dict.fromkeys(weights, 0)
    magnitude, sign = abs(units), (1 if units > 0 else -1)
    remainders: list[tuple[Fraction, K]] = []
    for key, weight in positive.items():
        quota = magnitude * weight / weight_sum
        floor = math.floor(quota)
        shares[key] = floor
        remainders.append((quota - floor, key))
    left_over = magnitude - sum(shares.values())
    # Largest remainder first; among equal remainders the smallest key first.
    ranked = sorted(remainders, key=lambda item: (-item[0], item[1]))
    for _, key in ranked[:left_over]:
        shares[key] += 1
    return {key: from_minor(sign * share, currency) for key, share in shares.items()}


def _finite(weight: Decimal) -> Decimal:
    if not weight.is_finite():
        raise ValueError(f"weight {weight} is not a finite number")
    return weight


@dataclass(frozen=True, slots=True)
class PassThrough(Generic[K]):
    """An aggregator's net revenue split: what it keeps and what each member site gets.

    ``aggregator_keeps + sum(members.values()) == aggregator_net`` exactly.
    """

    aggregator_keeps: Decimal
    members: dict[K, Decimal]


def pass_through(
    aggregator_net: Decimal, member_delivered_kwh: Mapping[K, Decimal], fee_share: Decimal, currency: str
) -> PassThrough[K]:
    """Pass an aggregator's net settlement amount through to its member sites.

    The members' pool is ``aggregator_net × (1 − fee_share)``, rounded once, half-even, to the
    minor unit, then allocated in proportion to each member's delivered kWh (:func:`allocate`;
    members with delivered ≤ 0 get 0). The aggregator keeps the rest,
    ``aggregator_net − Σ members``, which absorbs the pool's rounding, so the split adds up exactly.
    A negative net (penalties exceeding revenue) is split the same way: members bear
    ``1 − fee_share`` of it. When no member delivered anything the aggregator keeps everything.

    Example: net 10.00 EUR, fee share 0.2, members a 3 kWh, b 1 kWh → pool 8.00 → a 6.00, b 2.00,
    aggregator keeps 2.00.
    """
    if not (fee_share.is_finite() and 0 <= fee_share <= 1):
        raise ValueError(f"fee_share {fee_share} must be in [0, 1]")
    to_minor(aggregator_net, currency)  # refuses an unrounded amount
    has_delivery = any(_finite(kwh) > 0 for kwh in member_delivered_kwh.values())
    pool = round_money(Fraction(aggregator_net) * (1 - Fraction(fee_share)), currency) if has_delivery else None
    if pool is None:
        members = {key: from_minor(0, currency) for key in member_delivered_kwh}
    else:
        members = allocate(pool, member_delivered_kwh, currency)
    kept = aggregator_net - sum(members.values(), from_minor(0, currency))
    return PassThrough(aggregator_keeps=kept, members=members)
