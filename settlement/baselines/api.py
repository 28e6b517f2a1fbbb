"""HTTP routes of baselines: the method registry, assignments, nominations and accuracy."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler
from sqlalchemy.orm import Session

from market.auth.principal import Principal, Scope
from market.core.db import utcnow
from market.core.http import requires
from market.core.idempotency import Idempotency
from settlement.baselines import service
from settlement.baselines.methods import REGISTRY, BaselineParams
from settlement.baselines.schemas import (
    AccuracyRead,
    AssignmentCreate,
    AssignmentRead,
    BaselineMethodRead,
    NominationCreate,
    NominationRead,
)


class BaselineController(Controller):
    tags = ("baselines",)

    @get("/baseline-methods", sync_to_thread=False, summary="The baseline methods: version, exact formula, defaults")
    def methods(self) -> list[BaselineMethodRead]:
        return [
            BaselineMethodRead(
                method=spec.method,
                version=spec.version,
                formula=spec.doc,
                default_params=asdict(BaselineParams.defaults(spec.method)),
            )
            for spec in REGISTRY.values()
        ]

    @post(
        "/markets/{market_id:uuid}/baseline-assignments",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        summary="Set the baseline method of a site, a portfolio or the market's default (operator)",
    )
    def assign(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        market_id: FromPath[uuid.UUID],
        data: JSONBody[AssignmentCreate],
    ) -> Response[AssignmentRead]:
        return idempotency.run(
            db_session,
            principal,
            lambda: AssignmentRead.from_model(service.create_assignment(db_session, principal, market_id, data)),
        )

    @get(
        "/markets/{market_id:uuid}/baseline-assignments",
        sync_to_thread=True,
        summary="A market's baseline assignments, oldest first",
    )
    def assignments(self, db_session: NamedDependency[Session], market_id: FromPath[uuid.UUID]) -> list[AssignmentRead]:
        return [AssignmentRead.from_model(a) for a in service.list_assignments(db_session, market_id)]

    @post(
        "/sites/{site_id:uuid}/baseline-nominations",
        guards=[requires(Scope.TRADE)],
        sync_to_thread=True,
        summary="Nominate a site's baseline per ISP (its owner or aggregator), until the ISP's gate closes",
    )
    def nominate(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        site_id: FromPath[uuid.UUID],
        data: JSONBody[NominationCreate],
    ) -> Response[list[NominationRead]]:
        return idempotency.run(
            db_session,
            principal,
            lambda: [
                NominationRead.from_model(n)
                for n in service.nominate(db_session, principal, site_id, data.values, utcnow())
            ],
        )

    @get(
        "/sites/{site_id:uuid}/baseline-nominations",
        sync_to_thread=True,
        summary="A site's nominations in [start, end), every version",
    )
    def nominations(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        site_id: FromPath[uuid.UUID],
        start: Annotated[datetime, QueryParameter(description="first ISP start, with offset")],
        end: Annotated[datetime, QueryParameter(description="end (exclusive), with offset")],
    ) -> list[NominationRead]:
        return [
            NominationRead.from_model(n) for n in service.nominations_of(db_session, principal, site_id, start, end)
        ]

    @get(
        "/sites/{site_id:uuid}/baseline-accuracy",
        sync_to_thread=True,
        summary="RRMSE of the site's baseline method on its recent days without awards",
    )
    def accuracy(
        self, db_session: NamedDependency[Session], principal: NamedDependency[Principal], site_id: FromPath[uuid.UUID]
    ) -> AccuracyRead:
        method, version, days, rrmse = service.accuracy(db_session, principal, site_id, datetime.now(UTC).date())
        return AccuracyRead(site_id=site_id, method=method.value, method_version=version, days=days, rrmse=rrmse)


ROUTES: list[ControllerRouterHandler] = [BaselineController]
