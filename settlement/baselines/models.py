"""Which baseline method each site or portfolio uses, and participants' nominated baselines.

The methods themselves are pure and versioned in :mod:`settlement.baselines.methods`; a stored
assignment names a method and the parameters, and every delivery row records the method and version
it used.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import JSON, CheckConstraint, Date, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from market.core.db import Base, ExactDecimal, IdMixin, str_enum, utcnow


class ResourceKind(StrEnum):
    """What an offer is for: one site, or an aggregator's portfolio of member sites."""

    SITE = "site"
    PORTFOLIO = "portfolio"


class BaselineAssignment(IdMixin, Base):
    """The method a resource uses from ``valid_from`` on. No resource: the market's default.

    The assignment in force for a delivery day is the one with the latest ``valid_from`` on or
    before it (then the latest created); an assignment is never edited, a new one supersedes it.
    """

    __tablename__ = "baseline_assignment"
    __table_args__ = (
        CheckConstraint("(resource_id IS NULL) = (resource_kind IS NULL)", name="resource_complete"),
        Index("ix_baseline_assignment_lookup", "market_id", "resource_id", "valid_from"),
    )

    market_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market.id", ondelete="RESTRICT"))
    resource_kind: Mapped[ResourceKind | None] = mapped_column(str_enum(ResourceKind, "resource_kind", 12))
    resource_id: Mapped[uuid.UUID | None]
    method: Mapped[str] = mapped_column(String(32))
    method_version: Mapped[int]
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    valid_from: Mapped[date] = mapped_column(Date())
    created_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("participant.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


class BaselineNomination(Base):
    """A participant's own prognosis (USEF nominated baseline) for one resource and ISP, in kW of net
    consumption. Versioned: a new submission before gate closure adds a version; the latest version
    submitted before the ISP's gate closure is the one used (the service refuses later ones)."""

    __tablename__ = "baseline_nomination"

    resource_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    isp_start: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    resource_kind: Mapped[ResourceKind] = mapped_column(str_enum(ResourceKind, "resource_kind", 12))
    market_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market.id", ondelete="RESTRICT"))
    kw: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    submitted_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("participant.id", ondelete="RESTRICT"))
    submitted_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
