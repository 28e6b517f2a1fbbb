"""Bounded load test of the API (issue 7): many households submitting, revising and revoking
single offers while the operator clears another, already gate-closed, day.

``flexmarket serve --workers W`` runs on a free loopback port against a fresh PostgreSQL database
(created and dropped here) holding one day-ahead market, 10 feeders and ``--households``
households, each with a site and its own API key. A second process (multiprocessing, spawn) drives
it with C threads, each with a keep-alive ``http.client`` connection, in a closed loop (the next request
when the answer arrives), for three phases in the same run:

1. reference: ``GET /api/v1/me`` (authentication and one key lookup, nothing else);
2. reference: a no-op Litestar route (``GET /noop``, one process of plain uvicorn + Litestar, no
   middleware, no database) served the same way, so the ratios show what the framework costs and
   what the offer path costs;
3. the mix, ``--duration`` seconds: 70 % ``POST /api/v1/flex-offers`` (one offer, 4 ISPs, the
   realistic mix of benchmarks/common.py), 20 % ``PUT`` revising one of the thread's live offers,
   10 % ``POST .../revoke`` of one. Halfway through, this process (the operator) POSTs the clearing
   of another day (a book of ``--book-offers`` offers, moved a week back so its gate has closed).
   As in production, the API hands the clearing to a Celery worker on Redis (``flexmarket worker``,
   one process on the same 2 cores), which clears while the load goes on, and the rate limiter
   counts in the same Redis; ``--jobs in-process`` runs the clearing inside the API server instead
   (the embedded mode, in-memory rate limiter).

Reported: throughput, p50/p95/p99 latency and errors per phase and per operation, the mix's figures
before / while / after the clearing, CPU per group (load generator, server, worker, PostgreSQL, others),
``os.cpu_count()``. Run from the repository root::

    .venv/bin/python -m benchmarks.load_test [--duration 60] [--clients 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from benchmarks.common import (
    CONNECTION_ERRORS,
    DEFAULT_ADMIN_URL,
    OFFERS_PATH,
    ApiServer,
    KeepAliveConnection,
    OfferGenerator,
    World,
    build_world,
    contamination_note,
    cpu_sample,
    cpu_used,
    environment,
    environment_markdown,
    flexmarket_executable,
    free_port,
    percentile,
    say,
    scratch_database,
    stop_process_group,
    write_results,
)
from market.auth.principal import Scope
from market.auth.service import issue_key
from market.core.db import make_engine, make_session_factory, unit_of_work
from market.markets.calendar import MarketClock
from market.participants.models import Participant, Role

MODULE = "benchmarks.load_test"
TARGET_RPS = 500
TARGET_P99_MS = 100
PROFILE_CAVEAT = (
    "`--gil` samples only the thread that holds the GIL, so these shares are of the Python work; time in C "
    "without the GIL (system calls, waiting for PostgreSQL, the solver) is not in them"
)
MIX = (("post", 0.7), ("revise", 0.2), ("revoke", 0.1))
NOOP_APP = """
from litestar import Litestar, get


@get("/noop", sync_to_thread=False)
def noop() -> dict[str, bool]:
    return {"ok": True}


app = Litestar([noop])
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the offer mix")
    parser.add_argument("--reference-duration", type=float, default=10.0, help="seconds of each reference phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="unrecorded seconds before each phase")
    parser.add_argument("--clients", type=int, default=16, help="client threads in the load generator")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--households", type=int, default=200, help="households, each with a site and a key")
    parser.add_argument("--book-offers", type=int, default=1_000, help="offers in the day cleared halfway")
    parser.add_argument("--seed", type=int, default=20_260_207)
    parser.add_argument(
        "--profile-seconds",
        type=float,
        default=20.0,
        help="after the mix, run it this long again under py-spy, apart from the figures (0: off)",
    )
    parser.add_argument(
        "--jobs",
        choices=("worker", "in-process"),
        default="worker",
        help="where the clearing runs: a Celery worker on Redis (production) or inside the API server (embedded)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("FLEX_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"),
        help="broker and rate-limit counters for --jobs worker (a Redis database the tests do not use)",
    )
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    return parser.parse_args()


# -- the load generator (its own process) -------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    base_url: str
    kind: str
    """``me``, ``noop`` or ``mix``."""
    clients: int
    tokens: tuple[str, ...]
    site_ids: tuple[uuid.UUID, ...]
    clock: MarketClock
    day: date
    seed: int
    warmup_s: float
    duration_s: float
    server_pid: int
    database_url: str
    clearing_at_s: float | None = None
    """Seconds into the recorded window at which the parent triggers the clearing (mix only)."""
    worker_pid: int | None = None
    """The Celery worker's, whose CPU is counted apart (``--jobs worker``)."""


@dataclass
class Log:
    records: list[tuple[float, str, float, str]] = field(default_factory=list)
    """(start offset in the window s, operation, latency s, status) of each recorded request."""
    samples: dict[str, str] = field(default_factory=dict)


@dataclass
class _Household:
    """One household a client thread acts for: its key, its site and its live offers."""

    authorization: str
    site: uuid.UUID
    live: list[str] = field(default_factory=list)


def _client(phase: Phase, n: int, t0: list[float], barrier: threading.Barrier, log: Log) -> None:
    """Client ``n`` acts in turn for households n, n + C, n + 2C... (C clients): the load comes from many
    participants, as a market's does, each far inside its rate limit. With one household per thread,
    once the server got faster, some households passed the 3,000 requests a minute (16 threads sent up
    to 1,600 requests each in the 13 s of the ``/me`` phase alone) and the mix got 429s."""
    rng = random.Random(phase.seed + n)  # noqa: S311 - a reproducible mix, not a secret
    generator = OfferGenerator(phase.clock, phase.day, phase.seed + n)
    households = [
        _Household(f"Bearer {phase.tokens[i]}", phase.site_ids[i])
        for i in range(n % len(phase.tokens), len(phase.tokens), phase.clients)
    ]
    server = KeepAliveConnection(phase.base_url, {"Content-Type": "application/json"})
    barrier.wait()
    start, end = t0[0] + phase.warmup_s, t0[0] + phase.warmup_s + phase.duration_s
    turn = 0
    while (began := time.perf_counter()) < end:
        home = households[turn % len(households)]
        turn += 1
        server.headers["Authorization"] = home.authorization
        operation = "get"
        try:
            if phase.kind == "me":
                status, text = server.request("GET", "/api/v1/me")
            elif phase.kind == "noop":
                status, text = server.request("GET", "/noop")
            else:
                draw = rng.random()
                operation = "post" if draw < MIX[0][1] or not home.live else "revise" if draw < 0.9 else "revoke"  # noqa: PLR2004 - the MIX shares
                if operation == "post":
                    status, text = server.request("POST", OFFERS_PATH, json.dumps(generator.offer(home.site)))
                    if status == "201":
                        home.live.append(json.loads(text)["id"])
                elif operation == "revise":
                    offer_id = home.live[rng.randrange(len(home.live))]
                    body = json.dumps(generator.offer(home.site))
                    status, text = server.request("PUT", f"{OFFERS_PATH}/{offer_id}", body)
                else:
                    offer_id = home.live.pop(rng.randrange(len(home.live)))
                    status, text = server.request("POST", f"{OFFERS_PATH}/{offer_id}/revoke")
        except CONNECTION_ERRORS as exc:
            status, text = type(exc).__name__, str(exc)
        elapsed = time.perf_counter() - began
        if began >= start:
            log.records.append((began - start, operation, elapsed, status))
            if not status.startswith("2") and status not in log.samples:
                log.samples[status] = text[:500]
    server.close()


def run_phase(phase: Phase) -> dict[str, Any]:
    logs = [Log() for _ in range(phase.clients)]
    t0 = [0.0]
    barrier = threading.Barrier(phase.clients + 1)
    threads = [
        threading.Thread(target=_client, args=(phase, n, t0, barrier, logs[n]), daemon=True)
        for n in range(phase.clients)
    ]
    for thread in threads:
        thread.start()
    t0[0] = time.perf_counter()
    barrier.wait()
    time.sleep(phase.warmup_s)
    before = cpu_sample(phase.server_pid, phase.database_url, phase.worker_pid)
    time.sleep(phase.duration_s)
    after = cpu_sample(phase.server_pid, phase.database_url, phase.worker_pid)
    for thread in threads:
        thread.join(timeout=60)
    records = sorted(r for log in logs for r in log.records)
    samples: dict[str, str] = {}
    for log in logs:
        samples.update(log.samples)
    cpu = cpu_used(before, after)
    return {
        "phase": phase.name,
        "clients": phase.clients,
        "duration_s": phase.duration_s,
        "records": records,
        "window_start": t0[0] + phase.warmup_s,
        "error_samples": samples,
        "cpu_s": cpu,
        "cores_busy": {k: round(v / phase.duration_s, 2) for k, v in cpu.items()},
    }


# -- summaries ----------------------------------------------------------------------------------


def stats(records: list[tuple[float, str, float, str]], seconds: float) -> dict[str, Any]:
    ms = sorted(1000 * r[2] for r in records)
    statuses = Counter(r[3] for r in records)
    errors = sum(n for s, n in statuses.items() if not s.startswith("2"))
    return {
        "requests": len(records),
        "throughput_rps": round(len(records) / seconds, 1) if seconds else None,
        "errors": errors,
        "statuses": dict(statuses),
        "latency_ms": {
            "p50": round(percentile(ms, 0.50), 2),
            "p95": round(percentile(ms, 0.95), 2),
            "p99": round(percentile(ms, 0.99), 2),
            "max": round(ms[-1], 2) if ms else None,
        },
    }


def summarise(result: dict[str, Any], clearing: tuple[float, float] | None) -> dict[str, Any]:
    records = result.pop("records")
    result.pop("window_start", None)
    seconds = result["duration_s"]
    summary = {**result, "all": stats(records, seconds)}
    operations = sorted({r[1] for r in records})
    summary["per_operation"] = {op: stats([r for r in records if r[1] == op], seconds) for op in operations}
    if clearing is not None:
        begin, end = clearing
        parts = {
            "before_clearing": [r for r in records if r[0] < begin],
            "while_clearing": [r for r in records if begin <= r[0] < end],
            "after_clearing": [r for r in records if r[0] >= end],
        }
        spans = {"before_clearing": begin, "while_clearing": end - begin, "after_clearing": seconds - end}
        summary["around_clearing"] = {k: stats(v, max(spans[k], 1e-9)) for k, v in parts.items()}
    return summary


# -- setup --------------------------------------------------------------------------------------


def _key(database_url: str, pepper: str, role: Role) -> str:
    """A new key for the (one) participant of ``role`` that build_world made (operator or utility)."""
    factory = make_session_factory(make_engine(database_url, pool_size=1))
    with unit_of_work(factory) as session:
        participant = session.query(Participant).filter(Participant.role == role).one()
        _, token = issue_key(session, participant, "load test", list(Scope), pepper)
    return token


def prepare_closed_day(
    base_url: str, database_url: str, world: World, utility_token: str, seller_token: str, site: uuid.UUID, offers: int
) -> date:
    """A book for the day after the load's delivery day (requests at every feeder and ISP, ``offers``
    offers of one household), posted through the API and moved a week back: its gate has closed."""
    day = world.delivery_day + timedelta(days=1)
    starts = [s.isoformat() for s in world.clock.isps_of_day(day)]
    rng = random.Random(1)  # noqa: S311 - test data
    with httpx.Client(base_url=base_url, timeout=120) as http:
        for feeder in world.feeder_ids:
            body = {
                "congestion_point_id": str(feeder),
                "direction": "up",
                "max_price_per_mwh": "400",
                "isps": [{"start": s, "quantity_kw": str(rng.randint(100, 2000))} for s in starts],
            }
            r = http.post("/api/v1/flex-requests", json=body, headers={"Authorization": f"Bearer {utility_token}"})
            r.raise_for_status()
        bodies = OfferGenerator(world.clock, day, 99).batch([site], offers)
        r = http.post(
            f"{OFFERS_PATH}/batch", json={"offers": bodies}, headers={"Authorization": f"Bearer {seller_token}"}
        )
        r.raise_for_status()
    start, end = world.clock.day_bounds(day)
    with psycopg.connect(database_url) as conn:
        for table in ("flex_offer", "flex_request"):
            conn.execute(
                f"UPDATE {table} SET period_start = period_start - interval '7 days', "  # noqa: S608 - fixed table names
                f"period_end = period_end - interval '7 days' WHERE period_start >= %s AND period_start < %s".encode(),
                (start, end),
            )
    return day - timedelta(days=7)


class CeleryWorker:
    """``flexmarket worker --concurrency 1`` on the Redis broker, in its own process group: the
    production layout's worker, which takes the clearing the API hands it."""

    def __init__(self, database_url: str, pepper: str, redis_url: str, log_path: Path) -> None:
        self.command = [
            str(flexmarket_executable()), "--database-url", database_url, "worker", "--concurrency", "1",
        ]  # fmt: skip
        self.environment = {
            **os.environ,
            "FLEX_BROKER_URL": redis_url,
            "FLEX_API_KEY_PEPPER": pepper,
            "FLEX_ENVIRONMENT": "embedded",
        }
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the worker is not running")
        return self.process.pid

    def __enter__(self) -> CeleryWorker:
        self._purge()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own CLI, arguments built here
                self.command, env=self.environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while " ready." not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the worker did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        return self

    def _purge(self) -> None:
        """Drop the messages an aborted run may have left in the broker (late acks put an unfinished
        task back): this run's worker must not clear a market of a dropped database. The Redis
        database is the benchmark's own (``--redis-url``); only Celery's queue and unacked keys go."""
        client = redis.Redis.from_url(self.environment["FLEX_BROKER_URL"])
        try:
            stale = [*client.scan_iter(match="celery*"), *client.scan_iter(match="unacked*")]
            if stale:
                client.delete(*stale)
        finally:
            client.close()

    def __exit__(self, *_: object) -> None:
        """Stop the worker and its pool's children (:func:`stop_process_group`)."""
        if self.process is not None:
            stop_process_group(self.process, timeout_s=30)

    def failed(self, task_id: str) -> bool:
        """Whether the worker logged the task's failure."""
        return any(task_id in line and "raised unexpected" in line for line in self.log_problems())

    def log_problems(self) -> list[str]:
        """Lines of the worker's log at WARNING or above, and tracebacks."""
        text = self.log_path.read_text(errors="replace")
        return [
            line for line in text.splitlines() if any(w in line for w in ("WARNING", "ERROR", "CRITICAL", "Traceback"))
        ]


_STORED_RUN = (
    b"SELECT offer_count, request_count, award_count, duration_ms FROM clearing_run "
    b"WHERE market_id = %s AND delivery_day = %s"
)


def clear_and_wait(
    base_url: str,
    database_url: str,
    market_id: uuid.UUID,
    day: date,
    operator_token: str,
    worker: CeleryWorker | None,
) -> dict[str, Any]:
    """The operator clears ``day``: in-process the answer is the run (201); with a worker it is 202
    and the run is read from the database once the worker has stored it (polled there, not through
    the API under test). ``began`` and ``ended`` (perf_counter) bound the clearing as the load saw it."""
    began = time.perf_counter()
    response = httpx.post(
        f"{base_url}/api/v1/markets/{market_id}/clearings",
        json={"day": day.isoformat()},
        headers={"Authorization": f"Bearer {operator_token}"},
        timeout=600,
    )
    if response.status_code not in (httpx.codes.CREATED, httpx.codes.ACCEPTED):
        raise RuntimeError(f"the clearing was refused: {response.status_code} {response.text[:2000]}")
    with psycopg.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + 600
        while (row := conn.execute(_STORED_RUN, (market_id, day)).fetchone()) is None:
            if worker is not None and worker.failed(response.json().get("task_id", "?")):
                raise RuntimeError(f"the worker failed to clear {day}:\n" + "\n".join(worker.log_problems()[-20:]))
            if time.monotonic() > deadline:
                raise TimeoutError(f"no clearing of {day} was stored within 600 s")
            time.sleep(0.02)
    ended = time.perf_counter()
    offer_count, request_count, award_count, duration_ms = row
    return {
        "status": response.status_code,
        "day": day.isoformat(),
        "seconds": round(ended - began, 2),
        "offer_count": offer_count,
        "request_count": request_count,
        "award_count": award_count,
        "duration_ms_stored": duration_ms,
        "began": began,
        "ended": ended,
    }


class NoopServer:
    """A one-route Litestar app under plain uvicorn, one process: the framework's floor."""

    def __init__(self, directory: Path) -> None:
        (directory / "noop_app.py").write_text(NOOP_APP)
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> NoopServer:
        self.process = subprocess.Popen(  # noqa: S603 - the venv's uvicorn, fixed arguments
            [
                sys.executable,
                "-m",
                "uvicorn",
                "noop_app:app",
                "--app-dir",
                str(self.directory),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/noop", timeout=1).status_code == 200:  # noqa: PLR2004
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError("the no-op server did not start")

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the no-op server is not running")
        return self.process.pid

    def __exit__(self, *_: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


# -- where the server's time goes (py-spy, if installed) ----------------------------------------


def profile_mix(
    server_pid: int, directory: Path, seconds: float, load_generator: Pool, mix: Callable[[str, float], Phase]
) -> dict[str, Any] | None:
    """Run the mix once more, ``seconds`` long and without a clearing, under py-spy: where the server's
    Python time goes. Apart from the measured mix, whose figures the profiler would slow (it took a
    quarter of a core when it ran inside the mix)."""
    if seconds <= 0:
        return None
    out = directory / "server-profile.txt"
    profiled_phase = mix("offer mix, profiled", seconds + 1)
    profiled = load_generator.apply_async(run_phase, (profiled_phase,))
    time.sleep(profiled_phase.warmup_s + 0.5)
    profiler = start_profiler(server_pid, seconds, out)
    profiled.get(timeout=seconds * 4 + 600)
    if profiler is None:
        return None
    profiler.wait(timeout=60)
    summary = summarise_profile(out) if out.exists() else None
    return {"seconds": seconds, **summary} if summary else None


def start_profiler(server_pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` of the server and its worker processes, as collapsed stacks (benchmark-only tool:
    ``pip install py-spy`` into the venv; skipped when absent)."""
    executable = Path(sys.executable).parent / "py-spy"
    if seconds <= 0 or not executable.exists():
        return None
    return subprocess.Popen(  # noqa: S603 - the venv's py-spy, fixed arguments
        [
            str(executable),
            "record",
            "--gil",
            "--subprocesses",
            "--format",
            "raw",
            "--rate",
            "100",
            "-d",
            str(int(seconds)),
            "-p",
            str(server_pid),
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _path(frame: str) -> str:
    """The module path of a raw py-spy frame ``function (path/module.py:line)`` (site-packages relative)."""
    return frame[frame.rfind("(") + 1 :].rsplit(":", 1)[0]


def _package(frame: str) -> str:
    path = _path(frame)
    return path.split("/", 1)[0].removesuffix(".py") if "/" in path else path.removesuffix(".py")


def _ours(frame: str) -> bool:
    return _path(frame).startswith(("market/", "settlement/"))


def summarise_profile(path: Path, top: int = 20) -> dict[str, Any]:
    """On-CPU samples of the server's worker processes (py-spy leaves idle threads out): the share each
    package holds at the leaf (self time), and the inclusive share of our busiest functions."""
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        total += count
        leaf[_package(frames[-1])] += count
        for frame in {f.rsplit(":", 1)[0] + ")" for f in frames if _ours(f)}:
            inclusive[frame] += count
    share = {k: round(100 * v / total, 1) for k, v in leaf.most_common(15)} if total else {}
    ours = {k: round(100 * v / total, 1) for k, v in inclusive.most_common(top)} if total else {}
    return {"samples": total, "self_share_by_package_pct": share, "inclusive_pct": ours}


# -- the run ------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    with scratch_database(args.admin_url, "flex_load") as database_url, tempfile.TemporaryDirectory() as tmp:
        say(f"database ready; {args.households} households with a site and a key each")
        world = build_world(
            database_url, sellers=args.households, seller_role=Role.HOUSEHOLD, sites=args.households, feeders=10
        )
        env = environment(database_url, MODULE)
        operator_token = _key(database_url, world.pepper, Role.OPERATOR)
        utility_token = _key(database_url, world.pepper, Role.UTILITY)
        tokens = tuple(s.token for s in world.sellers)
        sites = tuple(s.site_ids[0] for s in world.sellers)
        phases: list[dict[str, Any]] = []
        clearing: dict[str, Any] = {}
        with_worker = args.jobs == "worker"
        settings = {"FLEX_BROKER_URL": args.redis_url} if with_worker else {}
        with contextlib.ExitStack() as stack:
            load_generator = stack.enter_context(multiprocessing.get_context("spawn").Pool(1))
            api = stack.enter_context(
                ApiServer(
                    database_url, world.pepper, Path(tmp) / "server.log", workers=args.workers, environment=settings
                )
            )
            worker = (
                stack.enter_context(CeleryWorker(database_url, world.pepper, args.redis_url, Path(tmp) / "worker.log"))
                if with_worker
                else None
            )
            say(f"server with {args.workers} worker(s) at {api.base_url}; clearing {args.jobs}")
            closed_day = prepare_closed_day(
                api.base_url, database_url, world, utility_token, tokens[0], sites[0], args.book_offers
            )

            def phase(name: str, kind: str, base_url: str, duration: float, pid: int = api.pid) -> Phase:
                return Phase(
                    name,
                    base_url,
                    kind,
                    args.clients,
                    tokens,
                    sites,
                    world.clock,
                    world.delivery_day,
                    args.seed + len(phases),
                    args.warmup,
                    duration,
                    pid,
                    database_url,
                    worker_pid=worker.pid if worker is not None else None,
                )

            me = load_generator.apply(
                run_phase, (phase("GET /api/v1/me", "me", api.base_url, args.reference_duration),)
            )
            phases.append(summarise(me, None))
            with NoopServer(Path(tmp)) as noop:
                base = f"http://127.0.0.1:{noop.port}"
                result = load_generator.apply(
                    run_phase, (phase("no-op Litestar route", "noop", base, args.reference_duration, noop.pid),)
                )
                phases.append(summarise(result, None))
            for p in phases:
                say(f"  {p['phase']}: {p['all']['throughput_rps']} req/s, p99 {p['all']['latency_ms']['p99']} ms")

            mix = load_generator.apply_async(run_phase, (phase("offer mix", "mix", api.base_url, args.duration),))
            time.sleep(args.warmup + args.duration / 2)
            clearing = clear_and_wait(api.base_url, database_url, world.market_id, closed_day, operator_token, worker)
            began, ended = clearing.pop("began"), clearing.pop("ended")
            say(f"  clearing of {closed_day}: {clearing}")
            result = mix.get(timeout=args.duration * 4 + 600)
            # perf_counter is CLOCK_MONOTONIC on Linux, one clock for every process on the machine.
            span = (began - result["window_start"], ended - result["window_start"])
            phases.append(summarise(result, span))
            profile = profile_mix(
                api.pid,
                Path(tmp),
                args.profile_seconds,
                load_generator,
                lambda name, duration: phase(name, "mix", api.base_url, duration),
            )
            problems = api.log_problems()
            worker_problems = worker.log_problems() if worker is not None else []
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                b"SELECT CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN revision > 1 THEN 'revised' "
                b"ELSE 'as submitted' END, count(*) FROM flex_offer GROUP BY 1 ORDER BY 1"
            ).fetchall()
        stored = {str(s): int(n) for s, n in row}
    report = {
        "environment": env,
        "args": vars(args),
        "targets": {"rps": TARGET_RPS, "p99_ms": TARGET_P99_MS, "errors": 0},
        "clearing": clearing,
        "phases": phases,
        "offers_stored_by_status": stored,
        "server_log_problems": problems,
        "worker_log_problems": worker_problems,
        "server_profile": profile,
    }
    write_results("load_test", report, markdown(report))
    mix_all = phases[-1]["all"]
    lat = mix_all["latency_ms"]
    say(f"offer mix: {mix_all['throughput_rps']} req/s, p99 {lat['p99']} ms, errors {mix_all['errors']}")


def _row(name: str, s: dict[str, Any], ref: float | None) -> str:
    lat = s["latency_ms"]
    ratio = f"{s['throughput_rps'] / ref:.2f}" if ref and s["throughput_rps"] is not None else ""
    return (
        f"| {name} | {s['requests']} | {s['throughput_rps']} | {ratio} | {lat['p50']} | {lat['p95']} | {lat['p99']} "
        f"| {lat['max']} | {s['errors']} |"
    )


def _reading(me: dict[str, Any], noop: dict[str, Any], mix: dict[str, Any], *, in_server: bool) -> list[str]:
    """What the figures say about the ceiling: CPU per request of the server and PostgreSQL."""

    def per_request(phase: dict[str, Any], group: str) -> float:
        return float(1000 * phase["cpu_s"][group] / max(1, phase["all"]["requests"]))

    cores = os.cpu_count() or 1
    mix_ms = per_request(mix, "server") + per_request(mix, "postgres")
    me_ms = per_request(me, "server") + per_request(me, "postgres")
    return [
        f"Reading: an offer-mix request costs {per_request(mix, 'server'):.1f} ms of server CPU and "
        f"{per_request(mix, 'postgres'):.1f} ms of PostgreSQL CPU; `/me` {per_request(me, 'server'):.1f} + "
        f"{per_request(me, 'postgres'):.1f} ms; the no-op route {per_request(noop, 'server'):.2f} ms. With all "
        f"{cores} cores given to the server and PostgreSQL and nothing else running, the ceiling would be about "
        f"{1000 * cores / mix_ms:.0f} offer requests/s ({1000 * cores / me_ms:.0f} for `/me`), against the target "
        f"of {TARGET_RPS}: the server's CPU per offer request bounds the throughput, not the network (Python: "
        "uvicorn, Litestar and asyncio per request, the ORM and psycopg for four to six statements, validation"
        + (
            "; the mix's server CPU also holds the clearing, which runs inside the server"
            if in_server
            else "; the clearing's CPU is the worker's, counted apart"
        )
        + f"); p99 follows from queueing {mix['clients']} clients on that CPU.",
    ]


def _per_request(phase: dict[str, Any], group: str) -> str:
    requests = phase["all"]["requests"]
    return f"{1000 * phase['cpu_s'][group] / requests:.2f}" if requests else ""


def markdown(report: dict[str, Any]) -> list[str]:
    args, phases, clearing = report["args"], report["phases"], report["clearing"]
    me, noop, mix = phases
    ref = me["all"]["throughput_rps"]
    lines = [
        "# Load test: offers submitted, revised and revoked while clearing runs",
        "",
        *environment_markdown(report["environment"]),
        f"- server: `flexmarket serve --workers {args['workers']}` on loopback, PostgreSQL database of its own, "
        f"{args['households']} households (site + key each), 10 feeders; "
        + (
            "jobs on a Celery worker (`flexmarket worker --concurrency 1`) with Redis as broker and rate-limit store, "
            "as in production: the clearing runs in the worker, on the same cores"
            if args.get("jobs", "in-process") == "worker"
            else "jobs in-process (the clearing runs inside the API server), rate limits counted in memory"
        ),
        f"- load: a second process, {args['clients']} threads, closed loop (keep-alive http.client connections), "
        f"{args['warmup']} s warm-up per phase; references {args['reference_duration']} s each, mix "
        f"{args['duration']} s: 70 % single-offer POST, 20 % PUT revision, 10 % revoke",
        f"- halfway through the mix the operator cleared {clearing['day']} ({clearing['offer_count']} offers, "
        f"{clearing['request_count']} requests, {clearing['award_count']} awards): HTTP {clearing['status']}, "
        f"the run stored {clearing['seconds']} s after the request (the clearing itself: "
        f"{clearing['duration_ms_stored'] / 1000:.2f} s)",
        f"- targets (2 cores): ≥ {TARGET_RPS} single-offer requests/s, p99 ≤ {TARGET_P99_MS} ms, 0 errors",
        "",
        "| phase / operation | requests | req/s | × /me | p50 ms | p95 ms | p99 ms | max ms | errors |",
        "|---|---|---|---|---|---|---|---|---|",
        _row("GET /api/v1/me (reference)", me["all"], ref),
        _row("no-op Litestar route, 1 process (reference)", noop["all"], ref),
        _row("offer mix, all", mix["all"], ref),
    ]
    lines += [_row(f"mix: {op}", s, ref) for op, s in mix["per_operation"].items()]
    lines += [_row(f"mix {k.replace('_', ' ')}", s, ref) for k, s in mix.get("around_clearing", {}).items()]
    lines += [
        "",
        "| phase | cores busy: load gen / server / worker / postgres / other processes | CPU ms per request: "
        "server / postgres |",
        "|---|---|---|",
        *[
            f"| {p['phase']} | {p['cores_busy']['client']} / {p['cores_busy']['server']} / "
            f"{p['cores_busy'].get('worker', '-')} / {p['cores_busy']['postgres']} / {p['cores_busy']['other']} | "
            f"{_per_request(p, 'server')} / {_per_request(p, 'postgres')} |"
            for p in phases
        ],
        "",
        *contamination_note({p["phase"]: p["cores_busy"]["other"] for p in phases}),
        "",
        *_reading(me, noop, mix, in_server=args.get("jobs", "in-process") == "in-process"),
        "",
        f"Offers stored at the end, by status: {report['offers_stored_by_status']}.",
        f"Server log lines other than INFO: {report['server_log_problems']['count']}. "
        f"Worker log lines at WARNING or above: {len(report.get('worker_log_problems', []))}.",
        "",
    ]
    if profile := report.get("server_profile"):
        lines += [
            f"Where the server's Python time went in the mix (a second run of it, {profile['seconds']:.0f} s without "
            f"a clearing, under `py-spy record --gil`; both workers, {profile['samples']} samples at 100 Hz):",
            "",
            "- self time by package (%): "
            + ", ".join(f"{k} {v}" for k, v in profile["self_share_by_package_pct"].items()),
            "- inclusive time of our functions (%): "
            + ", ".join(f"`{k}` {v}" for k, v in list(profile["inclusive_pct"].items())[:15]),
            f"- {PROFILE_CAVEAT}",
            "",
        ]
    for p in phases:
        if p["error_samples"]:
            lines.append(f"Error samples in {p['phase']}: `{json.dumps(p['error_samples'])[:1500]}`")
    return lines


if __name__ == "__main__":
    main()
