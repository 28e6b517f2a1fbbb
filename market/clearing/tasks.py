"""Clearing jobs. Tasks take ids and ISO dates, have deterministic ids (``clear:{market}:{day}``) and
are idempotent: the run is unique per (market, day), so a retry or a duplicate returns the first run."""

from __future__ import annotations

import logging
import uuid
from datetime import date

from sqlalchemy.exc import IntegrityError, OperationalError

from market.clearing import service
from market.core.db import unit_of_work, utcnow
from market.core.jobs import celery_app, task_session_factory

log = logging.getLogger("flexmarket.clearing")

CLEAR_TASK = "market.clearing.clear_delivery_day"
SCHEDULE_TASK = "market.clearing.schedule_due_clearings"


def clear_task_id(market_id: uuid.UUID | str, day: date | str) -> str:
    return f"clear:{market_id}:{day}"


# A lost database connection (OperationalError) or a concurrent duplicate (IntegrityError) is retried:
# the transaction rolled back whole, so the retry starts clean.
@celery_app.task(
    name=CLEAR_TASK,
    acks_late=True,
    autoretry_for=(IntegrityError, OperationalError),
    retry_backoff=True,
    max_retries=5,
)
def clear_delivery_day(market_id: str, day: str, triggered_by: str = "schedule") -> str:
    """Clear one delivery day at gate closure; returns the run id."""
    with unit_of_work(task_session_factory()) as session:
        run = service.clear_day(
            session, uuid.UUID(market_id), date.fromisoformat(day), utcnow(), triggered_by=triggered_by
        )
        log.info("cleared market %s day %s: run %s, result %s", market_id, day, run.id, run.result_hash[:12])
        return str(run.id)


@celery_app.task(name=SCHEDULE_TASK, acks_late=True)
def schedule_due_clearings() -> int:
    """Beat wakes this every minute; the database says which gates have closed without a run."""
    with unit_of_work(task_session_factory()) as session:
        due = service.due_days(session, utcnow())
    for market_id, day in due:
        clear_delivery_day.apply_async(args=(str(market_id), day.isoformat()), task_id=clear_task_id(market_id, day))
    return len(due)
