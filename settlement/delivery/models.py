"""Delivered flexibility, stored with the baseline and actual it came from.

A computation is versioned per (market, day); a new one is made only when its inputs (awards,
current meter readings, baseline assignments and nominations) changed, identified by ``inputs_hash``.
A computation made by a settlement run is ``embedded``: its award lines live in that run's
settlement lines (migration 0010), so a run writes each award once.

Lines are written a million at a time by COPY, so they name their computation without a per-row
foreign key (2.5 s per million rows): the database checks the parent once per statement instead
(migration 0009: a statement trigger on PostgreSQL, a row trigger on SQLite), computations are
never deleted, and lines are append-only.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Date, ForeignKey, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from market.core.db import Base, ExactDecimal, IdMixin, ScaledDecimal, str_enum, utcnow


class DeliveryStatus(StrEnum):
    """``ok``: baseline and actual known. ``no_baseline``: the method lacked history or a nomination.
    ``missing_readings``: no (complete) meter data for the ISP. Both of the latter count as 0 delivered."""

    OK = "ok"
    NO_BASELINE = "no_baseline"
    MISSING_READINGS = "missing_readings"


class DeliveryComputation(IdMixin, Base):
    __tablename__ = "delivery_computation"
    __table_args__ = (UniqueConstraint("market_id", "delivery_day", "version"),)

    market_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market.id", ondelete="RESTRICT"))
    delivery_day: Mapped[date] = mapped_column(Date())
    version: Mapped[int]
    clearing_run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clearing_run.id", ondelete="RESTRICT"))
    inputs_hash: Mapped[str] = mapped_column(String(64))
    line_count: Mapped[int]
    embedded: Mapped[bool] = mapped_column(default=False, server_default=false())
    """Made by a settlement run: its award lines are that run's settlement lines (which carry each
    award's baseline, actual, delivered kW, status and method), not delivery_line rows. Member-site
    delivery is stored in member_delivery either way."""
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


class DeliveryLine(Base):
    """One award (offer × ISP): ordered, baseline, actual and delivered kW (Σ over member sites for a portfolio)."""

    __tablename__ = "delivery_line"

    computation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    """The computation (no foreign key: its existence is checked once per COPY; see the module docstring)."""
    offer_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    isp_start: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), primary_key=True)
    seller_id: Mapped[uuid.UUID]
    resource_id: Mapped[uuid.UUID]
    direction: Mapped[str] = mapped_column(String(8))
    ordered_kw: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    baseline_kw: Mapped[Decimal | None] = mapped_column(ExactDecimal(20, 6))
    actual_kw: Mapped[Decimal | None] = mapped_column(ExactDecimal(20, 6))
    delivered_kw: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    status: Mapped[DeliveryStatus] = mapped_column(str_enum(DeliveryStatus, "delivery_status", 20))
    method: Mapped[str] = mapped_column(String(32))
    method_version: Mapped[int]


class MemberDelivery(Base):
    """A portfolio member site's share of a portfolio award: the basis of the aggregator's pass-through."""

    __tablename__ = "member_delivery"

    computation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    """The computation (checked once per COPY, like :attr:`DeliveryLine.computation_id`)."""
    offer_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    site_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    isp_start: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), primary_key=True)
    baseline_kw: Mapped[Decimal | None] = mapped_column(ScaledDecimal(20, 6))
    actual_kw: Mapped[Decimal | None] = mapped_column(ScaledDecimal(20, 6))
    delivered_kw: Mapped[Decimal] = mapped_column(ScaledDecimal(20, 6))
