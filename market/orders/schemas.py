from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, ClassVar

import msgspec

from market.core.schema import CamelStruct
from market.orders.models import Direction, OrderState

MAX_ISPS_PER_ORDER = 200
"""Two delivery days of 15-minute ISPs, including a 100-ISP clock-change day."""
MAX_TRANCHES = 20
MAX_BATCH = 10_000

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True, description="ISO 8601 with a UTC offset")]


# Structs decoded from requests are never tracked by the garbage collector (``gc=False``): their
# data cannot form a reference cycle, and a batch of 10,000 offers decodes into some 60,000 of them,
# which would make every full collection during the batch walk them all.


class IspQuantity(CamelStruct, gc=False):
    start: AwareDatetime
    quantity_kw: Decimal


class Tranche(CamelStruct, gc=False):
    """A tranche covers ``share`` of the offered kW in every ISP at ``price_per_mwh``."""

    share: Decimal
    price_per_mwh: Decimal


class Storage(CamelStruct, gc=False):
    """Limits that link ISPs: up discharges ``kW·h / efficiency``, down charges ``kW·h · efficiency``."""

    capacity_kwh: Decimal
    initial_kwh: Decimal
    efficiency: Decimal = Decimal(1)


IspList = Annotated[list[IspQuantity], msgspec.Meta(min_length=1, max_length=MAX_ISPS_PER_ORDER)]


class FlexRequestCreate(CamelStruct, gc=False):
    congestion_point_id: uuid.UUID
    direction: Direction
    isps: IspList
    max_price_per_mwh: Decimal
    expires_at: AwareDatetime | None = None


class FlexRequestRead(CamelStruct):
    id: uuid.UUID
    market_id: uuid.UUID
    utility_id: uuid.UUID
    congestion_point_id: uuid.UUID
    direction: Direction
    isps: list[IspQuantity]
    max_price_per_mwh: Decimal
    revision: int
    state: OrderState
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    submitted_at: datetime


class FlexOfferCreate(CamelStruct, gc=False):
    """Give either ``price_per_mwh`` or ``tranches``, and either ``site_id`` or ``portfolio_id``."""

    direction: Direction
    isps: IspList
    site_id: uuid.UUID | None = None
    portfolio_id: uuid.UUID | None = None
    price_per_mwh: Decimal | None = None
    tranches: Annotated[list[Tranche], msgspec.Meta(min_length=1, max_length=MAX_TRANCHES)] | None = None
    min_acceptance_fraction: Decimal = Decimal(0)
    block: bool = False
    rebound: Annotated[list[IspQuantity], msgspec.Meta(min_length=1, max_length=MAX_ISPS_PER_ORDER)] | None = None
    storage: Storage | None = None
    expires_at: AwareDatetime | None = None


class FlexOfferRead(CamelStruct):
    id: uuid.UUID
    market_id: uuid.UUID
    seller_id: uuid.UUID
    site_id: uuid.UUID | None
    portfolio_id: uuid.UUID | None
    congestion_point_id: uuid.UUID
    direction: Direction
    isps: list[IspQuantity]
    price_per_mwh: Decimal | None
    tranches: list[Tranche] | None
    min_acceptance_fraction: Decimal
    block: bool
    rebound: list[IspQuantity] | None
    storage: Storage | None
    revision: int
    state: OrderState
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    submitted_at: datetime


class FlexOfferBatch(CamelStruct):
    """Up to 10,000 offers, stored all or nothing."""

    offers: Annotated[list[FlexOfferCreate], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class FlexOfferBatchBody(msgspec.Struct, forbid_unknown_fields=True):
    """A batch as the API receives it: each offer is still its JSON text, decoded into a
    :class:`FlexOfferCreate` as the batch streams into the database (the decoding of one chunk then
    runs while PostgreSQL stores the previous one). Documented as :class:`FlexOfferBatch`."""

    openapi_type: ClassVar[type] = FlexOfferBatch

    offers: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class BatchAccepted(CamelStruct):
    count: int
    ids: list[uuid.UUID]
