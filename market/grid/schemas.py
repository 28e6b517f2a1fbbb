from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated

import msgspec

from market.core.schema import CamelStruct, Code, Name
from market.grid.models import CongestionPointKind

MAX_MATRIX_ENTRIES = 50_000
"""A full matrix for 220 congestion points; larger grids split into markets."""

Factor = Annotated[Decimal, msgspec.Meta(description="kW relieved at target per kW at source")]


class CongestionPointCreate(CamelStruct):
    code: Code
    name: Name
    kind: CongestionPointKind
    utility_id: uuid.UUID
    parent_id: uuid.UUID | None = None


class CongestionPointRead(CamelStruct):
    id: uuid.UUID
    market_id: uuid.UUID
    code: str
    name: str
    kind: CongestionPointKind
    utility_id: uuid.UUID
    parent_id: uuid.UUID | None
    created_at: datetime


class SensitivityEntry(CamelStruct):
    source_id: uuid.UUID
    target_id: uuid.UUID
    factor: Factor


class SensitivityMatrix(CamelStruct):
    """The whole matrix of a market; a PUT replaces it. An empty list returns to the radial rule."""

    entries: Annotated[list[SensitivityEntry], msgspec.Meta(max_length=MAX_MATRIX_ENTRIES)]


class ReliefEntry(CamelStruct):
    source_id: uuid.UUID
    target_id: uuid.UUID
    factor: Decimal
    from_matrix: bool
