"""Settlement under crashes and concurrency, on real PostgreSQL and a real Celery worker on Redis
(MARKET.md, Ledger: each payment is posted exactly once, whatever retries or crashes happen; Jobs:
tasks are idempotent and late-acked).

* 20 times, the worker's pool children are SIGKILLed at a random moment of a settlement run (the
  initial, then reconciliations after meter corrections); each time the late-acked message is
  redelivered, the run completes once, the ledger balances and every balance is the hand-computed
  one (tests/stress/settlement_kill.py has the loop and the figures; run it with more cycles, and a
  final run last, on demand).
* A repeated final (what a redelivered final task does) returns the final run and posts nothing
  (the stress script found the bug where it raised Conflict instead).
* 10 concurrent ``settle_day`` calls for the same day and kind make exactly one run and one set of
  postings; the same for 10 concurrent reconciliations after a correction.
* 10 deliveries of the same task on a worker with two pool children: one run, one set of postings.

Figures (tests/integration/settlement_world.py, test_settlement_flow.py): after the initial run the
data center holds 6.55, the utility −12.75, members 2.81 and 1.87, the aggregator 1.17 and the
operator's fee account 0.35. A correction of the data center's reading from 150 to 100 kWh posts
three differences: +2.00 utilisation, the 1.25 penalty back and +0.05 fee (data center 9.75).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from random import Random

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from market.core.config import Settings
from market.core.db import unit_of_work, utcnow
from market.core.jobs import celery_app, configure
from settlement.ledger.models import JournalEntry
from settlement.runs.models import RunKind, SettlementRun, SettlementStatus
from settlement.runs.service import SettleOutcome, settle_day
from settlement.runs.tasks import settle_delivery_day, settle_task_id
from tests.integration.settlement_world import SettlementWorld, build
from tests.stress.settlement_kill import (
    CHANGE_ENTRIES,
    INITIAL_ENTRIES,
    POOL_CHILDREN,
    RUN_TIMEOUT_S,
    Worker,
    check_day,
    run_kill_cycles,
)

KILLS = 20
MIN_MID_RUN_KILLS = 10
THREADS = 10
DELIVERIES = 10


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One prefork worker with two pool children for this module's tests, on a queue of its own
    (a worker takes seconds to start on a busy machine; each test waits until its own tasks are
    done, so none leaves work behind). The in-test Celery app points at Redis and that queue
    meanwhile; the worker is stopped and the app restored afterwards."""
    process = Worker(settings, tmp_path_factory.mktemp("settlement-worker") / "worker.log", POOL_CHILDREN)
    try:
        with process:
            yield process
    finally:
        celery_app.conf.task_default_queue = "celery"
        configure(celery_app, settings)


def _runs(db: Session, sw: SettlementWorld) -> list[SettlementRun]:
    runs = list(
        db.scalars(
            select(SettlementRun)
            .where(SettlementRun.market_id == sw.w.market.id, SettlementRun.delivery_day == sw.day)
            .order_by(SettlementRun.version)
            .execution_options(populate_existing=True)
        )
    )
    db.commit()
    return runs


def _entries(db: Session, run_id: uuid.UUID) -> list[tuple[str, Decimal]]:
    rows = db.execute(select(JournalEntry.kind, JournalEntry.amount).where(JournalEntry.settlement_run_id == run_id))
    found = sorted((kind.value, amount) for kind, amount in rows)
    db.commit()
    return found


CORRECTION_DIFFERENCES = [("operator_fee", Decimal("0.05")), ("penalty", Decimal("1.25")), ("utilisation", Decimal(2))]


# -- kills ----------------------------------------------------------------------------------------


def test_killed_runs_complete_once_after_redelivery(client: TestClient[Litestar], db: Session, worker: Worker) -> None:
    sw = build(client, db)
    seed = int.from_bytes(uuid.uuid4().bytes[:4], "big")
    summary = run_kill_cycles(db, sw, worker, KILLS, Random(seed), last_final=True)  # noqa: S311 - not secrets
    print(f"\nsettlement kills (seed {seed}): {summary.text()}")  # noqa: T201 - shown with -s / -rP
    kills = sum(1 for c in summary.cycles if c.killed)
    assert kills == KILLS, f"a pool child was up to kill in only {kills} of {KILLS} cycles"
    assert summary.mid_run >= MIN_MID_RUN_KILLS, f"seed {seed}: only {summary.mid_run} kills landed mid-run"
    # A kill inside the run's transaction means a redelivery; the loop asserted each one happened.
    assert summary.redelivered >= summary.in_transaction


def test_a_redelivered_final_task_returns_the_final_run(
    client: TestClient[Litestar], db: Session, session_factory: sessionmaker[Session]
) -> None:
    """What the task body does on each delivery: settle_day in a unit of work. The second final is
    a redelivery of the first (found by tests/stress/settlement_kill.py, cycle 60 of 60): it should
    return the final run and post nothing, as a repeated initial does."""
    sw = build(client, db)
    for kind in (RunKind.INITIAL, RunKind.FINAL, RunKind.FINAL):
        with unit_of_work(session_factory) as session:
            outcome = settle_day(session, sw.w.market.id, sw.day, kind, utcnow(), "redelivery")
    assert (outcome.created, outcome.run.kind, outcome.run.version) == (False, RunKind.FINAL, 2)
    assert db.scalar(select(func.count()).select_from(JournalEntry)) == INITIAL_ENTRIES


# -- concurrency ----------------------------------------------------------------------------------


def _settle_concurrently(
    session_factory: sessionmaker[Session], sw: SettlementWorld, kind: RunKind
) -> list[SettleOutcome]:
    """THREADS threads, each with its own session and transaction, call settle_day at once."""
    barrier = threading.Barrier(THREADS, timeout=30)
    outcomes: list[SettleOutcome] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def settle(n: int) -> None:
        try:
            barrier.wait()
            with unit_of_work(session_factory) as session:
                outcome = settle_day(session, sw.w.market.id, sw.day, kind, utcnow(), f"thread-{n}")
            with lock:
                outcomes.append(outcome)
        except BaseException as exc:  # noqa: BLE001 - every failure is reported by the test
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=settle, args=(n,), daemon=True) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=RUN_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), "a settle_day call hung"
    assert not errors, f"{len(errors)} concurrent calls failed: {errors!r}"
    return outcomes


def test_ten_concurrent_runs_post_one_set_of_entries(
    client: TestClient[Litestar], db: Session, session_factory: sessionmaker[Session]
) -> None:
    sw = build(client, db)

    initial = _settle_concurrently(session_factory, sw, RunKind.INITIAL)
    assert sum(o.created for o in initial) == 1
    assert len({o.run.id for o in initial}) == 1
    [run] = _runs(db, sw)
    assert (run.kind, run.version, run.status, run.entry_count) == (RunKind.INITIAL, 1, SettlementStatus.DONE, 7)
    check_day(db, sw, 1)  # 7 entries, no key twice, trial balance 0, 6.55 / −12.75 / 2.81 / 1.87 / 1.17 / 0.35

    sw.read(db, sw.dc_site, "100")
    reconciled = _settle_concurrently(session_factory, sw, RunKind.RECONCILIATION)
    assert sum(o.created for o in reconciled) == 1
    assert len({o.run.id for o in reconciled}) == 1
    runs = _runs(db, sw)
    assert [(r.kind, r.version, r.status) for r in runs] == [
        (RunKind.INITIAL, 1, SettlementStatus.DONE),
        (RunKind.RECONCILIATION, 2, SettlementStatus.DONE),
    ]
    assert runs[1].id == reconciled[0].run.id
    assert _entries(db, runs[1].id) == CORRECTION_DIFFERENCES
    check_day(db, sw, 2)  # data center 9.75, utility −16.00, fees 0.40
    assert db.scalar(select(func.count()).select_from(JournalEntry)) == INITIAL_ENTRIES + CHANGE_ENTRIES


def _deliver(worker: Worker, sw: SettlementWorld, kind: RunKind) -> set[str]:
    """Enqueue the same task DELIVERIES times under its deterministic id (as the scheduler does) and
    wait until each copy has succeeded; returns the run ids they returned."""
    task_id = settle_task_id(sw.w.market.id, sw.day, kind)
    before = len(worker.successes(task_id))
    for n in range(DELIVERIES):
        settle_delivery_day.apply_async(
            args=(str(sw.w.market.id), sw.day.isoformat(), kind.value, f"delivery-{n}"),
            task_id=task_id,
            queue=worker.queue,
        )
    worker.wait_for(
        lambda: len(worker.successes(task_id)) >= before + DELIVERIES,
        f"{DELIVERIES} deliveries of {task_id}",
        RUN_TIMEOUT_S,
    )
    returned = worker.successes(task_id)[before:]
    assert len(returned) == DELIVERIES
    return set(returned)


def test_ten_deliveries_of_one_task_post_once(client: TestClient[Litestar], db: Session, worker: Worker) -> None:
    sw = build(client, db)

    [run_id] = _deliver(worker, sw, RunKind.INITIAL)
    [run] = _runs(db, sw)
    assert str(run.id) == run_id
    check_day(db, sw, 1)

    sw.read(db, sw.dc_site, "100")
    [reconciled_id] = _deliver(worker, sw, RunKind.RECONCILIATION)
    runs = _runs(db, sw)
    assert [(r.version, str(r.id)) for r in runs] == [(1, run_id), (2, reconciled_id)]
    assert _entries(db, runs[1].id) == CORRECTION_DIFFERENCES
    check_day(db, sw, 2)
