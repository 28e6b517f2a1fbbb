"""Settlement jobs. Tasks take ids and ISO dates and are idempotent: the run service locks the day,
a repeated initial returns the first run, an unchanged reconciliation posts nothing, and the
ledger's unique posting keys refuse a duplicate. Late-acked (the app's Celery config), so a worker
killed mid-run means redelivery; the killed run's transaction never committed."""

from __future__ import annotations

import logging
import uuid
from datetime import date

from sqlalchemy.exc import OperationalError

from market.core.db import unit_of_work, utcnow
from market.core.jobs import celery_app, task_session_factory
from settlement.runs import service
from settlement.runs.models import RunKind

log = logging.getLogger("flexmarket.settlement")

SETTLE_TASK = "settlement.runs.settle_delivery_day"
SCHEDULE_TASK = "settlement.runs.schedule_settlements"


def settle_task_id(market_id: uuid.UUID | str, day: date | str, kind: RunKind | str) -> str:
    return f"settle:{market_id}:{day}:{RunKind(kind).value}"


@celery_app.task(name=SETTLE_TASK, acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def settle_delivery_day(
    market_id: str, day: str, kind: str = RunKind.INITIAL.value, triggered_by: str = "schedule"
) -> str:
    """Settle one delivery day; returns the run id (the existing one when nothing was to do)."""
    with unit_of_work(task_session_factory()) as session:
        outcome = service.settle_day(
            session, uuid.UUID(market_id), date.fromisoformat(day), RunKind(kind), utcnow(), triggered_by
        )
        run = outcome.run
        log.info(
            "settled market %s day %s: %s v%d (%s), %d entries",
            market_id,
            day,
            run.kind.value,
            run.version,
            "new" if outcome.created else "unchanged",
            run.entry_count,
        )
        return str(run.id)


@celery_app.task(name=SCHEDULE_TASK, acks_late=True)
def schedule_settlements() -> int:
    """Beat wakes this every minute; the database says which days are due (D+1 initial, corrections,
    final), and each is enqueued with a deterministic task id."""
    with unit_of_work(task_session_factory()) as session:
        due = service.due_runs(session, utcnow())
    for item in due:
        settle_delivery_day.apply_async(
            args=(str(item.market_id), item.day.isoformat(), item.kind.value),
            task_id=settle_task_id(item.market_id, item.day, item.kind),
        )
    return len(due)
