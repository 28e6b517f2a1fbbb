from __future__ import annotations

from datetime import time
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import CheckConstraint, String, Time
from sqlalchemy.orm import Mapped, mapped_column

from market.core.db import Base, CreatedAtMixin, ExactDecimal, IdMixin, str_enum


class PricingRule(StrEnum):
    """How accepted offers are paid (MARKET.md, Pricing rules)."""

    PAY_AS_CLEAR = "pay_as_clear"
    PAY_AS_BID = "pay_as_bid"


class GateClosureKind(StrEnum):
    """``day_ahead``: D-1 at a local time of day. ``intraday``: N minutes before each ISP."""

    DAY_AHEAD = "day_ahead"
    INTRADAY = "intraday"


ALLOWED_ISP_MINUTES = (5, 10, 15, 30, 60)


class Market(IdMixin, CreatedAtMixin, Base):
    """A market area: one time zone, one ISP grid, one gate closure and pricing rule, one currency."""

    __tablename__ = "market"
    __table_args__ = (
        CheckConstraint("isp_minutes IN (5, 10, 15, 30, 60)", name="isp_minutes_allowed"),
        CheckConstraint(
            "(gate_closure_kind = 'day_ahead' AND day_ahead_gate_time IS NOT NULL)"
            " OR (gate_closure_kind = 'intraday' AND intraday_lead_minutes IS NOT NULL)",
            name="gate_rule_complete",
        ),
        CheckConstraint("min_price_per_mwh <= max_price_per_mwh", name="price_bounds_ordered"),
        CheckConstraint("max_quantity_kw > 0", name="max_quantity_positive"),
    )

    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    isp_minutes: Mapped[int] = mapped_column(default=15)
    currency: Mapped[str] = mapped_column(String(3))
    pricing_rule: Mapped[PricingRule] = mapped_column(str_enum(PricingRule, "pricing_rule", 20))
    gate_closure_kind: Mapped[GateClosureKind] = mapped_column(str_enum(GateClosureKind, "gate_closure_kind", 20))
    day_ahead_gate_time: Mapped[time | None] = mapped_column(Time())
    intraday_lead_minutes: Mapped[int | None]
    min_price_per_mwh: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    max_price_per_mwh: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    max_quantity_kw: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
