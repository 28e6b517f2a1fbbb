"""Congestion points and sensitivities. The operator configures the grid; every participant reads it,
since sellers must know where their sites connect."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from market.auth.principal import Principal
from market.core.amounts import amount_errors
from market.core.errors import Conflict, FieldError, InvalidInput
from market.core.queries import Page, get_or_404, paginate
from market.grid.models import CongestionPoint, Sensitivity
from market.grid.relief import relief_factors
from market.grid.schemas import CongestionPointCreate, ReliefEntry, SensitivityEntry
from market.markets.service import get_market
from market.participants.models import Participant, Role

MAX_ABS_FACTOR = Decimal(1_000_000)


def create_congestion_point(
    session: Session, principal: Principal, market_id: uuid.UUID, data: CongestionPointCreate
) -> CongestionPoint:
    principal.require_operator()
    get_market(session, market_id)
    utility = session.get(Participant, data.utility_id)
    if utility is None or utility.role is not Role.UTILITY:
        raise InvalidInput.on("utility_id", "must name a participant with the role utility")
    if data.parent_id is not None:
        parent = session.get(CongestionPoint, data.parent_id)
        if parent is None or parent.market_id != market_id:
            raise InvalidInput.on("parent_id", "must name a congestion point of the same market")
    exists = session.scalar(
        select(CongestionPoint.id).where(CongestionPoint.market_id == market_id, CongestionPoint.code == data.code)
    )
    if exists is not None:
        raise Conflict(
            detail=f"congestion point {data.code!r} exists in this market",
            errors=[FieldError("code", "already used in this market")],
        )
    # A new point has no children, so linking it under an existing parent cannot close a cycle.
    point = CongestionPoint(
        id=uuid.uuid4(),
        market_id=market_id,
        code=data.code,
        name=data.name,
        kind=data.kind,
        utility_id=data.utility_id,
        parent_id=data.parent_id,
    )
    session.add(point)
    session.flush()
    return point


def get_congestion_point(session: Session, point_id: uuid.UUID) -> CongestionPoint:
    return get_or_404(session, CongestionPoint, point_id, "congestion point")


def list_congestion_points(session: Session, market_id: uuid.UUID, page: Page) -> tuple[list[CongestionPoint], int]:
    get_market(session, market_id)
    statement = select(CongestionPoint).where(CongestionPoint.market_id == market_id).order_by(CongestionPoint.code)
    return paginate(session, statement, page)


def set_sensitivities(
    session: Session, principal: Principal, market_id: uuid.UUID, entries: list[SensitivityEntry]
) -> list[ReliefEntry]:
    """Replace the market's sensitivity matrix as a whole."""
    principal.require_operator()
    get_market(session, market_id)
    point_ids = set(session.scalars(select(CongestionPoint.id).where(CongestionPoint.market_id == market_id)))
    errors: list[FieldError] = []
    seen: set[tuple[uuid.UUID, uuid.UUID]] = set()
    for i, entry in enumerate(entries):
        errors += [
            FieldError(f"entries[{i}].{name}", "not a congestion point of this market")
            for name in ("source_id", "target_id")
            if getattr(entry, name) not in point_ids
        ]
        errors += amount_errors(f"entries[{i}].factor", entry.factor, max_abs=MAX_ABS_FACTOR)
        pair = (entry.source_id, entry.target_id)
        if pair in seen:
            errors.append(FieldError(f"entries[{i}]", "duplicate (source_id, target_id) pair"))
        seen.add(pair)
    if errors:
        raise InvalidInput(detail="the sensitivity matrix is invalid", errors=errors)
    session.execute(delete(Sensitivity).where(Sensitivity.market_id == market_id))
    session.add_all(
        Sensitivity(market_id=market_id, source_id=e.source_id, target_id=e.target_id, factor=e.factor) for e in entries
    )
    session.flush()
    return market_relief(session, market_id)


def market_relief(session: Session, market_id: uuid.UUID) -> list[ReliefEntry]:
    """The effective relief factors of a market: the radial tree, overridden by the matrix."""
    get_market(session, market_id)
    rows = session.execute(
        select(CongestionPoint.id, CongestionPoint.parent_id).where(CongestionPoint.market_id == market_id)
    )
    parents = dict(rows.all())
    given = {
        (s.source_id, s.target_id): s.factor
        for s in session.scalars(select(Sensitivity).where(Sensitivity.market_id == market_id))
    }
    sources_in_matrix = {source for source, _ in given}
    factors = relief_factors(parents, given)
    return [
        ReliefEntry(source_id=s, target_id=t, factor=f, from_matrix=s in sources_in_matrix)
        for (s, t), f in sorted(factors.items(), key=lambda item: (str(item[0][0]), str(item[0][1])))
    ]
