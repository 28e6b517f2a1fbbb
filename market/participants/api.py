from __future__ import annotations

import uuid

from litestar import Controller, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.pagination import OffsetPagination
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.orm import Session

from market.auth.principal import Principal, Scope
from market.core.http import requires
from market.core.idempotency import Idempotency
from market.core.queries import Page
from market.participants import service
from market.participants.models import Role
from market.participants.schemas import (
    ParticipantCreate,
    ParticipantRead,
    PortfolioCreate,
    PortfolioRead,
    SiteCreate,
    SitePortfolioUpdate,
    SiteRead,
)


class ParticipantController(Controller):
    path = "/participants"
    tags = ("participants",)

    @post(guards=[requires(Scope.ADMIN)], sync_to_thread=True, summary="Register a participant (operator)")
    def create(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        data: JSONBody[ParticipantCreate],
    ) -> Response[ParticipantRead]:
        return idempotency.run(
            db_session,
            principal,
            lambda: ParticipantRead.from_model(service.create_participant(db_session, principal, data)),
        )

    @get(sync_to_thread=True, summary="List participants: all for the operator, oneself for anyone else")
    def list(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        page: NamedDependency[Page],
        role: FromQuery[Role | None] = None,
    ) -> OffsetPagination[ParticipantRead]:
        rows, total = service.list_participants(db_session, principal, page, role)
        return OffsetPagination([ParticipantRead.from_model(r) for r in rows], page.limit, page.offset, total)

    @get("/{participant_id:uuid}", sync_to_thread=True, summary="Read a participant")
    def read(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        participant_id: FromPath[uuid.UUID],
    ) -> ParticipantRead:
        return ParticipantRead.from_model(service.get_participant(db_session, principal, participant_id))


class SiteController(Controller):
    path = "/sites"
    tags = ("sites",)

    @post(guards=[requires(Scope.TRADE)], sync_to_thread=True, summary="Register a site/meter at a congestion point")
    def create(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        data: JSONBody[SiteCreate],
    ) -> Response[SiteRead]:
        return idempotency.run(
            db_session, principal, lambda: SiteRead.from_model(service.create_site(db_session, principal, data))
        )

    @get(sync_to_thread=True, summary="List the sites one owns or aggregates")
    def list(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        page: NamedDependency[Page],
        congestion_point_id: FromQuery[uuid.UUID | None] = None,
        portfolio_id: FromQuery[uuid.UUID | None] = None,
    ) -> OffsetPagination[SiteRead]:
        rows, total = service.list_sites(db_session, principal, page, congestion_point_id, portfolio_id)
        return OffsetPagination([SiteRead.from_model(r) for r in rows], page.limit, page.offset, total)

    @get("/{site_id:uuid}", sync_to_thread=True, summary="Read a site")
    def read(
        self, db_session: NamedDependency[Session], principal: NamedDependency[Principal], site_id: FromPath[uuid.UUID]
    ) -> SiteRead:
        return SiteRead.from_model(service.get_site(db_session, principal, site_id))

    @put(
        "/{site_id:uuid}/portfolio",
        guards=[requires(Scope.TRADE)],
        sync_to_thread=True,
        summary="Put one's site in an aggregator's portfolio, or take it out with null",
    )
    def set_portfolio(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        site_id: FromPath[uuid.UUID],
        data: JSONBody[SitePortfolioUpdate],
    ) -> SiteRead:
        return SiteRead.from_model(service.set_site_portfolio(db_session, principal, site_id, data.portfolio_id))


def _portfolio_read(db_session: NamedDependency[Session], portfolio: object) -> PortfolioRead:
    read = PortfolioRead.from_model(portfolio)
    read.members = service.portfolio_members(db_session, read.id)
    return read


class PortfolioController(Controller):
    path = "/portfolios"
    tags = ("portfolios",)

    @post(guards=[requires(Scope.TRADE)], sync_to_thread=True, summary="Create an aggregator portfolio")
    def create(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        data: JSONBody[PortfolioCreate],
    ) -> Response[PortfolioRead]:
        return idempotency.run(
            db_session,
            principal,
            lambda: _portfolio_read(db_session, service.create_portfolio(db_session, principal, data)),
        )

    @get(sync_to_thread=True, summary="List one's portfolios")
    def list(
        self, db_session: NamedDependency[Session], principal: NamedDependency[Principal], page: NamedDependency[Page]
    ) -> OffsetPagination[PortfolioRead]:
        rows, total = service.list_portfolios(db_session, principal, page)
        return OffsetPagination([_portfolio_read(db_session, r) for r in rows], page.limit, page.offset, total)

    @get("/{portfolio_id:uuid}", sync_to_thread=True, summary="Read a portfolio and its member sites")
    def read(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        portfolio_id: FromPath[uuid.UUID],
    ) -> PortfolioRead:
        return _portfolio_read(db_session, service.get_portfolio(db_session, principal, portfolio_id))

    @delete(
        "/{portfolio_id:uuid}/members/{site_id:uuid}",
        guards=[requires(Scope.TRADE)],
        sync_to_thread=True,
        summary="Drop a member site from one's portfolio",
    )
    def remove_member(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        portfolio_id: FromPath[uuid.UUID],
        site_id: FromPath[uuid.UUID],
    ) -> None:
        service.remove_portfolio_member(db_session, principal, portfolio_id, site_id)
