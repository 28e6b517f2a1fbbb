"""Errors of settlement.ledger (domain errors, mapped to HTTP once at the edge)."""

from __future__ import annotations

from market.core.errors import Conflict, FieldError


class AlreadyPosted(Conflict):
    """A transfer with the same posting key is stored already (409): a retried or duplicated task
    can never post twice. The caller's transaction must be rolled back or the batch dropped."""

    @classmethod
    def of_key(cls, key: str) -> AlreadyPosted:
        return cls(detail=f"already posted: {key}", errors=[FieldError("posting_key", f"already posted: {key}")])
