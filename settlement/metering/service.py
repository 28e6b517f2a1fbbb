"""Meter files and readings: upload, processing, reads, and what settlement needs from metering.

Who may send readings: the operator (scope ``admin``) for any site of the market, and a utility
(scope ``trade``) for the sites at congestion points it manages; USEF makes the DSO the metered
data responsible. Who may read a site's readings: its owner, the aggregator whose portfolio holds
it, the utility of its congestion point, and the operator.
"""

from __future__ import annotations

import hashlib
import io
import time
import uuid
from collections.abc import Sequence
from datetime import date, datetime, timedelta

import msgspec
import polars as pl
import psycopg
from sqlalchemy import Select, and_, func, or_, select, update
from sqlalchemy.orm import Session

from market.auth.principal import Principal, Scope
from market.core.db import utcnow
from market.core.errors import Forbidden, InvalidInput, NotFound
from market.core.queries import Page, paginate
from market.grid.models import CongestionPoint
from market.markets.models import Market
from market.markets.service import clock_of, get_market
from market.participants.models import Participant, Portfolio, Role, Site
from settlement.metering.config import MAX_FILE_BYTES, MeteringSettings, metering_settings
from settlement.metering.errors import UnreadableMeterFile
from settlement.metering.models import MeterFile, MeterFileFormat, MeterFileStatus, MeterReading, ResettlementMark
from settlement.metering.schemas import IssueRead, MeterFileReport
from settlement.metering.storage import StoreCounts, store_readings
from settlement.metering.validation import KWH, UTC_US, Limits, Validation, parse_file, validate_readings

MAX_READ_DAYS = 366
"""Longest span one readings request may ask for."""
MAX_FILENAME = 255


# -- upload -------------------------------------------------------------------------------------


def require_uploader(principal: Principal) -> None:
    """The operator with scope ``admin``, or a utility with scope ``trade``."""
    if principal.is_operator:
        if Scope.ADMIN not in principal.scopes:
            raise Forbidden(detail="the operator uploads meter files with an API key with the scope 'admin'")
        return
    if principal.role is not Role.UTILITY:
        raise Forbidden(
            detail="only the operator or a utility (the metered data responsible) may upload meter data; "
            f"the caller is a {principal.role.value}"
        )
    if Scope.TRADE not in principal.scopes:
        raise Forbidden(detail="a utility uploads meter files with an API key with the scope 'trade'")


def find_upload(session: Session, principal: Principal, market_id: uuid.UUID, content: bytes) -> MeterFile | None:
    """The caller's earlier file of this market with the same content, if any."""
    return session.scalar(
        select(MeterFile).where(
            MeterFile.market_id == market_id,
            MeterFile.uploaded_by == principal.participant_id,
            MeterFile.sha256 == hashlib.sha256(content).hexdigest(),
        )
    )


def upload_file(
    session: Session,
    principal: Principal,
    market_id: uuid.UUID,
    file_format: MeterFileFormat,
    filename: str,
    content: bytes,
    now: datetime,
) -> tuple[MeterFile, bool]:
    """Store an uploaded file as ``pending``; returns it and whether it is new. The same content
    from the same uploader for the same market is the first file again (nothing is stored twice)."""
    require_uploader(principal)
    get_market(session, market_id)
    if not content:
        raise InvalidInput.on("body", "the file is empty")
    if len(content) > MAX_FILE_BYTES:
        raise InvalidInput.on("body", f"the file is larger than {MAX_FILE_BYTES} bytes; split it")
    if not filename or len(filename) > MAX_FILENAME:
        raise InvalidInput.on("query.filename", f"must be 1 to {MAX_FILENAME} characters")
    existing = find_upload(session, principal, market_id, content)
    if existing is not None:
        return existing, False
    file = MeterFile(
        id=uuid.uuid4(),
        market_id=market_id,
        uploaded_by=principal.participant_id,
        filename=filename,
        format=file_format,
        sha256=hashlib.sha256(content).hexdigest(),
        size_bytes=len(content),
        content=content,
        status=MeterFileStatus.PENDING,
        enqueued_at=now,
        resends=0,
        created_at=now,
    )
    session.add(file)
    session.flush()
    return file, True


# -- processing ---------------------------------------------------------------------------------


def process_file(session: Session, file_id: uuid.UUID, now: datetime | None = None) -> MeterFile:
    """Parse, validate and store one pending file, in the caller's transaction. Idempotent: a file
    already ``done`` or ``rejected`` is returned as it is. The file's row is locked first, so of two
    concurrent deliveries the second waits and then finds the file done."""
    file = session.scalar(
        select(MeterFile).where(MeterFile.id == file_id).with_for_update().execution_options(populate_existing=True)
    )
    if file is None:
        raise NotFound.of("meter file", file_id)
    if file.status is not MeterFileStatus.PENDING:
        return file
    settings = metering_settings()
    market = get_market(session, file.market_id)
    durations: dict[str, int] = {}
    started = time.perf_counter()
    try:
        parsed = parse_file(file.content, file.format)
    except UnreadableMeterFile as exc:
        file.status = MeterFileStatus.REJECTED
        file.reason = exc.detail
        file.processed_at = now or utcnow()
        session.flush()
        return file
    durations["parse"] = _ms_since(started)
    started = time.perf_counter()
    clock = clock_of(market)
    validation = validate_readings(
        parsed, meters_of(session, market, file.uploaded_by), clock, Limits.of(clock, settings.max_average_kw)
    )
    durations["validate"] = _ms_since(started)
    started = time.perf_counter()
    counts = store_readings(
        session, file_id=file.id, market_id=market.id, readings=validation.readings, recorded_at=now or utcnow()
    )
    durations["store"] = _ms_since(started)
    durations.update({f"store_{name}": ms for name, ms in counts.durations_ms.items()})
    file.report = build_report(validation, counts, durations, settings)
    file.status = MeterFileStatus.DONE
    file.processed_at = now or utcnow()
    session.flush()
    return file


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def meters_of(session: Session, market: Market, uploader_id: uuid.UUID) -> pl.DataFrame:
    """Meter codes and site ids (text) the uploader may send readings for, ordered by meter code:
    every site of the market for the operator, the sites at its own congestion points for a utility."""
    role = session.scalar(select(Participant.role).where(Participant.id == uploader_id))
    statement = (
        select(Site.meter_code, Site.id)
        .join(CongestionPoint, CongestionPoint.id == Site.congestion_point_id)
        .where(CongestionPoint.market_id == market.id)
        .order_by(Site.meter_code)
    )
    if role is not Role.OPERATOR:
        statement = statement.where(CongestionPoint.utility_id == uploader_id)
    rows = session.execute(statement).all()
    return pl.DataFrame(
        {"meter": [r[0] for r in rows], "site_id": [str(r[1]) for r in rows]},
        schema={"meter": pl.String(), "site_id": pl.String()},
    )


def build_report(
    validation: Validation, counts: StoreCounts, durations: dict[str, int], settings: MeteringSettings
) -> dict[str, object]:
    """The report as stored (JSON): counts, issue counts by kind, the first issues."""
    issues = validation.issues
    per_kind = issues.group_by("kind").len().sort("kind")
    listed = issues.head(settings.max_listed_issues).to_dicts()
    report = MeterFileReport(
        rows=validation.rows,
        stored=counts.stored,
        corrected=counts.corrected,
        unchanged=counts.unchanged,
        rejected=validation.rejected,
        duplicates=validation.duplicates,
        missing_isps=validation.missing_isps,
        marked_days=counts.marked_days,
        issue_counts=dict(per_kind.iter_rows()),
        issues=[IssueRead(**issue) for issue in listed],
        issues_truncated=issues.height > settings.max_listed_issues,
        durations_ms=durations,
    )
    built: dict[str, object] = msgspec.to_builtins(report)
    return built


def stale_pending_files(session: Session, now: datetime, settings: MeteringSettings) -> list[uuid.UUID]:
    """Pending files last enqueued more than ``resend_after_minutes`` ago, with resends left; each
    is counted as resent (the caller enqueues them after commit)."""
    cutoff = now - timedelta(minutes=settings.resend_after_minutes)
    ids = list(
        session.scalars(
            select(MeterFile.id)
            .where(
                MeterFile.status == MeterFileStatus.PENDING,
                MeterFile.enqueued_at < cutoff,
                MeterFile.resends < settings.max_resends,
            )
            .order_by(MeterFile.enqueued_at)
            .limit(1_000)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(
            update(MeterFile)
            .where(MeterFile.id.in_(ids))
            .values(enqueued_at=now, resends=MeterFile.resends + 1)
            .execution_options(synchronize_session=False)
        )
    return ids


# -- reads --------------------------------------------------------------------------------------


def _files_visible(principal: Principal, market_id: uuid.UUID) -> Select[MeterFile]:
    statement = select(MeterFile).where(MeterFile.market_id == market_id)
    if not principal.is_operator:
        statement = statement.where(MeterFile.uploaded_by == principal.participant_id)
    return statement


def get_file(session: Session, principal: Principal, market_id: uuid.UUID, file_id: uuid.UUID) -> MeterFile:
    file = session.scalar(_files_visible(principal, market_id).where(MeterFile.id == file_id))
    if file is None:
        raise NotFound.of("meter file", file_id)
    return file


def list_files(session: Session, principal: Principal, market_id: uuid.UUID, page: Page) -> tuple[list[MeterFile], int]:
    """The market's files, newest first: one's own, or all for the operator."""
    get_market(session, market_id)
    statement = _files_visible(principal, market_id).order_by(MeterFile.created_at.desc(), MeterFile.id)
    return paginate(session, statement, page)


def readable_site(session: Session, principal: Principal, site_id: uuid.UUID) -> Site:
    """The site, if the caller may read its readings (else 404, so ids are not probed)."""
    if not principal.is_operator and Scope.TRADE not in principal.scopes:
        raise Forbidden(detail="reading meter data needs an API key with the scope 'trade'")
    statement = select(Site).where(Site.id == site_id)
    if not principal.is_operator:
        me = principal.participant_id
        aggregated = select(Portfolio.id).where(Portfolio.aggregator_id == me)
        managed = select(CongestionPoint.id).where(CongestionPoint.utility_id == me)
        statement = statement.where(
            or_(Site.owner_id == me, Site.portfolio_id.in_(aggregated), Site.congestion_point_id.in_(managed))
        )
    site = session.scalar(statement)
    if site is None:
        raise NotFound.of("site", site_id)
    return site


def _check_range(start: datetime, end: datetime) -> None:
    for name, value in (("start", start), ("end", end)):
        if value.tzinfo is None:
            raise InvalidInput.on(f"query.{name}", "needs a UTC offset, e.g. 2026-03-29T00:00:00+01:00")
    if end <= start:
        raise InvalidInput.on("query.end", "must be after start")
    if end - start > timedelta(days=MAX_READ_DAYS):
        raise InvalidInput.on("query.end", f"at most {MAX_READ_DAYS} days after start")


def site_readings(
    session: Session,
    principal: Principal,
    site_id: uuid.UUID,
    start: datetime,
    end: datetime,
    page: Page,
    *,
    all_versions: bool = False,
) -> tuple[list[MeterReading], int]:
    """A site's readings with ``start <= isp_start < end``: the current version of each ISP, or
    every version (oldest first) with ``all_versions``."""
    _check_range(start, end)
    readable_site(session, principal, site_id)
    in_range = and_(MeterReading.site_id == site_id, MeterReading.isp_start >= start, MeterReading.isp_start < end)
    statement = select(MeterReading).where(in_range)
    if not all_versions:
        latest = (
            select(MeterReading.isp_start, func.max(MeterReading.version).label("version"))
            .where(in_range)
            .group_by(MeterReading.isp_start)
            .subquery()
        )
        statement = statement.join(
            latest, and_(MeterReading.isp_start == latest.c.isp_start, MeterReading.version == latest.c.version)
        )
    return paginate(session, statement.order_by(MeterReading.isp_start, MeterReading.version), page)


# -- for settlement -----------------------------------------------------------------------------

CURRENT_READINGS_SCHEMA = pl.Schema({"site_id": pl.String(), "isp_start": UTC_US, "import_kwh": KWH, "export_kwh": KWH})


def current_readings(session: Session, site_ids: Sequence[uuid.UUID], start: datetime, end: datetime) -> pl.DataFrame:
    """The current (highest-version) reading of each of ``site_ids`` with ``start <= isp_start < end``
    (:data:`CURRENT_READINGS_SCHEMA`: site id as text, UTC instant, exact ``Decimal(20, 6)`` kWh),
    sorted by site and ISP. PostgreSQL streams it with ``COPY ... TO STDOUT``."""
    if not site_ids:
        return pl.DataFrame(schema=CURRENT_READINGS_SCHEMA)
    connection = session.connection()
    ids = [str(s) for s in site_ids]
    if connection.dialect.name == "postgresql":
        raw = connection.connection.driver_connection
        if not isinstance(raw, psycopg.Connection):
            raise TypeError(f"COPY needs a psycopg connection, not {type(raw).__name__}")
        query = (
            "COPY (SELECT DISTINCT ON (site_id, isp_start) site_id, "
            "to_char(isp_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), import_kwh, export_kwh "
            "FROM meter_reading WHERE site_id = ANY(%s::uuid[]) AND isp_start >= %s AND isp_start < %s "
            "ORDER BY site_id, isp_start, version DESC) TO STDOUT (FORMAT csv)"
        )
        buffer = io.BytesIO()
        with raw.cursor() as cursor, cursor.copy(query, (ids, start, end)) as copy:
            for block in copy:
                buffer.write(block)
        if buffer.tell() == 0:
            return pl.DataFrame(schema=CURRENT_READINGS_SCHEMA)
        buffer.seek(0)
        frame = pl.read_csv(
            buffer,
            has_header=False,
            new_columns=list(CURRENT_READINGS_SCHEMA.names()),
            schema_overrides={
                "site_id": pl.String(),
                "isp_start": pl.String(),
                "import_kwh": pl.String(),
                "export_kwh": pl.String(),
            },
        )
        return frame.with_columns(
            pl.col("isp_start").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_zone="UTC").dt.cast_time_unit("us"),
            pl.col("import_kwh").cast(KWH),
            pl.col("export_kwh").cast(KWH),
        ).sort("site_id", "isp_start")
    # Embedded SQLite: the latest version by a correlated maximum.
    rows: list[tuple[uuid.UUID, datetime, object, object]] = []
    for chunk_start in range(0, len(site_ids), 500):
        chunk = list(site_ids[chunk_start : chunk_start + 500])
        in_range = and_(MeterReading.site_id.in_(chunk), MeterReading.isp_start >= start, MeterReading.isp_start < end)
        latest = (
            select(MeterReading.site_id, MeterReading.isp_start, func.max(MeterReading.version).label("version"))
            .where(in_range)
            .group_by(MeterReading.site_id, MeterReading.isp_start)
            .subquery()
        )
        statement = select(
            MeterReading.site_id, MeterReading.isp_start, MeterReading.import_kwh, MeterReading.export_kwh
        ).join(
            latest,
            and_(
                MeterReading.site_id == latest.c.site_id,
                MeterReading.isp_start == latest.c.isp_start,
                MeterReading.version == latest.c.version,
            ),
        )
        rows.extend((r[0], r[1], r[2], r[3]) for r in session.execute(statement))
    return pl.DataFrame(
        {
            "site_id": [str(r[0]) for r in rows],
            "isp_start": [r[1] for r in rows],
            "import_kwh": [r[2] for r in rows],
            "export_kwh": [r[3] for r in rows],
        },
        schema=CURRENT_READINGS_SCHEMA,
    ).sort("site_id", "isp_start")


def pending_marks(session: Session, market_id: uuid.UUID) -> list[tuple[uuid.UUID, date]]:
    """(site, delivery day) pairs a correction marked for re-settlement that no run has taken up,
    by day then site."""
    rows = session.execute(
        select(ResettlementMark.site_id, ResettlementMark.delivery_day)
        .where(ResettlementMark.market_id == market_id, ResettlementMark.settled_by_run_id.is_(None))
        .distinct()
        .order_by(ResettlementMark.delivery_day, ResettlementMark.site_id)
    )
    return [(site_id, day) for site_id, day in rows]


def consume_marks(session: Session, market_id: uuid.UUID, day: date, run_id: uuid.UUID) -> int:
    """Record that settlement run ``run_id`` re-settled ``day``: its open marks get the run's id.
    Returns how many marks it took up."""
    result = session.execute(
        update(ResettlementMark)
        .where(
            ResettlementMark.market_id == market_id,
            ResettlementMark.delivery_day == day,
            ResettlementMark.settled_by_run_id.is_(None),
        )
        .values(settled_by_run_id=run_id)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # DML results carry a rowcount
