"""HTTP routes of statements: finance users issue and download their own; the operator issues all."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Literal

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.pagination import OffsetPagination
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler
from sqlalchemy.orm import Session

from market.auth.principal import Principal, Scope
from market.core.db import utcnow
from market.core.dispatch import run_or_enqueue
from market.core.http import requires
from market.core.idempotency import Idempotency
from market.core.queries import Page
from market.markets.service import get_market
from settlement.statements import service
from settlement.statements.render import RENDERERS
from settlement.statements.schemas import StatementCreate, StatementJobRead, StatementRead, StatementRunCreate
from settlement.statements.tasks import issue_all, issue_all_task_id

Format = Literal["json", "csv", "pdf"]


@dataclass
class _Document(Operation):
    """Document the three renderings of a statement, which Litestar sees only as ``bytes``."""

    def __post_init__(self) -> None:
        if self.responses is not None:
            self.responses["200"] = OpenAPIResponse(
                description="The statement document: JSON, CSV or PDF as ?format asks",
                content={
                    "application/json": OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT)),
                    "text/csv": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING)),
                    "application/pdf": OpenAPIMediaType(
                        schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
                    ),
                },
            )


class StatementController(Controller):
    tags = ("statements",)
    guards = [requires(Scope.FINANCE)]  # noqa: RUF012 - litestar's own attribute

    @post(
        "/participants/{participant_id:uuid}/statements",
        sync_to_thread=True,
        summary="Issue one's statement for a period (201), or return the one already issued for the same runs (200)",
        responses={200: ResponseSpec(StatementRead, description="The statement already issued for the same runs")},
    )
    def issue(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        participant_id: FromPath[uuid.UUID],
        data: JSONBody[StatementCreate],
    ) -> Response[StatementRead]:
        statement, created = service.issue(
            db_session, principal, data.market_id, participant_id, data.period_start, data.period_end, utcnow()
        )
        read = StatementRead.from_model(statement)
        return idempotency.run(db_session, principal, lambda: read, status_code=201 if created else 200)

    @get(
        "/participants/{participant_id:uuid}/statements",
        sync_to_thread=True,
        summary="One's issued statements, newest period first",
    )
    def list_statements(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        participant_id: FromPath[uuid.UUID],
        page: NamedDependency[Page],
    ) -> OffsetPagination[StatementRead]:
        rows, total = service.list_statements(db_session, principal, participant_id, page)
        return OffsetPagination([StatementRead.from_model(r) for r in rows], page.limit, page.offset, total)

    @get("/statements/{statement_id:uuid}", sync_to_thread=True, summary="A statement's header")
    def read(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        statement_id: FromPath[uuid.UUID],
    ) -> StatementRead:
        return StatementRead.from_model(service.get_statement(db_session, principal, statement_id))

    @get(
        "/statements/{statement_id:uuid}/document",
        sync_to_thread=True,
        summary="Download a statement as JSON, CSV or PDF, exactly as issued",
        operation_class=_Document,
    )
    def document(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        statement_id: FromPath[uuid.UUID],
        format: Annotated[Format, QueryParameter(description="json, csv or pdf")] = "json",  # noqa: A002
    ) -> Response[bytes]:
        statement = service.get_statement(db_session, principal, statement_id)
        media_type, render = RENDERERS[format]
        # Rebuilt from the runs the statement was issued on, which never change: every format and every
        # download shows the issued figures.
        body = render(service.document_of(db_session, statement))
        name = f"statement-{statement.number}.{format}"
        return Response(
            content=body,
            media_type=media_type,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )


class StatementRunController(Controller):
    tags = ("statements",)

    @post(
        "/markets/{market_id:uuid}/statements",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        summary="Issue every participant's statement for a period (operator). Embedded: at once; else queued (202)",
    )
    def issue_all(
        self,
        request: Request[Principal, uuid.UUID, State],
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        market_id: FromPath[uuid.UUID],
        data: JSONBody[StatementRunCreate],
    ) -> Response[StatementJobRead]:
        principal.require_operator()
        get_market(db_session, market_id)
        service.check_period(data.period_start, data.period_end)
        who = f"operator:{principal.participant_id}"
        start, end = data.period_start, data.period_end

        def enqueue() -> StatementJobRead:
            task_id = issue_all_task_id(market_id, start, end)
            issue_all.apply_async(args=(str(market_id), start.isoformat(), end.isoformat(), who), task_id=task_id)
            return StatementJobRead(
                market_id=market_id, period_start=start, period_end=end, issued=None, task_id=task_id
            )

        return run_or_enqueue(
            request,
            db_session,
            principal,
            idempotency,
            run=lambda: StatementJobRead(
                market_id=market_id,
                period_start=start,
                period_end=end,
                issued=service.issue_all(db_session, market_id, start, end, who, utcnow()),
                task_id=None,
            ),
            enqueue=enqueue,
        )


ROUTES: list[ControllerRouterHandler] = [StatementController, StatementRunController]
