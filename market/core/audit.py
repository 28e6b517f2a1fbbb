"""The audit log: who did what to orders, markets, API keys, clearing and settlement runs.

One :class:`AuditEvent` row per change: when, the actor (participant and API key, or the name of
the task that acted), the action (``offer.revise``...), the object, its state before and after
(JSON snapshots of the row) and the request id. The table is append-only: the database refuses
UPDATE and DELETE (PostgreSQL: trigger ``flex_refuse_change()`` of migration 0004; SQLite: a
``RAISE(ABORT)`` trigger), see migration 0008.

Services record events with :func:`record` / :func:`record_many` in the same session as the change,
before the unit of work commits, so an event exists exactly when its change is committed: a refused
or failed request rolls both back.

Request context: :class:`RequestContextMiddleware` takes ``X-Request-ID`` from the client when it is
a sane token (1 to 64 of ``[A-Za-z0-9._-]``), else makes a UUID, and puts it into a context variable
that services read (:func:`current_request`); :func:`echo_request_id` returns it in the response
header, on errors too. After authentication the principal joins the context, so a service that is
not handed a principal (``clear_day``, ``settle_day``) still records who asked. Tasks and CLI
commands run without a request context: their events have no request id and the actor is the name
the task was given (``triggered_by``, e.g. ``schedule``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import msgspec
import psycopg
from advanced_alchemy.types import DateTimeUTC
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.pagination import OffsetPagination
from litestar.params import QueryParameter
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy import JSON, Index, String, insert, inspect, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from market.auth.principal import Principal
from market.auth.principal import Scope as KeyScope
from market.core.db import Base, IdMixin, utcnow
from market.core.errors import Forbidden
from market.core.queries import Page, paginate
from market.core.schema import CamelStruct

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

# -- the table ----------------------------------------------------------------------------------


class AuditEvent(IdMixin, Base):
    """One change, as it was committed. Never updated or deleted (database triggers refuse it)."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_object", "object_id", "at"),
        Index("ix_audit_event_actor", "actor_participant_id", "at"),
        Index("ix_audit_event_at", "at"),
    )

    at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    """``{role}:{participant id}`` for an API caller, else the task's name (``schedule``, ``demo``...)."""
    # No foreign keys: the log must outlive and never block anything it mentions.
    actor_participant_id: Mapped[uuid.UUID | None]
    actor_api_key_id: Mapped[uuid.UUID | None]
    action: Mapped[str] = mapped_column(String(40))
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[uuid.UUID]
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    request_id: Mapped[str | None] = mapped_column(String(64))


# -- the request context ------------------------------------------------------------------------


@dataclass(slots=True)
class RequestContext:
    """What services may know about the HTTP request they run in."""

    request_id: str
    principal: Principal | None = None


_CURRENT: ContextVar[RequestContext | None] = ContextVar("flexmarket_request", default=None)


def current_request() -> RequestContext | None:
    """The request being served, or None in a task or CLI command."""
    return _CURRENT.get()


def bind_principal(principal: Principal) -> None:
    """Called by authentication: the request's actor is now known."""
    context = _CURRENT.get()
    if context is not None:
        context.principal = principal


def request_id_from(header: str | None) -> str:
    """The client's ``X-Request-ID`` if it is a sane token, else a new UUID (never trust odd input
    into logs and the audit table)."""
    if header is not None and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return str(uuid.uuid4())


class RequestContextMiddleware(ASGIMiddleware):
    """Outermost middleware: give every HTTP request its id and a context for the services."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        header = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = request_id_from(header.decode("latin-1") if header is not None else None)
        scope["state"]["request_id"] = request_id
        token = _CURRENT.set(RequestContext(request_id))
        try:
            await next_app(scope, receive, send)
        finally:
            _CURRENT.reset(token)


async def echo_request_id(message: Message, scope: Scope) -> None:
    """A ``before_send`` hook: every response, errors included, names its request id."""
    if message["type"] == "http.response.start":
        request_id = scope.get("state", {}).get("request_id")
        if request_id is not None:
            message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]


# -- recording ----------------------------------------------------------------------------------


def jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    """Column values as JSON: UUIDs, datetimes and Decimals become strings (decimals exact)."""
    return msgspec.to_builtins(dict(values))  # type: ignore[no-any-return]


def column_values(obj: Any, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The row ``obj`` by column, without ``exclude``."""
    mapper = inspect(obj).mapper
    return {a.key: getattr(obj, a.key) for a in mapper.column_attrs if a.key not in exclude}


def snapshot(obj: Any, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The row ``obj`` as JSON, by column, without ``exclude`` (secrets, large blobs)."""
    return jsonable(column_values(obj, exclude))


def _actor(principal: Principal | None, actor: str | None) -> tuple[str, uuid.UUID | None, uuid.UUID | None]:
    context = current_request()
    if principal is None and context is not None:
        principal = context.principal
    if principal is None:
        return (actor or "system")[:64], None, None
    name = actor or f"{principal.role.value}:{principal.participant_id}"
    return name[:64], principal.participant_id, principal.api_key_id


def event_row(
    action: str,
    object_type: str,
    object_id: uuid.UUID,
    *,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    principal: Principal | None = None,
    actor: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """One event's column values (``before``/``after`` as given; :func:`record` and
    :func:`record_many` turn them into JSON). The actor is ``principal`` if given, else the request's
    principal, else ``actor`` (a task's name); ``actor`` also overrides the label of a principal."""
    name, participant_id, api_key_id = _actor(principal, actor)
    context = current_request()
    return {
        "id": uuid.uuid4(),
        "at": at or utcnow(),
        "actor": name,
        "actor_participant_id": participant_id,
        "actor_api_key_id": api_key_id,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "before": before,
        "after": after,
        "request_id": context.request_id if context is not None else None,
    }


def record(
    session: Session,
    action: str,
    object_type: str,
    object_id: uuid.UUID,
    *,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    principal: Principal | None = None,
    actor: str | None = None,
) -> uuid.UUID:
    """Append one event in the session's transaction, at once, and return its id (see
    :func:`event_row` for the actor). One Core INSERT: the log has no foreign keys, so the event
    need not wait for the session's flush, and no ORM object is made for a row nobody reads back."""
    row = event_row(
        action,
        object_type,
        object_id,
        before=jsonable(before) if before is not None else None,
        after=jsonable(after) if after is not None else None,
        principal=principal,
        actor=actor,
    )
    session.connection().execute(_INSERT_EVENT, row)
    return row["id"]  # type: ignore[no-any-return]


_INSERT_EVENT = insert(AuditEvent)
AUDIT_COLUMNS = [c.name for c in AuditEvent.__table__.columns]
_COPY_CHUNK_ROWS = 2_000


def _escape(text: str) -> str:
    """Text for PostgreSQL's COPY text format: backslash and the row/column separators escaped."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_text(column: str, value: Any) -> str:
    """A value in COPY text format (``\\N`` is NULL)."""
    if value is None:
        return "\\N"
    if column in ("before", "after"):
        # msgspec writes UUIDs, datetimes and Decimals as jsonable() does, without the detour, and
        # escapes control characters itself, so only backslashes need doubling.
        return msgspec.json.encode(value).decode().replace("\\", "\\\\")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return _escape(str(value))


def _copy_lines(rows: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    for offset in range(0, len(rows), _COPY_CHUNK_ROWS):
        chunk = rows[offset : offset + _COPY_CHUNK_ROWS]
        yield "".join("\t".join([_copy_text(c, row[c]) for c in AUDIT_COLUMNS]) + "\n" for row in chunk)


def record_many(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append many events (from :func:`event_row`) in the session's transaction: COPY on
    PostgreSQL, one executemany elsewhere. Used for batches, where one INSERT per event would cost
    more than the batch itself."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        json_rows = [
            {**row, **{c: jsonable(row[c]) for c in ("before", "after") if row[c] is not None}} for row in rows
        ]
        session.execute(insert(AuditEvent), json_rows)
        return
    raw = connection.connection.driver_connection
    if not isinstance(raw, psycopg.Connection):
        raise TypeError(f"COPY needs a psycopg connection, not {type(raw).__name__}")
    with raw.cursor() as cursor, cursor.copy(f"COPY audit_event ({', '.join(AUDIT_COLUMNS)}) FROM STDIN") as copy:
        for block in _copy_lines(rows):
            copy.write(block)


def events_of_json_rows(
    action: str, object_type: str, *, principal: Principal | None = None
) -> tuple[str, dict[str, Any]]:
    """A PostgreSQL INSERT of one event per element of a JSON array of rows, and its parameters
    but ``rows`` (the array's text) and ``ids`` (the rows' ids in the same order), which the
    caller adds. Each event's object is its row's id, passed apart so the server need not parse
    every element again to find it, and its ``after`` is the row's JSON as sent, as
    :func:`record_many` would store it. The events share actor, time and request (see
    :func:`event_row`). For batches whose rows go to the server as JSON anyway: Python renders
    nothing more for their events.
    """
    event = event_row(action, object_type, uuid.UUID(int=0), principal=principal)
    sql = (
        "INSERT INTO audit_event (id, at, actor, actor_participant_id, actor_api_key_id, action, object_type,"
        " object_id, before, after, request_id)"
        " SELECT gen_random_uuid(), %(at)s, %(actor)s, %(actor_participant_id)s, %(actor_api_key_id)s,"
        " %(action)s, %(object_type)s, object_id, NULL, element, %(request_id)s"
        " FROM unnest(%(ids)s::uuid[], ARRAY(SELECT json_array_elements(%(rows)s::json))) AS row_(object_id, element)"
    )
    keys = ("at", "actor", "actor_participant_id", "actor_api_key_id", "action", "object_type", "request_id")
    return sql, {key: event[key] for key in keys}


# -- reading (operator) -------------------------------------------------------------------------


class AuditEventRead(CamelStruct):
    id: uuid.UUID
    at: datetime
    actor: str
    actor_participant_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None
    action: str
    object_type: str
    object_id: uuid.UUID
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None


def list_events(
    session: Session,
    principal: Principal,
    page: Page,
    *,
    object_id: uuid.UUID | None = None,
    actor: str | None = None,
    action: str | None = None,
) -> tuple[list[AuditEvent], int]:
    """Events oldest first. ``actor`` matches the actor's participant id (when it is a UUID) or the
    actor label (``schedule``, ``household:<id>``...). Only the operator with an admin key reads
    the log: it names every participant's actions."""
    principal.require_operator()
    if KeyScope.ADMIN not in principal.scopes:
        raise Forbidden(detail="reading the audit log needs an API key with the scope 'admin'")
    statement = select(AuditEvent)
    if object_id is not None:
        statement = statement.where(AuditEvent.object_id == object_id)
    if actor is not None:
        try:
            statement = statement.where(AuditEvent.actor_participant_id == uuid.UUID(actor))
        except ValueError:
            statement = statement.where(AuditEvent.actor == actor)
    if action is not None:
        statement = statement.where(AuditEvent.action == action)
    return paginate(session, statement.order_by(AuditEvent.at, AuditEvent.id), page)


class AuditEventController(Controller):
    path = "/audit-events"
    tags = ("audit",)

    @get(sync_to_thread=True, summary="Read the audit log (operator, admin scope)")
    def list(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        page: NamedDependency[Page],
        object_id: Annotated[uuid.UUID | None, QueryParameter(description="the changed object")] = None,
        actor: Annotated[
            str | None, QueryParameter(max_length=64, description="a participant id or an actor label")
        ] = None,
        action: Annotated[str | None, QueryParameter(max_length=40, description="e.g. offer.revise")] = None,
    ) -> OffsetPagination[AuditEventRead]:
        rows, total = list_events(db_session, principal, page, object_id=object_id, actor=actor, action=action)
        return OffsetPagination([AuditEventRead.from_model(r) for r in rows], page.limit, page.offset, total)
