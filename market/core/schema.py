"""Base of every API schema: msgspec Structs, kept apart from the SQLAlchemy models."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, TypeVar, get_args, get_type_hints

import msgspec

from market.core.amounts import canonical

T = TypeVar("T", bound="CamelStruct")

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="A human-readable name.")]
Code = Annotated[
    str,
    msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="An identifier: letters, digits, . _ -"),
]


_DECIMAL_FIELDS: dict[type, tuple[str, ...]] = {}


def _holds_decimal(annotation: Any) -> bool:
    return annotation is Decimal or any(_holds_decimal(arg) for arg in get_args(annotation))


def _decimal_fields(cls: type) -> tuple[str, ...]:
    """Names of the fields that may hold a Decimal, worked out once per class."""
    names = _DECIMAL_FIELDS.get(cls)
    if names is None:
        hints = get_type_hints(cls)
        names = tuple(n for n in cls.__struct_fields__ if _holds_decimal(hints.get(n)))  # type: ignore[attr-defined]
        _DECIMAL_FIELDS[cls] = names
    return names


class CamelStruct(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    """Unknown fields are refused, so a client cannot smuggle server-owned fields in.

    Decimal amounts are put in canonical form on arrival (see :func:`canonical`).
    """

    def __post_init__(self) -> None:
        cls = type(self)
        names = _DECIMAL_FIELDS.get(cls)
        for name in _decimal_fields(cls) if names is None else names:  # one dict look-up per Struct
            value = getattr(self, name)
            if isinstance(value, Decimal):
                setattr(self, name, canonical(value))

    @classmethod
    def from_model(cls: type[T], obj: Any) -> T:
        return msgspec.convert(obj, cls, from_attributes=True)


# Anchored at the message's end and start: the middle may echo the client's own text.
_AT_PATH = re.compile(r"\s*-\s*at\s*`\$\.?([^`]*)`$")
_NAMED_FIELD = re.compile(r"^Object (?:contains unknown|missing required) field `([^`]+)`")


def error_field(message: str) -> tuple[str, str]:
    """Split one of msgspec's validation messages into (field path, reason).

    msgspec reports ``... - at `$.entries[0].factor``` for a bad value and names the field in the
    message for an unknown or missing one; both become a dotted path (``entries[0].factor``).
    The path is empty for an error of the document as a whole.
    """
    match = _AT_PATH.search(message)
    field = match.group(1) if match else ""
    named = _NAMED_FIELD.search(message)
    if named:
        field = f"{field}.{named.group(1)}" if field else named.group(1)
    reason = _AT_PATH.sub("", message).strip() or "invalid"
    return field, reason
