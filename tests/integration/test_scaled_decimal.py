"""ScaledDecimal on PostgreSQL: decimals stored as BIGINT millionths, exactly, with the same refusals as
ExactDecimal (settlement_line's columns since migration 0011)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, delete, func, insert, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import StatementError

from market.core.db import ScaledDecimal

metadata = MetaData()
scaled = Table(
    "scaled_decimal_probe", metadata, Column("id", Integer, primary_key=True), Column("v", ScaledDecimal(20, 6))
)
LIMIT = Decimal("9223372036854.775807")


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    metadata.create_all(engine)
    try:
        with engine.connect() as connection:
            yield connection
            connection.rollback()
    finally:
        metadata.drop_all(engine)


def test_stored_as_a_bigint_count_of_millionths(conn: Connection) -> None:
    conn.execute(insert(scaled), [{"id": 1, "v": Decimal("-1.5")}, {"id": 2, "v": Decimal("0.000001")}])
    kind = conn.execute(
        text(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'scaled_decimal_probe' AND column_name = 'v'"
        )
    ).scalar_one()
    assert kind == "bigint"
    assert conn.execute(text("SELECT v FROM scaled_decimal_probe ORDER BY id")).scalars().all() == [-1_500_000, 1]
    assert conn.execute(select(scaled.c.v).order_by(scaled.c.id)).scalars().all() == [
        Decimal("-1.5"),
        Decimal("0.000001"),
    ]
    assert conn.execute(select(func.sum(scaled.c.v))).scalar_one() == Decimal("-1.499999")  # SUM stays exact


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (Decimal("0.0000001"), "more than 6 decimal places"),
        (Decimal("NaN"), "not a finite amount"),
        (LIMIT + Decimal("0.000001"), "outside the range"),
    ],
)
def test_refused_never_rounded(conn: Connection, value: Decimal, reason: str) -> None:
    with pytest.raises(StatementError, match=reason):
        conn.execute(insert(scaled), {"id": 1, "v": value})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.decimals(min_value=-LIMIT, max_value=LIMIT, places=6, allow_nan=False, allow_infinity=False))
def test_round_trip_is_exact(conn: Connection, value: Decimal) -> None:
    conn.execute(delete(scaled))
    conn.execute(insert(scaled), {"id": 1, "v": value})
    assert conn.execute(select(scaled.c.v)).scalar_one() == value
