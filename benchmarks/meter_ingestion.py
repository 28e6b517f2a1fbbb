"""Meter file ingestion into PostgreSQL: a 10M-reading Parquet file, parsed, validated and stored by
the very function the Celery task runs (``service.process_file`` in one unit of work), against a raw
``COPY`` of the same rows, all in one run on one fresh database:

a. ingest: ``process_file`` of a Parquet file of ``sites × 96`` readings (one delivery day), committed;
   the file row (content in ``bytea``) is written before the clock starts, as the upload would;
b. copy_meter_reading: ``COPY meter_reading FROM STDIN`` of the same rows (CSV pre-rendered in
   memory, streamed in 8 MiB chunks) into the empty table, committed; the table is then truncated
   (TRUNCATE is not refused by the append-only row trigger) so a. starts from the same empty table;
c. copy_plain: the same CSV into an unindexed table with meter_reading's columns and no constraints.

Then a correction file: ``correction_sites × 96`` readings of which ``changed_share`` differ from the
stored values, processed the same way (the temp-table path: COPY, join, classify, insert versions and
re-settlement marks). Every result is checked against the database (row and version counts).

The world (market, utility, household, ``sites`` sites over 10 feeders) is bulk-inserted with COPY,
not through the API. Run from the repository root::

    .venv/bin/python -m benchmarks.meter_ingestion            # 104,167 sites = 10,000,032 readings
    .venv/bin/python -m benchmarks.meter_ingestion --sites 10417   # 1M, for iterating
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from decimal import Decimal
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from benchmarks.common import (
    DEFAULT_ADMIN_URL,
    environment,
    environment_markdown,
    say,
    scratch_database,
    write_results,
)
from market.auth.principal import Principal, Scope
from market.core.db import make_engine, make_session_factory, unit_of_work
from market.grid.models import CongestionPointKind
from market.grid.schemas import CongestionPointCreate
from market.grid.service import create_congestion_point
from market.markets.models import GateClosureKind, PricingRule
from market.markets.schemas import MarketCreate
from market.markets.service import create_market
from market.participants.models import Participant, Role
from settlement.metering import service
from settlement.metering.models import MeterFileFormat

MODULE = "benchmarks.meter_ingestion"
NAME = "meter_ingestion"
DAY = date(2026, 6, 1)
ISPS = 96
FEEDERS = 10
COPY_CHUNK_BYTES = 8 * 1024 * 1024
READING_COLUMNS = "site_id, isp_start, version, import_kwh, export_kwh, file_id, recorded_at"


@dataclass(frozen=True)
class World:
    url: str
    market_id: uuid.UUID
    operator: Principal
    site_ids: list[str]
    meter_codes: list[str]


def _psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def build_world(url: str, sites: int) -> World:
    """Market, utility, household and grid through the services; ``sites`` sites by COPY."""
    engine = make_engine(url, pool_size=1)
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        people = {role: Participant(id=uuid.uuid4(), name=f"bench {role.value}", role=role) for role in Role}
        session.add_all(people.values())
        session.flush()
        operator = Principal(people[Role.OPERATOR].id, Role.OPERATOR, frozenset(Scope), uuid.uuid4())
        market = create_market(
            session,
            operator,
            MarketCreate(
                code=f"bench-{secrets.token_hex(4)}",
                name="Meter benchmark",
                timezone="Europe/Amsterdam",
                currency="EUR",
                pricing_rule=PricingRule.PAY_AS_CLEAR,
                gate_closure_kind=GateClosureKind.DAY_AHEAD,
                day_ahead_gate_time=day_time(12),
                min_price_per_mwh=Decimal(0),
                max_price_per_mwh=Decimal(5000),
                max_quantity_kw=Decimal(10000),
            ),
        )
        feeders = [
            create_congestion_point(
                session,
                operator,
                market.id,
                CongestionPointCreate(
                    code=f"F-{i:02d}",
                    name=f"feeder {i}",
                    kind=CongestionPointKind.FEEDER,
                    utility_id=people[Role.UTILITY].id,
                    parent_id=None,
                ),
            ).id
            for i in range(FEEDERS)
        ]
        household = people[Role.HOUSEHOLD].id
        market_id = market.id
    engine.dispose()
    site_ids = [str(uuid.uuid4()) for _ in range(sites)]
    meter_codes = [f"EAN-{i:09d}" for i in range(sites)]
    now = datetime.now(UTC).isoformat()
    with psycopg.connect(_psycopg_url(url)) as conn, conn.cursor() as cursor:
        with cursor.copy(
            "COPY site (id, owner_id, congestion_point_id, meter_code, name, assets, created_at) FROM STDIN"
        ) as copy:
            for i, (site_id, code) in enumerate(zip(site_ids, meter_codes, strict=True)):
                copy.write_row((site_id, household, feeders[i % FEEDERS], code, f"site {i}", "[]", now))
        cursor.execute("ANALYZE site")
    return World(url, market_id, operator, site_ids, meter_codes)


def readings_frame(world: World, sites: int, seed: int) -> pl.DataFrame:
    """``sites × 96`` readings of the delivery day, values in Wh resolution (3 decimals)."""
    clock_start = datetime(2026, 5, 31, 22, tzinfo=UTC)
    meters = pl.DataFrame({"meter": world.meter_codes[:sites], "site_id": world.site_ids[:sites]})
    isps = pl.DataFrame(
        {
            "isp_start": pl.datetime_range(
                clock_start, clock_start + timedelta(minutes=15 * (ISPS - 1)), "15m", time_zone="UTC", eager=True
            )
        }
    )
    frame = meters.join(isps, how="cross")
    n = pl.int_range(0, pl.len(), dtype=pl.Int64)
    return frame.with_columns(
        ((n * 7919 + seed) % 2_500).cast(pl.Decimal(20, 3)).truediv(1000).cast(pl.Decimal(20, 3)).alias("import_kwh"),
        ((n * 104_729 + seed) % 700).cast(pl.Decimal(20, 3)).truediv(1000).cast(pl.Decimal(20, 3)).alias("export_kwh"),
    )


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.select(
        "meter",
        pl.col("isp_start").dt.convert_time_zone("Europe/Amsterdam"),
        "import_kwh",
        "export_kwh",
    ).write_parquet(buffer)
    return buffer.getvalue()


def store_file(world: World, content: bytes, filename: str) -> uuid.UUID:
    engine = make_engine(world.url, pool_size=1)
    with unit_of_work(make_session_factory(engine)) as session:
        file, _ = service.upload_file(
            session, world.operator, world.market_id, MeterFileFormat.PARQUET, filename, content, datetime.now(UTC)
        )
        file_id = file.id
    engine.dispose()
    return file_id


def ingest(world: World, file_id: uuid.UUID) -> tuple[float, dict[str, Any]]:
    """``process_file`` in one unit of work, as the task runs it: seconds and the report."""
    engine = make_engine(world.url, pool_size=1)
    factory = make_session_factory(engine)
    started = time.perf_counter()
    with unit_of_work(factory) as session:
        file = service.process_file(session, file_id)
        report = dict(file.report or {})
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds, report


def copy_csv(frame: pl.DataFrame, file_id: uuid.UUID) -> bytes:
    """The rows as meter_reading CSV (version 1), rendered before any clock starts."""
    recorded = datetime.now(UTC).isoformat()
    return (
        frame.select(
            "site_id",
            pl.col("isp_start").dt.to_string("%Y-%m-%d %H:%M:%S+00"),
            pl.lit(1).alias("version"),
            pl.col("import_kwh").cast(pl.Decimal(20, 6)),
            pl.col("export_kwh").cast(pl.Decimal(20, 6)),
            pl.lit(str(file_id)).alias("file_id"),
            pl.lit(recorded).alias("recorded_at"),
        )
        .write_csv(include_header=False)
        .encode()
    )


def raw_copy(url: str, table: str, data: bytes) -> float:
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(sql.Identifier(table), sql.SQL(READING_COLUMNS))
    with psycopg.connect(_psycopg_url(url)) as conn:
        started = time.perf_counter()
        with conn.cursor() as cursor, cursor.copy(statement) as copy:
            view = memoryview(data)
            for offset in range(0, len(data), COPY_CHUNK_BYTES):
                copy.write(view[offset : offset + COPY_CHUNK_BYTES])
        conn.commit()
        return time.perf_counter() - started


def check(condition: bool, what: object) -> None:
    """A benchmark that stored the wrong rows measures nothing: stop."""
    if not condition:
        raise RuntimeError(f"check failed: {what}")


def scalar(url: str, query: str) -> Any:
    with psycopg.connect(_psycopg_url(url)) as conn:
        row = conn.execute(query).fetchone()  # type: ignore[arg-type]  # benchmark's own fixed SQL
    return row[0] if row else None


def run(admin_url: str, sites: int, correction_sites: int, changed_share: float) -> dict[str, Any]:
    with scratch_database(admin_url, "flex_bench") as url:
        say(f"building {sites} sites")
        world = build_world(url, sites)
        env = environment(_psycopg_url(url), MODULE)
        frame = readings_frame(world, sites, seed=0)
        readings = frame.height
        content = parquet_bytes(frame)
        say(f"{readings} readings, Parquet {len(content) / 1e6:.1f} MB")
        file_id = store_file(world, content, "day.parquet")
        csv_data = copy_csv(frame, file_id)
        load = os.getloadavg()

        say("b. raw COPY into meter_reading")
        copy_reading_s = raw_copy(url, "meter_reading", csv_data)
        check(
            scalar(url, "SELECT count(*) FROM meter_reading") == readings,
            'scalar(url, "SELECT count(*) FROM meter_reading") == reading',
        )
        with psycopg.connect(_psycopg_url(url), autocommit=True) as conn:
            conn.execute("TRUNCATE meter_reading")
            conn.execute("CHECKPOINT")

        say("a. ingest (parse + validate + store + commit)")
        ingest_s, report = ingest(world, file_id)
        check(report["stored"] == readings, report)
        check(report["rejected"] == 0, report)
        check(
            scalar(url, "SELECT count(*) FROM meter_reading WHERE version = 1") == readings,
            'scalar(url, "SELECT count(*) FROM meter_reading WHERE versio',
        )

        say("c. raw COPY into an unindexed table")
        with psycopg.connect(_psycopg_url(url), autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE bench_plain (site_id uuid, isp_start timestamptz, version integer, "
                "import_kwh numeric(20, 6), export_kwh numeric(20, 6), file_id uuid, recorded_at timestamptz)"
            )
            conn.execute("CHECKPOINT")
        copy_plain_s = raw_copy(url, "bench_plain", csv_data)
        check(
            scalar(url, "SELECT count(*) FROM bench_plain") == readings,
            'scalar(url, "SELECT count(*) FROM bench_plain") == readings',
        )
        load_after = os.getloadavg()
        del csv_data

        say("correction file")
        changed_every = round(1 / changed_share)
        corrections = readings_frame(world, correction_sites, seed=0).with_columns(
            pl.when(pl.int_range(0, pl.len()) % changed_every == 0)
            .then(pl.col("import_kwh") + Decimal("0.5"))
            .otherwise(pl.col("import_kwh"))
            .cast(pl.Decimal(20, 3))
            .alias("import_kwh")
        )
        changed = int(corrections.height // changed_every + (1 if corrections.height % changed_every else 0))
        correction_id = store_file(world, parquet_bytes(corrections), "corrections.parquet")
        correction_s, correction_report = ingest(world, correction_id)
        check(correction_report["corrected"] == changed, correction_report)
        check(
            correction_report["unchanged"] == corrections.height - changed,
            'correction_report["unchanged"] == corrections.height - chang',
        )
        check(
            scalar(url, "SELECT count(*) FROM meter_reading WHERE version = 2") == changed,
            'scalar(url, "SELECT count(*) FROM meter_reading WHERE versio',
        )
        marks = scalar(url, "SELECT count(*) FROM resettlement_mark")

    return {
        "environment": env,
        "parameters": {
            "sites": sites,
            "isps_per_site": ISPS,
            "delivery_day": DAY.isoformat(),
            "parquet_bytes": len(content),
            "correction_sites": correction_sites,
            "changed_share": changed_share,
        },
        "load_average_before_after": [load, load_after],
        "ingest": {
            "readings": readings,
            "seconds": round(ingest_s, 3),
            "readings_per_s": round(readings / ingest_s),
            "phases_ms": report["durations_ms"],
        },
        "copy_meter_reading": {"seconds": round(copy_reading_s, 3), "readings_per_s": round(readings / copy_reading_s)},
        "copy_plain": {"seconds": round(copy_plain_s, 3), "readings_per_s": round(readings / copy_plain_s)},
        "ratios": {
            "ingest_over_copy_meter_reading": round(ingest_s / copy_reading_s, 2),
            "ingest_over_copy_plain": round(ingest_s / copy_plain_s, 2),
        },
        "correction": {
            "readings": corrections.height,
            "changed": changed,
            "seconds": round(correction_s, 3),
            "readings_per_s": round(corrections.height / correction_s),
            "resettlement_marks": marks,
            "phases_ms": correction_report["durations_ms"],
        },
    }


def markdown(result: dict[str, Any]) -> list[str]:
    p, i, c = result["parameters"], result["ingest"], result["correction"]
    r = result["ratios"]
    return [
        "# Meter file ingestion (PostgreSQL)",
        "",
        *environment_markdown(result["environment"]),
        f"- load average (1, 5, 15 min) before / after the timed part: {result['load_average_before_after']}",
        "",
        f"{i['readings']:,} readings ({p['sites']:,} sites × {p['isps_per_site']} ISPs of {p['delivery_day']}), "
        f"one Parquet file of {p['parquet_bytes'] / 1e6:.1f} MB, into an empty meter_reading.",
        "",
        "| path | seconds | readings/s | time / raw COPY into meter_reading | time / raw COPY into plain table |",
        "|---|---|---|---|---|",
        f"| a. ingest: parse + validate + store + commit | {i['seconds']} | {i['readings_per_s']:,} | "
        f"{r['ingest_over_copy_meter_reading']} | {r['ingest_over_copy_plain']} |",
        f"| b. raw COPY into meter_reading (PK, checks) | {result['copy_meter_reading']['seconds']} | "
        f"{result['copy_meter_reading']['readings_per_s']:,} | 1.00 | |",
        f"| c. raw COPY into an unindexed table | {result['copy_plain']['seconds']} | "
        f"{result['copy_plain']['readings_per_s']:,} | | 1.00 |",
        "",
        f"Where a.'s time goes (ms): {i['phases_ms']}. `store_check` is the look-up for existing readings of the "
        "file's sites and span (none: the rows are copied straight into meter_reading); `store_copy` is that COPY; "
        "the commit is the rest.",
        "",
        f"Correction file: {c['readings']:,} readings, {c['changed']:,} changed: {c['seconds']} s "
        f"({c['readings_per_s']:,} readings/s), {c['resettlement_marks']:,} (site, day) re-settlement marks. "
        f"Phases (ms): {c['phases_ms']}.",
        "",
        "Raw COPY streams CSV rendered in memory beforehand; a. includes reading the file from the database, "
        "Parquet decoding, every validation and the report. Timings are single runs on a shared 2-core machine.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--sites", type=int, default=104_167)
    parser.add_argument("--correction-sites", type=int, default=10_000)
    parser.add_argument("--changed-share", type=float, default=0.1)
    parser.add_argument("--name", default=NAME)
    args = parser.parse_args()
    result = run(args.admin_url, args.sites, args.correction_sites, args.changed_share)
    json_path, md_path = write_results(args.name, result, markdown(result))
    say("\n".join(markdown(result)))
    say(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
