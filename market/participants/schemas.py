from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from market.core.schema import CamelStruct, Code, Name
from market.participants.models import AssetKind, Role

Email = Annotated[str, msgspec.Meta(pattern=r"^[^@\s]{1,64}@[^@\s]{1,255}$", max_length=320)]


class ParticipantCreate(CamelStruct):
    name: Name
    role: Role
    contact_email: Email | None = None


class ParticipantRead(CamelStruct):
    id: uuid.UUID
    name: str
    role: Role
    contact_email: str | None
    created_at: datetime


class SiteCreate(CamelStruct):
    congestion_point_id: uuid.UUID
    meter_code: Code
    name: Name
    assets: Annotated[list[AssetKind], msgspec.Meta(max_length=len(AssetKind))] = msgspec.field(default_factory=list)
    owner_id: uuid.UUID | None = msgspec.field(default=None)
    """Only the operator may register a site on behalf of another participant."""


class SiteRead(CamelStruct):
    id: uuid.UUID
    owner_id: uuid.UUID
    congestion_point_id: uuid.UUID
    meter_code: str
    name: str
    assets: list[str]
    portfolio_id: uuid.UUID | None
    created_at: datetime


class SitePortfolioUpdate(CamelStruct):
    """Put the site in an aggregator's portfolio, or take it out with ``null``."""

    portfolio_id: uuid.UUID | None


class PortfolioCreate(CamelStruct):
    name: Name
    congestion_point_id: uuid.UUID
    aggregator_id: uuid.UUID | None = None
    """Only the operator may create a portfolio on behalf of an aggregator."""


class PortfolioMember(CamelStruct):
    site_id: uuid.UUID
    meter_code: str
    congestion_point_id: uuid.UUID


class PortfolioRead(CamelStruct):
    id: uuid.UUID
    aggregator_id: uuid.UUID
    congestion_point_id: uuid.UUID
    name: str
    created_at: datetime
    members: list[PortfolioMember] = msgspec.field(default_factory=list)
