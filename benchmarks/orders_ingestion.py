"""Batch offer ingestion into PostgreSQL, three ways, in one run on one fresh database:

a. service: ``create_offers(session, principal, offers, now)`` in a transaction, committed
   (validation streamed into the offers' and their audit events' INSERTs + commit; the offers are
   already decoded structs);
b. http: ``POST /api/v1/flex-offers/batch`` to ``flexmarket serve`` in a subprocess, with httpx
   (client JSON encoding + transport + decoding + validation + INSERTs + commit + response);
c. copy: a raw psycopg ``COPY flex_offer (...) FROM STDIN`` of the very rows ``create_offers``
   hands to ``bulk_insert_offers`` (captured from a rolled-back dry run, pre-built in memory as
   Python values, fresh ids), written with ``Copy.write_row`` and committed.

Two diagnostics (``--no-diagnostics`` skips them) split the cost of c:

d. copy_text: the same rows pre-rendered in memory in COPY's text format (other fresh ids), only
   streamed and committed: PostgreSQL's own floor, so c - d is psycopg's per-row adaptation;
e. copy_text_no_fk: the text of d into ``LIKE flex_offer INCLUDING ALL`` (the same indexes and
   checks, no foreign keys), so d - e is PostgreSQL's per-row foreign-key checking.

After the warm-up, every group of identical offer contents must occur once per path that wrote
to flex_offer, so all paths are shown to store the same values.

The paths take turns within each repetition (the order rotates), so a growing table or a
checkpoint does not favour one of them. Run from the repository root::

    /work/venv/bin/python -m benchmarks.orders_ingestion
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import msgspec
import psycopg
from psycopg import sql
from psycopg.types.json import Json
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.common import (
    DEFAULT_ADMIN_URL,
    OFFERS_PATH,
    RESULTS_DIR,
    ApiServer,
    OfferGenerator,
    Seller,
    World,
    build_world,
    contamination_note,
    count_offers,
    cpu_sample,
    cpu_used,
    describe_mix,
    environment,
    environment_markdown,
    say,
    scratch_database,
    write_results,
)
from market.auth.principal import Principal
from market.core.db import make_engine, make_session_factory, utcnow
from market.orders import service
from market.orders.models import Direction
from market.orders.schemas import MAX_BATCH, FlexOfferBatch, FlexOfferCreate

MODULE = "benchmarks.orders_ingestion"
TARGET_OFFERS_PER_S = 20_000
PATHS = ("service", "http", "copy")
DIAGNOSTICS = ("copy_text", "copy_text_no_fk")
LABELS = {
    "service": "a. service",
    "http": "b. HTTP end to end",
    "copy": "c. raw COPY (write_row)",
    "copy_text": "d. COPY of pre-rendered text (diagnostic)",
    "copy_text_no_fk": "e. d without foreign keys (diagnostic)",
}
OFFERS_TABLE = "flex_offer"
NO_FK_TABLE = "bench_flex_offer_no_fk"
TABLE_OF = {name: NO_FK_TABLE if name == "copy_text_no_fk" else OFFERS_TABLE for name in LABELS}
TEXT_CHUNK_ROWS = 2_000
"""Rows per ``Copy.write`` of the pre-rendered text."""
CONTENT_EXCLUDED = frozenset({"id", "created_at", "submitted_at"})
"""Columns that differ between paths by design; every other column must match."""
JSON_COLUMNS = frozenset({"quantities_kw", "tranches", "rebound_kw"})
ID_INDEX = service.OFFER_COLUMNS.index("id")


def copy_sql(table: str) -> sql.Composed:
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in service.OFFER_COLUMNS)
    return sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), columns)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=10_000, help=f"offers per batch (at most {MAX_BATCH})")
    parser.add_argument("--repetitions", type=int, default=5, help="timed batches per path")
    parser.add_argument("--warmup", type=int, default=200, help="offers per untimed warm-up batch and path")
    parser.add_argument("--sites", type=int, default=1_000, help="sites of the one seller")
    parser.add_argument("--feeders", type=int, default=10, help="feeders under the one root congestion point")
    parser.add_argument("--days-ahead", type=int, default=3, help="delivery day, days from today (>= 2)")
    parser.add_argument("--seed", type=int, default=20_260_101)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="PostgreSQL URL used to create the DB")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the cProfile batch")
    parser.add_argument("--no-diagnostics", dest="diagnostics", action="store_false", help="skip COPY paths d and e")
    args = parser.parse_args()
    if not 1 <= args.batch <= MAX_BATCH:
        parser.error(f"--batch must lie in 1..{MAX_BATCH}, the API's batch limit")
    if args.days_ahead < 2:  # noqa: PLR2004 - the day-ahead gate closes at 12:00 the day before
        parser.error("--days-ahead must be at least 2 so the gate is open")
    return args


@dataclass
class Batch:
    """One batch in the forms the paths need."""

    wire: list[dict[str, Any]]
    body: bytes
    """``wire`` encoded as the request body once, untimed (as the COPY paths' rows are built untimed)."""
    structs: list[FlexOfferCreate]
    copy_rows: list[list[Any]]
    """What ``bulk_insert_offers`` passes to ``write_row``, with fresh ids."""
    copy_text: list[str]
    """The same rows in COPY's text format with other fresh ids, in chunks of ``TEXT_CHUNK_ROWS``."""
    body_bytes: int


@dataclass
class Timings:
    seconds: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in LABELS})
    inserted: dict[str, list[int]] = field(default_factory=lambda: {p: [] for p in LABELS})
    cpu: dict[str, list[dict[str, float]]] = field(default_factory=lambda: {p: [] for p in LABELS})
    """CPU seconds per batch of the benchmark process, the API server's processes and all of PostgreSQL."""
    service_phases: list[dict[str, float]] = field(default_factory=list)


# -- preparing a batch (never timed) ------------------------------------------------------------


def _rows_of(factory: sessionmaker[Session], seller: Seller, structs: list[FlexOfferCreate]) -> list[dict[str, Any]]:
    """The rows ``create_offers`` would write, captured from a dry run that is rolled back."""
    captured: list[dict[str, Any]] = []

    def capture(_: Session, rows: Iterable[dict[str, Any]], principal: Principal) -> None:
        captured.extend(rows)

    with factory() as session, mock.patch.object(service, "bulk_insert_offers", capture):
        service.create_offers(session, seller.principal, structs, utcnow())
        session.rollback()
    return captured


def _copy_value(column: str, value: Any) -> Any:
    """The value as ``bulk_insert_offers`` passes it to ``write_row``."""
    if value is None:
        return None
    if column in JSON_COLUMNS:
        return Json(value)
    if isinstance(value, Direction):
        return value.value
    return value


def prepare(factory: sessionmaker[Session], seller: Seller, generator: OfferGenerator, count: int) -> Batch:
    wire = generator.batch(seller.site_ids, count)
    encoded = json.dumps({"offers": wire}, separators=(",", ":")).encode()
    structs = msgspec.json.decode(encoded, type=FlexOfferBatch).offers  # as the API decodes the body
    copy_rows = [
        [_copy_value(c, uuid.uuid4() if c == "id" else row[c]) for c in service.OFFER_COLUMNS]
        for row in _rows_of(factory, seller, structs)
    ]
    lines = [
        "\t".join(_copy_text(uuid.uuid4() if i == ID_INDEX else v) for i, v in enumerate(row)) for row in copy_rows
    ]
    chunks = ["\n".join(lines[i : i + TEXT_CHUNK_ROWS]) + "\n" for i in range(0, len(lines), TEXT_CHUNK_ROWS)]
    return Batch(wire, encoded, structs, copy_rows, chunks, len(encoded))


def _copy_text(value: Any) -> str:
    """A ``write_row`` value in COPY's text format (``\\N`` is NULL; only JSON can hold backslashes)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, Json):
        return json.dumps(value.obj).replace("\\", "\\\\")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# -- the timed paths ----------------------------------------------------------------------


def run_service(factory: sessionmaker[Session], seller: Seller, batch: Batch) -> tuple[float, dict[str, float]]:
    """Seconds for create_offers + commit, and how they split. The offers are validated as they
    stream into the INSERTs (offers and audit events), so validation and writing are one phase,
    timed around ``bulk_insert_offers``; the rest is loading the seller's sites and markets."""
    copy_seconds: list[float] = []
    real_insert = service.bulk_insert_offers

    def timed_insert(session: Session, rows: Iterable[dict[str, Any]], principal: Principal) -> None:
        start = time.perf_counter()
        real_insert(session, rows, principal)
        copy_seconds.append(time.perf_counter() - start)

    with mock.patch.object(service, "bulk_insert_offers", timed_insert):
        start = time.perf_counter()
        with factory() as session:
            ids = service.create_offers(session, seller.principal, batch.structs, utcnow())
            before_commit = time.perf_counter()
            session.commit()
            end = time.perf_counter()
    if len(ids) != len(batch.structs):
        raise RuntimeError(f"create_offers stored {len(ids)} of {len(batch.structs)} offers")
    total = end - start
    phases = {"validate_and_copy": sum(copy_seconds), "commit": end - before_commit}
    phases["rest"] = total - phases["validate_and_copy"] - phases["commit"]
    return total, phases


def run_http(client: httpx.Client, seller: Seller, batch: Batch) -> float:
    start = time.perf_counter()
    response = client.post(
        f"{OFFERS_PATH}/batch",
        content=batch.body,
        headers={"Authorization": f"Bearer {seller.token}", "Content-Type": "application/json"},
    )
    elapsed = time.perf_counter() - start
    if response.status_code != httpx.codes.CREATED or response.json().get("count") != len(batch.wire):
        raise RuntimeError(f"POST {OFFERS_PATH}/batch -> {response.status_code}: {response.text[:2000]}")
    return elapsed


def run_copy(conn: psycopg.Connection[Any], rows: list[list[Any]]) -> float:
    start = time.perf_counter()
    with conn.cursor() as cursor, cursor.copy(copy_sql(OFFERS_TABLE)) as copy:
        for row in rows:
            copy.write_row(row)
    conn.commit()
    return time.perf_counter() - start


def run_copy_text(conn: psycopg.Connection[Any], chunks: list[str], table: str) -> float:
    start = time.perf_counter()
    with conn.cursor() as cursor, cursor.copy(copy_sql(table)) as copy:
        for chunk in chunks:
            copy.write(chunk)
    conn.commit()
    return time.perf_counter() - start


def check_same_content(conn: psycopg.Connection[Any], writers: int) -> int:
    """Raise unless every distinct offer content in flex_offer occurs a multiple of ``writers``
    times (each path stored the same batch); return the number of distinct contents."""
    columns = [
        sql.SQL("{}::jsonb").format(sql.Identifier(c)) if c in JSON_COLUMNS else sql.Identifier(c)
        for c in service.OFFER_COLUMNS
        if c not in CONTENT_EXCLUDED
    ]
    query = sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE n % {writers} <> 0) "
        "FROM (SELECT count(*) AS n FROM {table} GROUP BY {columns}) AS g"
    ).format(writers=sql.Literal(writers), table=sql.Identifier(OFFERS_TABLE), columns=sql.SQL(", ").join(columns))
    row = conn.execute(query).fetchone()
    if row is None or row[1]:
        raise RuntimeError(f"the paths stored different offer contents: {row}")
    return int(row[0])


# -- the run ------------------------------------------------------------------------------------


def profile_service(factory: sessionmaker[Session], seller: Seller, batch: Batch) -> dict[str, Any]:
    """cProfile one service-level batch; the top functions by own time and by cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    run_service(factory, seller, batch)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total: float = stats.total_tt  # type: ignore[attr-defined]
    text = io.StringIO()
    for key in ("tottime", "cumulative"):
        pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(30)
    (RESULTS_DIR / "orders_ingestion_profile.txt").write_text(text.getvalue())
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]

    def top(index: int, count: int) -> list[dict[str, Any]]:
        ours = str(Path(__file__).parent)
        project = [item for item in raw.items() if not item[0][0].startswith(ours)]
        ranked = sorted(project, key=lambda item: item[1][index], reverse=True)[:count]
        return [
            {
                "function": f"{Path(file).name}:{line}({name})",
                "calls": calls,
                "tottime_s": round(tottime, 4),
                "cumtime_s": round(cumtime, 4),
                "percent": round(100 * (tottime if index == 2 else cumtime) / total, 1),  # noqa: PLR2004
            }
            for (file, line, name), (_, calls, tottime, cumtime, _) in ranked
        ]

    return {"total_s": round(total, 3), "by_own_time": top(2, 20), "by_cumulative_time": top(3, 30)}


@dataclass
class RowCheck:
    """Rows expected per table; checked against the database after every batch."""

    database_url: str
    expected: dict[str, int] = field(default_factory=lambda: {OFFERS_TABLE: 0, NO_FK_TABLE: 0})

    def after(self, path: str, rows: int) -> int:
        """Check that ``path`` stored exactly ``rows`` rows; return how many it stored."""
        table = TABLE_OF[path]
        before = self.expected[table]
        self.expected[table] = count_offers(self.database_url, table)
        if self.expected[table] != before + rows:
            raise RuntimeError(f"{path} left {self.expected[table]} rows in {table}, expected {before + rows}")
        return self.expected[table] - before


def measure(args: argparse.Namespace, world: World, server: ApiServer) -> dict[str, Any]:
    seller = world.sellers[0]
    engine = make_engine(world.database_url, pool_size=2)
    factory = make_session_factory(engine)
    generator = OfferGenerator(world.clock, world.delivery_day, args.seed)
    timings = Timings()
    check = RowCheck(world.database_url)
    mixes: list[dict[str, int]] = []
    bodies: list[int] = []

    def service_path(batch: Batch) -> float:
        seconds, phases = run_service(factory, seller, batch)
        timings.service_phases.append(phases)
        return seconds

    with (
        httpx.Client(base_url=server.base_url, timeout=300) as client,
        psycopg.connect(world.database_url) as conn,
    ):
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                sql.Identifier(NO_FK_TABLE), sql.Identifier(OFFERS_TABLE)
            )
        )
        conn.commit()
        paths: dict[str, Callable[[Batch], float]] = {
            "service": service_path,
            "http": lambda b: run_http(client, seller, b),
            "copy": lambda b: run_copy(conn, b.copy_rows),
            "copy_text": lambda b: run_copy_text(conn, b.copy_text, OFFERS_TABLE),
            "copy_text_no_fk": lambda b: run_copy_text(conn, b.copy_text, NO_FK_TABLE),
        }
        active = [*PATHS, *DIAGNOSTICS] if args.diagnostics else list(PATHS)
        warm = prepare(factory, seller, generator, args.warmup)
        for name in active:
            paths[name](warm)
            check.after(name, args.warmup)
        distinct = check_same_content(conn, sum(TABLE_OF[name] == OFFERS_TABLE for name in active))
        timings.service_phases.clear()
        for rep in range(args.repetitions):
            batch = prepare(factory, seller, generator, args.batch)
            mixes.append(describe_mix(batch.wire))
            bodies.append(batch.body_bytes)
            shift = rep % len(active)
            for name in active[shift:] + active[:shift]:
                before_cpu = cpu_sample(server.pid, world.database_url)
                seconds = paths[name](batch)
                timings.cpu[name].append(cpu_used(before_cpu, cpu_sample(server.pid, world.database_url)))
                timings.seconds[name].append(seconds)
                timings.inserted[name].append(check.after(name, args.batch))
                say(f"  rep {rep + 1}/{args.repetitions} {name:>14}: {seconds:6.3f} s = {args.batch / seconds:6.0f}/s")
        profile = None
        if args.profile:
            profile = profile_service(factory, seller, prepare(factory, seller, generator, args.batch))
            check.after("service", args.batch)
    engine.dispose()
    return {
        "timings": timings,
        "expected_rows": check.expected,
        "warmup_distinct_contents": distinct,
        "final_rows": {table: count_offers(world.database_url, table) for table in check.expected},
        "mix": mixes[0] if mixes else {},
        "body_bytes_median": statistics.median(bodies) if bodies else 0,
        "profile": profile,
        "server_log_problems": server.log_problems(),
    }


def summarise(batch: int, timings: Timings) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in LABELS:
        seconds = timings.seconds[name]
        if not seconds:
            continue
        summary[name] = {
            "seconds": [round(s, 4) for s in seconds],
            "median_s": round(statistics.median(seconds), 4),
            "min_s": round(min(seconds), 4),
            "max_s": round(max(seconds), 4),
            "median_offers_per_s": round(batch / statistics.median(seconds)),
            "min_offers_per_s": round(batch / max(seconds)),
            "max_offers_per_s": round(batch / min(seconds)),
            "rows_inserted_per_batch": timings.inserted[name],
            "cpu_s_median": {
                who: round(statistics.median(c[who] for c in timings.cpu[name]), 2)
                for who in ("client", "server", "postgres", "other")
            },
        }
    copy_median = summary["copy"]["median_s"]
    for path_summary in summary.values():
        path_summary["time_ratio_vs_copy"] = round(path_summary["median_s"] / copy_median, 2)
    summary["service"]["phases_median_s"] = {
        key: round(statistics.median(p[key] for p in timings.service_phases), 4)
        for key in ("validate_and_copy", "rest", "commit")
    }
    return summary


def markdown(env: dict[str, Any], args: argparse.Namespace, result: dict[str, Any]) -> list[str]:
    summary = result["summary"]
    lines = [
        "# Batch offer ingestion (PostgreSQL)",
        "",
        *environment_markdown(env),
        f"- batch: {args.batch} offers x {args.repetitions} repetitions per path; {args.sites} sites of one "
        f"aggregator over {args.feeders} feeders; delivery day {result['delivery_day']}; median JSON body "
        f"{result['body_bytes_median'] / 1e6:.2f} MB",
        f"- offer mix (first batch): {result['mix']}",
        "",
        f"Target: >= {TARGET_OFFERS_PER_S:,} offers/s. Offers/s = batch / seconds; 'min' is the slowest repetition.",
        "",
        "| path | median s | min s | max s | median offers/s | min offers/s | time / copy | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        if name not in LABELS:
            continue
        label, ratio = LABELS[name], s["time_ratio_vs_copy"]
        met = "met" if s["median_offers_per_s"] >= TARGET_OFFERS_PER_S else "missed"
        lines.append(
            f"| {label} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['max_s']:.3f} | "
            f"{s['median_offers_per_s']:,} | {s['min_offers_per_s']:,} | {ratio:.2f} | {met} |"
        )
    lines += [
        "",
        "CPU seconds per batch (medians, from /proc at 10 ms resolution) of the benchmark process, the API server, "
        "PostgreSQL (our database's backends and shared background processes) and everything else on the machine.",
        "",
        "| path | benchmark process | API server | PostgreSQL | other processes |",
        "|---|---|---|---|---|",
    ]
    for name in (n for n in LABELS if n in summary):
        c = summary[name]["cpu_s_median"]
        lines.append(
            f"| {LABELS[name]} | {c['client']:.2f} | {c['server']:.2f} | {c['postgres']:.2f} | {c['other']:.2f} |"
        )
    phases = summary["service"]["phases_median_s"]
    lines += [
        "",
        f"Service-level split (medians): offers validated as they stream into the INSERTs of the offers "
        f"and their audit events {phases['validate_and_copy']:.3f} s; the rest (sites and markets loaded) "
        f"{phases['rest']:.3f} s; commit {phases['commit']:.3f} s.",
        f"Rows at the end: {result['final_rows']} (expected {result['expected_rows']}: the warm-ups, every timed "
        "batch of every path and the profiled batch; checked after every batch). After the warm-up each of its "
        f"{result['warmup_distinct_contents']} distinct offer contents occurred once per path writing to flex_offer.",
        f"Server log problems: {result['server_log_problems']['count']}.",
        "",
        *contamination_note(
            {LABELS[n]: s["cpu_s_median"]["other"] / s["median_s"] for n, s in summary.items() if n in LABELS}
        ),
    ]
    if result["profile"]:
        lines += ["", f"cProfile of one service-level batch ({result['profile']['total_s']} s under the profiler):", ""]
        lines += ["Top by own time:", ""]
        lines += [
            f"- {row['percent']}%: {row['function']} ({row['calls']} calls)"
            for row in result["profile"]["by_own_time"][:12]
        ]
        lines += ["", "Top by cumulative time:", ""]
        lines += [
            f"- {row['percent']}%: {row['function']} ({row['calls']} calls)"
            for row in result["profile"]["by_cumulative_time"][:15]
        ]
        lines += ["", "Full listing: orders_ingestion_profile.txt."]
    return lines


def main() -> None:
    args = parse_args()
    with scratch_database(args.admin_url, "flex_bench_ingest") as url:
        env = environment(url, MODULE)
        say(f"database ready; building the market, grid and {args.sites} sites")
        world = build_world(url, sellers=1, sites=args.sites, feeders=args.feeders, days_ahead=args.days_ahead)
        with tempfile.TemporaryDirectory() as tmp, ApiServer(url, world.pepper, Path(tmp) / "server.log") as server:
            say(f"server up at {server.base_url}; measuring")
            measured = measure(args, world, server)
    result = {
        "environment": env,
        "parameters": vars(args),
        "delivery_day": world.delivery_day.isoformat(),
        "target_offers_per_s": TARGET_OFFERS_PER_S,
        "summary": summarise(args.batch, measured.pop("timings")),
        **measured,
    }
    json_path, md_path = write_results("orders_ingestion", result, markdown(env, args, result))
    say(md_path.read_text())
    say(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
