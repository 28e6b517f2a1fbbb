"""Bulk reads side by side (market/core/bulk.py): two connections, one snapshot for the side read."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from market.core.bulk import read_side_by_side
from market.core.db import make_engine, make_session_factory


def _count(session: Session) -> int:
    return int(session.execute(text("SELECT COUNT(*) FROM side_read_probe")).scalar_one())


@pytest.fixture
def probe(engine: Engine) -> object:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE side_read_probe (n integer)"))
        conn.execute(text("INSERT INTO side_read_probe VALUES (1), (2)"))
    yield
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE side_read_probe"))


def test_the_side_read_sees_what_was_committed_when_the_call_began(
    probe: object, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    """A row committed by someone else while both reads run is invisible to the side read (its snapshot was
    exported at the call), visible to the main read (READ COMMITTED: each statement sees the latest)."""
    committed = threading.Event()
    side_threads: list[str] = []

    def side(reader: Session) -> int:
        assert committed.wait(10)
        side_threads.append(threading.current_thread().name)
        mode = reader.execute(text("SHOW transaction_read_only")).scalar_one()
        assert mode == "on"
        return _count(reader)

    def main(session: Session) -> int:
        with engine.begin() as other:
            other.execute(text("INSERT INTO side_read_probe VALUES (3)"))
        committed.set()
        return _count(session)

    with session_factory() as session:
        assert read_side_by_side(session, side, main) == (2, 3)
        # The session's own transaction goes on after the call.
        assert _count(session) == 3
    assert side_threads[0].startswith("side-read")


def test_a_failing_side_read_fails_the_call(probe: object, session_factory: sessionmaker[Session]) -> None:
    def side(reader: Session) -> int:
        return int(reader.execute(text("SELECT 1 / 0")).scalar_one())

    with session_factory() as session, pytest.raises(Exception, match="division by zero"):
        read_side_by_side(session, side, _count)


def test_on_sqlite_both_reads_run_in_turn_on_the_session(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'bulk.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE side_read_probe (n integer)"))
            conn.execute(text("INSERT INTO side_read_probe VALUES (1)"))
        with make_session_factory(engine)() as session:
            seen: list[Session] = []

            def side(reader: Session) -> int:
                seen.append(reader)
                return _count(reader)

            assert read_side_by_side(session, side, _count) == (1, 1)
            assert seen == [session]
    finally:
        engine.dispose()
