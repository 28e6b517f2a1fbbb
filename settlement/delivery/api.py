"""HTTP routes of delivery verification."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler
from sqlalchemy.orm import Session

from market.auth.principal import Principal, Scope
from market.core.db import utcnow
from market.core.dispatch import run_or_enqueue
from market.core.http import requires
from market.core.idempotency import Idempotency
from settlement.delivery import service
from settlement.delivery.schemas import (
    DeliveryComputationRead,
    DeliveryCreate,
    DeliveryLineRead,
    DeliveryQueued,
    MemberDeliveryRead,
)
from settlement.delivery.tasks import verify_day, verify_task_id


class DeliveryController(Controller):
    tags = ("delivery",)

    @post(
        "/markets/{market_id:uuid}/deliveries",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        summary="Verify a cleared day's delivery now (operator). Embedded: at once; with workers: queued (202)",
    )
    def create(
        self,
        request: Request[Principal, uuid.UUID, State],
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        market_id: FromPath[uuid.UUID],
        data: JSONBody[DeliveryCreate],
    ) -> Response[DeliveryComputationRead | DeliveryQueued]:
        principal.require_operator()

        def enqueue() -> DeliveryQueued:
            task_id = verify_task_id(market_id, data.day)
            verify_day.apply_async(args=(str(market_id), data.day.isoformat()), task_id=task_id)
            return DeliveryQueued(task_id=task_id, market_id=market_id, day=data.day)

        return run_or_enqueue(
            request,
            db_session,
            principal,
            idempotency,
            run=lambda: DeliveryComputationRead.from_model(
                service.verify_day(db_session, market_id, data.day, utcnow())
            ),
            enqueue=enqueue,
        )

    @get(
        "/markets/{market_id:uuid}/deliveries",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        summary="A day's delivery computations, every version (operator)",
    )
    def list_computations(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        market_id: FromPath[uuid.UUID],
        day: Annotated[date, QueryParameter(description="the local delivery day")],
    ) -> list[DeliveryComputationRead]:
        return [
            DeliveryComputationRead.from_model(c) for c in service.computations(db_session, principal, market_id, day)
        ]

    @get(
        "/flex-offers/{offer_id:uuid}/delivery",
        sync_to_thread=True,
        summary="An offer's verified delivery per ISP: baseline, actual, delivered (seller, its utility, operator)",
    )
    def offer_delivery(
        self, db_session: NamedDependency[Session], principal: NamedDependency[Principal], offer_id: FromPath[uuid.UUID]
    ) -> list[DeliveryLineRead]:
        return [DeliveryLineRead.from_model(x) for x in service.lines_of_offer(db_session, principal, offer_id)]

    @get(
        "/flex-offers/{offer_id:uuid}/delivery/members",
        sync_to_thread=True,
        summary="A portfolio offer's delivery per member site and ISP",
    )
    def member_delivery(
        self, db_session: NamedDependency[Session], principal: NamedDependency[Principal], offer_id: FromPath[uuid.UUID]
    ) -> list[MemberDeliveryRead]:
        return [MemberDeliveryRead.from_model(x) for x in service.members_of_offer(db_session, principal, offer_id)]


ROUTES: list[ControllerRouterHandler] = [DeliveryController]
