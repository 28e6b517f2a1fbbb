"""Issued statements and the per-issuer number sequence.

An issued statement is frozen: it names the settlement runs it covers (which never change), so every
later download (JSON, CSV or PDF) is rebuilt from exactly those runs and shows the figures and number
that were issued. When later runs change a period, issuing again makes a new statement with the
next number that supersedes the old.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import JSON, Date, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from market.core.db import Base, ExactDecimal, IdMixin, utcnow


class StatementSequence(Base):
    """The next statement number of one issuer (a market). Incremented in the transaction that
    issues the statement, under a row lock, so numbers are sequential and gap-free."""

    __tablename__ = "statement_sequence"

    market_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market.id", ondelete="RESTRICT"), primary_key=True)
    last_number: Mapped[int] = mapped_column(default=0)


class Statement(IdMixin, Base):
    __tablename__ = "statement"
    __table_args__ = (
        UniqueConstraint("market_id", "sequence"),
        UniqueConstraint("number"),
        Index("ix_statement_participant", "participant_id", "period_start"),
    )

    market_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market.id", ondelete="RESTRICT"))
    participant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("participant.id", ondelete="RESTRICT"))
    sequence: Mapped[int]
    number: Mapped[str] = mapped_column(String(64))
    period_start: Mapped[date] = mapped_column(Date())
    period_end: Mapped[date] = mapped_column(Date())
    runs_key: Mapped[str] = mapped_column(String(64))
    """Hash of the settlement runs the statement covers: issuing again with the same runs returns this one."""
    runs: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    """``[{"id", "day", "kind", "version"}]``: the run of each settled day the statement covers."""
    line_count: Mapped[int]
    amount_due: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    currency: Mapped[str] = mapped_column(String(3))
    supersedes_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("statement.id", ondelete="RESTRICT"))
    issued_by: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
