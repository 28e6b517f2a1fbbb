"""Validated readings into ``meter_reading``, set-based, in the caller's transaction.

Every incoming reading is one of (MARKET.md, Metering):

- *new*: no reading for its (site, ISP) yet → stored as version 1;
- *unchanged*: the current (highest) version has the same import and export → nothing is written;
- *corrected*: the values differ → stored as current version + 1, and the site's delivery day (local
  day in the market's time zone) is marked for re-settlement.

PostgreSQL: the frame is streamed with ``COPY`` (CSV written by Polars) into a temporary table and
classified by a join in SQL. When none of the file's sites has any reading in the file's time span
(the usual first delivery of a day), the classification is known without a join, and the rows are
copied straight into ``meter_reading``. Ingestion is serialised per market by a transaction-level
advisory lock, so two files for the same readings cannot both decide "new" or "version 2".
SQLite (embedded): the same SQL on a temporary table filled with ``executemany``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
import psycopg
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BindParameter, Column, Date, MetaData, Table, Uuid, bindparam, insert, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from market.core.db import ExactDecimal

READING_COLUMNS = ("site_id", "isp_start", "version", "import_kwh", "export_kwh", "file_id", "recorded_at")
COPY_CHUNK_ROWS = 250_000
"""Rows per CSV chunk streamed to COPY; the next chunk is written by Polars while PostgreSQL reads."""
_LOCK_CLASS = 0x4D455452
"""First key of the advisory lock that serialises meter ingestion per market ('METR')."""
_PG_TIMESTAMP = "%Y-%m-%d %H:%M:%S%.f+00"

_temp = MetaData()
INCOMING = Table(
    "meter_incoming",
    _temp,
    Column("site_id", Uuid(), nullable=False),
    Column("isp_start", DateTimeUTC(timezone=True), nullable=False),
    Column("delivery_day", Date(), nullable=False),
    Column("import_kwh", ExactDecimal(20, 6), nullable=False),
    Column("export_kwh", ExactDecimal(20, 6), nullable=False),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)
"""The valid rows of one file (one per site and ISP)."""


@dataclass
class StoreCounts:
    stored: int = 0
    """New readings (version 1)."""
    unchanged: int = 0
    corrected: int = 0
    """New versions of existing readings."""
    marked_days: int = 0
    """(site, delivery day) pairs marked for re-settlement."""
    durations_ms: dict[str, int] = field(default_factory=dict)


class _Stopwatch:
    def __init__(self, into: dict[str, int]) -> None:
        self.into = into
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.into[name] = self.into.get(name, 0) + round((now - self.last) * 1000)
        self.last = now


def store_readings(
    session: Session, *, file_id: uuid.UUID, market_id: uuid.UUID, readings: pl.DataFrame, recorded_at: datetime
) -> StoreCounts:
    """Store ``readings`` (:data:`settlement.metering.validation.READINGS_SCHEMA`, unique per site
    and ISP) as new readings or corrections; count the no-ops. Flushes only: the caller commits."""
    counts = StoreCounts()
    if readings.is_empty():
        return counts
    watch = _Stopwatch(counts.durations_ms)
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:lock_class, :key)"),
            {"lock_class": _LOCK_CLASS, "key": int.from_bytes(market_id.bytes[:4], "big", signed=True)},
        )
        if not _any_existing(connection, readings):
            watch.lap("check")
            counts.stored = _copy(
                connection,
                "meter_reading",
                READING_COLUMNS,
                readings.select(
                    "site_id",
                    "isp_start",
                    pl.lit(1).alias("version"),
                    "import_kwh",
                    "export_kwh",
                    pl.lit(str(file_id)).alias("file_id"),
                    pl.lit(recorded_at.isoformat()).alias("recorded_at"),
                ),
            )
            watch.lap("copy")
            return counts
        watch.lap("check")
    _load_incoming(connection, readings, postgres)
    watch.lap("copy")
    _classify(connection, counts, file_id=file_id, market_id=market_id, recorded_at=recorded_at, postgres=postgres)
    watch.lap("classify")
    return counts


def _any_existing(connection: Connection, readings: pl.DataFrame) -> bool:
    """Does any of the file's sites have a reading within the file's time span?"""
    bounds = readings.select(pl.col("isp_start").min().alias("first"), pl.col("isp_start").max().alias("last"))
    first, last = bounds.row(0)
    sites = readings.get_column("site_id").unique().to_list()
    found = connection.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM meter_reading WHERE site_id = ANY(CAST(:sites AS uuid[])) "
            "AND isp_start BETWEEN :first AND :last)"
        ).bindparams(bindparam("first", type_=DateTimeUTC(timezone=True)), bindparam("last", type_=DateTimeUTC())),
        {"sites": sites, "first": first, "last": last},
    ).scalar_one()
    return bool(found)


def _timestamp_text(frame: pl.DataFrame, column: str) -> pl.Expr:
    """A UTC datetime column as PostgreSQL text; a file has few distinct ISPs, so each is rendered once."""
    distinct = frame.get_column(column).unique()
    return pl.col(column).replace_strict(distinct, distinct.dt.to_string(_PG_TIMESTAMP), return_dtype=pl.String)


def _csv_chunks(frame: pl.DataFrame) -> Iterator[bytes]:
    """The frame as CSV in chunks; each chunk is rendered while the previous one is being sent."""
    timestamps = [name for name, dtype in frame.schema.items() if isinstance(dtype, pl.Datetime)]
    frame = frame.with_columns(*[_timestamp_text(frame, name) for name in timestamps])
    slices = range(0, frame.height, COPY_CHUNK_ROWS)

    def render(offset: int) -> bytes:
        return frame.slice(offset, COPY_CHUNK_ROWS).write_csv(include_header=False).encode()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="meter-csv") as pool:
        pending = pool.submit(render, 0)
        for offset in slices[1:]:
            ready = pending.result()
            pending = pool.submit(render, offset)
            yield ready
        yield pending.result()


def _copy(connection: Connection, table: str, columns: tuple[str, ...], frame: pl.DataFrame) -> int:
    """``COPY table (columns) FROM STDIN`` the frame's rows, in the connection's transaction."""
    raw = connection.connection.driver_connection
    if not isinstance(raw, psycopg.Connection):
        raise TypeError(f"COPY needs a psycopg connection, not {type(raw).__name__}")
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for chunk in _csv_chunks(frame):
            copy.write(chunk)
    return frame.height


def _load_incoming(connection: Connection, readings: pl.DataFrame, postgres: bool) -> None:
    connection.execute(text("DROP TABLE IF EXISTS meter_incoming"))
    connection.execute(text("DROP TABLE IF EXISTS meter_current"))
    INCOMING.create(connection)
    columns = tuple(column.name for column in INCOMING.columns)
    if postgres:
        _copy(connection, "meter_incoming", columns, readings.select(columns))
        connection.execute(text("ANALYZE meter_incoming"))
        return
    # Embedded SQLite: plain executemany, with the column types doing the conversions.
    rows = readings.select(columns).to_dicts()
    for row in rows:
        row["site_id"] = uuid.UUID(row["site_id"])
    connection.execute(insert(INCOMING), rows)


_CURRENT_POSTGRES = """
CREATE TEMPORARY TABLE meter_current ON COMMIT DROP AS
SELECT DISTINCT ON (i.site_id, i.isp_start)
       i.site_id, i.isp_start, i.delivery_day, i.import_kwh, i.export_kwh, r.version,
       (r.import_kwh = i.import_kwh AND r.export_kwh = i.export_kwh) AS same
FROM meter_incoming i
JOIN meter_reading r ON r.site_id = i.site_id AND r.isp_start = i.isp_start
ORDER BY i.site_id, i.isp_start, r.version DESC
"""
_CURRENT_SQLITE = """
CREATE TEMPORARY TABLE meter_current AS
SELECT i.site_id, i.isp_start, i.delivery_day, i.import_kwh, i.export_kwh, r.version,
       (r.import_kwh = i.import_kwh AND r.export_kwh = i.export_kwh) AS same
FROM meter_incoming i
JOIN meter_reading r ON r.site_id = i.site_id AND r.isp_start = i.isp_start
WHERE r.version = (
    SELECT max(m.version) FROM meter_reading m WHERE m.site_id = i.site_id AND m.isp_start = i.isp_start
)
"""
_CORRECTIONS = """
INSERT INTO meter_reading (site_id, isp_start, version, import_kwh, export_kwh, file_id, recorded_at)
SELECT site_id, isp_start, version + 1, import_kwh, export_kwh, :file_id, :recorded_at
FROM meter_current WHERE NOT same
"""
_MARKS = """
INSERT INTO resettlement_mark (market_id, site_id, delivery_day, file_id, created_at)
SELECT DISTINCT :market_id, site_id, delivery_day, :file_id, :recorded_at
FROM meter_current WHERE NOT same
ON CONFLICT DO NOTHING
"""
_NEW = """
INSERT INTO meter_reading (site_id, isp_start, version, import_kwh, export_kwh, file_id, recorded_at)
SELECT i.site_id, i.isp_start, 1, i.import_kwh, i.export_kwh, :file_id, :recorded_at
FROM meter_incoming i
WHERE NOT EXISTS (SELECT 1 FROM meter_current c WHERE c.site_id = i.site_id AND c.isp_start = i.isp_start)
"""


def _classify(
    connection: Connection,
    counts: StoreCounts,
    *,
    file_id: uuid.UUID,
    market_id: uuid.UUID,
    recorded_at: datetime,
    postgres: bool,
) -> None:
    typed: list[BindParameter[Any]] = [
        bindparam("file_id", type_=Uuid()),
        bindparam("recorded_at", type_=DateTimeUTC(timezone=True)),
    ]
    values = {"file_id": file_id, "recorded_at": recorded_at}
    connection.execute(text(_CURRENT_POSTGRES if postgres else _CURRENT_SQLITE))
    counts.corrected = connection.execute(text(_CORRECTIONS).bindparams(*typed), values).rowcount
    counts.unchanged = int(connection.execute(text("SELECT count(*) FROM meter_current WHERE same")).scalar_one())
    counts.marked_days = connection.execute(
        text(_MARKS).bindparams(*typed, bindparam("market_id", type_=Uuid())), {**values, "market_id": market_id}
    ).rowcount
    counts.stored = connection.execute(text(_NEW).bindparams(*typed), values).rowcount
    if not postgres:
        connection.execute(text("DROP TABLE meter_current"))
        connection.execute(text("DROP TABLE meter_incoming"))
