"""Migrations produce exactly the models' schema, on PostgreSQL and on SQLite."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from market.core.contexts import import_models
from market.core.db import Base, make_engine
from market.core.migrate import upgrade


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
