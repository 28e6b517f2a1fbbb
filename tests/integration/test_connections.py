"""Connections the server closes: the API goes on without a failed request.

PostgreSQL closes a session on ``pg_terminate_backend``, a restart or ``idle_session_timeout``. A
pooled connection of the API then looks alive until it is used. The engine's checkout and the API
key lookup replace such connections without a round trip on every request.
"""

from __future__ import annotations

import asyncio
import socket
import time

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from psycopg_pool import PoolTimeout
from sqlalchemy import text
from sqlalchemy.orm import Session

from market.auth.lookup import APPLICATION_NAME, PostgresKeyLookup
from market.core.db import make_engine, server_has_spoken
from market.participants.models import Role
from tests import factories
from tests.conftest import ADMIN_URL


def _terminate(*, pid: int | None = None, database: str | None = None, application_name: str | None = None) -> int:
    """Terminate the backends with the given pid, database and application name; how many. Waits
    until each has exited (up to 5 s), so its connections have been closed, not just signalled."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            " AND (%(pid)s::int IS NULL OR pid = %(pid)s)"
            " AND (%(database)s::text IS NULL OR datname = %(database)s)"
            " AND (%(application)s::text IS NULL OR application_name = %(application)s)",
            {"pid": pid, "database": database, "application": application_name},
        ).fetchall()
    return len(rows)


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_a_pooled_connection_the_server_closed_is_replaced_at_checkout(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            first = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            assert not server_has_spoken(connection.connection.driver_connection)
        assert _terminate(pid=first) == 1
        with engine.connect() as connection:  # without the checkout check: "terminating connection"
            second = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert second != first
    finally:
        engine.dispose()


def test_requests_go_on_after_the_server_closed_every_connection_of_the_api(
    client: TestClient[Litestar], db: Session, database_url: str
) -> None:
    home = factories.actor(db, Role.HOUSEHOLD)
    db.commit()
    assert client.get("/api/v1/me", headers=home.headers).status_code == 200
    assert client.get("/api/v1/sites", headers=home.headers).status_code == 200
    db.close()
    lookups = _terminate(database=_database(database_url), application_name=APPLICATION_NAME)
    assert lookups >= 1
    _terminate(database=_database(database_url))  # the app's pool, this test's session too
    for _ in range(3):
        me = client.get("/api/v1/me", headers=home.headers)
        assert me.status_code == 200, me.text
        assert me.json()["participant_id"] == str(home.id)
        sites = client.get("/api/v1/sites", headers=home.headers)
        assert sites.status_code == 200, sites.text


def test_the_key_lookup_fails_within_its_timeout_when_postgres_is_unreachable() -> None:
    """A request fails fast (here 0.5 s) rather than waiting psycopg_pool's default 30 s."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lookup = PostgresKeyLookup(f"postgresql://postgres@127.0.0.1:{port}/test?connect_timeout=1", timeout_s=0.5)

    async def find() -> None:
        try:
            await lookup.find("0123456789abcdef")
        finally:
            await lookup.close()

    started = time.monotonic()
    with pytest.raises(PoolTimeout):
        asyncio.run(find())
    assert time.monotonic() - started < 5


def test_the_key_lookup_replaces_every_connection_the_server_closed(database_url: str) -> None:
    """Four pooled lookup connections, all terminated: the next lookups answer, at once. (With
    psycopg_pool's check, which backs off between dead connections, the first took 5 s.)"""
    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    lookup = PostgresKeyLookup(conninfo, min_size=4, max_size=4)

    async def scenario() -> list[object]:
        try:
            await lookup.start()
            assert lookup._pool is not None
            await lookup._pool.wait(timeout=10)  # all four connected
            assert _terminate(database=_database(database_url), application_name=APPLICATION_NAME) >= 4
            await asyncio.sleep(0.2)
            started = time.monotonic()
            found = [await lookup.find("0123456789abcdef") for _ in range(6)]
            assert time.monotonic() - started < 2
            return found
        finally:
            await lookup.close()

    assert asyncio.run(scenario()) == [None] * 6
