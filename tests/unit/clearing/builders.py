"""Small builders for order books and readers for clearing results, shared by the clearing tests.

Quantities are kW, prices currency per MWh, ISPs are 0.25 h unless a test says otherwise.
"""

from __future__ import annotations

from decimal import Decimal

from market.clearing.book import (
    UP,
    ClearingResult,
    Offer,
    OrderBook,
    PointResult,
    PricingRule,
    Request,
    Storage,
)

HOURS = 0.25
ISPS = tuple(f"2027-01-01T{10 + (15 * i) // 60:02d}:{(15 * i) % 60:02d}:00Z" for i in range(8))
"""ISO starts of up to 8 consecutive 15-minute ISPs."""

SINGLE = {("F1", "F1"): 1.0}
"""One feeder F1 relieving only itself."""

RADIAL = {
    ("T", "T"): 1.0,
    ("F1", "F1"): 1.0,
    ("F1", "T"): 1.0,
    ("F2", "F2"): 1.0,
    ("F2", "T"): 1.0,
}
"""Root transformer T with feeders F1 and F2: a kW at a feeder relieves the feeder and T."""

RADIAL3 = {**RADIAL, ("F3", "F3"): 1.0, ("F3", "T"): 1.0}
"""As :data:`RADIAL` with a third feeder F3."""


def at(second: int) -> str:
    """A submission time, ``second`` seconds into the day before delivery."""
    return f"2026-12-31T00:{second // 60:02d}:{second % 60:02d}Z"


def offer(
    oid: str,
    point: str,
    kw: float | tuple[float, ...],
    price: float | None = None,
    *,
    isp: int = 0,
    direction: int = UP,
    submitted: int = 0,
    tranches: tuple[tuple[float, float], ...] | None = None,
    min_fraction: float = 0.0,
    block: bool = False,
    rebound_isp: int | None = None,
    rebound_kw: tuple[float, ...] = (),
    storage: Storage | None = None,
) -> Offer:
    quantities = kw if isinstance(kw, tuple) else (kw,)
    if tranches is None:
        assert price is not None
        tranches = ((1.0, price),)
    return Offer(
        id=oid,
        congestion_point=point,
        direction=direction,
        first_isp=isp,
        quantities_kw=quantities,
        tranches=tranches,
        submitted_at=at(submitted),
        min_fraction=min_fraction,
        block=block,
        rebound_first_isp=rebound_isp,
        rebound_kw=rebound_kw,
        storage=storage,
    )


def request(
    rid: str,
    point: str,
    kw: float | tuple[float, ...],
    value: float,
    *,
    isp: int = 0,
    direction: int = UP,
    submitted: int = 0,
) -> Request:
    quantities = kw if isinstance(kw, tuple) else (kw,)
    return Request(rid, point, direction, isp, quantities, value, at(submitted))


def book(
    offers: list[Offer] | tuple[Offer, ...],
    requests: list[Request] | tuple[Request, ...],
    *,
    relief: dict[tuple[str, str], float] | None = None,
    n_isps: int = 1,
    rule: PricingRule = PricingRule.PAY_AS_CLEAR,
) -> OrderBook:
    return OrderBook(
        isps=ISPS[:n_isps],
        isp_hours=HOURS,
        offers=tuple(offers),
        requests=tuple(requests),
        relief=dict(SINGLE if relief is None else relief),
        pricing_rule=rule,
    )


def D(value: str | int) -> Decimal:  # noqa: N802 - reads like a literal
    return Decimal(value)


def kw(*values: str | int) -> tuple[Decimal, ...]:
    """Expected kW per ISP, as the engine reports them (3 decimals)."""
    return tuple(Decimal(v).quantize(Decimal("0.001")) for v in values)


def price(*values: str | int) -> tuple[Decimal, ...]:
    """Expected prices per ISP (4 decimals; Decimal equality ignores the exponent anyway)."""
    return tuple(Decimal(v).quantize(Decimal("0.0001")) for v in values)


def awards(result: ClearingResult) -> dict[str, tuple[tuple[Decimal, ...], tuple[Decimal, ...]]]:
    """offer id -> (accepted kW per ISP, price per ISP)."""
    return {a.offer_id: (a.accepted_kw, a.price_per_mwh) for a in result.awards}


def rejections(result: ClearingResult) -> dict[str, str]:
    return {r.offer_id: r.reason.value for r in result.rejections}


def points(result: ClearingResult) -> dict[tuple[str, int, int], tuple[Decimal, Decimal, Decimal, Decimal]]:
    """(point, ISP, direction) -> (requested, procured, unmet, price)."""
    return {(p.congestion_point, p.isp, p.direction): _point(p) for p in result.points}


def _point(p: PointResult) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    return (p.requested_kw, p.procured_kw, p.unmet_kw, p.price_per_mwh)


def point(requested: str, procured: str, unmet: str, at_price: str) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    return (*kw(requested, procured, unmet), *price(at_price))  # type: ignore[return-value]


def procured(result: ClearingResult) -> dict[str, tuple[Decimal, ...]]:
    return {r.request_id: r.procured_kw for r in result.request_awards}


def summary(result: ClearingResult) -> dict[str, object]:
    """Everything a participant is told, for comparing two clearings."""
    return {
        "awards": result.awards,
        "rejections": result.rejections,
        "points": result.points,
        "requests": result.request_awards,
        "welfare": result.welfare,
        "result_hash": result.result_hash,
    }
