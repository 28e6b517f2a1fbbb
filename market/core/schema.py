"""Base of every API schema: msgspec Structs, kept apart from the SQLAlchemy models."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec

T = TypeVar("T", bound="CamelStruct")

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="A human-readable name.")]
Code = Annotated[
    str,
    msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="An identifier: letters, digits, . _ -"),
]


class CamelStruct(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    """Unknown fields are refused, so a client cannot smuggle server-owned fields in."""

    @classmethod
    def from_model(cls: type[T], obj: Any) -> T:
        return msgspec.convert(obj, cls, from_attributes=True)
