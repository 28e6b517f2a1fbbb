"""What both order benchmarks share: a throw-away database, a market with a grid and sellers, a
realistic offer mix, the API server as a subprocess, CPU accounting and the result files.

Everything here goes through the services (market, grid, sites, keys), so the data obeys the same
rules as data made through the API.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.metadata
import json
import os
import platform
import random
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time as clock_time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from market.auth.principal import Principal, Scope
from market.auth.service import issue_key
from market.core.db import make_engine, make_session_factory, unit_of_work
from market.core.migrate import upgrade
from market.grid.models import CongestionPointKind
from market.grid.schemas import CongestionPointCreate
from market.grid.service import create_congestion_point
from market.markets.calendar import MarketClock
from market.markets.models import GateClosureKind, PricingRule
from market.markets.schemas import MarketCreate
from market.markets.service import clock_of, create_market
from market.participants.models import AssetKind, Participant, Role
from market.participants.schemas import SiteCreate
from market.participants.service import create_site

DEFAULT_ADMIN_URL = os.environ.get("FLEX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parents[1]
MARKET_TZ = "Europe/Amsterdam"
ISPS_PER_OFFER = 4
"""One hour of 15-minute ISPs."""
OFFERS_PATH = "/api/v1/flex-offers"
PACKAGES = ("sqlalchemy", "psycopg", "psycopg-pool", "litestar", "msgspec", "uvicorn", "httpx", "advanced-alchemy")


def say(message: str) -> None:
    """Progress on stdout (the repo's lint config forbids ``print``)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


# -- the database -------------------------------------------------------------------------------


def _admin(admin_url: str, statement: sql.Composed) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement)


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, migrated PostgreSQL database; dropped (even with connections open) on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        _admin(admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def count_offers(database_url: str, table: str = "flex_offer") -> int:
    """Rows in ``table`` (flex_offer or a benchmark's own copy of it)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    return int(row[0]) if row else 0


# -- the market, the grid and the sellers -------------------------------------------------------


@dataclass(frozen=True)
class Seller:
    participant_id: uuid.UUID
    role: Role
    token: str
    principal: Principal
    site_ids: tuple[uuid.UUID, ...]


@dataclass(frozen=True)
class World:
    """One day-ahead market on Europe/Amsterdam, one utility's grid tree, and sellers with sites."""

    database_url: str
    pepper: str
    market_id: uuid.UUID
    clock: MarketClock
    feeder_ids: tuple[uuid.UUID, ...]
    sellers: tuple[Seller, ...]
    delivery_day: date

    @property
    def site_count(self) -> int:
        return sum(len(s.site_ids) for s in self.sellers)


def _participant(session: Session, role: Role, name: str, pepper: str, scopes: list[Scope]) -> tuple[Principal, str]:
    participant = Participant(id=uuid.uuid4(), name=name, role=role)
    session.add(participant)
    session.flush()
    key, token = issue_key(session, participant, "benchmark", scopes, pepper)
    principal = Principal(participant_id=participant.id, role=role, scopes=frozenset(scopes), api_key_id=key.id)
    return principal, token


def build_world(
    database_url: str,
    *,
    sellers: int = 1,
    seller_role: Role = Role.AGGREGATOR,
    sites: int = 1_000,
    feeders: int = 10,
    days_ahead: int = 3,
) -> World:
    """Create the market (gate D-1 12:00, prices 0..5000, at most 10000 kW), 1 root + ``feeders``
    congestion points, and ``sellers`` sellers taking turns at ``sites`` sites, each seller's spread over the
    feeders."""
    pepper = secrets.token_urlsafe(32)
    engine = make_engine(database_url, pool_size=1)
    factory: sessionmaker[Session] = make_session_factory(engine)
    with unit_of_work(factory) as session:
        operator, _ = _participant(session, Role.OPERATOR, "Benchmark operator", pepper, list(Scope))
        utility, _ = _participant(session, Role.UTILITY, "Benchmark utility", pepper, [Scope.TRADE])
        market = create_market(
            session,
            operator,
            MarketCreate(
                code=f"bench-{uuid.uuid4().hex[:8]}",
                name="Benchmark market",
                timezone=MARKET_TZ,
                currency="EUR",
                pricing_rule=PricingRule.PAY_AS_CLEAR,
                gate_closure_kind=GateClosureKind.DAY_AHEAD,
                day_ahead_gate_time=time(12, 0),
                min_price_per_mwh=Decimal(0),
                max_price_per_mwh=Decimal(5000),
                max_quantity_kw=Decimal(10000),
            ),
        )

        def point(code: str, kind: CongestionPointKind, parent: uuid.UUID | None) -> uuid.UUID:
            data = CongestionPointCreate(
                code=code, name=code, kind=kind, utility_id=utility.participant_id, parent_id=parent
            )
            return create_congestion_point(session, operator, market.id, data).id

        root = point("ROOT", CongestionPointKind.TRANSFORMER, None)
        feeder_ids = tuple(point(f"F-{i:02d}", CongestionPointKind.FEEDER, root) for i in range(feeders))
        owners = [_participant(session, seller_role, f"Seller {i}", pepper, [Scope.TRADE]) for i in range(sellers)]
        owned: list[list[uuid.UUID]] = [[] for _ in owners]
        assets = list(AssetKind)
        for i in range(sites):
            principal, _ = owners[i % sellers]
            site = create_site(
                session,
                principal,
                SiteCreate(
                    congestion_point_id=feeder_ids[(i // sellers) % feeders],
                    meter_code=f"EAN-{i:06d}",
                    name=f"site {i}",
                    assets=[assets[i % len(assets)]],
                ),
            )
            owned[i % sellers].append(site.id)
        clock = clock_of(market)
    # Planner statistics, as autovacuum keeps them on a live database. Without them PostgreSQL
    # checks each offer's foreign keys by plans made for empty tables: measured at 41-49 ms per
    # 1,000 offers inserted, against 25-30 ms with statistics.
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    engine.dispose()
    seller_list = tuple(
        Seller(p.participant_id, seller_role, token, p, tuple(site_ids))
        for (p, token), site_ids in zip(owners, owned, strict=True)
    )
    day = datetime.now(ZoneInfo(MARKET_TZ)).date() + timedelta(days=days_ahead)
    return World(database_url, pepper, market.id, clock, feeder_ids, seller_list, day)


# -- offers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfferMix:
    """Shares of offers carrying each feature (independently drawn; rebound only on blocks)."""

    up: float = 0.6
    tranches: float = 0.2
    min_acceptance: float = 0.3
    block: float = 0.05
    rebound_given_block: float = 0.6
    storage: float = 0.04
    expires: float = 0.1


def _milli(n: int) -> str:
    """An exact 3-decimal string for ``n`` thousandths."""
    return f"{n // 1000}.{n % 1000:03d}"


@dataclass
class OfferGenerator:
    """Random valid offers of 4 ISPs (one hour) on ``day``, as JSON-ready dicts (the wire form)."""

    clock: MarketClock
    day: date
    seed: int
    mix: OfferMix = field(default_factory=OfferMix)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - reproducible test data, not a secret
        zone = ZoneInfo(self.clock.timezone)
        # ISO strings in local time, as a client in the market's zone would send them.
        self.starts = [s.astimezone(zone).isoformat() for s in self.clock.isps_of_day(self.day)]
        self.hours = len(self.starts) // ISPS_PER_OFFER
        self.expires_at = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat()

    def _profile(self, first: int, low: int, high: int) -> list[dict[str, str]]:
        return [
            {"start": self.starts[first + k], "quantity_kw": _milli(self.rng.randint(low, high))}
            for k in range(ISPS_PER_OFFER)
        ]

    def _tranches(self) -> list[dict[str, str]]:
        count = self.rng.randint(2, 3)
        cuts = sorted(self.rng.sample(range(1, 1000), count - 1))
        shares = [b - a for a, b in zip([0, *cuts], [*cuts, 1000], strict=True)]
        prices = sorted(self.rng.randint(10_000, 600_000) for _ in shares)
        return [{"share": _milli(s), "price_per_mwh": _milli(p)} for s, p in zip(shares, prices, strict=True)]

    def offer(self, site_id: uuid.UUID) -> dict[str, Any]:
        rng, mix = self.rng, self.mix
        block = rng.random() < mix.block
        rebound = block and rng.random() < mix.rebound_given_block
        hour = rng.randrange(self.hours - 1 if rebound else self.hours)
        body: dict[str, Any] = {
            "site_id": str(site_id),
            "direction": "up" if rng.random() < mix.up else "down",
            "isps": self._profile(hour * ISPS_PER_OFFER, 1, 50_000),
        }
        if rng.random() < mix.tranches:
            body["tranches"] = self._tranches()
        else:
            body["price_per_mwh"] = _milli(rng.randint(10_000, 600_000))
        if rng.random() < mix.min_acceptance:
            body["min_acceptance_fraction"] = _milli(rng.randint(0, 1000))
        if block:
            body["block"] = True
        if rebound:
            body["rebound"] = self._profile((hour + 1) * ISPS_PER_OFFER, 1, 20_000)
        if rng.random() < mix.storage:
            capacity = rng.randint(5_000, 100_000)
            body["storage"] = {
                "capacity_kwh": _milli(capacity),
                "initial_kwh": _milli(rng.randint(0, capacity)),
                "efficiency": _milli(rng.randint(850, 990)),
            }
        if rng.random() < mix.expires:
            body["expires_at"] = self.expires_at
        return body

    def batch(self, site_ids: Sequence[uuid.UUID], count: int) -> list[dict[str, Any]]:
        return [self.offer(site_ids[self.rng.randrange(len(site_ids))]) for _ in range(count)]


def describe_mix(offers: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many offers of a batch carry each feature."""
    return {
        "offers": len(offers),
        "up": sum(o["direction"] == "up" for o in offers),
        "tranches": sum("tranches" in o for o in offers),
        "min_acceptance_fraction": sum("min_acceptance_fraction" in o for o in offers),
        "block": sum(bool(o.get("block")) for o in offers),
        "rebound": sum("rebound" in o for o in offers),
        "storage": sum("storage" in o for o in offers),
        "expires_at": sum("expires_at" in o for o in offers),
    }


# -- the API server -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flexmarket_executable() -> Path:
    """The ``flexmarket`` script of the interpreter running the benchmark (the venv's)."""
    return Path(sys.executable).parent / "flexmarket"


CONNECTION_ERRORS = (OSError, http.client.HTTPException)


class KeepAliveConnection:
    """One keep-alive HTTP/1.1 connection of the standard library's ``http.client``: a client that
    costs 0.26 ms of CPU a GET where ``httpx`` cost 1.01 ms, and 0.58 ms an offer POST (with making the
    offer) where it cost 1.51 ms (measured, 8 threads, one run each), so the 2 cores go to
    the server under test rather than to the load generator. A connection that fails is replaced."""

    def __init__(self, base_url: str, headers: dict[str, str], *, timeout_s: float = 30.0) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.headers = headers
        self.timeout_s = timeout_s
        self.connection = http.client.HTTPConnection(*self.address, timeout=timeout_s)

    def request(self, method: str, path: str, body: str | bytes | None = None) -> tuple[str, str]:
        """(status code, body text)."""
        try:
            self.connection.request(method, path, body=body, headers=self.headers)
            response = self.connection.getresponse()
            return str(response.status), response.read().decode()
        except CONNECTION_ERRORS:
            self.connection.close()
            self.connection = http.client.HTTPConnection(*self.address, timeout=self.timeout_s)
            raise

    def close(self) -> None:
        self.connection.close()


def stop_process_group(process: subprocess.Popen[bytes], *, timeout_s: float) -> None:
    """SIGTERM to the process's own group (started with ``start_new_session``): it and its children,
    even when it has exited already and left them behind; SIGKILL to the group if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


class ApiServer:
    """``flexmarket serve`` on a free loopback port, in its own process group, logging to a file."""

    def __init__(
        self,
        database_url: str,
        pepper: str,
        log_path: Path,
        *,
        workers: int = 1,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.pepper = pepper
        self.log_path = log_path
        self.workers = workers
        self.environment = dict(environment or {})
        """More ``FLEX_*`` settings, e.g. a broker (default: the embedded mode, tasks in-process)."""
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the server is not running")
        return self.process.pid

    @property
    def command(self) -> list[str]:
        return [
            str(flexmarket_executable()),
            "--database-url",
            self.database_url,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]

    def __enter__(self) -> ApiServer:
        env = {**os.environ, "FLEX_API_KEY_PEPPER": self.pepper, "FLEX_ENVIRONMENT": "embedded", **self.environment}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own CLI, arguments built here
                self.command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        """Until every worker has started and /health answers."""
        deadline = clock_time.monotonic() + timeout
        while clock_time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            started = self.log_path.read_text(errors="replace").count("Application startup complete")
            if started >= self.workers:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{self.base_url}/health", timeout=2).status_code == httpx.codes.OK:
                        return
            clock_time.sleep(0.1)
        raise TimeoutError(f"the server did not start within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server and its workers (:func:`stop_process_group`)."""
        if self.process is not None:
            stop_process_group(self.process, timeout_s=15)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_problems(self, limit: int = 30) -> dict[str, Any]:
        """Log lines other than uvicorn's INFO lines: warnings, errors and tracebacks."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        found = [line for line in lines if line.strip() and not line.startswith("INFO:")]
        return {"count": len(found), "first": found[:limit]}


# -- CPU accounting from /proc ------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)
"""user, nice, system, irq, softirq, steal in the ``cpu`` line of /proc/stat."""


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(command name, parent pid, user+system CPU seconds) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    return name, int(rest[1]), (int(rest[11]) + int(rest[12])) / _TICK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _machine_busy() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return sum(int(fields[i]) for i in _BUSY_FIELDS) / _TICK


def _processes() -> dict[int, tuple[str, int, float]]:
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    return stats


CpuSample = dict[str, dict[int, float]]


def _ours(cmdline: str, database: str) -> bool:
    """A backend of our database, or a shared PostgreSQL process (checkpointer, WAL writer...)."""
    return f" {database} " in cmdline or not ("(" in cmdline or "[local]" in cmdline)


def _tree(stats: dict[int, tuple[str, int, float]], root: int) -> set[int]:
    """``root`` and its descendants."""
    tree = {root}
    grew = True
    while grew:
        children = {pid for pid, (_, ppid, _) in stats.items() if ppid in tree} - tree
        tree |= children
        grew = bool(children)
    return tree


def cpu_sample(server_pid: int, database_url: str, worker_pid: int | None = None) -> CpuSample:
    """CPU seconds used so far, per process, by this process (``client``), the API server's process
    tree (``server``), the Celery worker's tree if there is one (``worker``), PostgreSQL for our
    database (``postgres``: its backends and the shared background processes), and the whole
    machine (``machine``)."""
    stats = _processes()
    me = os.getpid()
    database = database_url.rsplit("/", 1)[1]
    sample = {
        "client": {me: stats[me][2]} if me in stats else {},
        "server": {pid: stats[pid][2] for pid in _tree(stats, server_pid) if pid in stats},
        "postgres": {
            pid: cpu for pid, (name, _, cpu) in stats.items() if name == "postgres" and _ours(_cmdline(pid), database)
        },
        "machine": {0: _machine_busy()},
    }
    if worker_pid is not None:
        sample["worker"] = {pid: stats[pid][2] for pid in _tree(stats, worker_pid) if pid in stats}
    return sample


def cpu_used(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """CPU seconds per group between two samples, and ``other``: what the rest of the machine used
    (other users' work competing with the benchmark). A process that started in between counts in
    full; one that ended in between is missed (short-lived backends make ``postgres`` a lower bound)."""
    used = {
        group: sum(cpu - before[group].get(pid, 0.0) for pid, cpu in processes.items())
        for group, processes in after.items()
    }
    used["other"] = max(0.0, used["machine"] - sum(v for group, v in used.items() if group != "machine"))
    return {group: round(seconds, 2) for group, seconds in used.items()}


NOISY_CORES = 0.2
"""Other processes using more than this many cores during a measurement make its figures suspect."""


def contamination_note(other_cores: dict[str, float]) -> list[str]:
    """A warning when other processes competed for the CPU during the named measurements."""
    noisy = {name: cores for name, cores in other_cores.items() if cores > NOISY_CORES}
    if not noisy:
        return [f"Other processes used at most {NOISY_CORES} cores during every measurement: the machine was quiet."]
    listed = ", ".join(f"{name}: {cores:.2f}" for name, cores in noisy.items())
    return [
        f"**Warning**: other processes competed for the CPU (cores used by them: {listed}); these figures are slower "
        "than on a quiet machine. Rerun when the machine is idle."
    ]


# -- statistics and results ---------------------------------------------------------------------


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def git_bytes(*args: str, timeout: float | None = None) -> bytes | None:
    """``git``'s output in the repository, or None when git or the object is unavailable."""
    try:
        out = subprocess.run(  # noqa: S603 - fixed git arguments
            ["git", *args],  # noqa: S607 - git from PATH
            cwd=REPO_ROOT,
            capture_output=True,
            check=True,
            timeout=timeout,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def _git(*args: str) -> str:
    out = git_bytes(*args)
    return "unknown" if out is None else out.decode().strip()


def environment(database_url: str, module: str) -> dict[str, Any]:
    """Machine, versions, date and the exact command, for the result files."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(b"SELECT version()").fetchone()
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"cd {shlex.quote(str(REPO_ROOT))} && " + shlex.join([sys.executable, "-m", module, *sys.argv[1:]]),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgres": row[0] if row else "unknown",
        "packages": versions,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty_files": _git("status", "--porcelain", "--untracked-files=no").splitlines(),
    }


def environment_markdown(env: dict[str, Any]) -> list[str]:
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    dirty = ", ".join(line.split()[-1] for line in env["git_dirty_files"]) or "none"
    return [
        f"- date (UTC): {env['date']}",
        f"- command: `{env['command']}`",
        f"- os.cpu_count(): {env['cpu_count']}; platform: {env['platform']}",
        f"- Python {env['python']}; {env['postgres']}",
        f"- packages: {packages}",
        f"- git: {env['git_commit']}; uncommitted changes in: {dirty}",
    ]


def write_results(name: str, data: dict[str, Any], markdown: Sequence[str]) -> tuple[Path, Path]:
    """``results/<name>.json`` and ``results/<name>.md``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS_DIR / f"{name}.json"
    md_path = RESULTS_DIR / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md_path.write_text("\n".join(markdown) + "\n")
    return json_path, md_path
