"""Delivery jobs: verify a cleared day against meter data and baselines (idempotent: an unchanged
result stores nothing new)."""

from __future__ import annotations

import logging
import uuid
from datetime import date

from market.core.db import unit_of_work, utcnow
from market.core.jobs import celery_app, task_session_factory
from settlement.delivery import service

log = logging.getLogger("flexmarket.delivery")

VERIFY_TASK = "settlement.delivery.verify_day"


def verify_task_id(market_id: uuid.UUID | str, day: date | str) -> str:
    return f"delivery:{market_id}:{day}"


@celery_app.task(name=VERIFY_TASK, acks_late=True)
def verify_day(market_id: str, day: str) -> str:
    with unit_of_work(task_session_factory()) as session:
        computation = service.verify_day(session, uuid.UUID(market_id), date.fromisoformat(day), utcnow())
        log.info("delivery of market %s day %s: computation v%d", market_id, day, computation.version)
        return str(computation.id)
