"""Kill the Celery pool child in the middle of settlement runs, again and again, and check the ledger
after every run (MARKET.md, Ledger and Jobs: each payment is posted exactly once, whatever retries or
crashes happen; tasks are late-acked and idempotent).

On demand, against a database of its own (created, migrated and dropped here)::

    python -m tests.stress.settlement_kill --cycles 200

``tests/integration/test_settlement_reliability.py`` runs the same loop with 20 cycles.

One cycle: store a meter correction (from the second cycle on), wait until a pool child has run a
probe task (a child just forked is not taking work yet), enqueue ``settlement.runs.settle_delivery_day``
on the Redis-backed prefork worker, wait until the worker has received it plus a random delay drawn
uniformly from [0, 4/5 of the median runtime the worker logged so far), SIGKILL the pool children
(both: the one running the task is among them), then wait until the message has been executed to
success (after redelivery: ``task_acks_late`` + ``task_reject_on_worker_lost`` put the message back
on the Redis queue at once, well before any visibility timeout) and check the whole day:

* the runs are versions 1..n, all ``done``, none left ``running``; the first ``initial``, the rest
  ``reconciliation`` (the last ``final`` when asked);
* each run posted exactly its differences: 7 entries for the initial run (the data center's
  utilisation, penalty and fee; the portfolio's utilisation and fee; two pass-through shares), 3
  for every later one (utilisation, penalty and fee of the data center, whose reading changed);
  no posting key appears twice; each run's ``entry_count`` equals its stored entries;
* the trial balance is 0 and every account holds its hand-computed balance (:data:`READINGS`), so
  nothing was posted twice, neither within a run nor across runs.

A kill "landed mid-run" when the run had not committed when the child died; the summary also
counts the kills that found the worker's database transaction open, and the messages that were
delivered more than once. A task that fails instead (e.g. a ``final`` redelivered after its commit,
which ``settle_day`` answers with Conflict) stops the loop with the worker's error.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from random import Random
from typing import IO, Self

import psycopg
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.orm import Session

from market.core.config import JobSettings, Settings
from market.core.db import make_engine, make_session_factory, unit_of_work, utcnow
from market.core.jobs import celery_app, configure
from settlement.ledger.models import AccountKind, JournalEntry, LedgerAccount
from settlement.ledger.service import account_balances, balances, trial_balance
from settlement.runs.models import RunKind, SettlementRun, SettlementStatus
from settlement.runs.service import settle_day
from settlement.runs.tasks import SETTLE_TASK, settle_delivery_day
from tests.integration.settlement_world import SettlementWorld

REDIS_URL = os.environ.get("FLEX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_URL = os.environ.get("FLEX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
START_TIMEOUT_S = 60.0
"""A cold worker imports the whole application (Polars, SQLAlchemy, the solvers): seconds, slower on a busy box."""
STOP_TIMEOUT_S = 10.0
RUN_TIMEOUT_S = 60.0
"""How long one cycle may take from the kill to the redelivered run's success."""
POOL_CHILDREN = 2
"""Pool children of the kill worker; every kill takes them all, so the one running the task dies.
With a single child, Celery 5.7 (billiard) noticed its death only at the pool's 5-second
maintenance timer in our runs (5 s per cycle); with two, at once."""
WINDOW_SHARE = 0.8

# -- hand-computed figures ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    """Balances (credits − debits, EUR) after settling the day with the data center's 17:00 import
    reading ``import_kwh`` (tests/integration/settlement_world.py: baseline 1000 kW, ordered 500 kW
    at 80/MWh, 15 minutes; penalty 100/MWh beyond a 10% band, fee 2/MWh on capped delivery).

    actual = 4 × kWh; D = 1000 − actual; Dc = min(D, 500); U = 80·Dc/4000; N = 100·max(0, 500 − Dc − 50)/4000;
    F = 2·Dc/4000; data center = U − N − F; utility = −(U + 6.00) + N; fees = F + 0.15 (the
    portfolio's part is fixed: utilisation 6.00, fee 0.15, aggregator 1.17, members 2.81 and 1.87).
    """

    import_kwh: str
    data_center: Decimal
    utility: Decimal
    operator_fees: Decimal


READINGS: tuple[Figures, ...] = (
    # 150 kWh: D 400, U 8.00, N 100 kW short − 50 → 1.25, F 0.20 → 6.55 (the initial reading)
    Figures("150", Decimal("6.55"), Decimal("-12.75"), Decimal("0.35")),
    # 100 kWh: D 600, capped 500: U 10.00, N 0, F 0.25 → 9.75
    Figures("100", Decimal("9.75"), Decimal("-16.00"), Decimal("0.40")),
    # 160 kWh: D 360: U 7.20, N (140 − 50) → 2.25, F 0.18 → 4.77
    Figures("160", Decimal("4.77"), Decimal("-10.95"), Decimal("0.33")),
    # 140 kWh: D 440: U 8.80, N (60 − 50) → 0.25, F 0.22 → 8.33
    Figures("140", Decimal("8.33"), Decimal("-14.55"), Decimal("0.37")),
)
AGGREGATOR = Decimal("1.17")
MEMBER_A = Decimal("2.81")
MEMBER_B = Decimal("1.87")
INITIAL_ENTRIES = 7
"""Data center: utilisation, penalty, fee; portfolio: utilisation, fee; pass-through to A and B."""
CHANGE_ENTRIES = 3
"""Between any two readings above, the data center's utilisation, penalty and fee all change."""


def figures_for(version: int) -> Figures:
    """The reading in force when run ``version`` (1-based) settles: they cycle through READINGS."""
    return READINGS[(version - 1) % len(READINGS)]


def balance_of(session: Session, participant_id: uuid.UUID) -> Decimal:
    return sum((b.balance for b in balances(session, participant_id, "EUR")), Decimal(0))


def operator_fees_of(session: Session, market_id: uuid.UUID) -> Decimal:
    ids = session.scalars(
        select(LedgerAccount.id).where(
            LedgerAccount.market_id == market_id, LedgerAccount.kind == AccountKind.OPERATOR_FEES
        )
    ).all()
    return sum((b.balance for b in account_balances(session, ids).values()), Decimal(0))


def run_versions(session: Session, sw: SettlementWorld) -> list[tuple[int, RunKind, SettlementStatus]]:
    rows = session.execute(
        select(SettlementRun.version, SettlementRun.kind, SettlementRun.status)
        .where(SettlementRun.market_id == sw.w.market.id, SettlementRun.delivery_day == sw.day)
        .order_by(SettlementRun.version)
    ).all()
    session.commit()  # end the read transaction: the next read sees the worker's commits afresh
    return [(v, k, s) for v, k, s in rows]


def check_day(session: Session, sw: SettlementWorld, versions: int, *, last_final: bool = False) -> None:
    """Assert the whole day after ``versions`` runs (see the module docstring); AssertionError says what broke."""
    runs = session.scalars(
        select(SettlementRun)
        .where(SettlementRun.market_id == sw.w.market.id, SettlementRun.delivery_day == sw.day)
        .order_by(SettlementRun.version)
        .execution_options(populate_existing=True)
    ).all()
    kinds = [RunKind.INITIAL] + [RunKind.RECONCILIATION] * (versions - 1)
    if last_final and versions > 1:
        kinds[-1] = RunKind.FINAL
    found = [(r.version, r.kind, r.status) for r in runs]
    assert found == [(v + 1, kinds[v], SettlementStatus.DONE) for v in range(versions)], found

    stored = dict(
        session.execute(
            select(JournalEntry.settlement_run_id, func.count())
            .where(JournalEntry.settlement_run_id.in_([r.id for r in runs]))
            .group_by(JournalEntry.settlement_run_id)
        ).all()
    )
    per_run = [(r.version, stored.get(r.id, 0), r.entry_count) for r in runs]
    want = [(r.version, INITIAL_ENTRIES if r.version == 1 else CHANGE_ENTRIES) for r in runs]
    assert [(v, n) for v, n, _ in per_run] == want, f"entries per run (version, stored, entry_count): {per_run}"
    assert all(n == counted for _, n, counted in per_run), f"entry_count differs from the stored entries: {per_run}"
    duplicates = session.execute(
        select(
            JournalEntry.settlement_run_id,
            JournalEntry.offer_id,
            JournalEntry.kind,
            JournalEntry.debit_account_id,
            JournalEntry.credit_account_id,
            func.count(),
        )
        .group_by(
            JournalEntry.settlement_run_id,
            JournalEntry.offer_id,
            JournalEntry.kind,
            JournalEntry.debit_account_id,
            JournalEntry.credit_account_id,
        )
        .having(func.count() > 1)
    ).all()
    assert not duplicates, f"posting keys stored more than once: {duplicates}"

    market = sw.w.market.id
    assert trial_balance(session, market) == {"EUR": Decimal(0)}
    expected = figures_for(versions)
    got = {
        "data center": balance_of(session, sw.w.data_center.id),
        "utility": balance_of(session, sw.w.utility.id),
        "aggregator": balance_of(session, sw.w.aggregator.id),
        "member A": balance_of(session, sw.member_a.id),
        "member B": balance_of(session, sw.member_b.id),
        "operator fees": operator_fees_of(session, market),
    }
    want_balances = {
        "data center": expected.data_center,
        "utility": expected.utility,
        "aggregator": AGGREGATOR,
        "member A": MEMBER_A,
        "member B": MEMBER_B,
        "operator fees": expected.operator_fees,
    }
    session.commit()
    assert got == want_balances, f"after v{versions} ({expected.import_kwh} kWh): {got} != {want_balances}"


# -- the worker -----------------------------------------------------------------------------------

_RECEIVED = re.compile(r"Task (?P<name>[\w.]+)\[(?P<id>[^\]]+)\] received")
_SUCCEEDED = re.compile(r"Task (?P<name>[\w.]+)\[(?P<id>[^\]]+)\] succeeded in (?P<seconds>[\d.e+-]+)s: (?P<result>.*)")
_FAILED = re.compile(r"Task (?P<name>[\w.]+)\[(?P<id>[^\]]+)\] raised unexpected: (?P<error>.*)")
READY_TASK = "celery.accumulate"
"""Celery's built-in task that returns its arguments: a side-effect-free probe that a pool child is up."""


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc: every thread of the process lists its own children)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in children.read_text().split()]
        except OSError:  # the thread ended meanwhile
            continue
    return found


class Worker:
    """A ``celery worker`` subprocess (prefork pool) on Redis, consuming one queue of its own.

    Its log (INFO: a line per message received and per task succeeded, with the runtime) goes to a
    file, never a pipe: a pipe nobody drains would block the worker once 64 KiB of tracebacks of
    killed children piled up. Its database connections carry ``application_name`` so
    :meth:`in_transaction` can see whether it is inside a run's transaction.
    """

    def __init__(self, settings: Settings, log_path: Path, concurrency: int = POOL_CHILDREN) -> None:
        self.settings = settings
        self.log_path = log_path
        self.concurrency = concurrency
        tag = uuid.uuid4().hex[:8]
        self.queue = f"flex-settle-{tag}"
        self.name = f"{self.queue}@localhost"
        self.application_name = f"flex-settle-worker-{tag}"
        self.redis_settings = settings.model_copy(update={"jobs": JobSettings(broker_url=REDIS_URL)})
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.known_children: set[int] = set()

    def start(self) -> Self:
        """Start the worker and wait until it answers a ping (it consumes its queue from then on)."""
        configure(celery_app, self.redis_settings)
        celery_app.conf.task_default_queue = self.queue
        separator = "&" if "?" in self.settings.database.url else "?"
        env = {
            **os.environ,
            "FLEX_DATABASE_URL": f"{self.settings.database.url}{separator}application_name={self.application_name}",
            "FLEX_BROKER_URL": REDIS_URL,
            "FLEX_API_KEY_PEPPER": self.settings.security.api_key_pepper,
        }
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - the venv's own celery, fixed arguments
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "market.core.jobs:celery_app",
                "worker",
                "--pool=prefork",
                f"--concurrency={self.concurrency}",
                "-Q",
                self.queue,
                "-n",
                self.name,
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=INFO",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.wait_for(
                lambda: bool(celery_app.control.ping(destination=[self.name], timeout=0.5)),
                "the worker to answer a ping",
                START_TIMEOUT_S,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Cold shutdown (SIGQUIT: every message is settled by now, and a warm one takes seconds to
        join the pool), SIGKILL after a timeout; then any pool child we saw that outlived it."""
        process = self.process
        if process is not None and process.poll() is None:
            self.known_children.update(_children(process.pid))
            process.send_signal(signal.SIGQUIT)

            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
        for pid in self.known_children:
            _kill_orphan(pid, self.queue)
        self.known_children.clear()
        if self._log is not None:
            self._log.close()
            self._log = None

    def children(self) -> list[int]:
        assert self.process is not None
        found = _children(self.process.pid)
        self.known_children.update(found)
        return found

    def kill_children(self) -> list[int]:
        """SIGKILL every pool child (with one task in flight, the one running it is among them)."""
        killed: list[int] = []
        for pid in self.children():
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                continue
        return killed

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def deliveries(self, task_id: str) -> int:
        """How many times the worker received the message of ``task_id`` (1 + redeliveries)."""
        return sum(1 for m in _RECEIVED.finditer(self.log()) if m["id"] == task_id)

    def successes(self, task_id: str) -> list[str]:
        """What the successful executions of ``task_id`` returned (run ids, for settlement)."""
        return [m["result"].strip("'") for m in _SUCCEEDED.finditer(self.log()) if m["id"] == task_id]

    def failures(self, task_id: str) -> list[str]:
        """The errors of the failed executions of ``task_id``."""
        return [m["error"] for m in _FAILED.finditer(self.log()) if m["id"] == task_id]

    def runtimes(self) -> list[float]:
        """Seconds of each successful settlement execution, as the worker measured them."""
        return [float(m["seconds"]) for m in _SUCCEEDED.finditer(self.log()) if m["name"] == SETTLE_TASK]

    def wait_ready(self, timeout: float = RUN_TIMEOUT_S) -> None:
        """Until a pool child has run a probe task: a child just forked after a kill is not taking
        work yet, and killing it then would hit no run (and its loss is noticed only seconds later)."""
        self.wait_for(lambda: len(self.children()) >= self.concurrency, "the pool children", timeout)
        probe = f"ready-{uuid.uuid4().hex[:8]}"
        celery_app.send_task(READY_TASK, args=(0,), task_id=probe, queue=self.queue)
        self.wait_for(lambda: bool(self.successes(probe)), "a pool child to run a probe task", timeout, 0.005)

    def in_transaction(self, probe: Connection) -> bool:
        """Whether one of the worker's database connections is inside a transaction (an autocommit
        ``probe``, since pg_stat_activity is a per-transaction snapshot)."""
        count = probe.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name AND xact_start IS NOT NULL"),
            {"name": self.application_name},
        ).scalar_one()
        return bool(count)

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float, poll_s: float = 0.02) -> None:
        """Poll ``predicate`` until true; fail with the worker's log tail if it died or time ran out."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                code = self.process.returncode
                raise AssertionError(f"the worker exited ({code}) waiting for {what}:\n{self.tail()}")
            if predicate():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; worker log:\n{self.tail()}")
            time.sleep(poll_s)

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log().splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"


def _kill_orphan(pid: int, queue: str) -> None:
    """SIGKILL a pool child of ours that outlived its parent. Children are forked, so their command
    line is the worker's, with our unique queue name in it: a reused pid never matches."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if queue.encode() not in cmdline:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


@contextmanager
def autocommit_probe(session: Session) -> Iterator[Connection]:
    """A connection of its own in autocommit, for reads that must not sit in one snapshot."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as probe:
        yield probe


# -- the kill loop --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cycle:
    version: int
    kind: RunKind
    delay_s: float
    killed: int
    """Pool children killed (0 if none was up at that instant)."""
    committed_before_kill: bool
    in_transaction_at_kill: bool
    deliveries: int
    seconds: float
    """From enqueue to the checked day."""


@dataclass
class KillSummary:
    cycles: list[Cycle] = field(default_factory=list)
    calibration_s: float = 0.0

    @property
    def mid_run(self) -> int:
        """Kills that landed before the run committed."""
        return sum(1 for c in self.cycles if c.killed and not c.committed_before_kill)

    @property
    def in_transaction(self) -> int:
        return sum(1 for c in self.cycles if c.killed and c.in_transaction_at_kill)

    @property
    def redelivered(self) -> int:
        return sum(1 for c in self.cycles if c.deliveries > 1)

    def text(self) -> str:
        seconds = [c.seconds for c in self.cycles]
        return (
            f"cycles {len(self.cycles)}, kills {sum(1 for c in self.cycles if c.killed)}, "
            f"mid-run (run not committed at the kill) {self.mid_run}, "
            f"inside the run's transaction {self.in_transaction}, "
            f"messages redelivered {self.redelivered}, "
            f"run ~{self.calibration_s * 1000:.0f} ms, cycle median {statistics.median(seconds):.2f} s "
            f"max {max(seconds):.2f} s; outcome: every run completed once, ledger balanced, "
            f"balances as hand-computed after every cycle"
        )


def time_one_run(session_factory: Callable[[], Session], sw: SettlementWorld, kind: RunKind) -> float:
    """Seconds a full run of the day takes in this process, rolled back (nothing stays)."""
    session = session_factory()
    try:
        started = time.perf_counter()
        settle_day(session, sw.w.market.id, sw.day, kind, utcnow(), "calibration")
        session.flush()
        return time.perf_counter() - started
    finally:
        session.rollback()
        session.close()


def run_kill_cycles(
    db: Session,
    sw: SettlementWorld,
    worker: Worker,
    cycles: int,
    rng: Random,
    *,
    last_final: bool = True,
    report: Callable[[Cycle], None] | None = None,
) -> KillSummary:
    """Kill the pool child at a random moment of each of ``cycles`` runs (initial, then reconciliations
    after corrections, the last one final) and check the day after each; see the module docstring."""
    assert not run_versions(db, sw), "the day must not be settled yet"
    summary = KillSummary(calibration_s=time_one_run(lambda: Session(db.get_bind()), sw, RunKind.INITIAL))
    with autocommit_probe(db) as probe:
        for version in range(1, cycles + 1):
            kind = RunKind.INITIAL if version == 1 else RunKind.RECONCILIATION
            if last_final and version == cycles and version > 1:
                kind = RunKind.FINAL
            if version > 1:
                sw.read(db, sw.dc_site, figures_for(version).import_kwh)
            cycle = _one_cycle(db, sw, worker, version, kind, rng, summary.calibration_s, probe)
            summary.cycles.append(cycle)
            if report is not None:
                report(cycle)
    return summary


def _one_cycle(
    db: Session,
    sw: SettlementWorld,
    worker: Worker,
    version: int,
    kind: RunKind,
    rng: Random,
    calibration_s: float,
    probe: Connection,
) -> Cycle:
    worker.wait_ready()
    task_id = f"settle-kill-{version}-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    settle_delivery_day.apply_async(
        args=(str(sw.w.market.id), sw.day.isoformat(), kind.value, f"kill-cycle-{version}"),
        task_id=task_id,
        queue=worker.queue,
    )
    # The kill lands uniformly within a run from the message's receipt: the window is 4/5 of the
    # median runtime the worker logged so far (before any, of a rolled-back run timed in this
    # process), so that runs a little faster than usual are still hit before their commit.
    runtimes = worker.runtimes()
    window = WINDOW_SHARE * (statistics.median(runtimes) if runtimes else calibration_s)
    delay = rng.uniform(0, window)
    worker.wait_for(lambda: worker.deliveries(task_id) > 0, f"the worker to receive {task_id}", RUN_TIMEOUT_S, 0.002)
    time.sleep(delay)
    in_transaction = worker.in_transaction(probe)
    killed = worker.kill_children()
    _wait_gone(killed)
    committed = any(v == version for v, _, _ in run_versions(db, sw))

    worker.wait_for(
        lambda: bool(worker.successes(task_id) or worker.failures(task_id)),
        f"task {task_id} (v{version})",
        RUN_TIMEOUT_S,
    )
    if failed := worker.failures(task_id):
        raise AssertionError(
            f"v{version} ({kind.value}): the task failed after {worker.deliveries(task_id)} deliveries "
            f"(run committed before the kill: {committed}): {failed[0]}"
        )
    # The killed child's backend must have let go of its transaction too (none left open).
    worker.wait_for(lambda: not worker.in_transaction(probe), "no open worker transaction", RUN_TIMEOUT_S)
    successes = worker.successes(task_id)
    deliveries = worker.deliveries(task_id)
    versions = run_versions(db, sw)
    assert len(successes) == 1, f"{task_id} succeeded {len(successes)} times: {successes}"
    run_id = db.scalar(
        select(SettlementRun.id).where(
            SettlementRun.market_id == sw.w.market.id,
            SettlementRun.delivery_day == sw.day,
            SettlementRun.version == version,
        )
    )
    db.commit()
    assert successes == [str(run_id)], f"v{version}: the task returned {successes}, the run is {run_id}; {versions}"
    if not committed and in_transaction and killed:
        assert deliveries >= 2, f"v{version}: killed inside the run, yet delivered {deliveries} time(s)"
    check_day(db, sw, version, last_final=kind is RunKind.FINAL)
    return Cycle(
        version=version,
        kind=kind,
        delay_s=delay,
        killed=len(killed),
        committed_before_kill=committed,
        in_transaction_at_kill=in_transaction,
        deliveries=deliveries,
        seconds=time.monotonic() - started,
    )


def _wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    """Until the killed children are reaped by their parent (then they commit nothing more)."""
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() and _state(pid) != "Z" for pid in pids):
        if time.monotonic() > deadline:
            raise AssertionError(f"killed pool children {pids} are still running after {timeout} s")
        time.sleep(0.005)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return "X"


# -- the script -----------------------------------------------------------------------------------


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.encode())  # our fixed statements with a generated database name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cycles", type=int, default=200, help="settlement runs to kill (default 200)")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the kill delays")
    parser.add_argument("--concurrency", type=int, default=POOL_CHILDREN, help="pool children (default 2)")
    parser.add_argument("--verbose", action="store_true", help="print every cycle")
    parser.add_argument(
        "--final", action=argparse.BooleanOptionalAction, default=True, help="make the last run final (default)"
    )
    args = parser.parse_args(argv)
    if args.cycles < 1:
        parser.error("--cycles must be at least 1")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")

    # Imported here: the script's own database must exist before anything reads settings.
    from litestar.testing import TestClient  # noqa: PLC0415

    from market.core.app import create_app  # noqa: PLC0415
    from market.core.migrate import upgrade  # noqa: PLC0415
    from tests.factories import in_process_settings  # noqa: PLC0415
    from tests.integration.settlement_world import build  # noqa: PLC0415

    name = f"flex_stress_{uuid.uuid4().hex[:12]}"
    print(f"settlement kill stress: {args.cycles} cycles, seed {seed}, database {name}")  # noqa: T201
    url = f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    _admin(f'CREATE DATABASE "{name}"')
    began = time.monotonic()
    try:
        upgrade(url)
        settings = in_process_settings(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        log_path = Path(f"/tmp/{name}-worker.log")  # noqa: S108 - a throwaway log named after the database
        try:
            with TestClient(app=create_app(settings)) as client, factory() as db:
                sw = build(client, db)
                with Worker(settings, log_path, args.concurrency) as worker:

                    def report(cycle: Cycle) -> None:
                        if args.verbose:
                            print(f"  {cycle}")  # noqa: T201
                        elif cycle.version % 10 == 0 or cycle.version == args.cycles:
                            print(f"  cycle {cycle.version}/{args.cycles} ok ({time.monotonic() - began:.0f} s)")  # noqa: T201

                    rng = Random(seed)  # noqa: S311 - kill delays, not secrets
                    summary = run_kill_cycles(db, sw, worker, args.cycles, rng, last_final=args.final, report=report)
                    lost = worker.log().count("Task handler raised error: WorkerLostError")
            with unit_of_work(factory) as check:
                remaining = check.scalar(select(func.count()).select_from(SettlementRun))
        finally:
            configure(celery_app, settings)
            engine.dispose()
        print(  # noqa: T201
            f"settlement kill stress (seed {seed}, {args.concurrency} pool child(ren), "
            f"{time.monotonic() - began:.0f} s): {summary.text()}; "
            f"worker-lost errors logged {lost}; runs stored {remaining}"
        )
        log_path.unlink(missing_ok=True)  # kept only when the run failed
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
