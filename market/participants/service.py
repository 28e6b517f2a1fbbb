"""Participants, sites and portfolios.

Visibility: a caller sees its own participant, the sites it owns and the portfolios it runs. An
aggregator also sees the sites in its portfolios. The operator sees everything. Anything else is
reported as not found, so ids of other participants' objects reveal nothing.
"""

from __future__ import annotations

import uuid

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from market.auth.principal import Principal
from market.core.errors import Conflict, FieldError, InvalidInput, NotFound
from market.core.queries import Page, get_or_404, paginate
from market.grid.models import CongestionPoint
from market.participants.models import FLEX_SELLERS, Participant, Portfolio, Role, Site
from market.participants.schemas import ParticipantCreate, PortfolioCreate, PortfolioMember, SiteCreate


def create_participant(session: Session, principal: Principal, data: ParticipantCreate) -> Participant:
    principal.require_operator()
    participant = Participant(id=uuid.uuid4(), name=data.name, role=data.role, contact_email=data.contact_email)
    session.add(participant)
    session.flush()
    return participant


def get_participant(session: Session, principal: Principal, participant_id: uuid.UUID) -> Participant:
    if not principal.may_act_for(participant_id):
        raise NotFound.of("participant", participant_id)
    return get_or_404(session, Participant, participant_id, "participant")


def list_participants(
    session: Session, principal: Principal, page: Page, role: Role | None = None
) -> tuple[list[Participant], int]:
    statement = select(Participant).order_by(Participant.created_at, Participant.id)
    if not principal.is_operator:
        statement = statement.where(Participant.id == principal.participant_id)
    if role is not None:
        statement = statement.where(Participant.role == role)
    return paginate(session, statement, page)


def _owner_for(
    session: Session, principal: Principal, requested: uuid.UUID | None, field: str, roles: frozenset[Role]
) -> uuid.UUID:
    """The participant a new object belongs to: the caller, or whom the operator names."""
    if requested is None or requested == principal.participant_id:
        principal.require_role(*roles)
        if principal.is_operator:
            raise InvalidInput.on(field, "the operator must name the participant this belongs to")
        return principal.participant_id
    if not principal.is_operator:
        raise InvalidInput.on(field, "only the operator may act on behalf of another participant")
    owner = session.get(Participant, requested)
    if owner is None or owner.role not in roles:
        allowed = ", ".join(sorted(r.value for r in roles))
        raise InvalidInput.on(field, f"must name a participant with the role {allowed}")
    return owner.id


def create_site(session: Session, principal: Principal, data: SiteCreate) -> Site:
    owner_id = _owner_for(session, principal, data.owner_id, "owner_id", FLEX_SELLERS)
    if session.get(CongestionPoint, data.congestion_point_id) is None:
        raise InvalidInput.on("congestion_point_id", "no such congestion point")
    if session.scalar(select(Site.id).where(Site.meter_code == data.meter_code)) is not None:
        raise Conflict(
            detail=f"meter {data.meter_code!r} is already registered",
            errors=[FieldError("meter_code", "already registered")],
        )
    site = Site(
        id=uuid.uuid4(),
        owner_id=owner_id,
        congestion_point_id=data.congestion_point_id,
        meter_code=data.meter_code,
        name=data.name,
        assets=[a.value for a in data.assets],
    )
    session.add(site)
    session.flush()
    return site


def _visible_sites(principal: Principal) -> object:
    """SQL condition: sites the caller owns or aggregates."""
    aggregated = select(Portfolio.id).where(Portfolio.aggregator_id == principal.participant_id)
    return or_(Site.owner_id == principal.participant_id, Site.portfolio_id.in_(aggregated))


def get_site(session: Session, principal: Principal, site_id: uuid.UUID) -> Site:
    statement = select(Site).where(Site.id == site_id)
    if not principal.is_operator:
        statement = statement.where(_visible_sites(principal))  # type: ignore[arg-type]  # a SQL expression
    site = session.scalar(statement)
    if site is None:
        raise NotFound.of("site", site_id)
    return site


def list_sites(
    session: Session,
    principal: Principal,
    page: Page,
    congestion_point_id: uuid.UUID | None = None,
    portfolio_id: uuid.UUID | None = None,
) -> tuple[list[Site], int]:
    statement = select(Site).order_by(Site.meter_code)
    if not principal.is_operator:
        statement = statement.where(_visible_sites(principal))  # type: ignore[arg-type]  # a SQL expression
    if congestion_point_id is not None:
        statement = statement.where(Site.congestion_point_id == congestion_point_id)
    if portfolio_id is not None:
        statement = statement.where(Site.portfolio_id == portfolio_id)
    return paginate(session, statement, page)


def set_site_portfolio(
    session: Session, principal: Principal, site_id: uuid.UUID, portfolio_id: uuid.UUID | None
) -> Site:
    """The site's owner (or the operator) puts the site in an aggregator's portfolio, or takes it out."""
    site = get_site(session, principal, site_id)
    if not principal.may_act_for(site.owner_id):
        raise NotFound.of("site", site_id)
    if portfolio_id is not None:
        portfolio = session.get(Portfolio, portfolio_id)
        if portfolio is None:
            raise InvalidInput.on("portfolio_id", "no such portfolio")
        if portfolio.congestion_point_id != site.congestion_point_id:
            raise InvalidInput.on("portfolio_id", "the portfolio is at another congestion point than the site")
    site.portfolio_id = portfolio_id
    session.flush()
    return site


def create_portfolio(session: Session, principal: Principal, data: PortfolioCreate) -> Portfolio:
    aggregator_id = _owner_for(session, principal, data.aggregator_id, "aggregator_id", frozenset({Role.AGGREGATOR}))
    if session.get(CongestionPoint, data.congestion_point_id) is None:
        raise InvalidInput.on("congestion_point_id", "no such congestion point")
    taken = select(Portfolio.id).where(Portfolio.aggregator_id == aggregator_id, Portfolio.name == data.name)
    if session.scalar(taken) is not None:
        raise Conflict(detail=f"portfolio {data.name!r} exists", errors=[FieldError("name", "already used")])
    portfolio = Portfolio(
        id=uuid.uuid4(), aggregator_id=aggregator_id, congestion_point_id=data.congestion_point_id, name=data.name
    )
    session.add(portfolio)
    session.flush()
    return portfolio


def get_portfolio(session: Session, principal: Principal, portfolio_id: uuid.UUID) -> Portfolio:
    portfolio = session.get(Portfolio, portfolio_id)
    if portfolio is None or not principal.may_act_for(portfolio.aggregator_id):
        raise NotFound.of("portfolio", portfolio_id)
    return portfolio


def portfolio_members(session: Session, portfolio_id: uuid.UUID) -> list[PortfolioMember]:
    rows = session.execute(
        select(Site.id, Site.meter_code, Site.congestion_point_id)
        .where(Site.portfolio_id == portfolio_id)
        .order_by(Site.meter_code)
    )
    return [PortfolioMember(site_id=i, meter_code=m, congestion_point_id=c) for i, m, c in rows]


def list_portfolios(session: Session, principal: Principal, page: Page) -> tuple[list[Portfolio], int]:
    statement = select(Portfolio).order_by(Portfolio.name, Portfolio.id)
    if not principal.is_operator:
        statement = statement.where(Portfolio.aggregator_id == principal.participant_id)
    return paginate(session, statement, page)


def remove_portfolio_member(
    session: Session, principal: Principal, portfolio_id: uuid.UUID, site_id: uuid.UUID
) -> None:
    """The aggregator (or the operator) drops a member site from its portfolio."""
    get_portfolio(session, principal, portfolio_id)
    site = session.get(Site, site_id)
    if site is None or site.portfolio_id != portfolio_id:
        raise NotFound.of("portfolio member", site_id)
    site.portfolio_id = None
    session.flush()
