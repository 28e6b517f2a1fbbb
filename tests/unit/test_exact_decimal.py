"""ExactDecimal on an in-memory SQLite engine: exact storage, ordering and SUM, refusal of excess places."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, delete, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import StatementError

from market.core.db import ExactDecimal, make_engine

metadata = MetaData()
amounts = Table(
    "amounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("v", ExactDecimal(20, 6)),
)

# Largest magnitude that fits SQLite's signed 64-bit INTEGER at scale 6: (2**63 - 1) / 10**6
SQLITE_MAX = Decimal("9223372036854.775807")
MICRO = Decimal("0.000001")


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    eng = make_engine("sqlite://")
    metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def conn(engine):
    with engine.connect() as connection:
        connection.execute(delete(amounts))
        connection.commit()
        yield connection
        connection.rollback()


def store_and_load(conn, value):
    conn.execute(delete(amounts))
    conn.execute(insert(amounts).values(v=value))
    return conn.execute(select(amounts.c.v)).scalar_one()


def assert_exact(loaded, expected):
    assert isinstance(loaded, Decimal)
    assert loaded == expected
    assert loaded.is_finite()
    # never more than 6 places (the representation, e.g. trailing zeros, is not part of the contract)
    assert loaded == loaded.quantize(MICRO)


def test_sqlite_stores_an_integer_count_of_micro_units(conn):
    conn.execute(insert(amounts).values(v=Decimal("1.5")))
    raw = conn.exec_driver_sql("SELECT v, typeof(v) FROM amounts").one()
    assert tuple(raw) == (1_500_000, "integer")


@pytest.mark.parametrize(
    "value",
    [
        Decimal("-0.000001"),
        Decimal("0"),
        Decimal("-0"),
        Decimal("0.000001"),
        Decimal("0.1"),
        Decimal("1E+3"),
        Decimal("42.500000"),
        Decimal("-1234567.654321"),
        SQLITE_MAX,
        -SQLITE_MAX,
    ],
)
def test_round_trip_exact(conn, value):
    assert_exact(store_and_load(conn, value), value)


def test_int_input_is_accepted(conn):
    assert_exact(store_and_load(conn, 7), Decimal("7"))


def test_none_round_trips(conn):
    assert store_and_load(conn, None) is None


def test_beyond_sqlite_range_is_refused_clearly(conn):
    # SQLite keeps value * 10**6 in a 64-bit integer; beyond that the value is refused, not overflowed.
    with pytest.raises(StatementError, match="outside the range SQLite can store exactly"):
        conn.execute(insert(amounts).values(v=Decimal("12345678901234.123456")))


@pytest.mark.parametrize("value", [Decimal("9223372036854.775808"), Decimal("-9999999999999.999999")])
def test_round_trip_just_beyond_int64(conn, value):
    with pytest.raises(StatementError, match="outside the range"):
        conn.execute(insert(amounts).values(v=value))


def test_order_by_is_exact(conn):
    values = [
        Decimal("0.000002"),
        Decimal("-0.000001"),
        Decimal("0.000001"),
        Decimal("100"),
        Decimal("99.999999"),
        Decimal("-100"),
        Decimal("0"),
        Decimal("9223372036854.775807"),
        Decimal("9223372036854.775806"),
    ]
    conn.execute(insert(amounts), [{"v": v} for v in values])
    ordered = conn.execute(select(amounts.c.v).order_by(amounts.c.v)).scalars().all()
    assert ordered == [
        Decimal("-100"),
        Decimal("-0.000001"),
        Decimal("0"),
        Decimal("0.000001"),
        Decimal("0.000002"),
        Decimal("99.999999"),
        Decimal("100"),
        Decimal("9223372036854.775806"),
        Decimal("9223372036854.775807"),
    ]


def test_sum_of_tenths_is_exactly_one(conn):
    conn.execute(insert(amounts), [{"v": Decimal("0.1")} for _ in range(10)])
    total = conn.execute(select(func.sum(amounts.c.v))).scalar_one()
    assert isinstance(total, Decimal)
    assert total == Decimal("1.000000")


def test_sum_is_exact_for_values_a_float_cannot_hold(conn):
    # 2**53 + 1 micro-units is not representable as a double
    conn.execute(insert(amounts), [{"v": Decimal("9007199254.740993")}, {"v": Decimal("0.000001")}])
    total = conn.execute(select(func.sum(amounts.c.v))).scalar_one()
    assert total == Decimal("9007199254.740994")


def test_min_max_are_exact(conn):
    conn.execute(insert(amounts), [{"v": Decimal("0.3")}, {"v": Decimal("-0.7")}])
    lo, hi = conn.execute(select(func.min(amounts.c.v), func.max(amounts.c.v))).one()
    assert (lo, hi) == (Decimal("-0.7"), Decimal("0.3"))


@pytest.mark.parametrize(
    "value",
    [
        Decimal("0.0000001"),
        Decimal("1.1234567"),
        Decimal("-0.0000005"),
        Decimal("12345.0000001"),
    ],
)
def test_seven_decimal_places_are_refused(conn, value):
    with pytest.raises(StatementError) as excinfo:
        conn.execute(insert(amounts).values(v=value))
    assert isinstance(excinfo.value.orig, ValueError)
    assert "more than 6 decimal places" in str(excinfo.value.orig)


def test_trailing_zero_places_are_not_refused(conn):
    # seven written places, but the seventh is zero: the value itself has six places
    assert_exact(store_and_load(conn, Decimal("1.2345670")), Decimal("1.234567"))


def test_many_significant_digits_are_refused_not_rounded(conn):
    with pytest.raises(StatementError):
        conn.execute(insert(amounts).values(v=Decimal("1.0000000000000000000000000001")))


def test_type_repr():
    assert repr(ExactDecimal(20, 6)) == "ExactDecimal(20, 6)"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(
    st.decimals(
        min_value=-SQLITE_MAX,
        max_value=SQLITE_MAX,
        places=6,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_round_trip_property(conn, value):
    """Brief asked for |x| < 1e13; SQLite (int64) only holds |x| <= SQLITE_MAX, see the range tests above."""
    assert_exact(store_and_load(conn, value), value)
