from __future__ import annotations

import uuid
from datetime import date

from litestar import Controller, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.pagination import OffsetPagination
from litestar.params import FromPath, JSONBody
from sqlalchemy.orm import Session

from market.auth.principal import Principal, Scope
from market.core.errors import InvalidInput
from market.core.http import requires
from market.core.idempotency import Idempotency
from market.core.queries import Page
from market.markets import service
from market.markets.schemas import DeliveryDayRead, MarketCreate, MarketRead, MarketUpdate


class MarketController(Controller):
    path = "/markets"
    tags = ("markets",)

    @post(guards=[requires(Scope.ADMIN)], sync_to_thread=True, summary="Create a market (operator)")
    def create(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        data: JSONBody[MarketCreate],
    ) -> Response[MarketRead]:
        return idempotency.run(
            db_session, principal, lambda: MarketRead.from_model(service.create_market(db_session, principal, data))
        )

    @get(sync_to_thread=True, summary="List markets")
    def list(self, db_session: NamedDependency[Session], page: NamedDependency[Page]) -> OffsetPagination[MarketRead]:
        rows, total = service.list_markets(db_session, page)
        return OffsetPagination([MarketRead.from_model(r) for r in rows], page.limit, page.offset, total)

    @get("/{market_id:uuid}", sync_to_thread=True, summary="Read a market")
    def read(self, db_session: NamedDependency[Session], market_id: FromPath[uuid.UUID]) -> MarketRead:
        return MarketRead.from_model(service.get_market(db_session, market_id))

    @patch(
        "/{market_id:uuid}",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        summary="Change a market's rules (operator)",
    )
    def update(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        market_id: FromPath[uuid.UUID],
        data: JSONBody[MarketUpdate],
    ) -> MarketRead:
        return MarketRead.from_model(service.update_market(db_session, principal, market_id, data))

    @get(
        "/{market_id:uuid}/delivery-days/{day:str}",
        sync_to_thread=True,
        summary="The ISP grid and gate closures of a local delivery day (YYYY-MM-DD)",
    )
    def delivery_day(
        self, db_session: NamedDependency[Session], market_id: FromPath[uuid.UUID], day: FromPath[str]
    ) -> DeliveryDayRead:
        try:
            local_day = date.fromisoformat(day)
        except ValueError:
            raise InvalidInput.on("path.day", "must be a date as YYYY-MM-DD") from None
        clock = service.clock_of(service.get_market(db_session, market_id))
        starts = clock.isps_of_day(local_day)
        return DeliveryDayRead(
            market_id=market_id,
            day=local_day.isoformat(),
            isp_count=len(starts),
            isp_starts=starts,
            gate_closures=[clock.gate_closure(s) for s in starts],
        )
