"""``Idempotency-Key`` for every POST: the same key and body replay the first response; the same key
with another body is a 409. The record is written in the request's own transaction, so a response
is remembered exactly when its effect is committed. Concurrent first uses of one key collide on the
primary key and only one commits."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from advanced_alchemy.types import DateTimeUTC
from litestar import Request, Response
from litestar.datastructures import State
from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from market.auth.principal import Principal
from market.core.db import Base, utcnow
from market.core.errors import Conflict, InvalidInput
from market.core.http import committed

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY = re.compile(r"[\x21-\x7e]{1,255}")


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_record"

    participant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("participant.id", ondelete="RESTRICT"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int]
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    """None when the response must not be stored (it held a secret shown only once)."""
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


@dataclass(frozen=True, slots=True)
class Idempotency:
    """The idempotency context of one request: its key (if any) and a fingerprint of the request."""

    key: str | None
    fingerprint: str

    def run(
        self,
        session: Session,
        principal: Principal,
        produce: Callable[[], Any],
        *,
        status_code: int = 201,
        store_body: bool = True,
    ) -> Response[Any]:
        """Run ``produce`` once per key; encode its result as the JSON response; commit, in the
        handler's worker thread (:func:`market.core.http.committed`)."""
        return committed(
            session, self._run(session, principal, produce, status_code=status_code, store_body=store_body)
        )

    def _run(
        self,
        session: Session,
        principal: Principal,
        produce: Callable[[], Any],
        *,
        status_code: int,
        store_body: bool,
    ) -> Response[Any]:
        if self.key is None:
            return Response(msgspec.json.encode(produce()), status_code=status_code, media_type="application/json")
        record = session.get(IdempotencyRecord, (principal.participant_id, self.key))
        if record is not None:
            if record.request_hash != self.fingerprint:
                raise Conflict.on(f"header.{HEADER}", "already used for a different request")
            if record.body is None:
                raise Conflict.on(
                    f"header.{HEADER}",
                    "the request succeeded before; its response held a secret "
                    "that is shown only once, so it cannot be replayed",
                )
            return Response(
                record.body,
                status_code=record.status_code,
                media_type="application/json",
                headers={REPLAYED_HEADER: "true"},
            )
        body = msgspec.json.encode(produce())
        session.add(
            IdempotencyRecord(
                participant_id=principal.participant_id,
                key=self.key,
                request_hash=self.fingerprint,
                status_code=status_code,
                body=body if store_body else None,
            )
        )
        session.flush()
        return Response(body, status_code=status_code, media_type="application/json")


async def provide_idempotency(request: Request[Any, Any, State]) -> Idempotency:
    key = request.headers.get(HEADER)
    if key is None:
        return Idempotency(key=None, fingerprint="")  # nothing to remember: no fingerprint needed
    if not _KEY.fullmatch(key):
        raise InvalidInput.on(f"header.{HEADER}", "must be 1 to 255 visible ASCII characters")
    digest = hashlib.sha256()
    digest.update(f"{request.method} {request.url.path}?{request.url.query}\n".encode())
    digest.update(await request.body())
    return Idempotency(key=key, fingerprint=digest.hexdigest())
