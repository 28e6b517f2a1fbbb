"""Base of every API schema: msgspec Structs, kept apart from the SQLAlchemy models."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, TypeVar

import msgspec

from market.core.amounts import canonical

T = TypeVar("T", bound="CamelStruct")

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="A human-readable name.")]
Code = Annotated[
    str,
    msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="An identifier: letters, digits, . _ -"),
]


class CamelStruct(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    """Unknown fields are refused, so a client cannot smuggle server-owned fields in.

    Decimal amounts are put in canonical form on arrival (see :func:`canonical`).
    """

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, Decimal):
                setattr(self, name, canonical(value))

    @classmethod
    def from_model(cls: type[T], obj: Any) -> T:
        return msgspec.convert(obj, cls, from_attributes=True)
