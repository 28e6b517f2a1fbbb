"""Settlement terms per market, settlement runs, and the per-line amounts each run computed.

A run is versioned per (market, delivery day): version 1 is the ``initial`` run, later versions are
``reconciliation`` runs and the last may be ``final``. A run never edits what an earlier one stored;
the ledger receives only the differences (see :mod:`settlement.runs.service`).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import JSON, CheckConstraint, Date, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from market.core.db import Base, ExactDecimal, IdMixin, ScaledDecimal, str_enum, utcnow
from settlement.delivery.models import DeliveryStatus


class RunKind(StrEnum):
    """MARKET.md, Settlement runs: ``initial`` at D+1, ``reconciliation`` after corrections, ``final``
    closes the day."""

    INITIAL = "initial"
    RECONCILIATION = "reconciliation"
    FINAL = "final"


class SettlementStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class MarketSettlementTerms(Base):
    """A market's settlement terms (see :class:`settlement.runs.terms.SettlementTerms`) and schedule."""

    __tablename__ = "market_settlement_terms"

    market_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market.id", ondelete="RESTRICT"), primary_key=True)
    terms: Mapped[dict[str, Any]] = mapped_column(JSON)
    """``SettlementTerms.to_dict()``: money rules, stored as exact decimal strings."""
    holiday_country: Mapped[str | None] = mapped_column(String(8))
    """ISO 3166 code (optionally ``NL-xx`` subdivision) whose public holidays count as unlike days for baselines."""
    initial_after_hours: Mapped[int] = mapped_column(default=24)
    """Initial settlement is due this many hours after the end of the delivery day (D+1)."""
    final_after_days: Mapped[int] = mapped_column(default=30)
    """The final run is due this many days after the delivery day; no run follows it."""
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


class SettlementRun(IdMixin, Base):
    """One settlement of one market's delivery day."""

    __tablename__ = "settlement_run"
    __table_args__ = (
        UniqueConstraint("market_id", "delivery_day", "version"),
        # One run in progress per market and day, whatever its kind (the service also holds an advisory lock).
        Index(
            "uq_settlement_run_one_running",
            "market_id",
            "delivery_day",
            unique=True,
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        CheckConstraint("version > 0", name="version_positive"),
    )

    market_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market.id", ondelete="RESTRICT"))
    delivery_day: Mapped[date] = mapped_column(Date())
    kind: Mapped[RunKind] = mapped_column(str_enum(RunKind, "settlement_run_kind"))
    version: Mapped[int]
    status: Mapped[SettlementStatus] = mapped_column(str_enum(SettlementStatus, "settlement_status"))
    clearing_run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clearing_run.id", ondelete="RESTRICT"))
    delivery_computation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("delivery_computation.id", ondelete="RESTRICT")
    )
    terms: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The terms this run applied (a snapshot, so a later change of terms never rewrites history)."""
    currency: Mapped[str] = mapped_column(String(3))
    line_count: Mapped[int] = mapped_column(default=0)
    entry_count: Mapped[int] = mapped_column(default=0)
    """Ledger transfers this run posted: only differences against earlier runs, so 0 when nothing changed."""
    total_utilisation: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6), default=Decimal(0))
    total_penalty: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6), default=Decimal(0))
    total_availability: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6), default=Decimal(0))
    total_fee: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6), default=Decimal(0))
    inputs_hash: Mapped[str] = mapped_column(String(64))
    """Hash of the clearing result, the delivery computation and the terms: unchanged means nothing to post."""
    triggered_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)


class SettlementLine(Base):
    """What one run computed for one award (offer) in one ISP: the statement's line, traceable to its delivery row."""

    __tablename__ = "settlement_line"

    # Primary key (run, seller, offer, ISP): one index for uniqueness and for a seller's lines of a run.
    # run_id has no per-row foreign key: the run's existence is checked once per COPY, runs are never
    # deleted and lines are append-only (migration 0009).
    run_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    seller_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    offer_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    isp_start: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), primary_key=True)
    # No index: a market has few utilities, so one would cost every COPY and select almost nothing.
    utility_id: Mapped[uuid.UUID]
    # kW, prices and money as BIGINT millionths (ScaledDecimal, migration 0011): a run COPYs a million lines.
    ordered_kw: Mapped[Decimal] = mapped_column(ScaledDecimal(20, 6))
    # The award's delivery, as the run's delivery computation found it (migration 0010: an award is
    # written once per run; a computation made by the run itself writes no delivery_line rows).
    baseline_kw: Mapped[Decimal | None] = mapped_column(ScaledDecimal(20, 6))
    actual_kw: Mapped[Decimal | None] = mapped_column(ScaledDecimal(20, 6))
    status: Mapped[DeliveryStatus] = mapped_column(str_enum(DeliveryStatus, "delivery_status", 20))
    method: Mapped[str] = mapped_column(String(32))
    method_version: Mapped[int]
    delivered_kw: Mapped[Decimal] = mapped_column(ScaledDecimal(20, 6))
    shortfall_kw: Mapped[Decimal] = mapped_column(ScaledDecimal(20, 6))
    price_per_mwh: Mapped[Decimal] = mapped_column(ScaledDecimal(20, 6))
    utilisation: Mapped[Decimal] = mapped_column(ScaledDecimal(20, 6))
    penalty: Mapped[Decimal] = mapped_column(ScaledDecimal(20, 6))
    availability: Mapped[Decimal] = mapped_column(ScaledDecimal(20, 6))
    fee: Mapped[Decimal] = mapped_column(ScaledDecimal(20, 6))
    net: Mapped[Decimal] = mapped_column(ScaledDecimal(20, 6))


class PassThroughShare(Base):
    """An aggregator's revenue for one offer and run, allocated to one member site's owner."""

    __tablename__ = "pass_through_share"

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("settlement_run.id", ondelete="RESTRICT"), primary_key=True)
    offer_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("site.id", ondelete="RESTRICT"), primary_key=True)
    aggregator_id: Mapped[uuid.UUID] = mapped_column(index=True)
    member_id: Mapped[uuid.UUID] = mapped_column(index=True)
    delivered_kwh: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    share: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
