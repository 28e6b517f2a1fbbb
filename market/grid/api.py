from __future__ import annotations

import uuid

from litestar import Controller, Response, get, post, put
from litestar.di import NamedDependency
from litestar.pagination import OffsetPagination
from litestar.params import FromPath, JSONBody
from sqlalchemy.orm import Session

from market.auth.principal import Principal, Scope
from market.core.http import requires
from market.core.idempotency import Idempotency
from market.core.queries import Page
from market.grid import service
from market.grid.schemas import CongestionPointCreate, CongestionPointRead, ReliefEntry, SensitivityMatrix


class GridController(Controller):
    tags = ("grid",)

    @post(
        "/markets/{market_id:uuid}/congestion-points",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        summary="Add a congestion point to the market's grid tree (operator)",
    )
    def create_point(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        market_id: FromPath[uuid.UUID],
        data: JSONBody[CongestionPointCreate],
    ) -> Response[CongestionPointRead]:
        return idempotency.run(
            db_session,
            principal,
            lambda: CongestionPointRead.from_model(
                service.create_congestion_point(db_session, principal, market_id, data)
            ),
        )

    @get("/markets/{market_id:uuid}/congestion-points", sync_to_thread=True, summary="List congestion points")
    def list_points(
        self, db_session: NamedDependency[Session], market_id: FromPath[uuid.UUID], page: NamedDependency[Page]
    ) -> OffsetPagination[CongestionPointRead]:
        rows, total = service.list_congestion_points(db_session, market_id, page)
        return OffsetPagination([CongestionPointRead.from_model(r) for r in rows], page.limit, page.offset, total)

    @get("/congestion-points/{point_id:uuid}", sync_to_thread=True, summary="Read a congestion point")
    def read_point(self, db_session: NamedDependency[Session], point_id: FromPath[uuid.UUID]) -> CongestionPointRead:
        return CongestionPointRead.from_model(service.get_congestion_point(db_session, point_id))

    @put(
        "/markets/{market_id:uuid}/sensitivities",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        summary="Replace the sensitivity matrix (operator); returns the effective relief factors",
    )
    def put_sensitivities(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        market_id: FromPath[uuid.UUID],
        data: JSONBody[SensitivityMatrix],
    ) -> list[ReliefEntry]:
        return service.set_sensitivities(db_session, principal, market_id, data.entries)

    @get(
        "/markets/{market_id:uuid}/relief",
        sync_to_thread=True,
        summary="Effective relief factors: the radial tree, overridden by the sensitivity matrix",
    )
    def relief(self, db_session: NamedDependency[Session], market_id: FromPath[uuid.UUID]) -> list[ReliefEntry]:
        return service.market_relief(db_session, market_id)
