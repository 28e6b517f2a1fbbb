"""Baseline assignments (operator), nominations (the resource's owner, until gate closure) and accuracy."""

from __future__ import annotations

import uuid
from dataclasses import asdict, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.auth.principal import Principal
from market.clearing.models import ClearingRun
from market.core.amounts import amount_errors
from market.core.errors import FieldError, GateClosed, InvalidInput, NotFound
from market.grid.models import CongestionPoint
from market.markets.models import Market
from market.markets.service import clock_of, get_market
from market.participants.models import Portfolio, Site
from market.participants.service import get_site
from settlement.baselines.methods import REGISTRY, BaselineMethod, BaselineParams, baseline_accuracy, validate_params
from settlement.baselines.models import BaselineAssignment, BaselineNomination, ResourceKind
from settlement.baselines.schemas import AssignmentCreate, NominationValue

MAX_NOMINATED_KW = Decimal(1_000_000)
ACCURACY_DAYS = 30


def method_params(method: BaselineMethod, raw: dict[str, Any], isp_minutes: int) -> BaselineParams:
    """``raw`` over the method's defaults; unknown names and wrong types are refused by field."""
    known = {f.name: f for f in fields(BaselineParams)}
    errors = [FieldError(f"params.{name}", "unknown parameter") for name in sorted(set(raw) - set(known))]
    defaults = asdict(BaselineParams.defaults(method, isp_minutes))
    for name, value in raw.items():
        if name not in known:
            continue
        expected = type(defaults[name]) if defaults[name] is not None else int
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            errors.append(FieldError(f"params.{name}", f"must be a {expected.__name__}"))
    if errors:
        raise InvalidInput(detail="; ".join(f"{e.field}: {e.reason}" for e in errors), errors=errors)
    params = BaselineParams(**{**defaults, **{k: (float(v) if k == "adjustment_cap" else v) for k, v in raw.items()}})
    problems = [FieldError(f"params.{e.field}", e.reason) for e in validate_params(method, params)]
    if problems:
        raise InvalidInput(detail="; ".join(f"{e.field}: {e.reason}" for e in problems), errors=problems)
    return params


def _check_resource(session: Session, market: Market, kind: ResourceKind | None, resource_id: uuid.UUID | None) -> None:
    if (kind is None) != (resource_id is None):
        raise InvalidInput.on("resource_id", "give both resource_kind and resource_id, or neither (market default)")
    if kind is None or resource_id is None:
        return
    resource: Site | Portfolio | None = (
        session.get(Site, resource_id) if kind is ResourceKind.SITE else session.get(Portfolio, resource_id)
    )
    if resource is None:
        raise InvalidInput.on("resource_id", f"no such {kind.value}")
    point = session.get(CongestionPoint, resource.congestion_point_id)
    if point is None or point.market_id != market.id:
        raise InvalidInput.on("resource_id", f"the {kind.value} is not in this market")


def create_assignment(
    session: Session, principal: Principal, market_id: uuid.UUID, data: AssignmentCreate
) -> BaselineAssignment:
    """The operator sets a resource's (or the market's default) baseline method from ``valid_from`` on.
    Assignments are never edited; a later one supersedes. ``valid_from`` must come after every delivery
    day already cleared, so a re-settlement of a past day always uses the method it was traded under."""
    principal.require_operator()
    market = get_market(session, market_id)
    _check_resource(session, market, data.resource_kind, data.resource_id)
    params = method_params(data.method, data.params, market.isp_minutes)
    last_cleared = session.scalar(select(func.max(ClearingRun.delivery_day)).where(ClearingRun.market_id == market_id))
    if last_cleared is not None and data.valid_from <= last_cleared:
        raise InvalidInput.on("valid_from", f"must be after {last_cleared}, the last delivery day already cleared")
    assignment = BaselineAssignment(
        id=uuid.uuid4(),
        market_id=market_id,
        resource_kind=data.resource_kind,
        resource_id=data.resource_id,
        method=data.method.value,
        method_version=REGISTRY[data.method].version,
        params={k: v for k, v in asdict(params).items() if k in data.params},
        valid_from=data.valid_from,
        created_by=principal.participant_id,
    )
    session.add(assignment)
    session.flush()
    return assignment


def list_assignments(session: Session, market_id: uuid.UUID) -> list[BaselineAssignment]:
    get_market(session, market_id)
    return list(
        session.scalars(
            select(BaselineAssignment)
            .where(BaselineAssignment.market_id == market_id)
            .order_by(BaselineAssignment.valid_from, BaselineAssignment.created_at)
        )
    )


def _market_of_site(session: Session, site: Site) -> Market:
    point = session.get(CongestionPoint, site.congestion_point_id)
    if point is None:
        raise NotFound.of("congestion point", site.congestion_point_id)
    return get_market(session, point.market_id)


def nominate(
    session: Session, principal: Principal, site_id: uuid.UUID, values: list[NominationValue], now: datetime
) -> list[BaselineNomination]:
    """The site's owner (or its aggregator) nominates its baseline per ISP. Each ISP is locked at its gate
    closure: a nomination after it is refused (409), so the baseline cannot follow the meter."""
    site = get_site(session, principal, site_id)
    market = _market_of_site(session, site)
    clock = clock_of(market)
    errors: list[FieldError] = []
    seen: set[datetime] = set()
    for index, value in enumerate(values):
        field = f"values[{index}]"
        if value.start.tzinfo is None:
            errors.append(FieldError(f"{field}.start", "must carry a UTC offset"))
            continue
        if not clock.is_aligned(value.start):
            errors.append(FieldError(f"{field}.start", f"is not on the market's {market.isp_minutes}-minute ISP grid"))
        if value.start in seen:
            errors.append(FieldError(f"{field}.start", "is given twice"))
        seen.add(value.start)
        errors += amount_errors(f"{field}.kw", value.kw, max_abs=MAX_NOMINATED_KW)
    if errors:
        raise InvalidInput(detail="; ".join(f"{e.field}: {e.reason}" for e in errors), errors=errors)
    closed = [i for i, v in enumerate(values) if clock.gate_closure(v.start) <= now]
    if closed:
        raise GateClosed.on(
            f"values[{closed[0]}].start", "gate closure has passed for this ISP; nominations are locked"
        )
    starts = [v.start.astimezone(UTC) for v in values]
    latest = dict(
        session.execute(
            select(BaselineNomination.isp_start, func.max(BaselineNomination.version))
            .where(BaselineNomination.resource_id == site.id, BaselineNomination.isp_start.in_(starts))
            .group_by(BaselineNomination.isp_start)
        ).all()
    )
    rows = [
        BaselineNomination(
            resource_id=site.id,
            isp_start=start,
            version=latest.get(start, 0) + 1,
            resource_kind=ResourceKind.SITE,
            market_id=market.id,
            kw=value.kw,
            submitted_by=principal.participant_id,
            submitted_at=now,
        )
        for start, value in zip(starts, values, strict=True)
    ]
    session.add_all(rows)
    session.flush()
    return rows


def nominations_of(
    session: Session, principal: Principal, site_id: uuid.UUID, start: datetime, end: datetime
) -> list[BaselineNomination]:
    site = get_site(session, principal, site_id)
    return list(
        session.scalars(
            select(BaselineNomination)
            .where(
                BaselineNomination.resource_id == site.id,
                BaselineNomination.isp_start >= start,
                BaselineNomination.isp_start < end,
            )
            .order_by(BaselineNomination.isp_start, BaselineNomination.version)
        )
    )


def accuracy(
    session: Session, principal: Principal, site_id: uuid.UUID, today: date, days: int = ACCURACY_DAYS
) -> tuple[BaselineMethod, int, int, float | None]:
    """RRMSE of the site's method over its last ``days`` days without awards (MARKET.md: accuracy is
    reported on non-event days): (method, version, days tested, rrmse)."""
    from settlement.delivery.service import (  # noqa: PLC0415 - delivery depends on baselines, not back
        assignments_in_force,
        holidays_of,
        site_history,
    )

    site = get_site(session, principal, site_id)
    market = _market_of_site(session, site)
    resolved = resolve_for_site(assignments_in_force(session, market, today), site, market.isp_minutes)
    clock = clock_of(market)
    start = clock.day_bounds(today - timedelta(days=days + resolved.params.max_lookback_days))[0]
    history, event_days = site_history(session, market, site, start, clock.day_bounds(today)[0])
    if history.is_empty():
        return resolved.method, resolved.version, 0, None
    holidays = holidays_of(_holiday_country(session, market), {today.year, today.year - 1})
    tested_from = today - timedelta(days=days)
    untested = history.filter(pl.col("day") < tested_from).select("resource", "day").unique()
    result = baseline_accuracy(
        resolved.method,
        resolved.params,
        history,
        event_days=pl.concat([event_days, untested]),
        holidays=holidays,
    )
    if result.is_empty():
        return resolved.method, resolved.version, 0, None
    row = result.row(0, named=True)
    return resolved.method, resolved.version, int(row["days"]), row["rrmse"]


def resolve_for_site(assignments: dict[uuid.UUID | None, Any], site: Site, isp_minutes: int) -> Any:
    from settlement.delivery.service import resolve_method  # noqa: PLC0415 - see accuracy

    return resolve_method(assignments, site.id, site.portfolio_id, isp_minutes)


def _holiday_country(session: Session, market: Market) -> str | None:
    from settlement.runs.models import MarketSettlementTerms  # noqa: PLC0415 - runs depends on baselines

    record = session.get(MarketSettlementTerms, market.id)
    return record.holiday_country if record else None
