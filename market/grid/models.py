from __future__ import annotations

import uuid
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from market.core.db import Base, CreatedAtMixin, ExactDecimal, IdMixin, str_enum


class CongestionPointKind(StrEnum):
    FEEDER = "feeder"
    TRANSFORMER = "transformer"
    ZONE = "zone"


class CongestionPoint(IdMixin, CreatedAtMixin, Base):
    """A feeder, transformer or zone a utility manages. ``parent_id`` points towards the root."""

    __tablename__ = "congestion_point"
    __table_args__ = (UniqueConstraint("market_id", "code"),)

    market_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market.id", ondelete="RESTRICT"), index=True)
    utility_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("participant.id", ondelete="RESTRICT"), index=True)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("congestion_point.id", ondelete="RESTRICT"), index=True
    )
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[CongestionPointKind] = mapped_column(str_enum(CongestionPointKind, "congestion_point_kind", 20))


class Sensitivity(Base):
    """How much 1 kW of flexibility at ``source`` relieves ``target`` (a PTDF-like factor).

    Optional: without rows, a radial tree gives factor 1.0 from a point to itself and to each
    ancestor. See :func:`market.grid.relief.relief_factors` for how the two combine.
    """

    __tablename__ = "sensitivity"
    market_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market.id", ondelete="RESTRICT"), index=True)
    source_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("congestion_point.id", ondelete="RESTRICT"), primary_key=True
    )
    target_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("congestion_point.id", ondelete="RESTRICT"), primary_key=True
    )
    factor: Mapped[Decimal] = mapped_column(ExactDecimal(12, 6))
