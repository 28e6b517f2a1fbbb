"""Orders are stored with a dense ISP profile: ``period_start`` plus one quantity per ISP.

ISPs inside the period that the order does not cover carry 0 kW. Quantities are exact decimal
strings in a JSON list, so both PostgreSQL and SQLite keep them exactly and a whole profile is one
column (one row per offer keeps batch ingestion and book loading fast).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from market.core.db import Base, ExactDecimal, IdMixin, str_enum, utcnow


class Direction(StrEnum):
    """``up``: less consumption or more generation. ``down``: the reverse (MARKET.md, Orders)."""

    UP = "up"
    DOWN = "down"


class OrderState(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


def _direction_column() -> Mapped[Direction]:
    return mapped_column(str_enum(Direction, "direction", 8))


class OrderMixin(IdMixin):
    """What requests and offers share: the profile, revision, expiry, revocation and time priority."""

    market_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market.id", ondelete="RESTRICT"))
    congestion_point_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("congestion_point.id", ondelete="RESTRICT"))
    direction: Mapped[Direction] = _direction_column()
    period_start: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    quantities_kw: Mapped[list[str]] = mapped_column(JSON)
    revision: Mapped[int] = mapped_column(default=1)
    expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    submitted_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    """Time priority: set on creation and on every revision (a revision queues anew)."""


class FlexRequest(OrderMixin, Base):
    """A utility's request for flexibility at a congestion point, up to a maximum price."""

    __tablename__ = "flex_request"
    __table_args__ = (
        Index("ix_flex_request_market_period", "market_id", "period_start"),
        Index("ix_flex_request_utility", "utility_id", "submitted_at"),
    )

    utility_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("participant.id", ondelete="RESTRICT"))
    max_price_per_mwh: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))


class FlexOffer(OrderMixin, Base):
    """A seller's offer of flexibility from one site or one aggregator portfolio.

    Price: either one ``price_per_mwh`` or ``tranches``, a convex piecewise curve: a list of
    ``[share, price]`` where tranche k covers ``share`` of the offered kW in every ISP and prices
    never fall. ``min_acceptance_fraction`` of 1 makes the offer all-or-nothing. ``is_block``
    accepts the whole profile with one activation factor; a ``rebound`` profile (opposite
    direction) then scales with that factor. ``storage_*`` links ISPs through a state of charge.
    """

    __tablename__ = "flex_offer"
    __table_args__ = (
        CheckConstraint("(site_id IS NULL) <> (portfolio_id IS NULL)", name="one_resource"),
        CheckConstraint("(price_per_mwh IS NULL) <> (tranches IS NULL)", name="one_price_form"),
        CheckConstraint("min_acceptance_fraction >= 0", name="fraction_not_negative"),
        Index("ix_flex_offer_market_period", "market_id", "period_start"),
        Index("ix_flex_offer_seller", "seller_id", "submitted_at"),
    )

    seller_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("participant.id", ondelete="RESTRICT"))
    site_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("site.id", ondelete="RESTRICT"))
    portfolio_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("portfolio.id", ondelete="RESTRICT"))
    price_per_mwh: Mapped[Decimal | None] = mapped_column(ExactDecimal(20, 6))
    tranches: Mapped[list[list[str]] | None] = mapped_column(JSON(none_as_null=True))
    min_acceptance_fraction: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6), default=Decimal(0))
    is_block: Mapped[bool] = mapped_column(default=False)
    rebound_start: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    rebound_kw: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    storage_capacity_kwh: Mapped[Decimal | None] = mapped_column(ExactDecimal(20, 6))
    storage_initial_kwh: Mapped[Decimal | None] = mapped_column(ExactDecimal(20, 6))
    storage_efficiency: Mapped[Decimal | None] = mapped_column(ExactDecimal(20, 6))
