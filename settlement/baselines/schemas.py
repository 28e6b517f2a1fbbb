"""API schemas of baseline methods, assignments and nominations."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from market.core.schema import CamelStruct
from settlement.baselines.methods import BaselineMethod
from settlement.baselines.models import ResourceKind


class BaselineMethodRead(CamelStruct):
    method: BaselineMethod
    version: int
    formula: str
    default_params: dict[str, Any]


class AssignmentCreate(CamelStruct):
    """The method a site or portfolio uses from ``valid_from`` on; no resource: the market's default.
    ``params`` override the method's defaults (see GET /baseline-methods)."""

    method: BaselineMethod
    valid_from: date
    resource_kind: ResourceKind | None = None
    resource_id: uuid.UUID | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class AssignmentRead(CamelStruct):
    id: uuid.UUID
    market_id: uuid.UUID
    resource_kind: ResourceKind | None
    resource_id: uuid.UUID | None
    method: str
    method_version: int
    params: dict[str, Any]
    valid_from: date
    created_at: datetime


class NominationValue(CamelStruct):
    start: datetime
    kw: Decimal
    """Nominated net consumption (import − export) in the ISP, average kW."""


class NominationCreate(CamelStruct):
    values: Annotated[list[NominationValue], msgspec.Meta(min_length=1, max_length=10_000)]


class NominationRead(CamelStruct):
    resource_id: uuid.UUID
    isp_start: datetime
    version: int
    kw: Decimal
    submitted_at: datetime


class AccuracyRead(CamelStruct):
    site_id: uuid.UUID
    method: str
    method_version: int
    days: int
    rrmse: float | None
    """sqrt(mean((baseline − actual)²)) / mean(actual) over the tested non-event days; null if none."""
