"""The authenticated caller, and the scope vocabulary."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from market.core.errors import Forbidden
from market.participants.models import Role


class Scope(StrEnum):
    """``trade``: orders, sites, portfolios. ``finance``: statements and ledgers of the own
    participant. ``admin``: the own participant's API keys; for the operator also markets, grid
    and participants."""

    TRADE = "trade"
    FINANCE = "finance"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    participant_id: uuid.UUID
    role: Role
    scopes: frozenset[Scope]
    api_key_id: uuid.UUID

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR

    def require_role(self, *roles: Role) -> None:
        """Refuse unless the caller has one of ``roles`` (the operator always passes)."""
        if not self.is_operator and self.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise Forbidden(detail=f"this action needs the role {allowed}; the caller is a {self.role.value}")

    def require_operator(self) -> None:
        if not self.is_operator:
            raise Forbidden(detail="only the market operator may do this")

    def may_act_for(self, participant_id: uuid.UUID) -> bool:
        return self.is_operator or participant_id == self.participant_id
