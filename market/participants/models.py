from __future__ import annotations

import uuid
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from market.core.db import Base, CreatedAtMixin, IdMixin, str_enum


class Role(StrEnum):
    """USEF roles as MARKET.md names them."""

    HOUSEHOLD = "household"
    AGGREGATOR = "aggregator"
    DATA_CENTER = "data_center"
    UTILITY = "utility"
    OPERATOR = "operator"


FLEX_SELLERS = frozenset({Role.HOUSEHOLD, Role.AGGREGATOR, Role.DATA_CENTER})
"""Roles that sell flexibility and so may own sites."""


class AssetKind(StrEnum):
    BATTERY = "battery"
    EV = "ev"
    HEAT_PUMP = "heat_pump"
    PV = "pv"
    FLEXIBLE_LOAD = "flexible_load"


class Participant(IdMixin, CreatedAtMixin, Base):
    __tablename__ = "participant"

    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(str_enum(Role, "role", 20))
    contact_email: Mapped[str | None] = mapped_column(String(320))


class Site(IdMixin, CreatedAtMixin, Base):
    """A metered connection (site/meter) at one congestion point, owned by a flexibility seller."""

    __tablename__ = "site"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("participant.id", ondelete="RESTRICT"), index=True)
    congestion_point_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("congestion_point.id", ondelete="RESTRICT"), index=True
    )
    meter_code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    assets: Mapped[list[str]] = mapped_column(JSON, default=list)
    portfolio_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("portfolio.id", ondelete="RESTRICT"), index=True)


class Portfolio(IdMixin, CreatedAtMixin, Base):
    """An aggregator's portfolio of member sites at one congestion point (USEF: AGR portfolio per CP)."""

    __tablename__ = "portfolio"
    __table_args__ = (UniqueConstraint("aggregator_id", "name"),)

    aggregator_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("participant.id", ondelete="RESTRICT"), index=True)
    congestion_point_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("congestion_point.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
