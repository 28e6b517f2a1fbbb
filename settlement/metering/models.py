"""Tables of settlement.metering: uploaded meter files, versioned readings, re-settlement marks.

Readings are append-only (a database trigger refuses UPDATE and DELETE): a reading sent again with
the same values changes nothing, a changed value is stored as the next version, and the current
value of a (site, ISP) is its highest version. MARKET.md: "Nothing is silently overwritten."
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import JSON, CheckConstraint, Date, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from market.core.db import Base, CreatedAtMixin, ExactDecimal, IdMixin, str_enum, utcnow


class MeterFileFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"
    JSON = "json"


class MeterFileStatus(StrEnum):
    """``pending``: stored, not processed yet. ``done``: validated and its valid rows stored (the
    report lists rejected rows). ``rejected``: unreadable as a whole; nothing stored."""

    PENDING = "pending"
    DONE = "done"
    REJECTED = "rejected"


class MeterFile(IdMixin, CreatedAtMixin, Base):
    """One uploaded file of readings, kept verbatim with its SHA-256 (the same content from the same
    uploader for the same market is one file) and, once processed, its validation report."""

    __tablename__ = "meter_file"
    __table_args__ = (
        UniqueConstraint("market_id", "uploaded_by", "sha256"),
        Index("ix_meter_file_market", "market_id", "created_at"),
        Index("ix_meter_file_pending", "status", "enqueued_at"),
    )

    market_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market.id", ondelete="RESTRICT"))
    uploaded_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("participant.id", ondelete="RESTRICT"))
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[MeterFileFormat] = mapped_column(str_enum(MeterFileFormat, "meter_file_format", 16))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int]
    # Deferred: listing files must not read their (up to 256 MiB) contents.
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    status: Mapped[MeterFileStatus] = mapped_column(str_enum(MeterFileStatus, "meter_file_status", 16))
    reason: Mapped[str | None] = mapped_column(Text)
    """Why a rejected file could not be read at all."""
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The validation report (see :class:`settlement.metering.schemas.MeterFileReport`)."""
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    resends: Mapped[int] = mapped_column(default=0)
    processed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class MeterReading(Base):
    """Energy of one site in one ISP, one version. Current value = the highest version.

    No foreign keys on ``site_id`` and ``file_id``, on purpose: this is the high-volume table (10M
    rows per file at 100k sites), PostgreSQL checks a foreign key with one query per inserted row,
    and the two keys made a bulk COPY into it about three times slower (measured: 1M rows in 18 s
    with both keys, 6.5 s without). Its only writer, :func:`settlement.metering.storage.store_readings`,
    takes site ids from the market's sites in the same transaction and file ids from the locked
    file row; sites and files are never deleted.
    """

    __tablename__ = "meter_reading"
    __table_args__ = (
        CheckConstraint("import_kwh >= 0", name="import_not_negative"),
        CheckConstraint("export_kwh >= 0", name="export_not_negative"),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    site_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    isp_start: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    import_kwh: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    export_kwh: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    file_id: Mapped[uuid.UUID]
    recorded_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


class ResettlementMark(Base):
    """A correction touched this site's delivery day (local day in the market's time zone): the day
    must be settled again. The settlement run that takes it up sets ``settled_by_run_id``."""

    __tablename__ = "resettlement_mark"
    __table_args__ = (Index("ix_resettlement_mark_open", "market_id", "settled_by_run_id", "delivery_day"),)

    market_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market.id", ondelete="RESTRICT"), primary_key=True)
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("site.id", ondelete="RESTRICT"), primary_key=True)
    delivery_day: Mapped[date] = mapped_column(Date(), primary_key=True)
    file_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meter_file.id", ondelete="RESTRICT"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    # No foreign key: the settlement run table belongs to a later migration.
    settled_by_run_id: Mapped[uuid.UUID | None]
