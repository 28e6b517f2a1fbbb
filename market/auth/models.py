from __future__ import annotations

import uuid
from datetime import datetime

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from market.core.db import Base, CreatedAtMixin, IdMixin


class ApiKey(IdMixin, CreatedAtMixin, Base):
    """An API key. Only the public ``key_id`` and a peppered hash of the secret are stored."""

    __tablename__ = "api_key"

    participant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("participant.id", ondelete="RESTRICT"), index=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
