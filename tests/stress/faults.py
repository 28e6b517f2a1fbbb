"""Fault injection against the real services (issue 7; MARKET.md, Jobs: tasks are idempotent and
late-acked; Ledger: each payment is posted exactly once, whatever retries or crashes happen).

On demand, against a database of its own (created, migrated and dropped here) and a private
``redis-server`` on a free loopback port (the shared Redis at 6379 is never touched)::

    python -m tests.stress.faults --cycles 20 [--scenarios kill,redis,terminate] [--write-results]

Three scenarios, ``--cycles`` times each, every cycle checked before the next:

1. **kill**: SIGKILL the prefork worker's pool children at a random moment of a clearing (a book of
   ``--offers`` offers, calibrated to take about a second). ``task_acks_late`` +
   ``task_reject_on_worker_lost`` put the message back; after redelivery the day has exactly one
   ClearingRun, its result hash equals the reference clearing's, and re-clearing its stored book
   (``verify_run``) gives the stored hashes. The run is then deleted so the next cycle clears anew.
2. **redis**: a clearing and a settlement (initial, then reconciliations after a meter correction)
   are enqueued by the database-driven schedulers onto a worker with one pool child (so one task
   runs and the other waits in the queue); at a random moment the private ``redis-server`` is
   SIGKILLed and started again on the same port. It has no persistence (``--save ''``,
   ``--appendonly no``), so the queued message and the running task's unacked copy are lost with
   it. The worker reconnects by itself; the script then plays beat: it asks the schedulers' own
   queries (``market.clearing.service.due_days``, ``settlement.runs.service.due_runs``) what is
   still due and re-sends it with the deterministic task ids until nothing is due. Afterwards:
   one ClearingRun with the reference hash, and the settlement day passes
   ``tests.stress.settlement_kill.check_day`` (versions 1..n, 7 then 3 entries, no posting key
   twice, trial balance 0, hand-computed balances).
3. **terminate**: ``pg_terminate_backend`` on the worker's database connection in the middle of a
   settlement and of a clearing task. Even cycles make it deterministic: the script holds the lock
   the task needs (the day's settlement advisory lock; for clearing, an uncommitted clearing of the
   same day, so the task's INSERT waits on the unique key) and terminates the task's backend while
   it waits; odd cycles terminate at a random moment of the run. Both tasks retry on
   OperationalError (``autoretry_for``; counted from the worker's "Retry in" lines); should a
   clearing still fail, the script, as beat, re-sends the still-due day. Afterwards the same checks
   as above.

``tests/integration/test_faults.py`` keeps the deterministic, fast part of these in the suite.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from random import Random
from typing import IO, Any

import psycopg
import redis
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import ColumnElement, Connection, delete, func, literal_column, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from market.clearing import service as clearing_service
from market.clearing.models import (
    ClearingRun,
    FlexOrderAward,
    OfferOutcome,
    OfferResult,
    PointPrice,
    RequestProcurement,
)
from market.clearing.tasks import clear_delivery_day, clear_task_id
from market.core.db import utcnow
from market.core.jobs import celery_app
from market.markets.service import clock_of
from market.orders.models import FlexOffer, FlexRequest
from settlement.ledger.models import JournalEntry
from settlement.metering.models import MeterReading, ResettlementMark
from settlement.runs import service as settlement_service
from settlement.runs.models import RunKind, SettlementRun
from settlement.runs.service import settlement_lock_key
from settlement.runs.tasks import settle_delivery_day, settle_task_id
from tests import factories
from tests.integration.orders_world import World
from tests.integration.settlement_world import SettlementWorld
from tests.stress import settlement_kill
from tests.stress.settlement_kill import Worker, autocommit_probe, check_day, figures_for, run_versions

RUN_TIMEOUT_S = 90.0
"""How long a cycle may take from the fault to the checked day (a busy 2-core box is slow)."""
WINDOW_SHARE = 0.8
DEFAULT_OFFERS = 600
DEFAULT_ISPS = 24
"""600 offers over 24 ISPs: about a second of clearing on the 2-core box (see the results; a whole
day of 96 ISPs takes some 3 s whatever the number of offers, a fixed cost per ISP)."""
BOOK_SITES = 25
EVENING = 68
"""Index of the 17:00 ISP on a 96-ISP day."""
REQUEST_KW = (50, 400)
OFFER_KW = (1, 50)
OFFER_PRICE = (10, 290)
REQUEST_PRICE = "300"

# -- the clearing book ----------------------------------------------------------------------------


def clearing_book(
    client: TestClient[Litestar], db: Session, w: World, offers: int, seed: int, isps_count: int | None = None
) -> date:
    """A book for one delivery day of ``w.market``, moved a week back so its gate has closed; returns the day.

    The utility asks for 50-400 kW up at up to 300/MWh in every ISP of the day (only ``isps_count``
    ISPs from the 69th, 17:00 local on a 96-ISP day, if given) at the feeder; a
    household with :data:`BOOK_SITES` sites there offers ``offers`` offers of 1-4 consecutive
    ISPs, 1-50 kW each, at 10-290/MWh (one batch POST, all or nothing). Only this market's orders
    are moved, so other data in the database is untouched.
    """
    rng = Random(seed)  # noqa: S311 - reproducible test data, not secrets
    day_isps = [s.isoformat() for s in clock_of(w.market).isps_of_day(w.open_day)]
    isps = day_isps if isps_count is None else day_isps[EVENING : EVENING + isps_count]
    request = client.post(
        "/api/v1/flex-requests",
        headers=w.utility.headers,
        json={
            "congestion_point_id": str(w.feeder.id),
            "direction": "up",
            "max_price_per_mwh": REQUEST_PRICE,
            "isps": [{"start": s, "quantity_kw": str(rng.randint(*REQUEST_KW))} for s in isps],
        },
    )
    assert request.status_code == 201, request.text
    sites = [factories.site(db, w.household, w.feeder) for _ in range(BOOK_SITES)]
    bodies = []
    for _ in range(offers):
        length = rng.randint(1, 4)
        first = rng.randrange(len(isps) - length + 1)
        bodies.append(
            {
                "site_id": str(rng.choice(sites).id),
                "direction": "up",
                "price_per_mwh": str(rng.randint(*OFFER_PRICE)),
                "isps": [{"start": isps[first + k], "quantity_kw": str(rng.randint(*OFFER_KW))} for k in range(length)],
            }
        )
    batch = client.post("/api/v1/flex-offers/batch", headers=w.household.headers, json={"offers": bodies})
    assert batch.status_code == 201, batch.text
    week: ColumnElement[Any] = literal_column("interval '7 days'")
    for model in (FlexOffer, FlexRequest):
        db.execute(
            update(model)
            .where(model.market_id == w.market.id)
            .values(period_start=model.period_start - week, period_end=model.period_end - week)
        )
    db.commit()
    return w.open_day - timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Reference:
    """A clearing of the day computed in this process and rolled back: what every run must equal."""

    seconds: float
    input_hash: str
    result_hash: str
    offer_count: int
    award_count: int


def reference_clearing(factory: sessionmaker[Session], market_id: uuid.UUID, day: date) -> Reference:
    session = factory()
    try:
        started = time.perf_counter()
        run = clearing_service.clear_day(session, market_id, day, utcnow(), triggered_by="reference")
        seconds = time.perf_counter() - started
        return Reference(seconds, run.input_hash, run.result_hash, run.offer_count, run.award_count)
    finally:
        session.rollback()
        session.close()


CLEARING_ROWS: tuple[type[Any], ...] = (ClearingRun, FlexOrderAward, OfferResult, RequestProcurement, PointPrice)


def clearing_row_counts(session: Session) -> dict[str, int]:
    """Rows in every clearing table (a partial write would leave some non-zero without a run)."""
    counts = {m.__tablename__: session.scalar(select(func.count()).select_from(m)) or 0 for m in CLEARING_ROWS}
    session.commit()  # end the read transaction: the next read sees other sessions' commits
    return counts


def check_clearing(session: Session, market_id: uuid.UUID, day: date, reference: Reference) -> ClearingRun:
    """Exactly one run of the day, equal to the reference, complete, and verifiable from its stored book."""
    runs = session.scalars(
        select(ClearingRun)
        .where(ClearingRun.market_id == market_id, ClearingRun.delivery_day == day)
        .execution_options(populate_existing=True)
    ).all()
    assert len(runs) == 1, f"{len(runs)} clearing runs for {day}"
    [run] = runs
    assert (run.input_hash, run.result_hash) == (reference.input_hash, reference.result_hash), (
        f"run {run.id} hashes differ from the reference clearing's"
    )
    assert (run.offer_count, run.award_count) == (reference.offer_count, reference.award_count)
    outcomes = session.scalar(select(func.count()).select_from(OfferResult).where(OfferResult.run_id == run.id))
    accepted = session.scalar(
        select(func.count())
        .select_from(OfferResult)
        .where(OfferResult.run_id == run.id, OfferResult.outcome == OfferOutcome.ACCEPTED)
    )
    assert (outcomes, accepted) == (run.offer_count, run.award_count), (outcomes, accepted)
    awarded = session.scalar(
        select(func.count(func.distinct(FlexOrderAward.offer_id))).where(FlexOrderAward.run_id == run.id)
    )
    assert awarded == run.award_count, f"FlexOrders of {awarded} offers, {run.award_count} accepted"
    _, input_hash, result_hash = clearing_service.verify_run(session, run.id)
    assert (input_hash, result_hash) == (run.input_hash, run.result_hash), "re-clearing the stored book differs"
    session.commit()
    return run


def reset_clearing(session: Session, market_id: uuid.UUID, day: date) -> None:
    """Delete the day's run and its results so the next cycle clears it again (stress data only)."""
    ids = select(ClearingRun.id).where(ClearingRun.market_id == market_id, ClearingRun.delivery_day == day)
    for model in (FlexOrderAward, OfferResult, RequestProcurement, PointPrice):
        session.execute(delete(model).where(model.run_id.in_(ids)))
    session.execute(delete(ClearingRun).where(ClearingRun.market_id == market_id, ClearingRun.delivery_day == day))
    session.commit()


# -- settlement helpers ---------------------------------------------------------------------------


def correct_reading(db: Session, sw: SettlementWorld, import_kwh: str) -> None:
    """Store a correction of the data center's reading and mark the day for re-settlement, as the
    meter service does (settlement_world's ``read`` stores the reading only)."""
    sw.read(db, sw.dc_site, import_kwh)
    file_id = db.scalar(
        select(MeterReading.file_id)
        .where(MeterReading.site_id == sw.dc_site.id, MeterReading.isp_start == sw.isp)
        .order_by(MeterReading.version.desc())
        .limit(1)
    )
    db.add(ResettlementMark(market_id=sw.w.market.id, site_id=sw.dc_site.id, delivery_day=sw.day, file_id=file_id))
    db.commit()


def settlement_row_counts(session: Session) -> dict[str, int]:
    counts = {
        "settlement_run": session.scalar(select(func.count()).select_from(SettlementRun)) or 0,
        "journal_entry": session.scalar(select(func.count()).select_from(JournalEntry)) or 0,
        "settlement_line": session.scalar(text("SELECT count(*) FROM settlement_line")) or 0,
        "pass_through_share": session.scalar(text("SELECT count(*) FROM pass_through_share")) or 0,
    }
    session.commit()
    return counts


# -- database backends ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backend:
    pid: int
    in_transaction: bool
    waiting_on_lock: bool
    state: str


def backends(probe: Connection, application_name: str) -> list[Backend]:
    """The PostgreSQL backends of one application name (an autocommit ``probe``: each call a fresh snapshot)."""
    rows = probe.execute(
        text(
            "SELECT pid, xact_start IS NOT NULL, coalesce(wait_event_type, '') = 'Lock', coalesce(state, '') "
            "FROM pg_stat_activity WHERE application_name = :name"
        ),
        {"name": application_name},
    ).all()
    return [Backend(int(pid), bool(xact), bool(lock), str(state)) for pid, xact, lock, state in rows]


def waiting_backend(probe: Connection, pid: int) -> bool:
    """Whether backend ``pid`` is waiting for a heavyweight lock (a row, a unique key, an advisory lock)."""
    return bool(
        probe.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid AND wait_event_type = 'Lock'"), {"pid": pid}
        ).scalar_one()
    )


def terminate(probe: Connection, pids: list[int]) -> int:
    """``pg_terminate_backend`` each pid; how many were signalled."""
    return sum(
        bool(probe.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()) for pid in pids
    )


def wait_until(predicate: Callable[[], bool], what: str, timeout: float, poll_s: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll_s)


@contextlib.contextmanager
def held_in_thread(work: Callable[[], object]) -> Iterator[dict[str, BaseException | object]]:
    """Run ``work`` in a thread; the yielded dict gets ``result`` or ``error`` once it ends (joined on exit)."""
    outcome: dict[str, BaseException | object] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield outcome
    finally:
        thread.join(timeout=RUN_TIMEOUT_S)
        assert not thread.is_alive(), "the thread under test hung"


# -- the private Redis ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` of our own on a free loopback port, without persistence (so a kill loses
    its memory, queued messages included). :meth:`kill` SIGKILLs it; :meth:`start` starts it again
    on the same port."""

    def __init__(self, log_path: Path) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not on PATH")
        self.executable = executable
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - the system's redis-server, fixed arguments
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.log_path.parent),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(up, f"redis-server on port {self.port}", 20, 0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def queue_length(self, queue: str) -> int:
        return int(redis.Redis.from_url(self.url, socket_timeout=1).llen(queue))


# -- scenario 1: kill the pool child mid-clearing -------------------------------------------------


@dataclass
class Outcome:
    scenario: str
    cycles: int = 0
    faults: int = 0
    """Faults injected (kills, restarts or terminations that found their target)."""
    mid_run: int = 0
    """Faults that landed before the run committed."""
    in_transaction: int = 0
    """Faults that found the worker inside a database transaction."""
    redelivered: int = 0
    failed_then_rescheduled: int = 0
    resends: int = 0
    lost_messages: int = 0
    seconds: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("seconds")
        data["cycle_seconds_median"] = round(statistics.median(self.seconds), 2) if self.seconds else None
        data["cycle_seconds_max"] = round(max(self.seconds), 2) if self.seconds else None
        return data


def _committed(session: Session, market_id: uuid.UUID, day: date) -> bool:
    found = session.scalar(
        select(func.count())
        .select_from(ClearingRun)
        .where(ClearingRun.market_id == market_id, ClearingRun.delivery_day == day)
    )
    session.commit()
    return bool(found)


def kill_mid_clearing(
    db: Session, w: World, day: date, reference: Reference, worker: Worker, cycles: int, rng: Random
) -> Outcome:
    """Scenario 1 (module docstring)."""
    outcome = Outcome("kill the pool child mid-clearing")
    runtimes: list[float] = []
    with autocommit_probe(db) as probe:
        for cycle in range(cycles):
            worker.wait_ready()
            task_id = f"clear-kill-{cycle}-{uuid.uuid4().hex[:8]}"
            started = time.monotonic()
            clear_delivery_day.apply_async(
                args=(str(w.market.id), day.isoformat(), f"kill-{cycle}"), task_id=task_id, queue=worker.queue
            )
            window = WINDOW_SHARE * (statistics.median(runtimes) if runtimes else reference.seconds)
            worker.wait_for(lambda: worker.deliveries(task_id) > 0, f"receipt of {task_id}", RUN_TIMEOUT_S, 0.002)  # noqa: B023 - used at once
            time.sleep(rng.uniform(0, window))
            in_transaction = any(b.in_transaction for b in backends(probe, worker.application_name))
            killed = worker.kill_children()
            settlement_kill._wait_gone(killed)
            committed = _committed(db, w.market.id, day)
            worker.wait_for(
                lambda: bool(worker.successes(task_id) or worker.failures(task_id)),  # noqa: B023 - used at once
                f"task {task_id}",
                RUN_TIMEOUT_S,
            )
            if failed := worker.failures(task_id):
                raise AssertionError(f"cycle {cycle}: {task_id} failed: {failed[0]}")
            assert len(worker.successes(task_id)) == 1
            run = check_clearing(db, w.market.id, day, reference)
            assert worker.successes(task_id) == [str(run.id)]
            runtimes.append(run.duration_ms / 1000)
            outcome.cycles += 1
            outcome.faults += bool(killed)
            outcome.mid_run += bool(killed) and not committed
            outcome.in_transaction += bool(killed) and in_transaction
            outcome.redelivered += worker.deliveries(task_id) > 1
            if killed and not committed:
                assert worker.deliveries(task_id) >= 2, f"cycle {cycle}: killed before commit, not redelivered"
            outcome.seconds.append(time.monotonic() - started)
            reset_clearing(db, w.market.id, day)
    return outcome


# -- scenario 2: restart Redis ------------------------------------------------------------------


@dataclass
class Beat:
    """Plays celery beat for this script's two (market, day) pairs: the schedulers' own queries
    (``due_days``, ``due_runs``) say what is due; it is sent with the deterministic task ids."""

    factory: sessionmaker[Session]
    clearing: tuple[uuid.UUID, date]
    settlement: tuple[uuid.UUID, date]
    queue: str

    def due(self) -> list[tuple[str, tuple[str, ...], str]]:
        """(task name, args, task id) of what is due now."""
        session = self.factory()
        try:
            now = utcnow()
            found: list[tuple[str, tuple[str, ...], str]] = []
            found += [
                (clear_delivery_day.name, (str(market_id), day.isoformat()), clear_task_id(market_id, day))
                for market_id, day in clearing_service.due_days(session, now)
                if (market_id, day) == self.clearing
            ]
            for item in settlement_service.due_runs(session, now):
                if (item.market_id, item.day) == self.settlement:
                    found.append(
                        (
                            settle_delivery_day.name,
                            (str(item.market_id), item.day.isoformat(), item.kind.value),
                            settle_task_id(item.market_id, item.day, item.kind),
                        )
                    )
            return found
        finally:
            session.close()

    def tick(self, due: list[tuple[str, tuple[str, ...], str]] | None = None) -> list[str]:
        """Send every due task (as ``schedule_due_clearings`` / ``schedule_settlements`` do); their ids."""
        sent = []
        for name, args, task_id in self.due() if due is None else due:
            task = clear_delivery_day if name == clear_delivery_day.name else settle_delivery_day
            task.apply_async(args=args, task_id=task_id, queue=self.queue)
            sent.append(task_id)
        return sent


def _ping(worker: Worker) -> bool:
    try:
        return bool(celery_app.control.ping(destination=[worker.name], timeout=0.5))
    except Exception:  # noqa: BLE001 - the broker may still be down
        return False


def _idle(worker: Worker, broker: PrivateRedis, task_ids: list[str]) -> bool:
    """Nothing queued, and every message of ``task_ids`` the worker received has finished (succeeded,
    failed or been sent back for a retry): read from the worker's log, no control command needed."""
    if broker.queue_length(worker.queue):
        return False
    log = worker.log()
    for task_id in task_ids:
        received = log.count(f"[{task_id}] received")
        finished = (
            log.count(f"[{task_id}] succeeded") + log.count(f"[{task_id}] raised") + log.count(f"[{task_id}] retry")
        )
        if received > finished:
            return False
    return True


def restart_redis(
    db: Session,
    sw: SettlementWorld,
    w: World,
    day: date,
    reference: Reference,
    worker: Worker,
    broker: PrivateRedis,
    beat: Beat,
    cycles: int,
    rng: Random,
) -> Outcome:
    """Scenario 2 (module docstring)."""
    outcome = Outcome("restart redis-server (no persistence) with tasks queued and running")
    version = len(run_versions(db, sw))
    for cycle in range(cycles):
        started = time.monotonic()
        if version:  # a correction, so a reconciliation is due next to the clearing
            correct_reading(db, sw, figures_for(version + 1).import_kwh)
        due = beat.due()
        first = [task_id for _, _, task_id in due]
        assert len(first) == 2, f"cycle {cycle}: the schedulers found {first} due, not a clearing and a settlement"
        before = {t: worker.deliveries(t) for t in first}
        succeeded = {t: len(worker.successes(t)) for t in first}
        beat.tick(due)
        worker.wait_for(
            lambda: worker.deliveries(first[0]) > before[first[0]],  # noqa: B023 - used at once
            "the first receipt",
            RUN_TIMEOUT_S,
            0.002,
        )
        time.sleep(rng.uniform(0, WINDOW_SHARE * reference.seconds))
        queued = broker.queue_length(worker.queue)
        broker.kill()
        committed = _committed(db, w.market.id, day)
        time.sleep(rng.uniform(0.1, 1.0))
        broker.start()
        worker.wait_for(lambda: _ping(worker), "the worker to reconnect to the restarted redis", RUN_TIMEOUT_S, 0.2)
        outcome.faults += 1
        outcome.mid_run += not committed
        outcome.lost_messages += queued
        resends = 0

        def settled() -> bool:
            return not beat.due()

        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not settled():
            if time.monotonic() > deadline:
                raise AssertionError(f"cycle {cycle}: still due after {RUN_TIMEOUT_S} s: {beat.due()}")
            time.sleep(2.0)  # beat wakes the schedulers every minute in production; here every few seconds
            if not settled():
                resends += len(beat.tick())
        version += 1
        # Every task ran to success at least once; then wait until no copy is queued or running, so
        # none is left over for the next cycle.
        worker.wait_for(
            lambda: all(len(worker.successes(t)) > succeeded[t] for t in first),  # noqa: B023 - used at once
            "a success of each task",
            RUN_TIMEOUT_S,
        )
        worker.wait_for(
            lambda: _idle(worker, broker, first),  # noqa: B023 - used at once
            "the worker to be idle",
            RUN_TIMEOUT_S,
            0.2,
        )
        for task_id in first:
            assert not worker.failures(task_id), f"{task_id} failed: {worker.failures(task_id)}"
        check_clearing(db, w.market.id, day, reference)
        check_day(db, sw, version)
        outcome.resends += resends
        outcome.cycles += 1
        outcome.seconds.append(time.monotonic() - started)
        reset_clearing(db, w.market.id, day)
    outcome.notes.append(
        "redis-server without persistence loses its whole memory on SIGKILL: the messages still queued "
        "(counted in lost_messages) and the unacked copy of the running task; the running task finishes, its "
        "ack goes nowhere. Nothing is redelivered by the broker; every lost task was re-sent by the "
        "database-driven schedulers' queries (resends) and completed once. 'in a DB transaction' is not "
        "measured here; 'before commit' counts the restarts that came before the clearing had committed."
    )
    return outcome


# -- scenario 3: pg_terminate_backend -----------------------------------------------------------


def _blocked_worker_backend(probe: Connection, worker: Worker) -> int:
    found: list[int] = []

    def blocked() -> bool:
        found[:] = [b.pid for b in backends(probe, worker.application_name) if b.waiting_on_lock]
        return bool(found)

    worker.wait_for(blocked, "the worker's transaction to wait for the held lock", RUN_TIMEOUT_S, 0.005)
    return found[0]


def terminate_mid_task(  # noqa: PLR0915 - two loops of one scenario, read top-down
    db: Session,
    factory: sessionmaker[Session],
    sw: SettlementWorld,
    w: World,
    day: date,
    reference: Reference,
    worker: Worker,
    beat: Beat,
    cycles: int,
    rng: Random,
) -> tuple[Outcome, Outcome]:
    """Scenario 3 (module docstring): settlement cycles, then clearing cycles."""
    settle = Outcome("pg_terminate_backend mid-settlement (autoretry on OperationalError)")
    clear = Outcome("pg_terminate_backend mid-clearing (autoretry on OperationalError; a failure is re-sent)")
    version = len(run_versions(db, sw))
    with autocommit_probe(db) as probe:
        for cycle in range(cycles):
            worker.wait_ready()
            started = time.monotonic()
            if version:
                correct_reading(db, sw, figures_for(version + 1).import_kwh)
            kind = RunKind.RECONCILIATION if version else RunKind.INITIAL
            task_id = f"settle-terminate-{cycle}-{uuid.uuid4().hex[:8]}"
            args = (str(sw.w.market.id), sw.day.isoformat(), kind.value, f"terminate-{cycle}")
            deterministic = cycle % 2 == 0
            if deterministic:
                # A session-level lock on the probe's connection: the task's pg_advisory_xact_lock waits for it.
                probe.execute(
                    text("SELECT pg_advisory_lock(:key)"), {"key": settlement_lock_key(sw.w.market.id, sw.day)}
                )
                try:
                    settle_delivery_day.apply_async(args=args, task_id=task_id, queue=worker.queue)
                    pid = _blocked_worker_backend(probe, worker)
                    settle.faults += terminate(probe, [pid])
                    settle.in_transaction += 1
                    settle.mid_run += 1
                finally:
                    probe.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": settlement_lock_key(sw.w.market.id, sw.day)}
                    )
            else:
                settle_delivery_day.apply_async(args=args, task_id=task_id, queue=worker.queue)
                worker.wait_for(lambda: worker.deliveries(task_id) > 0, f"receipt of {task_id}", RUN_TIMEOUT_S, 0.002)  # noqa: B023 - used at once
                time.sleep(rng.uniform(0, 0.05))
                open_ = [b.pid for b in backends(probe, worker.application_name) if b.in_transaction]
                done_before = any(v == version + 1 for v, _, _ in run_versions(db, sw))
                settle.faults += terminate(probe, open_)
                settle.in_transaction += bool(open_)
                settle.mid_run += bool(open_) and not done_before
            worker.wait_for(
                lambda: bool(worker.successes(task_id) or worker.failures(task_id)),  # noqa: B023 - used at once
                f"task {task_id}",
                RUN_TIMEOUT_S,
            )
            assert not worker.failures(task_id), f"{task_id} failed: {worker.failures(task_id)}"
            version += 1
            check_day(db, sw, version)
            settle.redelivered += "Retry in" in _task_lines(worker, task_id)
            settle.cycles += 1
            settle.seconds.append(time.monotonic() - started)

        for cycle in range(cycles):
            worker.wait_ready()
            started = time.monotonic()
            task_id = clear_task_id(w.market.id, day)
            successes = len(worker.successes(task_id))
            failures = len(worker.failures(task_id))
            retries = _task_lines(worker, task_id).count("Retry in")  # one task id for every cycle
            args2 = (str(w.market.id), day.isoformat())
            if cycle % 2 == 0:
                blocker = factory()
                try:
                    clearing_service.clear_day(blocker, w.market.id, day, utcnow(), triggered_by="blocker")
                    clear_delivery_day.apply_async(args=args2, task_id=task_id, queue=worker.queue)
                    pid = _blocked_worker_backend(probe, worker)
                    clear.faults += terminate(probe, [pid])
                    clear.in_transaction += 1
                    clear.mid_run += 1
                finally:
                    blocker.rollback()
                    blocker.close()
            else:
                clear_delivery_day.apply_async(args=args2, task_id=task_id, queue=worker.queue)
                worker.wait_for(lambda: worker.deliveries(task_id) > 0, "receipt", RUN_TIMEOUT_S, 0.002)  # noqa: B023 - used at once
                time.sleep(rng.uniform(0, WINDOW_SHARE * reference.seconds))
                open_ = [b.pid for b in backends(probe, worker.application_name) if b.in_transaction]
                committed = _committed(db, w.market.id, day)
                clear.faults += terminate(probe, open_)
                clear.in_transaction += bool(open_)
                clear.mid_run += bool(open_) and not committed
            worker.wait_for(
                lambda: len(worker.successes(task_id)) > successes or len(worker.failures(task_id)) > failures,  # noqa: B023 - used at once
                f"task {task_id}",
                RUN_TIMEOUT_S,
            )
            if len(worker.failures(task_id)) > failures:
                clear.failed_then_rescheduled += 1
                # No run of the day; its result rows all reference a run (foreign keys), so none exist.
                assert not _committed(db, w.market.id, day), "a failed clearing left its run behind"
                sent = beat.tick()
                assert task_id in sent, f"the scheduler did not find the day due: {sent}"
                clear.resends += len(sent)
                worker.wait_for(
                    lambda: len(worker.successes(task_id)) > successes,  # noqa: B023 - used at once
                    "the re-sent clearing",
                    RUN_TIMEOUT_S,
                )
            check_clearing(db, w.market.id, day, reference)
            clear.redelivered += _task_lines(worker, task_id).count("Retry in") > retries
            clear.cycles += 1
            clear.seconds.append(time.monotonic() - started)
            reset_clearing(db, w.market.id, day)
    return settle, clear


def _task_lines(worker: Worker, task_id: str) -> str:
    return "\n".join(line for line in worker.log().splitlines() if task_id in line)


# -- the script -----------------------------------------------------------------------------------


def say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _admin(statement: str) -> None:
    with psycopg.connect(settlement_kill.ADMIN_URL, autocommit=True) as conn:
        conn.execute(statement.encode())  # our fixed statements with a generated database name


def _markdown(report: dict[str, Any]) -> list[str]:
    lines = [
        "# Fault injection against the real services (issue 7)",
        "",
        f"- date (UTC): {report['date']}; command: `{report['command']}`",
        f"- os.cpu_count(): {report['cpu_count']}; seed {report['seed']}; clearing book {report['offers']} offers "
        f"over {report['isps']} ISPs "
        f"(reference clearing {report['reference_clearing_s']:.2f} s in the script's process); "
        f"total {report['seconds']:.0f} s",
        "- PostgreSQL: a database of the script's own; broker: a private redis-server (no persistence) on a free "
        "port; worker: `celery worker --pool=prefork` (tests/stress/settlement_kill.py `Worker`), late acks, "
        "reject on worker lost",
        "- after every cycle: exactly one ClearingRun for the day with the reference clearing's input and result "
        "hashes, its offer results and FlexOrders complete, `verify_run` reproduces its hashes; the settlement day "
        "has runs 1..n done, 7 then 3 entries, no posting key twice, trial balance 0, balances as hand-computed",
        "",
        "| scenario | cycles | faults | before commit | in a DB transaction | redelivered / retried | "
        "failed, re-sent by scheduler | re-sends | messages lost with redis | cycle median s | max s | outcome |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {s['scenario']} | {s['cycles']} | {s['faults']} | {s['mid_run']} | {s['in_transaction']} | "
        f"{s['redelivered']} | {s['failed_then_rescheduled']} | {s['resends']} | {s['lost_messages']} | "
        f"{s['cycle_seconds_median']} | {s['cycle_seconds_max']} | all checks passed |"
        for s in report["scenarios"]
    ]
    lines.append("")
    for s in report["scenarios"]:
        lines += [f"- {s['scenario']}: {note}" for note in s["notes"]]
    return lines


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - the script's setup, read top-down
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cycles", type=int, default=20, help="cycles per scenario (default 20)")
    parser.add_argument("--scenarios", default="kill,redis,terminate", help="comma-separated: kill,redis,terminate")
    parser.add_argument("--offers", type=int, default=DEFAULT_OFFERS, help="offers in the clearing book")
    parser.add_argument("--isps", type=int, default=DEFAULT_ISPS, help="ISPs of the book, from 17:00 (default 24)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--write-results", action="store_true", help="write benchmarks/results/faults.{json,md}")
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where a stuck run waits
    scenarios = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    if unknown := scenarios - {"kill", "redis", "terminate"}:
        parser.error(f"unknown scenarios {sorted(unknown)}")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    rng = Random(seed)  # noqa: S311 - fault timings, not secrets

    from market.core.app import create_app  # noqa: PLC0415 - after the database exists
    from market.core.db import make_engine, make_session_factory  # noqa: PLC0415
    from market.core.jobs import configure  # noqa: PLC0415
    from market.core.migrate import upgrade  # noqa: PLC0415
    from tests.factories import in_process_settings  # noqa: PLC0415
    from tests.integration.orders_world import build_world  # noqa: PLC0415
    from tests.integration.settlement_world import build  # noqa: PLC0415

    name = f"flex_faults_{uuid.uuid4().hex[:12]}"
    say(f"fault injection: {args.cycles} cycles per scenario {sorted(scenarios)}, seed {seed}, database {name}")
    url = f"{settlement_kill.ADMIN_URL.rsplit('/', 1)[0]}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    scratch = Path(f"/tmp/{name}")  # noqa: S108 - throwaway logs named after the database
    scratch.mkdir()
    _admin(f'CREATE DATABASE "{name}"')
    began = time.monotonic()
    broker = PrivateRedis(scratch / "redis.log")
    results: list[Outcome] = []
    try:
        upgrade(url)
        settings = in_process_settings(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        broker.start()
        settlement_kill.REDIS_URL = broker.url  # the Worker reads its broker from this module global
        try:
            with TestClient(app=create_app(settings)) as client, factory() as db:
                sw = build(client, db)  # first: build() moves every order in the database a week back
                w = build_world(db)
                day = clearing_book(client, db, w, args.offers, seed, args.isps)
                reference = reference_clearing(factory, w.market.id, day)
                say(f"  reference clearing of {args.offers} offers: {reference.seconds:.2f} s")
                beat_args = (factory, (w.market.id, day), (sw.w.market.id, sw.day))
                if scenarios & {"kill", "terminate"}:
                    with Worker(settings, scratch / "worker.log") as worker:
                        if "kill" in scenarios:
                            results.append(kill_mid_clearing(db, w, day, reference, worker, args.cycles, rng))
                            say(f"  {results[-1].summary()}")
                        if "terminate" in scenarios:
                            results += terminate_mid_task(
                                db,
                                factory,
                                sw,
                                w,
                                day,
                                reference,
                                worker,
                                Beat(*beat_args, worker.queue),
                                args.cycles,
                                rng,
                            )
                            say(f"  {results[-2].summary()}\n  {results[-1].summary()}")
                if "redis" in scenarios:
                    with Worker(settings, scratch / "worker-redis.log", concurrency=1) as worker:
                        results.append(
                            restart_redis(
                                db,
                                sw,
                                w,
                                day,
                                reference,
                                worker,
                                broker,
                                Beat(*beat_args, worker.queue),
                                args.cycles,
                                rng,
                            )
                        )
                        say(f"  {results[-1].summary()}")
        finally:
            configure(celery_app, settings)
            engine.dispose()
    finally:
        broker.kill()
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m tests.stress.faults " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu_count": os.cpu_count(),
        "seed": seed,
        "offers": args.offers,
        "isps": args.isps,
        "reference_clearing_s": reference.seconds,
        "seconds": time.monotonic() - began,
        "scenarios": [r.summary() for r in results],
    }
    say(json.dumps(report, indent=2))
    if args.write_results:
        results_dir = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
        (results_dir / "faults.json").write_text(json.dumps(report, indent=2) + "\n")
        (results_dir / "faults.md").write_text("\n".join(_markdown(report)) + "\n")
    shutil.rmtree(scratch, ignore_errors=True)  # kept only when the run failed
    return 0


if __name__ == "__main__":
    sys.exit(main())
