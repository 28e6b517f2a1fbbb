"""API schemas of settlement terms, runs and lines."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

import msgspec

from market.core.schema import CamelStruct
from settlement.runs.models import RunKind


class TermsWrite(CamelStruct):
    """A market's settlement terms (operator). Decimals as strings or numbers; shares are fractions."""

    currency: str
    penalty_price_per_mwh: Decimal = Decimal(0)
    tolerance: Decimal = Decimal(0)
    sliding_scale: bool = False
    availability_price_per_mw_h: Decimal = Decimal(0)
    operator_fee_per_mwh: Decimal = Decimal(0)
    aggregator_fee_share: Decimal = Decimal(0)
    holiday_country: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")] | None = None
    initial_after_hours: Annotated[int, msgspec.Meta(ge=0, le=24 * 14)] = 24
    final_after_days: Annotated[int, msgspec.Meta(ge=1, le=400)] = 30


class TermsRead(CamelStruct):
    market_id: uuid.UUID
    currency: str
    penalty_price_per_mwh: Decimal
    tolerance: Decimal
    sliding_scale: bool
    availability_price_per_mw_h: Decimal
    operator_fee_per_mwh: Decimal
    aggregator_fee_share: Decimal
    holiday_country: str | None
    initial_after_hours: int
    final_after_days: int


class SettlementCreate(CamelStruct):
    """Settle a delivery day now: ``initial`` once, then ``reconciliation`` runs, then ``final``."""

    day: date
    kind: RunKind = RunKind.INITIAL


class SettlementQueued(CamelStruct):
    task_id: str
    market_id: uuid.UUID
    day: date
    kind: RunKind


class SettlementRunRead(CamelStruct):
    id: uuid.UUID
    market_id: uuid.UUID
    delivery_day: date
    kind: RunKind
    version: int
    status: str
    clearing_run_id: uuid.UUID
    delivery_computation_id: uuid.UUID | None
    currency: str
    line_count: int
    entry_count: int
    total_utilisation: Decimal
    total_penalty: Decimal
    total_availability: Decimal
    total_fee: Decimal
    inputs_hash: str
    triggered_by: str
    created_at: datetime
    finished_at: datetime | None


class SettlementLineRead(CamelStruct):
    run_id: uuid.UUID
    offer_id: uuid.UUID
    isp_start: datetime
    seller_id: uuid.UUID
    utility_id: uuid.UUID
    ordered_kw: Decimal
    delivered_kw: Decimal
    shortfall_kw: Decimal
    price_per_mwh: Decimal
    utilisation: Decimal
    penalty: Decimal
    availability: Decimal
    fee: Decimal
    net: Decimal
