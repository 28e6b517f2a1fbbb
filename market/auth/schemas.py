from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from market.auth.principal import Scope
from market.core.schema import CamelStruct, Name
from market.participants.models import Role


class ApiKeyCreate(CamelStruct):
    name: Name
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=len(Scope))]


class ApiKeyRead(CamelStruct):
    id: uuid.UUID
    participant_id: uuid.UUID
    key_id: str
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(CamelStruct):
    """The only response that ever contains the secret token. Store it now: it cannot be shown again."""

    key: ApiKeyRead
    token: str


class WhoAmI(CamelStruct):
    participant_id: uuid.UUID
    role: Role
    scopes: list[Scope]
    api_key_id: uuid.UUID
