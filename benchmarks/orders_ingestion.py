"""Batch offer ingestion into PostgreSQL, three ways, in one run on one fresh database:

a. service: ``create_offers(session, principal, offers, now)`` in a transaction, committed
   (validation + COPY + commit; the offers are already decoded structs);
b. http: ``POST /api/v1/flex-offers/batch`` to ``flexmarket serve`` in a subprocess, with httpx
   (client JSON encoding + transport + decoding + validation + COPY + commit + response);
c. copy: a raw psycopg ``COPY flex_offer (...) FROM STDIN`` of the very rows ``create_offers``
   hands to ``bulk_insert_offers`` (pre-built in memory, fresh ids), committed.

The three paths take turns within each repetition (the order rotates), so a growing table or a
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import msgspec
import psycopg
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
    count_offers,
    describe_mix,
    environment,
    environment_markdown,
    say,
    scratch_database,
    write_results,
)
from market.core.db import make_engine, make_session_factory, utcnow
from market.orders import service
from market.orders.models import Direction
from market.orders.schemas import MAX_BATCH, FlexOfferBatch, FlexOfferCreate

MODULE = "benchmarks.orders_ingestion"
TARGET_OFFERS_PER_S = 20_000
PATHS = ("service", "http", "copy")
JSON_COLUMNS = frozenset({"quantities_kw", "tranches", "rebound_kw"})
COPY_SQL = f"COPY flex_offer ({', '.join(service.OFFER_COLUMNS)}) FROM STDIN".encode()


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
    args = parser.parse_args()
    if not 1 <= args.batch <= MAX_BATCH:
        parser.error(f"--batch must lie in 1..{MAX_BATCH}, the API's batch limit")
    if args.days_ahead < 2:  # noqa: PLR2004 - the day-ahead gate closes at 12:00 the day before
        parser.error("--days-ahead must be at least 2 so the gate is open")
    return args


@dataclass
class Batch:
    """One batch in the three forms the paths need."""

    wire: list[dict[str, Any]]
    structs: list[FlexOfferCreate]
    copy_rows: list[list[Any]]
    body_bytes: int


@dataclass
class Timings:
    seconds: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PATHS})
    inserted: dict[str, list[int]] = field(default_factory=lambda: {p: [] for p in PATHS})
    service_phases: list[dict[str, float]] = field(default_factory=list)


# -- preparing a batch (never timed) ------------------------------------------------------------


def _rows_of(factory: sessionmaker[Session], seller: Seller, structs: list[FlexOfferCreate]) -> list[dict[str, Any]]:
    """The rows ``create_offers`` would write, captured from a dry run that is rolled back."""
    captured: list[dict[str, Any]] = []

    def capture(_: Session, rows: list[dict[str, Any]]) -> None:
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
    return Batch(wire, structs, copy_rows, len(encoded))


# -- the three timed paths ----------------------------------------------------------------------


def run_service(factory: sessionmaker[Session], seller: Seller, batch: Batch) -> tuple[float, dict[str, float]]:
    """Seconds for create_offers + commit, and how they split (COPY is timed inside the service)."""
    copy_seconds: list[float] = []
    real_insert = service.bulk_insert_offers

    def timed_insert(session: Session, rows: list[dict[str, Any]]) -> None:
        start = time.perf_counter()
        real_insert(session, rows)
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
    phases = {"copy": sum(copy_seconds), "commit": end - before_commit}
    phases["validate_and_rest"] = total - phases["copy"] - phases["commit"]
    return total, phases


def run_http(client: httpx.Client, seller: Seller, batch: Batch) -> float:
    start = time.perf_counter()
    response = client.post(
        f"{OFFERS_PATH}/batch", json={"offers": batch.wire}, headers={"Authorization": f"Bearer {seller.token}"}
    )
    elapsed = time.perf_counter() - start
    if response.status_code != httpx.codes.CREATED or response.json().get("count") != len(batch.wire):
        raise RuntimeError(f"POST {OFFERS_PATH}/batch -> {response.status_code}: {response.text[:2000]}")
    return elapsed


def run_copy(conn: psycopg.Connection[Any], batch: Batch) -> float:
    start = time.perf_counter()
    with conn.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
        for row in batch.copy_rows:
            copy.write_row(row)
    conn.commit()
    return time.perf_counter() - start


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
        ranked = sorted(raw.items(), key=lambda item: item[1][index], reverse=True)[:count]
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


def _checked(database_url: str, expected: int, label: str) -> int:
    rows = count_offers(database_url)
    if rows != expected:
        raise RuntimeError(f"after {label}: {rows} rows in flex_offer, expected {expected}")
    return rows


def measure(args: argparse.Namespace, world: World, server: ApiServer) -> dict[str, Any]:
    seller = world.sellers[0]
    factory = make_session_factory(make_engine(world.database_url, pool_size=2))
    generator = OfferGenerator(world.clock, world.delivery_day, args.seed)
    timings = Timings()
    expected = 0
    mixes: list[dict[str, int]] = []
    bodies: list[int] = []
    with (
        httpx.Client(base_url=server.base_url, timeout=300) as client,
        psycopg.connect(world.database_url) as conn,
    ):
        paths: dict[str, Callable[[Batch], float]] = {
            "service": lambda b: run_service(factory, seller, b)[0],
            "http": lambda b: run_http(client, seller, b),
            "copy": lambda b: run_copy(conn, b),
        }
        warm = prepare(factory, seller, generator, args.warmup)
        for name, run in paths.items():
            run(warm)
            expected = _checked(world.database_url, expected + args.warmup, f"warm-up {name}")
        for rep in range(args.repetitions):
            batch = prepare(factory, seller, generator, args.batch)
            mixes.append(describe_mix(batch.wire))
            bodies.append(batch.body_bytes)
            order = PATHS[rep % 3 :] + PATHS[: rep % 3]
            for name in order:
                if name == "service":
                    seconds, phases = run_service(factory, seller, batch)
                    timings.service_phases.append(phases)
                else:
                    seconds = paths[name](batch)
                timings.seconds[name].append(seconds)
                before = expected
                expected = _checked(world.database_url, expected + args.batch, f"repetition {rep} {name}")
                timings.inserted[name].append(expected - before)
                say(f"  rep {rep + 1}/{args.repetitions} {name:>7}: {seconds:6.3f} s = {args.batch / seconds:8.0f}/s")
        profile = None
        if args.profile:
            profile = profile_service(factory, seller, prepare(factory, seller, generator, args.batch))
            expected = _checked(world.database_url, expected + args.batch, "the profiled batch")
    return {
        "timings": timings,
        "expected_rows": expected,
        "final_rows": count_offers(world.database_url),
        "mix": mixes[0] if mixes else {},
        "body_bytes_median": statistics.median(bodies) if bodies else 0,
        "profile": profile,
        "server_log_problems": server.log_problems(),
    }


def summarise(batch: int, timings: Timings) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in PATHS:
        seconds = timings.seconds[name]
        summary[name] = {
            "seconds": [round(s, 4) for s in seconds],
            "median_s": round(statistics.median(seconds), 4),
            "min_s": round(min(seconds), 4),
            "max_s": round(max(seconds), 4),
            "median_offers_per_s": round(batch / statistics.median(seconds)),
            "min_offers_per_s": round(batch / max(seconds)),
            "max_offers_per_s": round(batch / min(seconds)),
            "rows_inserted_per_batch": timings.inserted[name],
        }
    copy_median = summary["copy"]["median_s"]
    for name in ("service", "http"):
        summary[name]["time_ratio_vs_copy"] = round(summary[name]["median_s"] / copy_median, 2)
    summary["service"]["phases_median_s"] = {
        key: round(statistics.median(p[key] for p in timings.service_phases), 4)
        for key in ("validate_and_rest", "copy", "commit")
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
    for name, label in (("service", "a. service"), ("http", "b. HTTP end to end"), ("copy", "c. raw COPY")):
        s = summary[name]
        ratio = s.get("time_ratio_vs_copy", 1.0)
        met = "met" if s["median_offers_per_s"] >= TARGET_OFFERS_PER_S else "missed"
        lines.append(
            f"| {label} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['max_s']:.3f} | "
            f"{s['median_offers_per_s']:,} | {s['min_offers_per_s']:,} | {ratio:.2f} | {met} |"
        )
    phases = summary["service"]["phases_median_s"]
    lines += [
        "",
        f"Service-level split (medians): validation and the rest {phases['validate_and_rest']:.3f} s, "
        f"COPY {phases['copy']:.3f} s, commit {phases['commit']:.3f} s.",
        f"Rows in flex_offer at the end: {result['final_rows']:,} (expected {result['expected_rows']:,}: warm-ups, "
        "every timed batch of every path and the profiled batch; checked after every batch).",
        f"Server log problems: {result['server_log_problems']['count']}.",
    ]
    if result["profile"]:
        lines += ["", f"cProfile of one service-level batch ({result['profile']['total_s']} s under the profiler):", ""]
        lines += [
            f"- {row['percent']}% cumulative: {row['function']} ({row['calls']} calls)"
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
