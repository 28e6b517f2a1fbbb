"""Delivery verification for a cleared day: awards + meter readings + baselines → delivered kW.

For every award (offer × ISP) the computation stores the ordered kW, the baseline and the actual
it used, the delivered kW and the baseline method and version, so every statement figure traces
back to its inputs. Portfolio offers are verified on their member sites and summed (USEF: the
aggregator is settled on its portfolio); each member's own delivery is kept for pass-through.

Rules beyond MARKET.md, stated here:

* Actual power is exact: (import − export) kWh × 60 / ISP minutes, from the current (latest)
  version of each reading. Baselines are rounded to the watt (3 decimal places of kW), so
  delivered kW carries at most 3 decimals of baseline noise and is otherwise exact.
* No reading for a site's ISP: status ``missing_readings``; no baseline (too little history, no
  nomination): ``no_baseline``. Either way that site delivered 0 kW there (unverifiable delivery is
  not paid). A portfolio line is ``ok`` only if all its members are; its delivered kW is the sum
  over the members that could be verified.
* A site with several offers in one ISP and direction shares its delivered kW among them pro rata to
  their accepted kW (millionth-kW floors; the remainder goes to the largest award, then lowest id).
* Method resolution per site: the site's own assignment, else its portfolio's, else the market's
  default (an assignment without resource), else :data:`FALLBACK_METHOD` with its defaults; in each
  case the assignment with the latest ``valid_from`` on or before the day.
* A new computation (version + 1) is stored only when its content differs from the latest one.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

import holidays as holiday_calendars
import polars as pl
from sqlalchemy import select
from sqlalchemy.orm import Session

from market.auth.principal import Principal
from market.clearing.models import ClearingRun
from market.core.bulk import copy_in, is_postgres, read_frame
from market.core.errors import NotFound
from market.grid.models import CongestionPoint
from market.markets.models import Market
from market.markets.service import clock_of
from market.orders.models import FlexOffer
from market.participants.models import Site
from settlement.baselines.methods import REGISTRY, BaselineMethod, BaselineParams, compute_baselines
from settlement.baselines.models import BaselineAssignment
from settlement.delivery.models import DeliveryComputation, DeliveryLine, DeliveryStatus, MemberDelivery
from settlement.runs.models import SettlementLine, SettlementRun

FALLBACK_METHOD = BaselineMethod.HIGH_X_OF_Y
"""Used where neither the site, its portfolio nor the market has an assignment: PJM-style High 4 of 5
needs no participant input (the USEF default, nominated, needs a nomination for every ISP)."""

_MICRO_PER_WATT = 1_000


@dataclass(frozen=True, slots=True)
class ResolvedMethod:
    method: BaselineMethod
    version: int
    params: BaselineParams


def params_from_json(method: BaselineMethod, raw: dict[str, Any], isp_minutes: int) -> BaselineParams:
    """Stored parameters over the method's defaults (unknown keys were refused when stored)."""
    defaults = asdict(BaselineParams.defaults(method, isp_minutes))
    return BaselineParams(**{**defaults, **raw})


def assignments_in_force(session: Session, market: Market, day: date) -> dict[uuid.UUID | None, ResolvedMethod]:
    """Per resource id (None: the market default), the assignment in force on ``day``."""
    rows = session.scalars(
        select(BaselineAssignment)
        .where(BaselineAssignment.market_id == market.id, BaselineAssignment.valid_from <= day)
        .order_by(BaselineAssignment.valid_from, BaselineAssignment.created_at)
    )
    resolved: dict[uuid.UUID | None, ResolvedMethod] = {}
    for row in rows:  # later rows supersede earlier ones
        method = BaselineMethod(row.method)
        resolved[row.resource_id] = ResolvedMethod(
            method, row.method_version, params_from_json(method, row.params, market.isp_minutes)
        )
    return resolved


def resolve_method(
    assignments: dict[uuid.UUID | None, ResolvedMethod],
    site_id: uuid.UUID,
    portfolio_id: uuid.UUID | None,
    isp_minutes: int,
) -> ResolvedMethod:
    for key in (site_id, portfolio_id):
        if key is not None and key in assignments:
            return assignments[key]
    if None in assignments:
        return assignments[None]
    return ResolvedMethod(
        FALLBACK_METHOD, REGISTRY[FALLBACK_METHOD].version, BaselineParams.defaults(FALLBACK_METHOD, isp_minutes)
    )


def holidays_of(country: str | None, years: Iterable[int]) -> frozenset[date]:
    """Public holidays of ``country`` (``NL`` or ``NL-xx`` with a subdivision) from the ``holidays`` package."""
    if not country:
        return frozenset()
    code, _, subdivision = country.partition("-")
    calendar = holiday_calendars.country_holidays(code, subdiv=subdivision or None, years=sorted(set(years)))
    return frozenset(calendar.keys())


def _local(frame: pl.DataFrame, column: str, market: Market) -> pl.DataFrame:
    """Adds ``day`` (local delivery day) and ``slot`` (local time-of-day slot, see the baselines module)."""
    local = pl.col(column).dt.convert_time_zone(market.timezone)
    return frame.with_columns(
        day=local.dt.date(),
        slot=((local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)) // market.isp_minutes).cast(
            pl.UInt16
        ),
    )


_AWARD_ISP_SCHEMA = {
    "offer_id": pl.String,
    "isp_start": pl.Datetime("us", "UTC"),
    "accepted_kw": pl.Int64,
    "price_per_mwh": pl.Int64,
}
_AWARDED_OFFER_SCHEMA = {
    "offer_id": pl.String,
    "seller_id": pl.String,
    "direction": pl.String,
    "utility_id": pl.String,
    "site_id": pl.String,
    "portfolio_id": pl.String,
}

_SITES_OF_RUN = """
    SELECT o.site_id AS id, NULL AS portfolio_id FROM flex_offer o
    WHERE o.site_id IS NOT NULL AND o.id IN (SELECT fo.offer_id FROM flex_order fo WHERE fo.run_id = :clearing)
    UNION
    SELECT s.id, s.portfolio_id FROM site s JOIN flex_offer o ON o.portfolio_id = s.portfolio_id
    WHERE o.id IN (SELECT fo.offer_id FROM flex_order fo WHERE fo.run_id = :clearing)
"""


def _awards(session: Session, clearing: ClearingRun) -> pl.DataFrame:
    """The run's accepted award ISPs with their offer's seller, direction, paying utility, site or
    portfolio. Read as two results, the ISPs (four columns) and their offers (one row each), and
    joined here: the offer's five ids are not sent and parsed again for each of its ISPs."""
    isps = read_frame(
        session,
        """
        SELECT fo.offer_id, fo.isp_start, fo.accepted_kw, fo.price_per_mwh FROM flex_order fo
        WHERE fo.run_id = :clearing AND fo.accepted_kw > 0
        """,
        {"clearing": clearing.id},
        _AWARD_ISP_SCHEMA,
        micro_columns=("accepted_kw", "price_per_mwh"),
    )
    offers = read_frame(
        session,
        """
        SELECT o.id, o.seller_id, o.direction, cp.utility_id, o.site_id, o.portfolio_id
        FROM flex_offer o JOIN congestion_point cp ON cp.id = o.congestion_point_id
        WHERE o.id IN (SELECT fo.offer_id FROM flex_order fo WHERE fo.run_id = :clearing AND fo.accepted_kw > 0)
        """,
        {"clearing": clearing.id},
        _AWARDED_OFFER_SCHEMA,
    )
    return isps.join(offers, on="offer_id", how="inner", validate="m:1").select(
        "offer_id", "isp_start", "seller_id", "direction", "accepted_kw", "price_per_mwh", "utility_id", "site_id",
        "portfolio_id",
    )  # fmt: skip


def _sites(session: Session, clearing: ClearingRun) -> pl.DataFrame:
    """Every site the day's awards involve (offered directly, or a member of an awarded portfolio)."""
    sites = read_frame(
        session,
        f"SELECT s.id, s.portfolio_id, s.owner_id FROM site s WHERE s.id IN (SELECT id FROM ({_SITES_OF_RUN}) AS x)",  # noqa: S608
        {"clearing": clearing.id},
        {"id": pl.String, "portfolio_id": pl.String, "owner_id": pl.String},
    )
    return sites.sort("id").with_row_index("resource").with_columns(pl.col("resource").cast(pl.UInt32))


def _current_version(session: Session, table: str, key: str, columns: str, where: str) -> str:
    """SQL for the latest version of each (``key``, isp_start) row of ``table`` matching ``where``:
    ``DISTINCT ON`` on PostgreSQL (one ordered index scan), a correlated MAX elsewhere."""
    if is_postgres(session):
        return (
            f"SELECT DISTINCT ON (t.{key}, t.isp_start) {columns} FROM {table} t WHERE {where} "  # noqa: S608 - fixed SQL
            f"ORDER BY t.{key}, t.isp_start, t.version DESC"
        )
    return (
        f"SELECT {columns} FROM {table} t WHERE {where} AND t.version = "  # noqa: S608 - fixed SQL
        f"(SELECT MAX(t2.version) FROM {table} t2 WHERE t2.{key} = t.{key} AND t2.isp_start = t.isp_start)"
    )


def _readings(session: Session, clearing: ClearingRun, start: datetime, end: datetime) -> pl.DataFrame:
    """Current readings of the involved sites in [start, end): site_id, isp_start, net_kwh (Int64 millionths)."""
    sql = _current_version(
        session,
        "meter_reading",
        "site_id",
        "t.site_id, t.isp_start, t.import_kwh, t.export_kwh",
        f"t.site_id IN (SELECT id FROM ({_SITES_OF_RUN}) AS x) AND t.isp_start >= :start AND t.isp_start < :end",  # noqa: S608
    )
    frame = read_frame(
        session,
        sql,
        {"clearing": clearing.id, "start": start, "end": end},
        {"site_id": pl.String, "isp_start": pl.Datetime("us", "UTC"), "import_kwh": pl.Int64, "export_kwh": pl.Int64},
        micro_columns=("import_kwh", "export_kwh"),
    )
    return frame.select("site_id", "isp_start", net_kwh=pl.col("import_kwh") - pl.col("export_kwh"))


def _excluded_days(
    session: Session, market: Market, sites: pl.DataFrame, since: datetime, until: datetime
) -> pl.DataFrame:
    """Earlier days on which the sites (or their portfolios) had awards: never like-days. Read as one
    row per awarded offer (its first and last awarded ISP), not one per award ISP."""
    if since >= until:
        return pl.DataFrame(schema={"resource": pl.UInt32, "day": pl.Date})
    spans = read_frame(
        session,
        """
        SELECT o.site_id, o.portfolio_id, MIN(fo.isp_start), MAX(fo.isp_start) FROM flex_order fo
        JOIN flex_offer o ON o.id = fo.offer_id
        WHERE fo.isp_start >= :since AND fo.isp_start < :until AND fo.accepted_kw > 0
        GROUP BY o.id, o.site_id, o.portfolio_id
        """,
        {"since": since, "until": until},
        {
            "site_id": pl.String,
            "portfolio_id": pl.String,
            "first": pl.Datetime("us", "UTC"),
            "last": pl.Datetime("us", "UTC"),
        },
    )
    zone = market.timezone
    awarded = (
        spans.select(
            "site_id",
            "portfolio_id",
            day=pl.date_ranges(
                pl.col("first").dt.convert_time_zone(zone).dt.date(),
                pl.col("last").dt.convert_time_zone(zone).dt.date(),
            ),
        )
        .explode("day")
        .unique()
    )
    direct = awarded.join(sites.select("resource", site_id="id"), on="site_id").select("resource", "day")
    via = awarded.drop_nulls("portfolio_id").join(
        sites.drop_nulls("portfolio_id").select("resource", "portfolio_id"), on="portfolio_id"
    )
    return pl.concat([direct, via.select("resource", "day")]).unique()


def _nominations(session: Session, market: Market, sites: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """Latest nominated kW per site and ISP of the day, as (resource, day, slot, kw)."""
    sql = _current_version(
        session,
        "baseline_nomination",
        "resource_id",
        "t.resource_id, t.isp_start, t.kw",
        "t.market_id = :market AND t.resource_kind = 'site' AND t.isp_start >= :start AND t.isp_start < :end",
    )
    raw = read_frame(
        session,
        sql,
        {"market": market.id, "start": start, "end": end},
        {"resource_id": pl.String, "isp_start": pl.Datetime("us", "UTC"), "kw": pl.Int64},
        micro_columns=("kw",),
    )
    joined = raw.join(sites.select("resource", resource_id="id"), on="resource_id")
    return (
        _local(joined, "isp_start", market)
        .group_by("resource", "day", "slot")
        .agg((pl.col("kw").mean() / 1_000_000).alias("kw"))
    )


@dataclass(frozen=True)
class Delivery:
    """A verified day in memory: what a computation stores, its content hash, and what settlement
    needs next (award prices, paying utilities, portfolio and owner ids), so nothing is read back.
    :func:`store_delivery` stores it (or finds it stored already)."""

    clearing_run_id: uuid.UUID
    content_hash: str
    """SHA-256 of ``lines`` and ``member_lines``: equal hashes, equal computations."""
    lines: pl.DataFrame
    """One per award (offer × ISP): offer_id, isp_start, seller_id, resource_id, direction, ordered_kw,
    baseline_kw, actual_kw, delivered_kw, status, method, method_version (kW as Int64 millionths)."""
    member_lines: pl.DataFrame
    """offer_id, site_id, isp_start, actual_kw, delivered_kw, baseline_kw (portfolio offers' member sites)."""
    settle: pl.DataFrame
    """``lines`` with the award's price, paying utility and portfolio: offer_id, isp_start, seller_id,
    utility_id, portfolio_id, ordered_kw, baseline_kw, actual_kw, delivered_kw, status, method,
    method_version, price_per_mwh."""
    members: pl.DataFrame
    """offer_id, site_id, owner_id, isp_start, delivered_kw (portfolio offers' member sites)."""


LIKE_DAY_METHODS = frozenset({BaselineMethod.HIGH_X_OF_Y, BaselineMethod.MIDDLE_X_OF_Y, BaselineMethod.Y_DAY_AVERAGE})
"""Methods that read earlier days; the others (nominated, meter before/after) read the day itself only."""


def compute_delivery(session: Session, market: Market, day: date, clearing: ClearingRun) -> Delivery:
    """Verify the day's awards against meter data and baselines (reads only; :func:`store_delivery` stores)."""
    clock = clock_of(market)
    day_start, day_end = clock.day_bounds(day)
    sites = _sites(session, clearing)
    assignments = assignments_in_force(session, market, day)
    site_methods = {
        row["id"]: resolve_method(
            assignments,
            uuid.UUID(row["id"]),
            uuid.UUID(row["portfolio_id"]) if row["portfolio_id"] else None,
            market.isp_minutes,
        )
        for row in sites.iter_rows(named=True)
    }
    lookback = max(
        (m.params.max_lookback_days for m in site_methods.values() if m.method in LIKE_DAY_METHODS), default=0
    )
    history_start = clock.day_bounds(day - timedelta(days=lookback))[0]
    awards = _awards(session, clearing)
    readings = _readings(session, clearing, history_start, day_end)
    nominations = _nominations(session, market, sites, day_start, day_end)
    per_isp_kw = 60 // market.isp_minutes
    history = (
        _local(readings.join(sites.select("resource", site_id="id"), on="site_id"), "isp_start", market)
        .group_by("resource", "day", "slot")
        .agg((pl.col("net_kwh").mean() * per_isp_kw / 1_000_000).alias("kw"))
    )

    # Site-level award rows: direct site offers, and each member site of an awarded portfolio.
    awards = _local(awards, "isp_start", market)
    direct = awards.drop_nulls("site_id").join(sites.select("resource", "id"), left_on="site_id", right_on="id")
    members = awards.drop_nulls("portfolio_id").join(
        sites.drop_nulls("portfolio_id").select("resource", "portfolio_id", member_id="id"), on="portfolio_id"
    )
    site_rows = pl.concat(
        [
            direct.select("offer_id", "isp_start", "day", "slot", "direction", "accepted_kw", "resource"),
            members.select("offer_id", "isp_start", "day", "slot", "direction", "accepted_kw", "resource"),
        ]
    )
    events = (
        site_rows.filter(pl.col("day") == day)
        .group_by("resource", "day")
        .agg(first_slot=pl.col("slot").min().cast(pl.Int32), last_slot=pl.col("slot").max().cast(pl.Int32))
    )
    excluded = _excluded_days(session, market, sites, history_start, day_start)
    years = {day.year, (day - timedelta(days=lookback)).year}
    holidays = holidays_of(_holiday_country(session, market), years)

    resource_ids = sites["id"].to_list()
    groups: dict[str, tuple[ResolvedMethod, list[int]]] = {}
    for index, site_id in enumerate(resource_ids):
        resolved = site_methods[site_id]
        key = json.dumps([resolved.method.value, resolved.version, asdict(resolved.params)], sort_keys=True)
        groups.setdefault(key, (resolved, []))[1].append(index)
    baselines: list[pl.DataFrame] = []
    for resolved, indices in groups.values():
        chosen = pl.lit(pl.Series("resource", indices, dtype=pl.UInt32).implode())
        part = compute_baselines(
            resolved.method,
            resolved.params,
            history.filter(pl.col("resource").is_in(chosen)),
            events.filter(pl.col("resource").is_in(chosen)),
            holidays=holidays,
            excluded_days=excluded.filter(pl.col("resource").is_in(chosen)),
            nominations=nominations.filter(pl.col("resource").is_in(chosen)),
        )
        baselines.append(
            part.select(
                "resource",
                "day",
                "slot",
                "baseline_kw",
                method=pl.lit(resolved.method.value),
                method_version=pl.lit(resolved.version, pl.Int64),
            )
        )
    baseline = pl.concat(baselines) if baselines else None

    actual = readings.join(sites.select("resource", site_id="id"), on="site_id").select(
        "resource", "isp_start", actual_kw=pl.col("net_kwh") * per_isp_kw
    )
    site_lines = site_rows.filter(pl.col("day") == day).join(actual, on=["resource", "isp_start"], how="left")
    if baseline is not None:
        site_lines = site_lines.join(baseline, on=["resource", "day", "slot"], how="left")
    else:
        site_lines = site_lines.with_columns(
            baseline_kw=pl.lit(None, pl.Float64),
            method=pl.lit(FALLBACK_METHOD.value),
            method_version=pl.lit(1, pl.Int64),
        )
    site_lines = _delivered(site_lines)
    day_awards = awards.filter(pl.col("day") == day)
    lines, member_lines = _offer_lines(day_awards, site_lines, sites)
    lines = lines.select(LINE_COLUMNS)
    settle = lines.join(
        day_awards.select("offer_id", "isp_start", "price_per_mwh", "utility_id", "portfolio_id"),
        on=["offer_id", "isp_start"],
    ).select(
        "offer_id", "isp_start", "seller_id", "utility_id", "portfolio_id", "ordered_kw", "baseline_kw", "actual_kw",
        "delivered_kw", "status", "method", "method_version", "price_per_mwh",
    )  # fmt: skip
    members = member_lines.join(sites.select(site_id="id", owner_id="owner_id"), on="site_id").select(
        "offer_id", "site_id", "owner_id", "isp_start", "delivered_kw"
    )
    return Delivery(clearing.id, _content_hash(lines, member_lines), lines, member_lines, settle, members)


def site_history(
    session: Session, market: Market, site: Site, start: datetime, end: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One site's readings in [start, end) as baseline input (resource 0), and its days with awards."""
    sql = _current_version(
        session,
        "meter_reading",
        "site_id",
        "t.isp_start, t.import_kwh, t.export_kwh",
        "t.site_id = :site AND t.isp_start >= :start AND t.isp_start < :end",
    )
    frame = read_frame(
        session,
        sql,
        {"site": site.id, "start": start, "end": end},
        {"isp_start": pl.Datetime("us", "UTC"), "import_kwh": pl.Int64, "export_kwh": pl.Int64},
        micro_columns=("import_kwh", "export_kwh"),
    )
    per_isp_kw = 60 // market.isp_minutes
    history = (
        _local(frame, "isp_start", market)
        .group_by("day", "slot")
        .agg(((pl.col("import_kwh") - pl.col("export_kwh")).mean() * per_isp_kw / 1_000_000).alias("kw"))
        .select(pl.lit(0, pl.UInt32).alias("resource"), "day", "slot", "kw")
    )
    sites = pl.DataFrame(
        {
            "resource": [0],
            "id": [str(site.id)],
            "portfolio_id": [str(site.portfolio_id) if site.portfolio_id else None],
        },
        schema={"resource": pl.UInt32, "id": pl.String, "portfolio_id": pl.String},
    )
    return history, _excluded_days(session, market, sites, start, end)


def _holiday_country(session: Session, market: Market) -> str | None:
    from settlement.runs.models import MarketSettlementTerms  # noqa: PLC0415 - runs depends on delivery, not back

    record = session.get(MarketSettlementTerms, market.id)
    return record.holiday_country if record is not None else None


def _delivered(rows: pl.DataFrame) -> pl.DataFrame:
    """Per site and award row: baseline to the watt, status, delivered kW (millionths), shared pro rata
    among the site's offers in the same ISP and direction."""
    sign = pl.when(pl.col("direction") == "up").then(1).otherwise(-1)
    rows = rows.with_columns(
        baseline_micro=((pl.col("baseline_kw") * 1000).round(0).cast(pl.Int64) * _MICRO_PER_WATT),
    ).with_columns(
        status=pl.when(pl.col("actual_kw").is_null())
        .then(pl.lit(DeliveryStatus.MISSING_READINGS.value))
        .when(pl.col("baseline_micro").is_null())
        .then(pl.lit(DeliveryStatus.NO_BASELINE.value))
        .otherwise(pl.lit(DeliveryStatus.OK.value)),
    )
    site_delivered = (sign * (pl.col("baseline_micro") - pl.col("actual_kw"))).fill_null(0)
    group = ["resource", "isp_start", "direction"]
    rows = rows.with_columns(site_delivered=site_delivered, _shared=pl.len().over(group) > 1)
    # A site with one award in an ISP and direction (almost every row) delivers all of its own delivery;
    # only stacked awards are shared, so the windows below run on those rows alone.
    alone = rows.filter(~pl.col("_shared")).with_columns(delivered_kw=pl.col("site_delivered"))
    stacked = rows.filter(pl.col("_shared"))
    total = pl.col("accepted_kw").sum().over(group)
    stacked = stacked.with_columns(
        share=pl.when(total > 0).then(pl.col("site_delivered") * pl.col("accepted_kw") // total).otherwise(0)
    )
    rank = pl.struct(pl.col("accepted_kw").neg(), "offer_id").rank("ordinal").over(group)
    remainder = pl.col("site_delivered") - pl.col("share").sum().over(group)
    stacked = stacked.with_columns(
        delivered_kw=pl.when(rank == 1).then(pl.col("share") + remainder).otherwise(pl.col("share"))
    ).drop("share")
    return pl.concat([alone, stacked]).drop("_shared")


def _offer_lines(
    awards: pl.DataFrame, site_lines: pl.DataFrame, sites: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One line per award: the site's own for site offers, Σ over members for portfolio offers."""
    worst = (
        pl.when((pl.col("status") == DeliveryStatus.MISSING_READINGS.value).any())
        .then(pl.lit(DeliveryStatus.MISSING_READINGS.value))
        .when((pl.col("status") == DeliveryStatus.NO_BASELINE.value).any())
        .then(pl.lit(DeliveryStatus.NO_BASELINE.value))
        .otherwise(pl.lit(DeliveryStatus.OK.value))
    )
    per_offer = site_lines.group_by("offer_id", "isp_start").agg(
        baseline_kw=pl.when(pl.col("baseline_micro").null_count() == 0).then(pl.col("baseline_micro").sum()),
        actual_kw=pl.when(pl.col("actual_kw").null_count() == 0).then(pl.col("actual_kw").sum()),
        delivered_kw=pl.col("delivered_kw").sum(),
        status=worst,
        method=pl.col("method").first(),
        method_version=pl.col("method_version").first(),
    )
    lines = awards.select(
        "offer_id", "isp_start", "seller_id", "direction", "site_id", "portfolio_id", ordered_kw="accepted_kw"
    ).join(per_offer, on=["offer_id", "isp_start"], how="left")
    lines = lines.with_columns(
        resource_id=pl.coalesce("site_id", "portfolio_id"),
        delivered_kw=pl.col("delivered_kw").fill_null(0),
        status=pl.col("status").fill_null(DeliveryStatus.MISSING_READINGS.value),
        method=pl.col("method").fill_null(FALLBACK_METHOD.value),
        method_version=pl.col("method_version").fill_null(REGISTRY[FALLBACK_METHOD].version),
    ).drop("site_id", "portfolio_id")
    portfolio_offers = awards.drop_nulls("portfolio_id").select("offer_id").unique()
    member_lines = site_lines.join(portfolio_offers, on="offer_id").join(
        sites.select("resource", site_id="id"), on="resource"
    )
    member_lines = member_lines.select(
        "offer_id", "site_id", "isp_start", "actual_kw", "delivered_kw", baseline_kw="baseline_micro"
    )
    return lines.sort("offer_id", "isp_start"), member_lines.sort("offer_id", "site_id", "isp_start")


def _content_hash(lines: pl.DataFrame, member_lines: pl.DataFrame) -> str:
    """SHA-256 of both frames as CSV: a canonical text of the values, equal for equal frames however
    they were built. (Arrow IPC, tried for speed, is not: equal frames gave different bytes from
    string-view buffers and the values under null slots, so an unchanged day looked changed.) The
    frames hold only integers, strings and instants, so their CSV is exact. A Polars upgrade that
    changed the text would only make the next computation a new version with the same content."""
    digest = hashlib.sha256()
    for frame in (lines, member_lines):
        buffer = io.BytesIO()
        frame.write_csv(buffer)
        digest.update(buffer.getvalue())
    return digest.hexdigest()


LINE_COLUMNS = (
    "offer_id", "isp_start", "seller_id", "resource_id", "direction", "ordered_kw", "baseline_kw", "actual_kw",
    "delivered_kw", "status", "method", "method_version",
)  # fmt: skip
"""A delivery line's columns, in :class:`DeliveryLine`'s order."""


def store_delivery(
    session: Session, market: Market, day: date, delivery: Delivery, now: datetime, *, embedded: bool
) -> DeliveryComputation:
    """The stored computation of ``delivery``: the latest one if its content and clearing are the same,
    else a new version. ``embedded`` (a settlement run's own computation): the award lines are left to
    the run's settlement lines, which carry the same facts; only member-site delivery is written here."""
    computation, created = record_computation(session, market, day, delivery, now, embedded=embedded)
    if not created:
        return computation
    if not embedded:
        copy_in(
            session,
            DeliveryLine.__tablename__,
            delivery.lines.with_columns(computation_id=pl.lit(str(computation.id))),
            micro_columns=("ordered_kw", "baseline_kw", "actual_kw", "delivered_kw"),
        )
    copy_in(session, MemberDelivery.__tablename__, member_rows(delivery, computation))
    return computation


def record_computation(
    session: Session, market: Market, day: date, delivery: Delivery, now: datetime, *, embedded: bool
) -> tuple[DeliveryComputation, bool]:
    """:func:`store_delivery`'s computation row without its lines: the latest computation if its content
    and clearing are the same (``False``), else a new version, flushed (``True``), whose lines the
    caller writes (:func:`member_rows`; an embedded one has no delivery lines)."""
    latest = latest_computation(session, market.id, day)
    same = (delivery.content_hash, delivery.clearing_run_id)
    if latest is not None and (latest.inputs_hash, latest.clearing_run_id) == same:
        return latest, False
    computation = DeliveryComputation(
        id=uuid.uuid4(),
        market_id=market.id,
        delivery_day=day,
        version=(latest.version if latest is not None else 0) + 1,
        clearing_run_id=delivery.clearing_run_id,
        inputs_hash=delivery.content_hash,
        line_count=delivery.lines.height,
        embedded=embedded,
        created_at=now,
    )
    session.add(computation)
    session.flush()
    return computation, True


def member_rows(delivery: Delivery, computation: DeliveryComputation) -> pl.DataFrame:
    """``delivery``'s member-site lines as member_delivery rows of ``computation``. Its kW are BIGINT
    millionths (ScaledDecimal, migration 0011): the Int64 columns as they are."""
    return delivery.member_lines.with_columns(computation_id=pl.lit(str(computation.id)))


def latest_computation(session: Session, market_id: uuid.UUID, day: date) -> DeliveryComputation | None:
    return session.scalar(
        select(DeliveryComputation)
        .where(DeliveryComputation.market_id == market_id, DeliveryComputation.delivery_day == day)
        .order_by(DeliveryComputation.version.desc())
        .limit(1)
    )


def verify_day(session: Session, market_id: uuid.UUID, day: date, now: datetime) -> DeliveryComputation:
    """Compute (or confirm) the day's delivery: the day must have been cleared and have ended."""
    from market.clearing.models import RunStatus  # noqa: PLC0415 - keeps the import list short
    from market.core.errors import Conflict  # noqa: PLC0415
    from market.markets.service import get_market  # noqa: PLC0415

    market = get_market(session, market_id)
    if now < clock_of(market).day_bounds(day)[1]:
        raise Conflict.on("day", f"delivery day {day} has not ended yet")
    clearing = session.scalar(
        select(ClearingRun).where(ClearingRun.market_id == market_id, ClearingRun.delivery_day == day)
    )
    if clearing is None or clearing.status is not RunStatus.DONE:
        raise Conflict.on("day", f"delivery day {day} has not been cleared")
    return store_delivery(session, market, day, compute_delivery(session, market, day, clearing), now, embedded=False)


def lines_of_offer(session: Session, principal: Principal, offer_id: uuid.UUID) -> list[DeliveryLine]:
    """The latest verified delivery of an offer: its seller, the utility of its congestion point, the operator."""
    offer = session.get(FlexOffer, offer_id)
    if offer is None:
        raise NotFound.of("offer", offer_id)
    point = session.get(CongestionPoint, offer.congestion_point_id)
    allowed = principal.may_act_for(offer.seller_id) or (
        point is not None and point.utility_id == principal.participant_id
    )
    if not allowed:
        raise NotFound.of("offer", offer_id)
    standalone = session.execute(
        select(DeliveryComputation.delivery_day, DeliveryComputation.version, DeliveryComputation.id)
        .join(DeliveryLine, DeliveryLine.computation_id == DeliveryComputation.id)
        .where(DeliveryLine.offer_id == offer_id)
        .order_by(DeliveryComputation.delivery_day.desc(), DeliveryComputation.version.desc())
        .limit(1)
    ).first()
    embedded = session.execute(
        select(DeliveryComputation.delivery_day, DeliveryComputation.version, DeliveryComputation.id, SettlementRun.id)
        .join(SettlementRun, SettlementRun.delivery_computation_id == DeliveryComputation.id)
        .join(SettlementLine, SettlementLine.run_id == SettlementRun.id)
        .where(DeliveryComputation.embedded, SettlementLine.offer_id == offer_id)
        .order_by(DeliveryComputation.delivery_day.desc(), DeliveryComputation.version.desc(), SettlementRun.version)
        .limit(1)
    ).first()
    if embedded is not None and (standalone is None or tuple(embedded[:2]) > tuple(standalone[:2])):
        computation_id, run_id = embedded[2], embedded[3]
        lines = session.scalars(
            select(SettlementLine)
            .where(SettlementLine.run_id == run_id, SettlementLine.offer_id == offer_id)
            .order_by(SettlementLine.isp_start)
        )
        return [_as_delivery_line(computation_id, offer, line) for line in lines]
    if standalone is None:
        return []
    return list(
        session.scalars(
            select(DeliveryLine)
            .where(DeliveryLine.offer_id == offer_id, DeliveryLine.computation_id == standalone[2])
            .order_by(DeliveryLine.isp_start)
        )
    )


def _as_delivery_line(computation_id: uuid.UUID, offer: FlexOffer, line: SettlementLine) -> DeliveryLine:
    """An embedded computation's line, as its settlement line carries it (transient: never added to a session)."""
    resource_id = offer.site_id if offer.site_id is not None else offer.portfolio_id
    assert resource_id is not None  # noqa: S101 - an offer names a site or a portfolio (database check)
    return DeliveryLine(
        computation_id=computation_id,
        offer_id=line.offer_id,
        isp_start=line.isp_start,
        seller_id=line.seller_id,
        resource_id=resource_id,
        direction=offer.direction.value,
        ordered_kw=line.ordered_kw,
        baseline_kw=line.baseline_kw,
        actual_kw=line.actual_kw,
        delivered_kw=line.delivered_kw,
        status=line.status,
        method=line.method,
        method_version=line.method_version,
    )


def members_of_offer(session: Session, principal: Principal, offer_id: uuid.UUID) -> list[MemberDelivery]:
    """Member-site delivery behind a portfolio offer's latest lines (same access as :func:`lines_of_offer`)."""
    lines = lines_of_offer(session, principal, offer_id)
    if not lines:
        return []
    return list(
        session.scalars(
            select(MemberDelivery)
            .where(MemberDelivery.offer_id == offer_id, MemberDelivery.computation_id == lines[0].computation_id)
            .order_by(MemberDelivery.site_id, MemberDelivery.isp_start)
        )
    )


def computations(session: Session, principal: Principal, market_id: uuid.UUID, day: date) -> list[DeliveryComputation]:
    principal.require_operator()
    return list(
        session.scalars(
            select(DeliveryComputation)
            .where(DeliveryComputation.market_id == market_id, DeliveryComputation.delivery_day == day)
            .order_by(DeliveryComputation.version)
        )
    )
