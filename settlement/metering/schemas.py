"""API schemas of settlement.metering (msgspec Structs, apart from the models)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from market.core.schema import CamelStruct


class IssueRead(CamelStruct):
    """One problem found in a file. ``row`` counts records from 1 (not the CSV header); gaps and
    clock-change days concern no single row."""

    kind: str
    severity: str
    row: int | None
    meter: str | None
    isp_start: datetime | None
    detail: str


class MeterFileReport(CamelStruct):
    """What became of a file's rows: ``rows = stored + corrected + unchanged + rejected + duplicates``.

    ``stored``: new readings; ``corrected``: new versions of readings whose values changed (their
    delivery days are marked for re-settlement); ``unchanged``: sent before with the same values
    (no-op); ``rejected``: rows with an error (not stored, listed in ``issues``); ``duplicates``:
    identical repeats within the file, counted once. ``issue_counts`` counts every issue by kind;
    ``issues`` lists the first ``max_listed_issues`` (errors first).
    """

    rows: int
    stored: int
    corrected: int
    unchanged: int
    rejected: int
    duplicates: int
    missing_isps: int
    marked_days: int
    issue_counts: dict[str, int]
    issues: list[IssueRead]
    issues_truncated: bool
    durations_ms: dict[str, int]


class MeterFileRead(CamelStruct):
    id: uuid.UUID
    market_id: uuid.UUID
    uploaded_by: uuid.UUID
    filename: str
    format: str
    sha256: str
    size_bytes: int
    status: str
    reason: str | None
    report: MeterFileReport | None
    created_at: datetime
    processed_at: datetime | None

    @classmethod
    def of(cls, file: Any) -> MeterFileRead:
        report = msgspec.convert(file.report, MeterFileReport) if file.report is not None else None
        return cls(
            id=file.id,
            market_id=file.market_id,
            uploaded_by=file.uploaded_by,
            filename=file.filename,
            format=str(file.format),
            sha256=file.sha256,
            size_bytes=file.size_bytes,
            status=str(file.status),
            reason=file.reason,
            report=report,
            created_at=file.created_at,
            processed_at=file.processed_at,
        )


class ReadingRead(CamelStruct):
    """A stored reading: energy imported and exported in one ISP, and which version it is."""

    site_id: uuid.UUID
    isp_start: datetime
    version: int
    import_kwh: Decimal
    export_kwh: Decimal
    file_id: uuid.UUID
    recorded_at: datetime
