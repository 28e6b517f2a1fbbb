"""API schemas of delivery verification."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from market.core.schema import CamelStruct


class DeliveryCreate(CamelStruct):
    """Verify a cleared delivery day against meter data now (operator)."""

    day: date


class DeliveryComputationRead(CamelStruct):
    id: uuid.UUID
    market_id: uuid.UUID
    delivery_day: date
    version: int
    clearing_run_id: uuid.UUID
    inputs_hash: str
    line_count: int
    created_at: datetime


class DeliveryQueued(CamelStruct):
    task_id: str
    market_id: uuid.UUID
    day: date


class DeliveryLineRead(CamelStruct):
    computation_id: uuid.UUID
    offer_id: uuid.UUID
    isp_start: datetime
    seller_id: uuid.UUID
    resource_id: uuid.UUID
    direction: str
    ordered_kw: Decimal
    baseline_kw: Decimal | None
    actual_kw: Decimal | None
    delivered_kw: Decimal
    status: str
    method: str
    method_version: int


class MemberDeliveryRead(CamelStruct):
    computation_id: uuid.UUID
    offer_id: uuid.UUID
    site_id: uuid.UUID
    isp_start: datetime
    baseline_kw: Decimal | None
    actual_kw: Decimal | None
    delivered_kw: Decimal
