"""Engine, declarative base, column types and the one transaction helper.

Transactions: services and repositories only ``flush`` (and write with Core statements in the
session's transaction). A unit of work commits or rolls back once: the HTTP edge does it per
request (:func:`market.core.http.provide_db_session`; a POST's :meth:`Idempotency.run
<market.core.idempotency.Idempotency.run>` commits in the handler's thread), tasks and CLI commands
do it with :func:`unit_of_work`.
"""

from __future__ import annotations

import select
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Context, Decimal
from enum import StrEnum
from typing import Any, ClassVar

import msgspec
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Dialect, Enum, MetaData, Numeric, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator, TypeEngine

from market.core.amounts import canonical, decimal_places

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


_EXACT = Context(prec=60)
SQLITE_MAX = 2**63 - 1
SQLITE_MIN = -(2**63)
SQLITE_MAX_VALUE = Decimal(SQLITE_MAX).scaleb(-6)


class ExactDecimal(TypeDecorator[Decimal]):
    """A ``Decimal`` stored exactly on every backend, never as a float.

    PostgreSQL stores ``NUMERIC(precision, scale)``. SQLite has no exact decimal type (its
    NUMERIC affinity is a float), so there the value is stored as an integer count of
    ``10**-scale`` units, which keeps ordering and ``SUM`` exact; the embedded store's range is
    therefore ±9.2e12 at 6 places, far above every bound the services allow. A value with more
    decimal places than ``scale``, a non-finite value or one out of range is refused, never rounded.
    """

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int = 20, scale: int = 6) -> None:
        super().__init__()
        self.precision = precision
        self.scale = scale

    def __repr__(self) -> str:
        return f"ExactDecimal({self.precision}, {self.scale})"

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def _checked(self, value: Decimal) -> Decimal:
        """``value`` as a Decimal, refused if it is not finite or has more than ``scale`` places."""
        value = Decimal(value)
        if not value.is_finite():
            raise ValueError(f"{value} is not a finite amount")
        if decimal_places(value) > self.scale:
            raise ValueError(f"{value} has more than {self.scale} decimal places")
        return value

    def _units(self, value: Decimal, range_name: str) -> int:
        """A checked value as its integer count of ``10**-scale`` units, refused outside 64 bits."""
        scaled = int(value.scaleb(self.scale, context=_EXACT))
        if not SQLITE_MIN <= scaled <= SQLITE_MAX:
            raise ValueError(f"{value} is outside the range {range_name} (±{SQLITE_MAX_VALUE})")
        return scaled

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = self._checked(value)
        if dialect.name == "sqlite":
            return self._units(value, "SQLite can store exactly")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return self._from_units(value)
        return canonical(Decimal(value))

    def _from_units(self, value: Any) -> Decimal:
        return canonical(Decimal(int(value)).scaleb(-self.scale))


class ScaledDecimal(ExactDecimal):
    """A ``Decimal`` stored as the integer count of ``10**-scale`` units (BIGINT) on every backend:
    what :class:`ExactDecimal` stores on SQLite, now on PostgreSQL too. For the million-row line
    tables: COPY moves plain integers (PostgreSQL parses BIGINT about a quarter faster than
    NUMERIC(20, 6), measured on settlement_line's shape, and nothing is rendered as decimal text),
    and ``SUM`` stays exact. The range is ±9.2e12 at 6 places; the same checks as ExactDecimal apply
    (more places than ``scale``, non-finite or out of range: refused, never rounded). A reader of the
    raw table divides by ``10**scale``."""

    cache_ok = True

    def __repr__(self) -> str:
        return f"ScaledDecimal({self.precision}, {self.scale})"

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(BigInteger())

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return self._units(self._checked(value), "of a 64-bit count of units")

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return self._from_units(value)


def str_enum(kind: type[StrEnum], name: str, length: int = 24) -> Enum:
    """A string enum column: plain VARCHAR with a CHECK constraint on both backends (no PostgreSQL
    enum type, so adding a member is an ordinary migration)."""
    return Enum(
        kind,
        native_enum=False,
        length=length,
        values_callable=lambda e: [m.value for m in e],
        create_constraint=True,
        name=name,
    )


class Base(DeclarativeBase):
    """Declarative base of every table in every context."""

    metadata: ClassVar[MetaData] = MetaData(naming_convention=NAMING_CONVENTION)


class IdMixin:
    """A random UUID primary key: ids are never guessable or sequential across participants."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class CreatedAtMixin:
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


def normalise_database_url(url: str) -> str:
    """Use the psycopg 3 driver for PostgreSQL whatever driver the user spelled."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername != "postgresql+psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def server_has_spoken(connection: Any) -> bool:
    """Whether an idle connection's socket has something to read. An idle PostgreSQL connection
    (no query in flight, no LISTEN) receives nothing unless the server is closing it: a terminated
    backend (``pg_terminate_backend``, a restart, ``idle_session_timeout``) sends its FATAL error and
    closes. One ``poll`` system call with no wait, no round trip."""
    poller = select.poll()
    poller.register(connection.fileno(), select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


def _ping_if_the_server_spoke(engine: Engine) -> None:
    """Pessimistic disconnect handling at the price of a system call (SQLAlchemy's ``pool_pre_ping``
    costs a ``SELECT 1`` round trip on every checkout: 0.24 ms of CPU of the 0.7 ms a one-query
    session took, measured). A pooled connection whose socket is readable is pinged; if the ping
    fails, the pool replaces it before anyone uses it. A readable socket that still answers (data of
    the transport layer, say) is kept. A peer that vanished without closing the connection is not
    seen here; a later query fails and SQLAlchemy then invalidates the pool, as with the pre-ping."""

    def checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if server_has_spoken(dbapi_connection):
            try:
                engine.dialect.do_ping(dbapi_connection)
            except Exception as exc:
                raise DisconnectionError(f"the server closed this pooled connection: {exc}") from exc

    event.listen(engine, "checkout", checkout)


def make_engine(url: str, *, echo: bool = False, pool_size: int = 10) -> Engine:
    url = normalise_database_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # JSON columns (an offer's profile and tranches, every audit event's before and after) through
    # msgspec's C codec rather than the json module, which psycopg calls by default: json.dumps
    # was 3 % of the API server's Python time under the offer mix. psycopg takes the bytes as they come.
    engine = create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        json_serializer=msgspec.json.encode,
        json_deserializer=msgspec.json.decode,
    )
    _ping_if_the_server_spoke(engine)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit if the block succeeds, roll back if it raises."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
