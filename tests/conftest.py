"""Shared fixtures. Integration tests run against the real PostgreSQL on 127.0.0.1, in a database
created for this run (one per xdist worker) and dropped afterwards; tables are truncated after
every test so each test starts empty."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from market.core.app import create_app
from market.core.config import Settings
from market.core.db import Base, make_engine, make_session_factory
from market.core.migrate import upgrade
from tests.factories import in_process_settings

ADMIN_URL = os.environ.get("FLEX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def _db_url(name: str) -> str:
    base = ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="session")
def fresh_database() -> Iterator[object]:
    """A factory of empty PostgreSQL databases, each dropped at the end of the run."""
    made: list[str] = []

    def make() -> str:
        name = f"flex_test_{uuid.uuid4().hex[:12]}"
        _admin(f'CREATE DATABASE "{name}"')
        made.append(name)
        return _db_url(name)

    yield make
    for name in made:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(fresh_database) -> str:  # type: ignore[no-untyped-def]
    url: str = fresh_database()
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return in_process_settings(database_url)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Engine:
    return make_engine(settings.database.url)


@pytest.fixture(scope="session")
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture(scope="session")
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture
def client(app: Litestar, _clean_tables: None) -> Iterator[TestClient[Litestar]]:
    with TestClient(app=app) as test_client:
        yield test_client


@pytest.fixture
def _clean_tables(engine: Engine) -> Iterator[None]:
    yield
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))


@pytest.fixture
def db(session_factory: sessionmaker[Session], _clean_tables: None) -> Iterator[Session]:
    """A session for building data with factories; commit to make it visible to the app."""
    with session_factory() as session:
        yield session
