"""Faults in the middle of a transaction, made deterministic by construction (issue 7; MARKET.md,
Jobs and Ledger: no lost task, no duplicate result, no partial write, the ledger balanced).

Each fault lands while the victim is provably inside its transaction: either it is blocked on a
lock this test holds (the day's settlement advisory lock, or the unique key of a clearing run
another session inserted and has not committed), or it has flushed every row and not committed.
Nothing waits for beat or a timer; waits poll the database or the worker log with generous
timeouts. The random-timing loops (many cycles, a Redis restart) are in tests/stress/faults.py.

* ``pg_terminate_backend`` of a session running ``settle_day`` / ``clear_day``: the caller gets
  OperationalError, no row of the run is stored, a retry stores it once (ledger balanced, hashes
  reproducible).
* A real worker: its database connection terminated mid-settlement or mid-clearing → the task's
  autoretry on OperationalError completes the run once.
* A real worker's pool children SIGKILLed while the clearing task waits inside its transaction →
  the late-acked message is redelivered and the day is cleared once, with the same hashes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import date

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from market.clearing import service as clearing_service
from market.clearing.tasks import clear_delivery_day, clear_task_id
from market.core.config import Settings
from market.core.db import unit_of_work, utcnow
from market.core.jobs import celery_app, configure
from settlement.runs.models import RunKind
from settlement.runs.service import settle_day
from settlement.runs.tasks import settle_delivery_day
from tests.integration.orders_world import World, build_world
from tests.integration.settlement_world import build
from tests.stress import settlement_kill
from tests.stress.faults import (
    Reference,
    backends,
    check_clearing,
    clearing_book,
    clearing_row_counts,
    held_in_thread,
    reference_clearing,
    settlement_lock_key,
    settlement_row_counts,
    terminate,
    wait_until,
    waiting_backend,
)
from tests.stress.settlement_kill import Worker, autocommit_probe, check_day

TIMEOUT_S = 60.0
OFFERS = 30
EMPTY_SETTLEMENT = {"settlement_run": 0, "journal_entry": 0, "settlement_line": 0, "pass_through_share": 0}
EMPTY_CLEARING = {"clearing_run": 0, "flex_order": 0, "offer_result": 0, "request_procurement": 0, "point_price": 0}


@pytest.fixture
def probe(db: Session) -> Iterator[Connection]:
    with autocommit_probe(db) as connection:
        yield connection


@pytest.fixture
def clearing_day(
    client: TestClient[Litestar], db: Session, session_factory: sessionmaker[Session]
) -> tuple[World, date, Reference]:
    """A 30-offer book over 4 ISPs of a day whose gate has closed, and its reference clearing (rolled back)."""
    w = build_world(db)
    day = clearing_book(client, db, w, OFFERS, seed=7, isps_count=4)
    return w, day, reference_clearing(session_factory, w.market.id, day)


def _pid(session: Session) -> int:
    return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminated(error: object) -> bool:
    """The caller saw the termination (psycopg: AdminShutdown, or 'the connection is lost')."""
    return isinstance(error, OperationalError)


# -- a session terminated mid-transaction ---------------------------------------------------------


@pytest.mark.parametrize("where", ["waiting for the day's lock", "after flushing every row"])
def test_settlement_session_terminated_mid_transaction_stores_nothing(
    client: TestClient[Litestar], db: Session, session_factory: sessionmaker[Session], probe: Connection, where: str
) -> None:
    sw = build(client, db)
    key = settlement_lock_key(sw.w.market.id, sw.day)
    session = session_factory()
    pid = _pid(session)
    try:
        if where == "after flushing every row":
            outcome = settle_day(session, sw.w.market.id, sw.day, RunKind.INITIAL, utcnow(), "terminated")
            assert outcome.run.entry_count == settlement_kill.INITIAL_ENTRIES  # flushed, not committed
            assert terminate(probe, [pid]) == 1
            with pytest.raises(OperationalError):
                session.commit()
        else:
            probe.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                with held_in_thread(
                    lambda: settle_day(session, sw.w.market.id, sw.day, RunKind.INITIAL, utcnow(), "terminated")
                ) as outcome_of:
                    wait_until(lambda: waiting_backend(probe, pid), "settle_day to wait for the lock", TIMEOUT_S)
                    assert terminate(probe, [pid]) == 1
            finally:
                probe.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            assert _terminated(outcome_of.get("error")), outcome_of
    finally:
        session.rollback()
        session.close()

    assert settlement_row_counts(db) == EMPTY_SETTLEMENT
    with unit_of_work(session_factory) as retry:
        assert settle_day(retry, sw.w.market.id, sw.day, RunKind.INITIAL, utcnow(), "retry").created
    check_day(db, sw, 1)  # 7 entries, no key twice, trial balance 0, the hand-computed balances
    with unit_of_work(session_factory) as again:  # a second retry posts nothing
        assert not settle_day(again, sw.w.market.id, sw.day, RunKind.INITIAL, utcnow(), "again").created
    check_day(db, sw, 1)


@pytest.mark.parametrize("where", ["waiting on the run's unique key", "after flushing every row"])
def test_clearing_session_terminated_mid_transaction_stores_nothing(
    db: Session,
    session_factory: sessionmaker[Session],
    probe: Connection,
    clearing_day: tuple[World, date, Reference],
    where: str,
) -> None:
    w, day, reference = clearing_day
    session = session_factory()
    pid = _pid(session)
    try:
        if where == "after flushing every row":
            run = clearing_service.clear_day(session, w.market.id, day, utcnow(), triggered_by="terminated")
            assert run.result_hash == reference.result_hash
            assert terminate(probe, [pid]) == 1
            with pytest.raises(OperationalError):
                session.commit()
        else:
            # Another session's uncommitted run of the same day: this session's INSERT waits on the key.
            with unit_of_work(session_factory) as blocker:
                clearing_service.clear_day(blocker, w.market.id, day, utcnow(), triggered_by="blocker")
                with held_in_thread(
                    lambda: clearing_service.clear_day(session, w.market.id, day, utcnow(), triggered_by="terminated")
                ) as outcome_of:
                    wait_until(lambda: waiting_backend(probe, pid), "clear_day to wait on the key", TIMEOUT_S)
                    assert terminate(probe, [pid]) == 1
                blocker.rollback()
            assert _terminated(outcome_of.get("error")), outcome_of
    finally:
        session.rollback()
        session.close()

    assert clearing_row_counts(db) == EMPTY_CLEARING
    with unit_of_work(session_factory) as retry:
        clearing_service.clear_day(retry, w.market.id, day, utcnow(), triggered_by="retry")
    first = check_clearing(db, w.market.id, day, reference)
    with unit_of_work(session_factory) as again:
        assert clearing_service.clear_day(again, w.market.id, day, utcnow(), triggered_by="again").id == first.id
    check_clearing(db, w.market.id, day, reference)


# -- a real worker ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A prefork worker with two pool children on a Redis queue of its own (tests/stress/settlement_kill.py)."""
    process = Worker(settings, tmp_path_factory.mktemp("faults-worker") / "worker.log")
    try:
        with process:
            yield process
    finally:
        celery_app.conf.task_default_queue = "celery"
        configure(celery_app, settings)


def _worker_waiting(probe: Connection, worker: Worker) -> list[int]:
    found: list[int] = []

    def waiting() -> bool:
        found[:] = [b.pid for b in backends(probe, worker.application_name) if b.waiting_on_lock]
        return bool(found)

    worker.wait_for(waiting, "the worker's transaction to wait for the held lock", TIMEOUT_S, 0.005)
    return found


def _finished(worker: Worker, task_id: str, successes: int = 0, failures: int = 0) -> Callable[[], bool]:
    return lambda: len(worker.successes(task_id)) > successes or len(worker.failures(task_id)) > failures


def test_worker_connection_terminated_mid_settlement_retries_and_posts_once(
    client: TestClient[Litestar], db: Session, probe: Connection, worker: Worker
) -> None:
    sw = build(client, db)
    key = settlement_lock_key(sw.w.market.id, sw.day)
    task_id = f"settle-terminated-{uuid.uuid4().hex[:8]}"
    worker.wait_ready()
    probe.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
    try:
        settle_delivery_day.apply_async(
            args=(str(sw.w.market.id), sw.day.isoformat(), RunKind.INITIAL.value, "terminated"),
            task_id=task_id,
            queue=worker.queue,
        )
        assert terminate(probe, _worker_waiting(probe, worker)) == 1
    finally:
        probe.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    worker.wait_for(_finished(worker, task_id), f"task {task_id}", TIMEOUT_S)
    assert not worker.failures(task_id), worker.failures(task_id)
    [run_id] = worker.successes(task_id)
    lines = [line for line in worker.log().splitlines() if task_id in line]
    assert any("Retry in" in line and "OperationalError" in line for line in lines), lines  # the autoretry
    check_day(db, sw, 1)
    [(version, _, _)] = settlement_kill.run_versions(db, sw)
    assert version == 1
    assert run_id  # the run id the retry returned


def _clear_via_worker(worker: Worker, w: World, day: date) -> tuple[str, tuple[str, str]]:
    task_id = clear_task_id(w.market.id, day)
    args = (str(w.market.id), day.isoformat())
    clear_delivery_day.apply_async(args=args, task_id=task_id, queue=worker.queue)
    return task_id, args


def test_worker_connection_terminated_mid_clearing_clears_once(
    db: Session,
    session_factory: sessionmaker[Session],
    probe: Connection,
    worker: Worker,
    clearing_day: tuple[World, date, Reference],
) -> None:
    w, day, reference = clearing_day
    worker.wait_ready()
    with unit_of_work(session_factory) as blocker:
        clearing_service.clear_day(blocker, w.market.id, day, utcnow(), triggered_by="blocker")
        task_id, _ = _clear_via_worker(worker, w, day)
        assert terminate(probe, _worker_waiting(probe, worker)) == 1
        blocker.rollback()
    worker.wait_for(_finished(worker, task_id), f"task {task_id}", TIMEOUT_S)
    assert not worker.failures(task_id), worker.failures(task_id)
    lines = [line for line in worker.log().splitlines() if task_id in line]
    assert any("Retry in" in line and "OperationalError" in line for line in lines), lines  # the autoretry
    [run_id] = worker.successes(task_id)
    run = check_clearing(db, w.market.id, day, reference)
    assert run_id == str(run.id)


def test_worker_killed_mid_clearing_is_redelivered_and_clears_once(
    db: Session,
    session_factory: sessionmaker[Session],
    probe: Connection,
    worker: Worker,
    clearing_day: tuple[World, date, Reference],
) -> None:
    """The task's INSERT waits on the blocker's uncommitted run, so the kill lands inside its
    transaction, before any commit, by construction."""
    w, day, reference = clearing_day
    worker.wait_ready()
    with unit_of_work(session_factory) as blocker:
        clearing_service.clear_day(blocker, w.market.id, day, utcnow(), triggered_by="blocker")
        task_id, _ = _clear_via_worker(worker, w, day)
        _worker_waiting(probe, worker)
        killed = worker.kill_children()
        assert killed
        settlement_kill._wait_gone(killed)
        assert clearing_row_counts(db) == EMPTY_CLEARING  # the blocker's run is not committed either
        blocker.rollback()
    worker.wait_for(_finished(worker, task_id), f"the redelivered {task_id}", TIMEOUT_S)
    assert not worker.failures(task_id), worker.failures(task_id)
    assert worker.deliveries(task_id) >= 2
    [run_id] = worker.successes(task_id)
    run = check_clearing(db, w.market.id, day, reference)
    assert run_id == str(run.id)
    worker.wait_for(lambda: not any(b.in_transaction for b in backends(probe, worker.application_name)), "idle", 30)
