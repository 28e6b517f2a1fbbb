"""The clearing engine's input and output, as plain immutable values.

Quantities are kW (average over the ISP), prices are currency per MWh. The book is indexed by
ISP position: ``isps[i]`` is the ISO 8601 UTC start of ISP ``i`` in the clearing horizon.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any


class PricingRule(StrEnum):
    PAY_AS_CLEAR = "pay_as_clear"
    PAY_AS_BID = "pay_as_bid"


class RejectionReason(StrEnum):
    """Why an offer got nothing (MARKET.md, Clearing)."""

    NO_REQUEST = "no_request"
    """No request in its ISPs that its congestion point relieves."""
    ABOVE_MARGINAL_PRICE = "above_marginal_price"
    """Its price is above the value of the relief it offers at every one of its ISPs."""
    NOT_NEEDED = "not_needed"
    """Competitive, but the requests were met by others (time priority, all-or-nothing, limits)."""


UP = 1
DOWN = -1


@dataclass(frozen=True, slots=True)
class Storage:
    capacity_kwh: float
    initial_kwh: float
    efficiency: float = 1.0


@dataclass(frozen=True, slots=True)
class Offer:
    """One FlexOffer. ``quantities_kw[j]`` applies to ISP ``first_isp + j``.

    ``tranches`` is a convex price curve: ``(share, price)`` pairs whose shares add up to 1 and
    whose prices never fall; a single-price offer has one tranche ``(1.0, price)``.
    """

    id: str
    congestion_point: str
    direction: int
    first_isp: int
    quantities_kw: tuple[float, ...]
    tranches: tuple[tuple[float, float], ...]
    submitted_at: str
    min_fraction: float = 0.0
    block: bool = False
    rebound_first_isp: int | None = None
    rebound_kw: tuple[float, ...] = ()
    storage: Storage | None = None

    @property
    def isp_indexes(self) -> range:
        return range(self.first_isp, self.first_isp + len(self.quantities_kw))

    @property
    def rebound_indexes(self) -> range:
        if self.rebound_first_isp is None:
            return range(0)
        return range(self.rebound_first_isp, self.rebound_first_isp + len(self.rebound_kw))


@dataclass(frozen=True, slots=True)
class Request:
    """One FlexRequest: up to ``quantities_kw[j]`` at ISP ``first_isp + j``, worth ``value_per_mwh``."""

    id: str
    congestion_point: str
    direction: int
    first_isp: int
    quantities_kw: tuple[float, ...]
    value_per_mwh: float
    submitted_at: str = ""


@dataclass(frozen=True, slots=True)
class OrderBook:
    """Everything a clearing needs. ``relief[(source, target)]`` is the kW of relief at ``target``
    per kW of flexibility at ``source`` (see :func:`market.grid.relief.relief_factors`)."""

    isps: tuple[str, ...]
    isp_hours: float
    offers: tuple[Offer, ...]
    requests: tuple[Request, ...]
    relief: dict[tuple[str, str], float]
    pricing_rule: PricingRule = PricingRule.PAY_AS_CLEAR


@dataclass(frozen=True, slots=True)
class Award:
    """An accepted offer (the FlexOrder): kW per ISP and the price per ISP it is paid."""

    offer_id: str
    accepted_kw: tuple[Decimal, ...]
    price_per_mwh: tuple[Decimal, ...]
    first_isp: int
    activation: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    offer_id: str
    reason: RejectionReason


@dataclass(frozen=True, slots=True)
class PointResult:
    """Per congestion point, ISP and direction with requests: what was asked, got, and its price."""

    congestion_point: str
    isp: int
    direction: int
    requested_kw: Decimal
    procured_kw: Decimal
    unmet_kw: Decimal
    price_per_mwh: Decimal


@dataclass(frozen=True, slots=True)
class RequestAward:
    request_id: str
    first_isp: int
    procured_kw: tuple[Decimal, ...]


@dataclass(frozen=True)
class ClearingResult:
    awards: tuple[Award, ...]
    rejections: tuple[Rejection, ...]
    points: tuple[PointResult, ...]
    request_awards: tuple[RequestAward, ...]
    welfare: Decimal
    input_hash: str
    result_hash: str
    components: int = 0
    solver: str = ""
    diagnostics: dict[str, float] = field(default_factory=dict, compare=False)


class _Reprs(dict[float, str]):
    """``repr`` of floats, remembered: a book repeats the same few hundred quantities many times.
    Only floats with a fraction are remembered: 0.0 and -0.0, or 10 and 10.0, are one key each
    with two reprs."""

    def __missing__(self, key: float) -> str:
        text = repr(key)
        if type(key) is float and not key.is_integer():
            self[key] = text
        return text


def book_to_json(book: OrderBook) -> dict[str, object]:
    """A JSON-ready snapshot of the book (floats keep their exact binary value through ``repr``)."""
    reprs = _Reprs()

    def offer(o: Offer) -> dict[str, object]:
        return {
            "id": o.id,
            "point": o.congestion_point,
            "direction": o.direction,
            "first_isp": o.first_isp,
            "kw": list(map(reprs.__getitem__, o.quantities_kw)),
            "tranches": [[repr(s), repr(p)] for s, p in o.tranches],
            "submitted_at": o.submitted_at,
            "min_fraction": repr(o.min_fraction),
            "block": o.block,
            "rebound_first_isp": o.rebound_first_isp,
            "rebound_kw": list(map(repr, o.rebound_kw)),
            "storage": None
            if o.storage is None
            else [repr(o.storage.capacity_kwh), repr(o.storage.initial_kwh), repr(o.storage.efficiency)],
        }

    return {
        "isps": list(book.isps),
        "isp_hours": repr(book.isp_hours),
        "pricing_rule": book.pricing_rule.value,
        "offers": [offer(o) for o in book.offers],
        "requests": [
            {
                "id": r.id,
                "point": r.congestion_point,
                "direction": r.direction,
                "first_isp": r.first_isp,
                "kw": list(map(reprs.__getitem__, r.quantities_kw)),
                "value": repr(r.value_per_mwh),
                "submitted_at": r.submitted_at,
            }
            for r in book.requests
        ],
        "relief": [[s, t, repr(f)] for (s, t), f in sorted(book.relief.items())],
    }


def book_from_json(data: dict[str, Any]) -> OrderBook:
    """The inverse of :func:`book_to_json`."""
    offers = tuple(
        Offer(
            id=o["id"],
            congestion_point=o["point"],
            direction=int(o["direction"]),
            first_isp=int(o["first_isp"]),
            quantities_kw=tuple(float(q) for q in o["kw"]),
            tranches=tuple((float(s), float(p)) for s, p in o["tranches"]),
            submitted_at=o["submitted_at"],
            min_fraction=float(o["min_fraction"]),
            block=bool(o["block"]),
            rebound_first_isp=o["rebound_first_isp"],
            rebound_kw=tuple(float(q) for q in o["rebound_kw"]),
            storage=None if o["storage"] is None else Storage(*(float(v) for v in o["storage"])),
        )
        for o in data["offers"]
    )
    requests = tuple(
        Request(
            id=r["id"],
            congestion_point=r["point"],
            direction=int(r["direction"]),
            first_isp=int(r["first_isp"]),
            quantities_kw=tuple(float(q) for q in r["kw"]),
            value_per_mwh=float(r["value"]),
            submitted_at=r["submitted_at"],
        )
        for r in data["requests"]
    )
    return OrderBook(
        isps=tuple(data["isps"]),
        isp_hours=float(data["isp_hours"]),
        offers=offers,
        requests=requests,
        relief={(s, t): float(f) for s, t, f in data["relief"]},
        pricing_rule=PricingRule(data["pricing_rule"]),
    )
