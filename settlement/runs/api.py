"""HTTP routes of settlement terms and runs."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from litestar import Controller, Request, Response, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.pagination import OffsetPagination
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler
from sqlalchemy.orm import Session

from market.auth.principal import Principal, Scope
from market.core.db import utcnow
from market.core.dispatch import run_or_enqueue
from market.core.errors import InvalidInput
from market.core.http import requires
from market.core.idempotency import Idempotency
from market.core.queries import Page
from market.markets.service import get_market
from settlement.runs import service
from settlement.runs.schemas import (
    SettlementCreate,
    SettlementLineRead,
    SettlementQueued,
    SettlementRunRead,
    TermsRead,
    TermsWrite,
)
from settlement.runs.tasks import settle_delivery_day, settle_task_id
from settlement.runs.terms import SettlementTerms, terms_errors


def _terms_read(market_id: uuid.UUID, terms: service.MarketTerms) -> TermsRead:
    t = terms.terms
    return TermsRead(
        market_id=market_id,
        currency=t.currency,
        penalty_price_per_mwh=t.penalty_price_per_mwh,
        tolerance=t.tolerance,
        sliding_scale=t.sliding_scale,
        availability_price_per_mw_h=t.availability_price_per_mw_h,
        operator_fee_per_mwh=t.operator_fee_per_mwh,
        aggregator_fee_share=t.aggregator_fee_share,
        holiday_country=terms.holiday_country,
        initial_after_hours=terms.initial_after_hours,
        final_after_days=terms.final_after_days,
    )


class SettlementController(Controller):
    tags = ("settlement",)

    @get("/markets/{market_id:uuid}/settlement-terms", sync_to_thread=True, summary="A market's settlement terms")
    def read_terms(self, db_session: NamedDependency[Session], market_id: FromPath[uuid.UUID]) -> TermsRead:
        return _terms_read(market_id, service.terms_of(db_session, get_market(db_session, market_id)))

    @put(
        "/markets/{market_id:uuid}/settlement-terms",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        summary="Set a market's settlement terms (operator); later runs use them, earlier runs keep theirs",
    )
    def write_terms(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        market_id: FromPath[uuid.UUID],
        data: JSONBody[TermsWrite],
    ) -> TermsRead:
        terms = SettlementTerms(
            currency=data.currency,
            penalty_price_per_mwh=data.penalty_price_per_mwh,
            tolerance=data.tolerance,
            sliding_scale=data.sliding_scale,
            availability_price_per_mw_h=data.availability_price_per_mw_h,
            operator_fee_per_mwh=data.operator_fee_per_mwh,
            aggregator_fee_share=data.aggregator_fee_share,
        )
        errors = terms_errors(terms)
        if errors:
            raise InvalidInput(detail="; ".join(f"{e.field}: {e.reason}" for e in errors), errors=errors)
        saved = service.set_terms(
            db_session,
            principal,
            market_id,
            terms,
            data.holiday_country,
            data.initial_after_hours,
            data.final_after_days,
        )
        return _terms_read(market_id, saved)

    @post(
        "/markets/{market_id:uuid}/settlements",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        summary="Settle a delivery day now (operator). Embedded: runs at once; with workers: queued (202)",
    )
    def create(
        self,
        request: Request[Principal, uuid.UUID, State],
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        market_id: FromPath[uuid.UUID],
        data: JSONBody[SettlementCreate],
    ) -> Response[SettlementRunRead | SettlementQueued]:
        principal.require_operator()
        market = get_market(db_session, market_id)
        now = utcnow()
        who = f"operator:{principal.participant_id}"
        if not request.app.state.tasks_in_process:
            service.require_settleable(db_session, market, data.day, data.kind, now)  # refuse before enqueueing

        def enqueue() -> SettlementQueued:
            task_id = settle_task_id(market_id, data.day, data.kind)
            args = (str(market_id), data.day.isoformat(), data.kind.value, who)
            settle_delivery_day.apply_async(args=args, task_id=task_id)
            return SettlementQueued(task_id=task_id, market_id=market_id, day=data.day, kind=data.kind)

        return run_or_enqueue(
            request,
            db_session,
            principal,
            idempotency,
            run=lambda: SettlementRunRead.from_model(
                service.settle_day(db_session, market_id, data.day, data.kind, now, who).run
            ),
            enqueue=enqueue,
        )

    @get(
        "/markets/{market_id:uuid}/settlements",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        summary="A market's settlement runs with their totals (operator)",
    )
    def list_runs(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        market_id: FromPath[uuid.UUID],
        page: NamedDependency[Page],
        day: Annotated[date | None, QueryParameter(description="only this delivery day")] = None,
    ) -> OffsetPagination[SettlementRunRead]:
        rows, total = service.list_runs(db_session, principal, market_id, day, page)
        return OffsetPagination([SettlementRunRead.from_model(r) for r in rows], page.limit, page.offset, total)

    @get(
        "/settlements/{run_id:uuid}",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        summary="One settlement run (operator)",
    )
    def read(
        self, db_session: NamedDependency[Session], principal: NamedDependency[Principal], run_id: FromPath[uuid.UUID]
    ) -> SettlementRunRead:
        return SettlementRunRead.from_model(service.get_run(db_session, principal, run_id))

    @get(
        "/settlements/{run_id:uuid}/lines",
        guards=[requires(Scope.FINANCE)],
        sync_to_thread=True,
        summary="A run's lines per order and ISP: one's own as seller or utility; the operator sees all",
    )
    def lines(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        run_id: FromPath[uuid.UUID],
        page: NamedDependency[Page],
    ) -> OffsetPagination[SettlementLineRead]:
        rows, total = service.lines_of(db_session, principal, run_id, page)
        return OffsetPagination([SettlementLineRead.from_model(r) for r in rows], page.limit, page.offset, total)


ROUTES: list[ControllerRouterHandler] = [SettlementController]
