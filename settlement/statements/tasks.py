"""Statement jobs: issue every participant's statement for a period, loading the period once.
Idempotent: a participant whose statement already covers the same runs gets no new number."""

from __future__ import annotations

import logging
import uuid
from datetime import date

from market.core.db import unit_of_work, utcnow
from market.core.jobs import celery_app, task_session_factory
from settlement.statements import service

log = logging.getLogger("flexmarket.statements")

ISSUE_ALL_TASK = "settlement.statements.issue_all"


def issue_all_task_id(market_id: uuid.UUID | str, start: date | str, end: date | str) -> str:
    return f"statements:{market_id}:{start}:{end}"


@celery_app.task(name=ISSUE_ALL_TASK, acks_late=True)
def issue_all(market_id: str, period_start: str, period_end: str, issued_by: str = "schedule") -> int:
    with unit_of_work(task_session_factory()) as session:
        issued = service.issue_all(
            session,
            uuid.UUID(market_id),
            date.fromisoformat(period_start),
            date.fromisoformat(period_end),
            issued_by,
            utcnow(),
        )
    log.info("issued %d statements for market %s, %s..%s", issued, market_id, period_start, period_end)
    return issued
