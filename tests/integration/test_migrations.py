"""Migrations produce exactly the models' schema, on PostgreSQL and on SQLite."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from litestar.testing import TestClient
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from market.core.app import create_app
from market.core.contexts import import_models
from market.core.db import Base, make_engine, make_session_factory
from market.core.migrate import downgrade, upgrade
from tests.factories import in_process_settings
from tests.integration.settlement_world import build


def _diff(url: str) -> list[object]:
    import_models()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_head_on_empty_postgres_matches_the_models(fresh_database) -> None:  # type: ignore[no-untyped-def]
    url = fresh_database()
    upgrade(url)
    assert _diff(url) == []


def test_upgrade_head_on_empty_sqlite_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'flex.db'}"
    upgrade(url)
    upgrade(url)  # a second upgrade is a no-op
    assert _diff(url) == []
    tables = set(inspect(make_engine(url)).get_table_names())
    assert {"market", "congestion_point", "participant", "site", "portfolio", "api_key"} <= tables


# -- the bulk line tables' parent rules (migration 0009) ----------------------------------------------------------


def _line(table: str, parent_column: str, parent_id: str) -> str:
    columns = {
        "settlement_line": "seller_id, utility_id, offer_id, isp_start, ordered_kw, delivered_kw, shortfall_kw, "
        "price_per_mwh, utilisation, penalty, availability, fee, net, baseline_kw, actual_kw, status, method, "
        "method_version",
        "delivery_line": "offer_id, isp_start, seller_id, resource_id, direction, ordered_kw, baseline_kw, actual_kw, "
        "delivered_kw, status, method, method_version",
    }[table]
    values = {
        "settlement_line": "'a1b2c3d4-0000-0000-0000-000000000001', 'a1b2c3d4-0000-0000-0000-000000000002', "
        "'a1b2c3d4-0000-0000-0000-000000000003', '2026-12-04 00:00:00', 1, 1, 0, 300, 1, 0, 0, 0, 1, 2, 1, 'ok', "
        "'nominated', 1",
        "delivery_line": "'a1b2c3d4-0000-0000-0000-000000000003', '2026-12-04 00:00:00', "
        "'a1b2c3d4-0000-0000-0000-000000000001', 'a1b2c3d4-0000-0000-0000-000000000004', 'up', 1, 2, 1, 1, 'ok', "
        "'nominated', 1",
    }[table]
    return f"INSERT INTO {table} ({parent_column}, {columns}) VALUES ('{parent_id}', {values})"  # noqa: S608 - constants


def _check_parent_rules(url: str) -> None:
    """A line must name an existing parent (the append-only and never-deleted rules are checked on a settled
    day in tests/integration/test_settlement_flow.py)."""
    engine = make_engine(url)
    postgres = engine.dialect.name == "postgresql"
    missing = "a1b2c3d4-9999-0000-0000-000000000000"
    try:
        for table, column in (("settlement_line", "run_id"), ("delivery_line", "computation_id")):
            with pytest.raises(DBAPIError, match=f"{table}.{column} refers to no"), engine.begin() as conn:
                conn.execute(text(_line(table, column, missing if postgres else missing.replace("-", ""))))
    finally:
        engine.dispose()


def test_bulk_lines_need_their_parent_on_postgres(fresh_database) -> None:  # type: ignore[no-untyped-def]
    url = fresh_database()
    upgrade(url)
    _check_parent_rules(url)


def test_bulk_lines_need_their_parent_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'flex.db'}"
    upgrade(url)
    _check_parent_rules(url)


def test_the_bulk_line_migration_goes_down_and_up_again(fresh_database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for url in (fresh_database(), f"sqlite:///{tmp_path / 'flex.db'}"):
        upgrade(url)
        downgrade(url, "0008")
        upgrade(url)
        assert _diff(url) == []


# -- migration 0010: a run writes each award once (settlement lines carry its delivery) ------------------------------

_FACTS = "SELECT offer_id, isp_start, baseline_kw, actual_kw, status, method, method_version FROM {} ORDER BY 1, 2"
_MEMBERS = "SELECT site_id, isp_start, delivered_kw, baseline_kw, actual_kw FROM member_delivery ORDER BY 1, 2"


def test_delivery_facts_move_between_the_line_tables_down_and_up(fresh_database) -> None:  # type: ignore[no-untyped-def]
    """A day settled at head has no delivery_line rows (the run's computation is embedded). Going down to 0010
    turns the settlement lines' and member deliveries' millionths back into NUMERIC kW, down to 0009 restores the
    delivery lines from them; coming up again fills the settlement lines from those and converts both tables to
    millionths, exactly."""
    url = fresh_database()
    upgrade(url)
    settings = in_process_settings(url)
    engine = make_engine(url)
    try:
        with TestClient(app=create_app(settings)) as client, make_session_factory(engine)() as db:
            sw = build(client, db, method="high_x_of_y", history_days=45)
            settled = client.post(
                f"/api/v1/markets/{sw.w.market.id}/settlements",
                headers=sw.w.operator.headers,
                json={"day": sw.day.isoformat()},
            )
            assert settled.status_code == 201, settled.text
        with engine.connect() as conn:
            facts = conn.execute(text(_FACTS.format("settlement_line"))).all()
            assert conn.execute(text("SELECT COUNT(*) FROM delivery_line")).scalar() == 0
        # The day of tests/integration/test_delivery.py: the data center's and the portfolio's 17:00 award,
        # in kW millionths at head (migration 0011: BIGINT), as NUMERIC kW below 0011.
        assert sorted((f[2], f[3], f[4], f[5], f[6]) for f in facts) == [
            (400_000_000, 100_000_000, "ok", "high_x_of_y", 1),
            (1_000_000_000, 600_000_000, "ok", "high_x_of_y", 1),
        ]
        in_kw = [(*f[:2], Decimal(f[2]).scaleb(-6), Decimal(f[3]).scaleb(-6), *f[4:]) for f in facts]
        with engine.connect() as conn:
            members = conn.execute(text(_MEMBERS)).all()
        assert sorted(m[2] for m in members) == [120_000_000, 180_000_000]  # the two members' kW, millionths
        engine.dispose()
        downgrade(url, "0010")
        with engine.connect() as conn:
            assert conn.execute(text(_FACTS.format("settlement_line"))).all() == in_kw
            assert conn.execute(text(_MEMBERS)).all() == [
                (m[0], m[1], Decimal(m[2]).scaleb(-6), Decimal(m[3]).scaleb(-6), Decimal(m[4]).scaleb(-6))
                for m in members
            ]
        downgrade(url, "0009")
        with engine.connect() as conn:
            assert conn.execute(text(_FACTS.format("delivery_line"))).all() == in_kw
        engine.dispose()
        upgrade(url)
        with engine.connect() as conn:
            assert conn.execute(text(_FACTS.format("settlement_line"))).all() == facts
            assert conn.execute(text(_MEMBERS)).all() == members
        assert _diff(url) == []
    finally:
        engine.dispose()
