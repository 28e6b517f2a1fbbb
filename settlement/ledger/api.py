"""HTTP routes of settlement.ledger: balances and entries of one's own participant, the trial balance.

There is no POST: entries are written only by settlement runs, so no client can set an amount.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.pagination import OffsetPagination
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.types import ControllerRouterHandler
from sqlalchemy.orm import Session

from market.auth.principal import Principal, Scope
from market.core.http import requires
from market.core.queries import Page
from market.markets.service import get_market
from settlement.ledger import service
from settlement.ledger.models import EntryKind
from settlement.ledger.schemas import BalanceRead, EntryRead, TrialBalanceRead

DayFrom = Annotated[date | None, QueryParameter(name="from", description="first delivery day (inclusive)")]
DayTo = Annotated[date | None, QueryParameter(name="to", description="last delivery day (inclusive)")]
Currency = Annotated[str | None, QueryParameter(name="currency", pattern=r"^[A-Z]{3}$", description="ISO 4217")]


class LedgerController(Controller):
    tags = ("ledger",)
    guards = [requires(Scope.FINANCE)]  # noqa: RUF012 - Litestar's declared attribute type

    @get(
        "/participants/{participant_id:uuid}/ledger/balances",
        sync_to_thread=True,
        summary="Balances of one's ledger accounts (credits − debits; > 0: the market owes you)",
    )
    def balances(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        participant_id: FromPath[uuid.UUID],
        currency: Currency = None,
    ) -> list[BalanceRead]:
        return [
            BalanceRead(
                account_id=b.account_id,
                code=b.code,
                market_id=b.market_id,
                kind=b.kind.value,
                currency=b.currency,
                debits=b.debits,
                credits=b.credits,
                balance=b.balance,
            )
            for b in service.participant_balances(db_session, principal, participant_id, currency)
        ]

    @get(
        "/participants/{participant_id:uuid}/ledger/entries",
        sync_to_thread=True,
        summary="One's journal entries by delivery day, run and kind (oldest first)",
    )
    def entries(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        participant_id: FromPath[uuid.UUID],
        page: NamedDependency[Page],
        day_from: DayFrom = None,
        day_to: DayTo = None,
        run_id: FromQuery[uuid.UUID | None] = None,
        kind: FromQuery[EntryKind | None] = None,
    ) -> OffsetPagination[EntryRead]:
        rows, total = service.participant_entries(
            db_session, principal, participant_id, page, day_from=day_from, day_to=day_to, run_id=run_id, kind=kind
        )
        items = [
            EntryRead(
                id=e.id,
                run_id=e.settlement_run_id,
                offer_id=e.offer_id,
                kind=e.kind.value,
                debit_account_id=e.debit_account_id,
                credit_account_id=e.credit_account_id,
                amount=e.amount,
                signed_amount=signed,
                currency=e.currency,
                delivery_day=e.delivery_day,
                memo=e.memo,
                created_at=e.created_at,
            )
            for e, signed in rows
        ]
        return OffsetPagination(items, page.limit, page.offset, total)

    @get(
        "/markets/{market_id:uuid}/ledger/trial-balance",
        sync_to_thread=True,
        summary="Σ credits − debits over the market's accounts per currency; 0 when the books balance (operator)",
    )
    def trial_balance(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        market_id: FromPath[uuid.UUID],
    ) -> TrialBalanceRead:
        principal.require_operator()
        market = get_market(db_session, market_id)
        totals = service.trial_balance(db_session, market.id)
        return TrialBalanceRead(
            market_id=market.id, totals=totals, balanced=all(value == 0 for value in totals.values())
        )


ROUTES: list[ControllerRouterHandler] = [LedgerController]
