"""Celery tasks of settlement.metering.

``process_meter_file(file_id)`` has the deterministic id ``meter-file:{id}``, is late-acked and
idempotent: a file that is ``done`` or ``rejected`` is returned as it is, and a pending one is
parsed, validated and stored in one transaction, so a worker killed mid-file leaves it pending with
nothing stored and the redelivered message starts it again. The file's row lock makes a concurrent
second delivery wait and then find the file done.

``resend_pending_meter_files`` (beat, every minute) re-enqueues files pending for longer than
``FLEX_METERING_RESEND_AFTER_MINUTES`` since they were last enqueued: the database, not a long ETA,
says what is due.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from market.core.db import unit_of_work, utcnow
from market.core.errors import NotFound
from market.core.jobs import celery_app, task_session_factory
from settlement.metering import service
from settlement.metering.config import metering_settings

log = logging.getLogger("flexmarket.metering")

PROCESS_TASK = "settlement.metering.process_meter_file"
RESEND_TASK = "settlement.metering.resend_pending_meter_files"
BEAT_SCHEDULE = {"resend-pending-meter-files": {"task": RESEND_TASK, "schedule": 60.0}}
"""The beat entry the settlement context should carry."""


def meter_file_task_id(file_id: uuid.UUID | str) -> str:
    return f"meter-file:{file_id}"


def enqueue(file_id: uuid.UUID) -> None:
    """Hand a stored (committed) file to a worker."""
    process_meter_file.apply_async(args=(str(file_id),), task_id=meter_file_task_id(file_id))


def process_in_own_transaction(factory: sessionmaker[Session], file_id: uuid.UUID) -> str:
    """Process one file in a transaction of its own; returns its status."""
    with unit_of_work(factory) as session:
        file = service.process_file(session, file_id)
        report = file.report or {}
        log.info(
            "meter file %s: %s, %s rows, %s stored, %s corrected, %s unchanged, %s rejected",
            file_id,
            file.status.value,
            report.get("rows"),
            report.get("stored"),
            report.get("corrected"),
            report.get("unchanged"),
            report.get("rejected"),
        )
        return file.status.value


@celery_app.task(
    name=PROCESS_TASK, acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5
)
def process_meter_file(file_id: str) -> str:
    """Parse, validate and store one meter file; returns its status (``missing`` if it does not exist)."""
    try:
        return process_in_own_transaction(task_session_factory(), uuid.UUID(file_id))
    except NotFound:
        log.warning("meter file %s does not exist; nothing to do", file_id)
        return "missing"


@celery_app.task(name=RESEND_TASK, acks_late=True)
def resend_pending_meter_files() -> int:
    """Re-enqueue files still pending long after they were enqueued; returns how many."""
    with unit_of_work(task_session_factory()) as session:
        due = service.stale_pending_files(session, utcnow(), metering_settings())
    for file_id in due:
        enqueue(file_id)
    if due:
        log.warning("re-enqueued %d pending meter file(s)", len(due))
    return len(due)
