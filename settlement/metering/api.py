"""HTTP routes of settlement.metering.

Upload: ``POST /markets/{market_id}/meter-files?format=csv|parquet|json&filename=...`` with the raw
file as the body (``text/csv``, ``application/vnd.apache.parquet`` or ``application/octet-stream``,
``application/json``). Embedded (tasks in-process) the file is processed at once: 201 with its
report (200 if the same content was uploaded before). With workers: 202 with the pending file, and
``GET /markets/{market_id}/meter-files/{file_id}`` shows the status and report when done.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.pagination import OffsetPagination
from litestar.params import FromPath, FromQuery, QueryParameter, RawBody
from litestar.types import ControllerRouterHandler
from sqlalchemy import event
from sqlalchemy.orm import Session

from market.auth.principal import Principal
from market.core.db import utcnow
from market.core.idempotency import Idempotency
from market.core.queries import Page
from settlement.metering import service, tasks
from settlement.metering.config import MAX_FILE_BYTES
from settlement.metering.models import MeterFile, MeterFileFormat, MeterFileStatus
from settlement.metering.schemas import MeterFileRead, ReadingRead

log = logging.getLogger("flexmarket.metering")

MEDIA_TYPES: dict[MeterFileFormat, frozenset[str]] = {
    MeterFileFormat.CSV: frozenset({"text/csv", "application/csv", "text/plain"}),
    MeterFileFormat.PARQUET: frozenset({"application/vnd.apache.parquet", "application/octet-stream"}),
    MeterFileFormat.JSON: frozenset({"application/json"}),
}
_FORMAT_OF_MEDIA = {
    "text/csv": MeterFileFormat.CSV,
    "application/csv": MeterFileFormat.CSV,
    "application/vnd.apache.parquet": MeterFileFormat.PARQUET,
    "application/octet-stream": MeterFileFormat.PARQUET,
    "application/json": MeterFileFormat.JSON,
}


def _format_of(request: Request[Any, Any, Any], requested: MeterFileFormat | None) -> MeterFileFormat:
    """The file's format: as asked, if the Content-Type fits it; else from the Content-Type."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if requested is None:
        found = _FORMAT_OF_MEDIA.get(media)
        if found is None:
            raise HTTPException(
                status_code=415, detail=f"send ?format=csv|parquet|json or a known Content-Type, not {media!r}"
            )
        return found
    if media not in MEDIA_TYPES[requested]:
        allowed = ", ".join(sorted(MEDIA_TYPES[requested]))
        raise HTTPException(status_code=415, detail=f"format={requested.value} needs Content-Type {allowed}")
    return requested


def _enqueue_after_commit(session: Session, file_id: uuid.UUID) -> None:
    """Enqueue once the request's transaction has committed, so the worker finds the file."""

    def send(_: Session) -> None:
        try:
            tasks.enqueue(file_id)
        except Exception:  # the broker's errors vary; the file is stored and the resend job retries
            log.exception("could not enqueue meter file %s; the resend job will", file_id)

    event.listen(session, "after_commit", send, once=True)


@dataclass
class _FileUpload(Operation):
    """Document the raw file body, which Litestar cannot infer from ``RawBody``."""

    def __post_init__(self) -> None:
        text_file = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))
        self.request_body = RequestBody(
            required=True,
            description="The meter file: CSV, JSON or Parquet (see ?format)",
            content={
                "text/csv": text_file,
                "application/json": OpenAPIMediaType(schema=Schema()),
                "application/vnd.apache.parquet": OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
                ),
            },
        )


class MeterFileController(Controller):
    tags = ("metering",)

    @post(
        "/markets/{market_id:uuid}/meter-files",
        sync_to_thread=True,
        request_max_body_size=MAX_FILE_BYTES,
        operation_class=_FileUpload,
        responses={
            200: ResponseSpec(MeterFileRead, description="The same content was uploaded before"),
            202: ResponseSpec(MeterFileRead, description="Queued for a worker; read the file for its report"),
        },
        summary="Upload meter readings (operator, or a utility for its congestion points)",
        description="The body is the file itself. Embedded: processed at once (201, or 200 for a file "
        "uploaded before). With workers: queued (202); read the file for its status and report.",
    )
    def upload(
        self,
        request: Request[Principal, uuid.UUID, State],
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        market_id: FromPath[uuid.UUID],
        body: RawBody,
        file_format: Annotated[
            MeterFileFormat | None, QueryParameter(name="format", description="csv, parquet or json")
        ] = None,
        filename: Annotated[str | None, QueryParameter(max_length=255, description="the file's own name")] = None,
    ) -> Response[MeterFileRead]:
        service.require_uploader(principal)
        chosen = _format_of(request, file_format)
        name = filename or f"upload.{chosen.value}"
        in_process: bool = request.app.state.tasks_in_process
        seen_before = service.find_upload(db_session, principal, market_id, body) is not None

        def produce() -> MeterFileRead:
            file: MeterFile
            file, _ = service.upload_file(db_session, principal, market_id, chosen, name, body, utcnow())
            if file.status is MeterFileStatus.PENDING:
                if in_process:
                    file = service.process_file(db_session, file.id)
                else:
                    _enqueue_after_commit(db_session, file.id)
            return MeterFileRead.of(file)

        status = 200 if seen_before else (201 if in_process else 202)
        return idempotency.run(db_session, principal, produce, status_code=status)

    @get(
        "/markets/{market_id:uuid}/meter-files",
        sync_to_thread=True,
        summary="A market's meter files, newest first: one's own; the operator sees all",
    )
    def list_files(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        market_id: FromPath[uuid.UUID],
        page: NamedDependency[Page],
    ) -> OffsetPagination[MeterFileRead]:
        rows, total = service.list_files(db_session, principal, market_id, page)
        return OffsetPagination([MeterFileRead.of(r) for r in rows], page.limit, page.offset, total)

    @get(
        "/markets/{market_id:uuid}/meter-files/{file_id:uuid}",
        sync_to_thread=True,
        summary="A meter file's status and validation report",
    )
    def read_file(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        market_id: FromPath[uuid.UUID],
        file_id: FromPath[uuid.UUID],
    ) -> MeterFileRead:
        return MeterFileRead.of(service.get_file(db_session, principal, market_id, file_id))

    @get(
        "/sites/{site_id:uuid}/readings",
        sync_to_thread=True,
        summary="A site's readings in [start, end): the current version per ISP, or all versions",
        description="For the site's owner or aggregator, the utility of its congestion point, and the "
        "operator. start and end need UTC offsets (encode '+' as %2B in a URL).",
    )
    def readings(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        site_id: FromPath[uuid.UUID],
        page: NamedDependency[Page],
        start: FromQuery[datetime],
        end: FromQuery[datetime],
        all_versions: FromQuery[bool] = False,
    ) -> OffsetPagination[ReadingRead]:
        rows, total = service.site_readings(db_session, principal, site_id, start, end, page, all_versions=all_versions)
        return OffsetPagination([ReadingRead.from_model(r) for r in rows], page.limit, page.offset, total)


ROUTES: list[ControllerRouterHandler] = [MeterFileController]
