"""Market configuration. Only the operator creates or changes markets; every participant may read them."""

from __future__ import annotations

import uuid
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from market.auth.principal import Principal
from market.core import audit
from market.core.amounts import amount_errors
from market.core.errors import Conflict, FieldError, InvalidInput
from market.core.queries import Page, get_or_404, paginate
from market.markets.calendar import MarketClock
from market.markets.models import GateClosureKind, Market
from market.markets.schemas import MarketCreate, MarketUpdate

MAX_ABS_PRICE_PER_MWH = Decimal(1_000_000)
MAX_QUANTITY_KW = Decimal(10_000_000)
"""10 GW: far above any single flexibility order; guards against unit mistakes (W for kW)."""


def clock_of(market: Market) -> MarketClock:
    return MarketClock(
        timezone=market.timezone,
        isp_minutes=market.isp_minutes,
        gate_closure_kind=market.gate_closure_kind,
        day_ahead_gate_time=market.day_ahead_gate_time,
        intraday_lead_minutes=market.intraday_lead_minutes,
    )


def _check_rules(market: Market) -> None:
    """Rules across fields, checked on the market as it would be stored."""
    errors: list[FieldError] = []
    try:
        ZoneInfo(market.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(FieldError("timezone", f"{market.timezone!r} is not an IANA time zone"))
    if market.gate_closure_kind is GateClosureKind.DAY_AHEAD and market.day_ahead_gate_time is None:
        errors.append(FieldError("day_ahead_gate_time", "required when gate_closure_kind is day_ahead"))
    if market.gate_closure_kind is GateClosureKind.INTRADAY and market.intraday_lead_minutes is None:
        errors.append(FieldError("intraday_lead_minutes", "required when gate_closure_kind is intraday"))
    for name in ("min_price_per_mwh", "max_price_per_mwh"):
        errors += amount_errors(name, getattr(market, name), max_abs=MAX_ABS_PRICE_PER_MWH)
    errors += amount_errors("max_quantity_kw", market.max_quantity_kw, max_abs=MAX_QUANTITY_KW, positive=True)
    if not errors and market.min_price_per_mwh > market.max_price_per_mwh:
        errors.append(FieldError("min_price_per_mwh", "must not exceed max_price_per_mwh"))
    if errors:
        raise InvalidInput(detail="the market's rules are inconsistent", errors=errors)


def create_market(session: Session, principal: Principal, data: MarketCreate) -> Market:
    principal.require_operator()
    if session.scalar(select(Market.id).where(Market.code == data.code)) is not None:
        raise Conflict(
            detail=f"a market with code {data.code!r} exists",
            errors=[FieldError("code", "already used by another market")],
        )
    market = Market(id=uuid.uuid4(), **msgspec.structs.asdict(data))
    _check_rules(market)
    session.add(market)
    session.flush()
    audit.record(session, "market.create", "market", market.id, after=audit.snapshot(market), principal=principal)
    return market


def update_market(session: Session, principal: Principal, market_id: uuid.UUID, data: MarketUpdate) -> Market:
    principal.require_operator()
    market = get_market(session, market_id)
    before = audit.snapshot(market)
    for name, value in msgspec.structs.asdict(data).items():
        if value is not msgspec.UNSET:
            setattr(market, name, value)
    _check_rules(market)
    session.flush()
    audit.record(
        session, "market.update", "market", market.id, before=before, after=audit.snapshot(market), principal=principal
    )
    return market


def get_market(session: Session, market_id: uuid.UUID) -> Market:
    return get_or_404(session, Market, market_id, "market")


def list_markets(session: Session, page: Page) -> tuple[list[Market], int]:
    return paginate(session, select(Market).order_by(Market.code), page)
