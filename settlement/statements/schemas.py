"""API schemas of statements."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from market.core.schema import CamelStruct


class StatementCreate(CamelStruct):
    """Issue a participant's statement for a period of delivery days (inclusive)."""

    market_id: uuid.UUID
    period_start: date
    period_end: date


class StatementRunCreate(CamelStruct):
    """Issue the statements of every participant with settled lines in the period (operator job)."""

    period_start: date
    period_end: date


class StatementJobRead(CamelStruct):
    market_id: uuid.UUID
    period_start: date
    period_end: date
    issued: int | None
    """Statements newly issued (embedded mode); ``None`` when queued for a worker."""
    task_id: str | None


class StatementRead(CamelStruct):
    id: uuid.UUID
    market_id: uuid.UUID
    participant_id: uuid.UUID
    number: str
    period_start: date
    period_end: date
    runs: list[dict[str, Any]]
    line_count: int
    amount_due: Decimal
    """Positive: the market pays the participant; negative: the participant owes the market."""
    currency: str
    supersedes_id: uuid.UUID | None
    issued_at: datetime
