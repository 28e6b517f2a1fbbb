"""settlement.bulk.copy_binary against PostgreSQL: what is read back is what was sent, row for row, in
both of its paths (binary, and text for frames with many shapes of row), and bad values are refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InternalError
from sqlalchemy.orm import Session

from settlement.bulk import BinaryType, copy_binary

TYPES: dict[str, BinaryType] = {
    "pos": "int4",
    "id": "uuid",
    "at": "timestamptz",
    "amount": "int8",
    "status": "text",
    "maybe": "int8",
}
COLUMNS = "pos integer, id uuid, at timestamptz, amount bigint, status text, maybe bigint"


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as s:
        s.execute(text(f"CREATE TEMPORARY TABLE bulk_probe ({COLUMNS})"))
        yield s
        s.rollback()


def _frame(n: int, statuses: list[str]) -> pl.DataFrame:
    ids = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(5)]
    start = datetime(2026, 3, 29, 0, 45, tzinfo=UTC)  # the clock change in Europe: UTC stays regular
    return pl.DataFrame(
        {
            "pos": list(range(n)),
            "id": [ids[i % 5] for i in range(n)],
            "at": [start + timedelta(minutes=15 * i) for i in range(n)],
            # negative, zero, beyond 32 bits and the BIGINT extremes
            "amount": [[-1_500_000, 0, 2**40 + i, -(2**63), 2**63 - 1][i % 5] for i in range(n)],
            "status": [statuses[i % len(statuses)] for i in range(n)],
            "maybe": [None if i % 3 == 0 else i * 1_000_001 for i in range(n)],
        },
        schema={
            "pos": pl.Int64,
            "id": pl.String,
            "at": pl.Datetime("us", "UTC"),
            "amount": pl.Int64,
            "status": pl.String,
            "maybe": pl.Int64,
        },
    )


def _read_back(session: Session) -> pl.DataFrame:
    rows = session.execute(text("SELECT pos, id::text, at, amount, status, maybe FROM bulk_probe ORDER BY pos")).all()
    return pl.DataFrame(rows, schema=list(TYPES), orient="row").with_columns(
        pl.col("at").dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    )


@pytest.mark.parametrize(
    ("n", "statuses"),
    [
        (1, ["ok"]),
        (257, ["ok", "missing_readings", "no_baseline", "ünïcode ✓"]),  # several shapes, interleaved
        (450_001, ["ok", "missing_readings"]),  # more than one chunk of 200,000 rows
    ],
    ids=["one_row", "interleaved_shapes", "several_chunks"],
)
def test_binary_rows_read_back_exactly(session: Session, n: int, statuses: list[str]) -> None:
    frame = _frame(n, statuses)
    assert copy_binary(session, "bulk_probe", frame, TYPES) == n
    assert _read_back(session).equals(frame)
    # The binary path kept the frame's order (COPY appends to the heap in order).
    physical = session.execute(text("SELECT pos FROM bulk_probe")).scalars().all()
    assert physical == list(range(n))


def test_many_shapes_go_through_the_text_format(session: Session) -> None:
    frame = _frame(300, [f"status {i}" for i in range(100)])  # 100 text values: more than 64 shapes
    assert copy_binary(session, "bulk_probe", frame, TYPES) == 300
    assert _read_back(session).equals(frame)


def test_an_int4_that_does_not_fit_is_refused_and_aborts_the_copy(session: Session) -> None:
    """The value is checked as its chunk is encoded, inside the COPY: the COPY fails, and with it the
    transaction, so no row of the frame can be committed."""
    frame = _frame(3, ["ok"]).with_columns(pos=pl.Series([0, 1, 2**31], dtype=pl.Int64))
    with pytest.raises(ValueError, match="pos: a value does not fit a 4-byte integer"):
        copy_binary(session, "bulk_probe", frame, TYPES)
    with pytest.raises(InternalError, match="current transaction is aborted"):
        session.execute(text("SELECT count(*) FROM bulk_probe"))
