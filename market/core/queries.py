"""Small query helpers shared by every service."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from market.core.errors import NotFound

M = TypeVar("M")


def get_or_404(session: Session, model: type[M], object_id: uuid.UUID, kind: str) -> M:
    obj = session.get(model, object_id)
    if obj is None:
        raise NotFound.of(kind, object_id)
    return obj


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    offset: int


def paginate(session: Session, statement: Select[M], page: Page) -> tuple[list[M], int]:
    """One page of ``statement``'s rows and the total count over all pages."""
    total = session.scalar(select(func.count()).select_from(statement.order_by(None).subquery())) or 0
    rows = list(session.scalars(statement.limit(page.limit).offset(page.offset)))
    return rows, int(total)


def unique_violation_field(exc: Any) -> str | None:
    """Best effort: the column named in a unique-constraint violation message, for the error body."""
    message = str(getattr(exc, "orig", exc))
    for marker in ("Key (", "UNIQUE constraint failed: "):
        if marker in message:
            tail = message.split(marker, 1)[1]
            return tail.split(")")[0].split(",")[0].split(".")[-1].strip()
    return None
