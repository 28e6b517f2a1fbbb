from __future__ import annotations

import uuid

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.pagination import OffsetPagination
from litestar.params import FromPath, JSONBody
from sqlalchemy.orm import Session

from market.auth.principal import Principal, Scope
from market.clearing import service
from market.clearing.schemas import (
    ClearingCreate,
    ClearingQueued,
    ClearingRunRead,
    FlexOrderRead,
    OfferResultRead,
    PointPriceRead,
    ProcurementRead,
    VerifyRead,
)
from market.clearing.tasks import clear_delivery_day, clear_task_id
from market.core.db import utcnow
from market.core.dispatch import run_or_enqueue
from market.core.http import requires
from market.core.idempotency import Idempotency
from market.core.queries import Page
from market.markets.service import clock_of, get_market


class ClearingController(Controller):
    tags = ("clearing",)

    @post(
        "/markets/{market_id:uuid}/clearings",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        summary="Clear a delivery day now (operator). Embedded: runs at once; with workers: queued (202)",
    )
    def create(
        self,
        request: Request[Principal, uuid.UUID, State],
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        market_id: FromPath[uuid.UUID],
        data: JSONBody[ClearingCreate],
    ) -> Response[ClearingRunRead]:
        principal.require_operator()
        market = get_market(db_session, market_id)
        now = utcnow()
        # Validate before enqueueing, so the operator sees the error at once.
        service.require_gate_closed(clock_of(market), data.day, now)
        who = f"operator:{principal.participant_id}"

        def enqueue() -> ClearingQueued:
            task_id = clear_task_id(market_id, data.day)
            clear_delivery_day.apply_async(args=(str(market_id), data.day.isoformat(), who), task_id=task_id)
            return ClearingQueued(task_id=task_id, market_id=market_id, day=data.day)

        return run_or_enqueue(
            request,
            db_session,
            principal,
            idempotency,
            run=lambda: ClearingRunRead.from_model(
                service.clear_day(db_session, market_id, data.day, now, triggered_by=who)
            ),
            enqueue=enqueue,
        )

    @get("/markets/{market_id:uuid}/clearings", sync_to_thread=True, summary="A market's clearing runs")
    def list_runs(
        self, db_session: NamedDependency[Session], market_id: FromPath[uuid.UUID], page: NamedDependency[Page]
    ) -> OffsetPagination[ClearingRunRead]:
        rows, total = service.list_runs(db_session, market_id, page)
        return OffsetPagination([ClearingRunRead.from_model(r) for r in rows], page.limit, page.offset, total)

    @get("/clearings/{run_id:uuid}", sync_to_thread=True, summary="A clearing run with its input and result hashes")
    def read(self, db_session: NamedDependency[Session], run_id: FromPath[uuid.UUID]) -> ClearingRunRead:
        return ClearingRunRead.from_model(service.get_run(db_session, run_id))

    @post(
        "/clearings/{run_id:uuid}/verify",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        status_code=200,
        summary="Re-run the clearing from its stored input and compare hashes (operator)",
    )
    def verify(
        self, db_session: NamedDependency[Session], principal: NamedDependency[Principal], run_id: FromPath[uuid.UUID]
    ) -> VerifyRead:
        principal.require_operator()
        run, input_hash, result_hash = service.verify_run(db_session, run_id)
        return VerifyRead(
            run_id=run.id,
            input_hash=run.input_hash,
            result_hash=run.result_hash,
            recomputed_input_hash=input_hash,
            recomputed_result_hash=result_hash,
            matches=(input_hash, result_hash) == (run.input_hash, run.result_hash),
        )

    @get(
        "/clearings/{run_id:uuid}/prices",
        sync_to_thread=True,
        summary="Per congestion point and ISP: requested, procured, unmet and the price (public)",
    )
    def prices(self, db_session: NamedDependency[Session], run_id: FromPath[uuid.UUID]) -> list[PointPriceRead]:
        return [PointPriceRead.from_model(p) for p in service.point_prices(db_session, run_id)]

    @get(
        "/clearings/{run_id:uuid}/awards",
        sync_to_thread=True,
        summary="One's FlexOrders (awards) of a run; the operator sees all",
    )
    def awards(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        run_id: FromPath[uuid.UUID],
        page: NamedDependency[Page],
    ) -> OffsetPagination[FlexOrderRead]:
        rows, total = service.awards_of(db_session, principal, run_id, page)
        return OffsetPagination([FlexOrderRead.from_model(r) for r in rows], page.limit, page.offset, total)

    @get(
        "/clearings/{run_id:uuid}/offer-results",
        sync_to_thread=True,
        summary="What became of each of one's offers: accepted, or why not",
    )
    def offer_results(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        run_id: FromPath[uuid.UUID],
        page: NamedDependency[Page],
    ) -> OffsetPagination[OfferResultRead]:
        rows, total = service.outcomes_of(db_session, principal, run_id, page)
        return OffsetPagination([OfferResultRead.from_model(r) for r in rows], page.limit, page.offset, total)

    @get(
        "/clearings/{run_id:uuid}/procurement",
        sync_to_thread=True,
        summary="A utility's procurement per request and ISP; the operator sees all",
    )
    def procurement(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        run_id: FromPath[uuid.UUID],
        page: NamedDependency[Page],
    ) -> OffsetPagination[ProcurementRead]:
        rows, total = service.procurement_of(db_session, principal, run_id, page)
        return OffsetPagination([ProcurementRead.from_model(r) for r in rows], page.limit, page.offset, total)
