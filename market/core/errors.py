"""Domain errors. Services raise these; the HTTP edge maps them to problem+json exactly once.

Every error can name the fields at fault and why, so a client knows what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self


@dataclass(frozen=True, slots=True)
class FieldError:
    """One reason an input was refused: a JSON-pointer-like field path and the reason."""

    field: str
    reason: str


@dataclass
class MarketError(Exception):
    """Base of every domain error."""

    detail: str
    errors: list[FieldError] = field(default_factory=list)

    def __str__(self) -> str:
        return self.detail

    @classmethod
    def on(cls, field_name: str, reason: str) -> Self:
        """The error for one field and its reason."""
        return cls(detail=f"{field_name}: {reason}", errors=[FieldError(field_name, reason)])


class InvalidInput(MarketError):
    """The input breaks a rule the schema cannot express (422)."""


class NotFound(MarketError):
    """The object does not exist, or the caller may not know that it does (404)."""

    @classmethod
    def of(cls, kind: str, object_id: object) -> NotFound:
        return cls(detail=f"{kind} {object_id} not found")


class Forbidden(MarketError):
    """The caller is known but its role or scope does not allow the action (403)."""


class Unauthenticated(MarketError):
    """No valid API key was presented (401)."""


class Conflict(MarketError):
    """The request clashes with the current state, e.g. a duplicate code (409)."""


class GateClosed(Conflict):
    """Gate closure has passed for the ISP the order names (409)."""
