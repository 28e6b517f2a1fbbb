from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from market.core.schema import CamelStruct


class ClearingCreate(CamelStruct):
    """Clear one local delivery day of the market (its gate must have closed)."""

    day: date


class ClearingRunRead(CamelStruct):
    id: uuid.UUID
    market_id: uuid.UUID
    delivery_day: date
    horizon_start: datetime
    horizon_end: datetime
    gate_closure_at: datetime
    status: str
    pricing_rule: str
    solver: str
    input_hash: str
    result_hash: str
    welfare: Decimal
    offer_count: int
    request_count: int
    award_count: int
    triggered_by: str
    created_at: datetime
    duration_ms: int


class ClearingQueued(CamelStruct):
    """The clearing was handed to a worker; poll the market's clearings for the run."""

    task_id: str
    market_id: uuid.UUID
    day: date


class VerifyRead(CamelStruct):
    run_id: uuid.UUID
    input_hash: str
    result_hash: str
    recomputed_input_hash: str
    recomputed_result_hash: str
    matches: bool


class FlexOrderRead(CamelStruct):
    """An award (FlexOrder): kW accepted from an offer in one ISP, and the price per MWh it is paid."""

    run_id: uuid.UUID
    offer_id: uuid.UUID
    isp_start: datetime
    seller_id: uuid.UUID
    congestion_point_id: uuid.UUID
    direction: str
    accepted_kw: Decimal
    price_per_mwh: Decimal


class OfferResultRead(CamelStruct):
    run_id: uuid.UUID
    offer_id: uuid.UUID
    seller_id: uuid.UUID
    outcome: str
    activation: Decimal | None


class ProcurementRead(CamelStruct):
    run_id: uuid.UUID
    request_id: uuid.UUID
    isp_start: datetime
    utility_id: uuid.UUID
    requested_kw: Decimal
    procured_kw: Decimal


class PointPriceRead(CamelStruct):
    run_id: uuid.UUID
    congestion_point_id: uuid.UUID
    isp_start: datetime
    direction: str
    requested_kw: Decimal
    procured_kw: Decimal
    unmet_kw: Decimal
    price_per_mwh: Decimal
