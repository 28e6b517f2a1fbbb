"""Bulk reads and writes between the database and Polars frames, on both backends.

PostgreSQL moves rows with ``COPY`` (text format, streamed), which is an order of magnitude faster
than row-wise INSERT/SELECT at the million-row sizes settlement works with. SQLite, the embedded
store, uses ``executemany`` and plain SELECTs. Both run on the session's own connection, so they are
part of the caller's transaction: a failure rolls back everything the unit of work wrote.

Frames carry exact decimals as ``pl.Int64`` micro-units (value × 10⁶), which keeps arithmetic on
them exact and fast. On PostgreSQL they are written to ``NUMERIC`` columns as decimal text and read
back scaled to integers by the server; the ``BIGINT`` columns of :class:`ScaledDecimal` and SQLite's
ExactDecimal hold the integer millionths themselves.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import polars as pl
from sqlalchemy import text
from sqlalchemy.orm import Session

MICRO = 1_000_000
"""Decimals in frames are integer millionths: ExactDecimal's 6 places."""

_CHUNK_ROWS = 200_000


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def micro(value: Decimal) -> int:
    """A decimal with at most 6 places as integer millionths (exact)."""
    return int(value.scaleb(6))


def from_micro(value: int) -> Decimal:
    """Integer millionths as a decimal in its shortest form (``1500000`` → ``Decimal('1.5')``)."""
    scaled = Decimal(value).scaleb(-6)
    return scaled.quantize(Decimal(1)) if scaled == scaled.to_integral_value() else scaled.normalize()


def _micro_text(column: str) -> pl.Expr:
    """Int64 millionths → exact decimal text (``-1500000`` → ``-1.500000``), vectorised."""
    value = pl.col(column)
    magnitude = value.abs()
    return (
        pl.when(value < 0).then(pl.lit("-")).otherwise(pl.lit(""))
        + (magnitude // MICRO).cast(pl.String)
        + pl.lit(".")
        + (magnitude % MICRO).cast(pl.String).str.zfill(6)
    ).alias(column)


def copy_in(session: Session, table: str, frame: pl.DataFrame, *, micro_columns: Sequence[str] = ()) -> int:
    """Append ``frame``'s rows to ``table`` (columns by name). ``micro_columns`` hold Int64 millionths
    destined for ExactDecimal columns. Datetimes must be UTC-aware. Returns the row count."""
    if frame.is_empty():
        return 0
    columns = frame.columns
    if is_postgres(session):
        out = frame.with_columns(
            *[_micro_text(c) for c in micro_columns],
            *[pl.col(c).dt.strftime("%Y-%m-%d %H:%M:%S%.f+00") for c, t in frame.schema.items() if t == pl.Datetime],
        )
        raw = session.connection().connection.driver_connection
        column_list = ", ".join(f'"{c}"' for c in columns)
        copy_sql = f'COPY "{table}" ({column_list}) FROM STDIN'
        with raw.cursor() as cursor, cursor.copy(copy_sql) as copy:  # type: ignore[union-attr]
            for offset in range(0, out.height, _CHUNK_ROWS):
                buffer = io.BytesIO()
                out.slice(offset, _CHUNK_ROWS).write_csv(
                    buffer, include_header=False, separator="\t", null_value="\\N", quote_style="never"
                )
                copy.write(buffer.getvalue())
        return frame.height
    # SQLite: ExactDecimal stores millionths already; UUIDs as 32-hex (SQLAlchemy's Uuid on SQLite).
    out = frame.with_columns(
        *[
            pl.col(c).str.replace_all("-", "")
            for c, t in frame.schema.items()
            if t == pl.String and (c == "id" or c.endswith("_id"))
        ],
        *[pl.col(c).dt.strftime("%Y-%m-%d %H:%M:%S.%6f") for c, t in frame.schema.items() if t == pl.Datetime],
    )
    placeholders = ", ".join(f":{c}" for c in columns)
    # Table and column names come from our own models, never from a client.
    statement = text(f'INSERT INTO "{table}" ({", ".join(columns)}) VALUES ({placeholders})')  # noqa: S608
    for offset in range(0, out.height, _CHUNK_ROWS):
        session.execute(statement, out.slice(offset, _CHUNK_ROWS).to_dicts())
    return frame.height


def read_frame(
    session: Session,
    sql: str,
    params: Mapping[str, Any],
    schema: Mapping[str, Any],
    *,
    micro_columns: Sequence[str] = (),
) -> pl.DataFrame:
    """Run ``sql`` and return its rows as a frame of ``schema`` (column → Polars type). UUID columns
    come back as lowercase hyphenated strings (``pl.String``), datetimes as UTC, ExactDecimal
    columns named in ``micro_columns`` as Int64 millionths. On PostgreSQL the rows stream through
    ``COPY (query) TO STDOUT``; parameters are bound by the server-side query first."""
    names = list(schema)
    if is_postgres(session):
        clause = text(sql)
        bound = str(
            clause.bindparams(**{k: v for k, v in params.items() if k in clause._bindparams}).compile(
                dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}
            )
        )
        if micro_columns:
            # The server scales exact decimals to integer millionths, so they arrive as integers: cheaper
            # to send and to parse than decimal text. (Their scale is at most 6, as ExactDecimal's.)
            aliases = [f"c{i}" for i in range(len(names))]
            select_list = ", ".join(
                f"(q.{a} * {MICRO})::bigint" if name in micro_columns else f"q.{a}"
                for a, name in zip(aliases, names, strict=True)
            )
            bound = f"SELECT {select_list} FROM ({bound}) AS q({', '.join(aliases)})"  # noqa: S608 - our SQL
        raw = session.connection().connection.driver_connection
        buffer = io.BytesIO()
        with raw.cursor() as cursor, cursor.copy(f"COPY ({bound}) TO STDOUT") as copy:  # type: ignore[union-attr]
            for block in copy:
                buffer.write(block)
        if buffer.tell() == 0:
            return pl.DataFrame(schema={n: (pl.Int64 if n in micro_columns else t) for n, t in schema.items()})
        buffer.seek(0)
        frame = pl.read_csv(
            buffer,
            has_header=False,
            separator="\t",
            new_columns=names,
            schema_overrides=dict.fromkeys(names, pl.String),
            null_values="\\N",
            quote_char=None,
        )
        return frame.with_columns(
            *[pl.col(c).cast(pl.Int64) for c in micro_columns],
            *[
                pl.col(c).str.to_datetime("%Y-%m-%d %H:%M:%S%.f%#z", time_zone="UTC", time_unit="us")
                for c, t in schema.items()
                if t == pl.Datetime or isinstance(t, pl.Datetime)
            ],
            *[pl.col(c).str.to_date("%Y-%m-%d") for c, t in schema.items() if t == pl.Date],
            *[pl.col(c) == "t" for c, t in schema.items() if t == pl.Boolean],
            *[
                pl.col(c).cast(t)
                for c, t in schema.items()
                if c not in micro_columns
                and t not in (pl.String, pl.Datetime, pl.Date, pl.Boolean)
                and not isinstance(t, pl.Datetime)
            ],
        )
    rows = session.execute(text(sql), {k: _sqlite_param(v) for k, v in params.items()}).all()
    data: dict[str, list[Any]] = {n: [] for n in names}
    for row in rows:
        for name, value in zip(names, row, strict=True):
            data[name].append(value)
    columns: list[pl.Series] = []
    for name, kind in schema.items():
        values = data[name]
        if name in micro_columns:
            columns.append(pl.Series(name, [None if v is None else int(v) for v in values], dtype=pl.Int64))
        elif kind == pl.Datetime or isinstance(kind, pl.Datetime):
            columns.append(pl.Series(name, [_sqlite_instant(v) for v in values], dtype=pl.Datetime("us", "UTC")))
        elif kind == pl.String and (name == "id" or name.endswith("_id")):
            columns.append(
                pl.Series(name, [None if v is None else _hyphenate(str(v)) for v in values], dtype=pl.String)
            )
        else:
            columns.append(pl.Series(name, values, dtype=kind))
    return pl.DataFrame(columns)


def _sqlite_param(value: Any) -> Any:
    """A bound value as the embedded store keeps it: UUIDs as 32 hex digits, instants as naive UTC text."""
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _sqlite_instant(value: Any) -> datetime | None:
    if value is None:
        return None
    instant = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def _hyphenate(value: str) -> str:
    if len(value) == 32:  # noqa: PLR2004 - SQLite stores a UUID as 32 hex digits
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
    return value
