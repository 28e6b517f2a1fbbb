"""Clearing a market's delivery day from the stored order book, and storing the result.

A delivery day is cleared once its gate has closed (for an intraday market: once the gate of its
last ISP has). The book is the orders that were active at gate closure. The run row is unique per
(market, day): a second clearing of the same gate returns the first run, whoever asks and however
often a task is retried. Everything is written in the caller's one transaction, so a crash leaves
no partial result.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, or_, select
from sqlalchemy.orm import Session

from market.auth.principal import Principal
from market.clearing.book import (
    UP,
    ClearingResult,
    Offer,
    OrderBook,
    PricingRule,
    Request,
    Storage,
    book_from_json,
    book_to_json,
)
from market.clearing.engine import clear
from market.clearing.models import (
    ClearingRun,
    FlexOrderAward,
    OfferOutcome,
    OfferResult,
    PointPrice,
    RequestProcurement,
    RunStatus,
)
from market.clearing.solve import DEFAULT_SOLVER
from market.core import audit
from market.core.errors import Conflict, NotFound
from market.core.queries import Page, paginate
from market.grid.service import market_relief
from market.markets.calendar import MarketClock
from market.markets.models import Market
from market.markets.service import clock_of, get_market
from market.orders.models import Direction, FlexOffer, FlexRequest


def day_gate(clock: MarketClock, day: date) -> datetime:
    """When every ISP of ``day`` has passed its gate."""
    return max(clock.gate_closure(isp) for isp in clock.isps_of_day(day))


def _direction(value: Direction) -> int:
    return UP if value is Direction.UP else -UP


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _clip(first: int, values: list[float], length: int) -> tuple[int, tuple[float, ...]]:
    """Keep the part of a profile that falls inside the horizon ``0..length-1``."""
    start = max(first, 0)
    end = min(first + len(values), length)
    if end <= start:
        return 0, ()
    return start, tuple(values[start - first : end - first])


def build_book(session: Session, market: Market, day: date, at: datetime) -> OrderBook:
    """The order book of ``day`` as it stood at ``at`` (gate closure): active orders whose first ISP
    falls on the day, clipped to the day. Revoked orders and orders expired by ``at`` are left out."""
    clock = clock_of(market)
    isps = clock.isps_of_day(day)
    start, end = isps[0], isps[-1] + clock.isp
    length = len(isps)

    def index(instant: datetime) -> int:
        return int((instant - start) / clock.isp)

    def active(model: type[FlexOffer] | type[FlexRequest]) -> list[Any]:
        return list(
            session.scalars(
                select(model).where(
                    model.market_id == market.id,
                    model.period_start >= start,
                    model.period_start < end,
                    model.revoked_at.is_(None),
                    or_(model.expires_at.is_(None), model.expires_at > at),
                )
            )
        )

    offers: list[Offer] = []
    for row in active(FlexOffer):
        first, kw = _clip(index(row.period_start), [float(q) for q in row.quantities_kw], length)
        if not any(kw):
            continue
        rebound_first: int | None = None
        rebound_kw: tuple[float, ...] = ()
        if row.rebound_start is not None and row.rebound_kw:
            clipped_first, rebound_kw = _clip(index(row.rebound_start), [float(q) for q in row.rebound_kw], length)
            rebound_first = clipped_first if rebound_kw else None
        tranches = (
            ((1.0, float(row.price_per_mwh)),)
            if row.price_per_mwh is not None
            else tuple((float(share), float(price)) for share, price in row.tranches or [])
        )
        storage = None
        if row.storage_capacity_kwh is not None:
            storage = Storage(
                float(row.storage_capacity_kwh), float(row.storage_initial_kwh or 0), float(row.storage_efficiency or 1)
            )
        offers.append(
            Offer(
                id=str(row.id),
                congestion_point=str(row.congestion_point_id),
                direction=_direction(row.direction),
                first_isp=first,
                quantities_kw=kw,
                tranches=tranches,
                submitted_at=_iso(row.submitted_at),
                min_fraction=float(row.min_acceptance_fraction),
                block=row.is_block,
                rebound_first_isp=rebound_first,
                rebound_kw=rebound_kw,
                storage=storage,
            )
        )
    requests: list[Request] = []
    for row in active(FlexRequest):
        first, kw = _clip(index(row.period_start), [float(q) for q in row.quantities_kw], length)
        if any(kw):
            requests.append(
                Request(
                    id=str(row.id),
                    congestion_point=str(row.congestion_point_id),
                    direction=_direction(row.direction),
                    first_isp=first,
                    quantities_kw=kw,
                    value_per_mwh=float(row.max_price_per_mwh),
                    submitted_at=_iso(row.submitted_at),
                )
            )
    relief = {(str(e.source_id), str(e.target_id)): float(e.factor) for e in market_relief(session, market.id)}
    return OrderBook(
        isps=tuple(_iso(i) for i in isps),
        isp_hours=clock.isp_minutes / 60,
        offers=tuple(offers),
        requests=tuple(requests),
        relief=relief,
        pricing_rule=PricingRule(market.pricing_rule.value),
    )


def require_gate_closed(clock: MarketClock, day: date, now: datetime) -> datetime:
    """The day's gate closure; refuse if it is still ahead (orders for the day may still change)."""
    gate = day_gate(clock, day)
    if now < gate:
        raise Conflict.on("day", f"the gate for {day} closes at {_iso(gate)}; it cannot be cleared before")
    return gate


def find_run(session: Session, market_id: uuid.UUID, day: date) -> ClearingRun | None:
    return session.scalar(
        select(ClearingRun).where(ClearingRun.market_id == market_id, ClearingRun.delivery_day == day)
    )


def clear_day(
    session: Session, market_id: uuid.UUID, day: date, now: datetime, *, triggered_by: str, solver: str = DEFAULT_SOLVER
) -> ClearingRun:
    """Clear ``day`` of the market once; return the (possibly earlier) run."""
    market = get_market(session, market_id)
    clock = clock_of(market)
    gate = require_gate_closed(clock, day, now)
    existing = find_run(session, market_id, day)
    if existing is not None:
        return existing
    book = build_book(session, market, day, gate)
    started = time.perf_counter()
    result = clear(book, solver)
    elapsed_ms = int((time.perf_counter() - started) * 1000)
    run = ClearingRun(
        id=uuid.uuid4(),
        market_id=market_id,
        delivery_day=day,
        horizon_start=datetime.fromisoformat(book.isps[0]),
        horizon_end=datetime.fromisoformat(book.isps[-1]) + clock.isp,
        gate_closure_at=gate,
        status=RunStatus.DONE,
        pricing_rule=book.pricing_rule.value,
        solver=solver,
        input_hash=result.input_hash,
        result_hash=result.result_hash,
        welfare=result.welfare,
        offer_count=len(book.offers),
        request_count=len(book.requests),
        award_count=len(result.awards),
        book=book_to_json(book),
        triggered_by=triggered_by,
        duration_ms=elapsed_ms,
        created_at=now,
    )
    # If another worker cleared the same gate meanwhile, this flush fails on the unique key and
    # the transaction rolls back whole; the caller's retry then finds that run (see tasks.py).
    session.add(run)
    session.flush()
    _store_result(session, run, book, result, clock)
    # The actor is the request's principal if an operator asked, else the task's name.
    audit.record(
        session,
        "clearing.run",
        "clearing_run",
        run.id,
        after=audit.snapshot(run, exclude=("book",)),
        actor=triggered_by,
    )
    return run


def _store_result(
    session: Session, run: ClearingRun, book: OrderBook, result: ClearingResult, clock: MarketClock
) -> None:
    start = run.horizon_start
    offers = {o.id: o for o in book.offers}
    sellers = (
        dict(
            session.execute(
                select(FlexOffer.id, FlexOffer.seller_id).where(FlexOffer.id.in_([uuid.UUID(i) for i in offers]))
            ).all()
        )
        if offers
        else {}
    )
    utilities = (
        dict(
            session.execute(
                select(FlexRequest.id, FlexRequest.utility_id).where(
                    FlexRequest.id.in_([uuid.UUID(r.id) for r in book.requests])
                )
            ).all()
        )
        if book.requests
        else {}
    )

    def isp_at(index: int) -> datetime:
        return start + index * clock.isp

    awards: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    for award in result.awards:
        offer = offers[award.offer_id]
        offer_id = uuid.UUID(award.offer_id)
        outcomes.append(
            {
                "run_id": run.id,
                "offer_id": offer_id,
                "seller_id": sellers[offer_id],
                "outcome": OfferOutcome.ACCEPTED,
                "activation": award.activation,
            }
        )
        for j, (kw, price) in enumerate(zip(award.accepted_kw, award.price_per_mwh, strict=True)):
            if kw > 0:
                awards.append(
                    {
                        "run_id": run.id,
                        "offer_id": offer_id,
                        "isp_start": isp_at(award.first_isp + j),
                        "seller_id": sellers[offer_id],
                        "congestion_point_id": uuid.UUID(offer.congestion_point),
                        "direction": "up" if offer.direction == UP else "down",
                        "accepted_kw": kw,
                        "price_per_mwh": price,
                    }
                )
    for rejection in result.rejections:
        offer_id = uuid.UUID(rejection.offer_id)
        outcomes.append(
            {
                "run_id": run.id,
                "offer_id": offer_id,
                "seller_id": sellers[offer_id],
                "outcome": OfferOutcome(rejection.reason.value),
                "activation": None,
            }
        )
    procured = {
        (a.request_id, a.first_isp + j): kw for a in result.request_awards for j, kw in enumerate(a.procured_kw)
    }
    procurement = [
        {
            "run_id": run.id,
            "request_id": uuid.UUID(r.id),
            "isp_start": isp_at(r.first_isp + j),
            "utility_id": utilities[uuid.UUID(r.id)],
            "requested_kw": Decimal(repr(q)),
            "procured_kw": procured.get((r.id, r.first_isp + j), Decimal(0)),
        }
        for r in book.requests
        for j, q in enumerate(r.quantities_kw)
        if q > 0
    ]
    points = [
        {
            "run_id": run.id,
            "congestion_point_id": uuid.UUID(p.congestion_point),
            "isp_start": isp_at(p.isp),
            "direction": "up" if p.direction == UP else "down",
            "requested_kw": p.requested_kw,
            "procured_kw": p.procured_kw,
            "unmet_kw": p.unmet_kw,
            "price_per_mwh": p.price_per_mwh,
        }
        for p in result.points
    ]
    for model, rows in (
        (FlexOrderAward, awards),
        (OfferResult, outcomes),
        (RequestProcurement, procurement),
        (PointPrice, points),
    ):
        if rows:
            session.execute(insert(model), rows)
    session.flush()


def verify_run(session: Session, run_id: uuid.UUID) -> tuple[ClearingRun, str, str]:
    """Re-clear the stored input snapshot; return the run and the recomputed input and result hashes."""
    run = get_run(session, run_id)
    result = clear(book_from_json(run.book), run.solver)
    return run, result.input_hash, result.result_hash


def get_run(session: Session, run_id: uuid.UUID) -> ClearingRun:
    run = session.get(ClearingRun, run_id)
    if run is None:
        raise NotFound.of("clearing run", run_id)
    return run


def list_runs(session: Session, market_id: uuid.UUID, page: Page) -> tuple[list[ClearingRun], int]:
    get_market(session, market_id)
    statement = select(ClearingRun).where(ClearingRun.market_id == market_id).order_by(ClearingRun.delivery_day.desc())
    return paginate(session, statement, page)


def point_prices(session: Session, run_id: uuid.UUID) -> list[PointPrice]:
    get_run(session, run_id)
    return list(
        session.scalars(
            select(PointPrice)
            .where(PointPrice.run_id == run_id)
            .order_by(PointPrice.isp_start, PointPrice.congestion_point_id, PointPrice.direction)
        )
    )


def awards_of(
    session: Session, principal: Principal, run_id: uuid.UUID, page: Page
) -> tuple[list[FlexOrderAward], int]:
    """The caller's FlexOrders in a run (the operator sees all)."""
    get_run(session, run_id)
    statement = select(FlexOrderAward).where(FlexOrderAward.run_id == run_id)
    if not principal.is_operator:
        statement = statement.where(FlexOrderAward.seller_id == principal.participant_id)
    return paginate(session, statement.order_by(FlexOrderAward.offer_id, FlexOrderAward.isp_start), page)


def outcomes_of(session: Session, principal: Principal, run_id: uuid.UUID, page: Page) -> tuple[list[OfferResult], int]:
    get_run(session, run_id)
    statement = select(OfferResult).where(OfferResult.run_id == run_id)
    if not principal.is_operator:
        statement = statement.where(OfferResult.seller_id == principal.participant_id)
    return paginate(session, statement.order_by(OfferResult.offer_id), page)


def procurement_of(
    session: Session, principal: Principal, run_id: uuid.UUID, page: Page
) -> tuple[list[RequestProcurement], int]:
    get_run(session, run_id)
    statement = select(RequestProcurement).where(RequestProcurement.run_id == run_id)
    if not principal.is_operator:
        statement = statement.where(RequestProcurement.utility_id == principal.participant_id)
    return paginate(session, statement.order_by(RequestProcurement.request_id, RequestProcurement.isp_start), page)


def due_days(session: Session, now: datetime, lookback_days: int = 3) -> list[tuple[uuid.UUID, date]]:
    """(market, day) pairs whose gate has closed, that have orders and no run yet: what beat enqueues."""
    due: list[tuple[uuid.UUID, date]] = []
    for market in session.scalars(select(Market)):
        clock = clock_of(market)
        today = clock.delivery_day(now)
        for offset in range(-lookback_days, 3):
            day = today + timedelta(days=offset)
            if now < day_gate(clock, day) or find_run(session, market.id, day) is not None:
                continue
            start, end = clock.day_bounds(day)
            has_orders = session.scalar(
                select(func.count())
                .select_from(FlexRequest)
                .where(
                    FlexRequest.market_id == market.id,
                    FlexRequest.period_start >= start,
                    FlexRequest.period_start < end,
                )
            )
            if has_orders:
                due.append((market.id, day))
    return due
