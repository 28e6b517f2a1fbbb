from __future__ import annotations

import uuid
from datetime import datetime, time
from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from market.core.schema import CamelStruct, Code, Name
from market.markets.models import GateClosureKind, PricingRule

Timezone = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, description="IANA time zone, e.g. Europe/Amsterdam")
]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code")]
LeadMinutes = Annotated[int, msgspec.Meta(ge=0, le=2880)]
IspMinutes = Literal[5, 10, 15, 30, 60]


class MarketCreate(CamelStruct):
    code: Code
    name: Name
    timezone: Timezone
    currency: Currency
    pricing_rule: PricingRule
    gate_closure_kind: GateClosureKind
    min_price_per_mwh: Decimal
    max_price_per_mwh: Decimal
    max_quantity_kw: Decimal
    isp_minutes: IspMinutes = 15
    day_ahead_gate_time: time | None = None
    intraday_lead_minutes: LeadMinutes | None = None


class MarketUpdate(CamelStruct):
    """Rules that may change while a market runs. Time zone and ISP length may not: orders depend on them."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    pricing_rule: PricingRule | msgspec.UnsetType = msgspec.UNSET
    gate_closure_kind: GateClosureKind | msgspec.UnsetType = msgspec.UNSET
    day_ahead_gate_time: time | msgspec.UnsetType | None = msgspec.UNSET
    intraday_lead_minutes: LeadMinutes | msgspec.UnsetType | None = msgspec.UNSET
    min_price_per_mwh: Decimal | msgspec.UnsetType = msgspec.UNSET
    max_price_per_mwh: Decimal | msgspec.UnsetType = msgspec.UNSET
    max_quantity_kw: Decimal | msgspec.UnsetType = msgspec.UNSET


class MarketRead(CamelStruct):
    id: uuid.UUID
    code: str
    name: str
    timezone: str
    isp_minutes: int
    currency: str
    pricing_rule: PricingRule
    gate_closure_kind: GateClosureKind
    day_ahead_gate_time: time | None
    intraday_lead_minutes: int | None
    min_price_per_mwh: Decimal
    max_price_per_mwh: Decimal
    max_quantity_kw: Decimal
    created_at: datetime


class DeliveryDayRead(CamelStruct):
    """The ISP grid of one local delivery day, with each ISP's gate closure."""

    market_id: uuid.UUID
    day: str
    isp_count: int
    isp_starts: list[datetime]
    gate_closures: list[datetime]
