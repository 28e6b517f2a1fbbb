"""Stored clearing results: the run with its hashes and input snapshot, FlexOrders (awards per offer
and ISP), the outcome of every offer, procurement per request, and prices per congestion point."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import JSON, Date, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from market.core.db import Base, ExactDecimal, IdMixin, str_enum, utcnow


class RunStatus(StrEnum):
    DONE = "done"
    FAILED = "failed"


class OfferOutcome(StrEnum):
    ACCEPTED = "accepted"
    NO_REQUEST = "no_request"
    ABOVE_MARGINAL_PRICE = "above_marginal_price"
    NOT_NEEDED = "not_needed"


class ClearingRun(IdMixin, Base):
    """One clearing of one market's delivery day. Unique per (market, day): a gate clears once."""

    __tablename__ = "clearing_run"
    __table_args__ = (UniqueConstraint("market_id", "delivery_day"),)

    market_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market.id", ondelete="RESTRICT"))
    delivery_day: Mapped[date] = mapped_column(Date())
    horizon_start: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    horizon_end: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    gate_closure_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    status: Mapped[RunStatus] = mapped_column(str_enum(RunStatus, "run_status"))
    pricing_rule: Mapped[str] = mapped_column(String(20))
    solver: Mapped[str] = mapped_column(String(20))
    input_hash: Mapped[str] = mapped_column(String(64))
    result_hash: Mapped[str] = mapped_column(String(64))
    welfare: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    offer_count: Mapped[int]
    request_count: Mapped[int]
    award_count: Mapped[int]
    book: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The input snapshot, so anyone with access can re-run the clearing and compare hashes."""
    triggered_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    duration_ms: Mapped[int]
    error: Mapped[str | None] = mapped_column(Text)


class FlexOrderAward(Base):
    """A FlexOrder: the kW accepted from one offer in one ISP, and the price it is paid."""

    __tablename__ = "flex_order"
    __table_args__ = (Index("ix_flex_order_seller", "seller_id", "isp_start"),)

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clearing_run.id", ondelete="RESTRICT"), primary_key=True)
    offer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("flex_offer.id", ondelete="RESTRICT"), primary_key=True)
    isp_start: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), primary_key=True)
    seller_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("participant.id", ondelete="RESTRICT"))
    congestion_point_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("congestion_point.id", ondelete="RESTRICT"))
    direction: Mapped[str] = mapped_column(String(8))
    accepted_kw: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    price_per_mwh: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))


class OfferResult(Base):
    """What became of every offer in the run: accepted, or the reason it was not."""

    __tablename__ = "offer_result"
    __table_args__ = (Index("ix_offer_result_seller", "seller_id", "run_id"),)

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clearing_run.id", ondelete="RESTRICT"), primary_key=True)
    offer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("flex_offer.id", ondelete="RESTRICT"), primary_key=True)
    seller_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("participant.id", ondelete="RESTRICT"))
    outcome: Mapped[OfferOutcome] = mapped_column(str_enum(OfferOutcome, "offer_outcome"))
    activation: Mapped[Decimal | None] = mapped_column(ExactDecimal(20, 6))


class RequestProcurement(Base):
    """kW procured for one request in one ISP."""

    __tablename__ = "request_procurement"
    __table_args__ = (Index("ix_request_procurement_utility", "utility_id", "run_id"),)

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clearing_run.id", ondelete="RESTRICT"), primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("flex_request.id", ondelete="RESTRICT"), primary_key=True)
    isp_start: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), primary_key=True)
    utility_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("participant.id", ondelete="RESTRICT"))
    requested_kw: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    procured_kw: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))


class PointPrice(Base):
    """Per congestion point, ISP and direction: requested, procured, unmet, and the price of relief."""

    __tablename__ = "point_price"

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clearing_run.id", ondelete="RESTRICT"), primary_key=True)
    congestion_point_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("congestion_point.id", ondelete="RESTRICT"), primary_key=True
    )
    isp_start: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), primary_key=True)
    direction: Mapped[str] = mapped_column(String(8), primary_key=True)
    requested_kw: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    procured_kw: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    unmet_kw: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    price_per_mwh: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
