"""What the OpenAPI document says beyond what Litestar infers from the handlers.

* Every API operation may answer with a problem+json error (RFC 9457) from the HTTP edge
  (:mod:`market.core.http`); Litestar only documents a JSON ``400`` for validation errors, which the
  edge answers with ``422``. :func:`document_problems` documents the real ones on every handler.
* Litestar documents ``datetime.time`` as ``format: duration``; a time of day is ``HH:MM:SS``.
* Litestar leaves ``additionalProperties`` open on msgspec Structs, but the API's Structs refuse
  unknown fields (:class:`market.core.schema.CamelStruct`); the document says so.
"""

from __future__ import annotations

from datetime import time
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Router
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition

from market.core.http import PROBLEM_JSON

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator


class FieldProblem(msgspec.Struct):
    """One field at fault and why."""

    field: str
    reason: str


class Problem(msgspec.Struct):
    """An RFC 9457 problem detail, as every error response of the API carries it."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = None


# The statuses the edge produces (see market.core.http): 400 unparseable body, 401 no or bad key,
# 403 role or scope, 404 unknown or not visible, 409 state conflict, 413 body too large,
# 415 media type, 422 invalid input, 429 rate limited.
PROBLEM_STATUSES: dict[int, str] = {
    400: "The request body could not be parsed",
    401: "No valid API key was sent",
    403: "The key's role or scope does not allow this",
    404: "The object does not exist or is not visible to the caller",
    409: "The request conflicts with the current state",
    413: "The request body is too large",
    415: "The request body's media type is not supported",
    422: "A field is invalid; `errors` names it and why",
    429: "Too many requests; retry later",
}

PROBLEM_RESPONSES: dict[int, ResponseSpec] = {
    status: ResponseSpec(data_container=Problem, description=text, media_type=PROBLEM_JSON, generate_examples=False)
    for status, text in PROBLEM_STATUSES.items()
}


def document_problems(router: Router) -> None:
    """Document the problem+json error responses on every HTTP handler of ``router``.

    A handler's own ``responses`` win over these defaults.
    """
    for route in router.routes:
        for handler in getattr(route, "route_handlers", []):
            if isinstance(handler, HTTPRouteHandler):
                handler.responses = {**PROBLEM_RESPONSES, **(handler.responses or {})}


class TimeOfDaySchemaPlugin(OpenAPISchemaPlugin):
    """Document ``datetime.time`` as a local time of day ``HH:MM:SS[.ffffff]``."""

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return value is time

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        return Schema(
            type=OpenAPIType.STRING,
            pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?$",
            description="A local time of day, HH:MM:SS",
            examples=["12:00:00"],
        )


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's Struct schema, closed (``additionalProperties: false``) where the Struct forbids unknown fields."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if isinstance(info, msgspec.inspect.StructType) and info.forbid_unknown_fields:
            schema.additional_properties = False
        return schema
