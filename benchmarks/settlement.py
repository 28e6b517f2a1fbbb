"""Settling a day of 1M award-ISPs and issuing its statements, on PostgreSQL, in one run on a fresh database.

The world is written straight into the tables with COPY (never through the API, never cleared by the
solver), outside every timed part:

* one market (Europe/Amsterdam, 15-minute ISPs, pay as clear), one utility with a root transformer
  and ``--feeders`` feeders, an operator;
* households each owning one or two sites, ``--aggregators`` aggregators with one portfolio of
  ``--members`` member sites (each owned by its own household) and ``--portfolio-offers`` offers
  on it, ``--data-centers`` data centres with ``--dc-sites`` sites and ``--dc-offers`` stacked
  offers per site; at ``--scale 1`` that is 10,000 sites, ~9,000 participants and 10,000 offers;
* a ``clearing_run`` row and one ``flex_order`` award per offer and ISP of the delivery day (96 ISPs:
  ~1M award rows), each at the locational price of its congestion point, direction and ISP (a
  daily shape with a morning and an evening peak for ``up``, a midday trough for ``down``);
* baselines by the ``nominated`` method (USEF's default): one market-default
  ``baseline_assignment`` row and a nomination per site and ISP, so no meter history is needed;
* meter readings for every involved site and ISP (import/export kWh from baseline − sign ×
  delivered, delivery ~95% ± 20% of the award, 3% non-delivery, 0.2% readings missing);
* settlement terms: penalty 100 EUR/MWh, tolerance 10%, operator fee 2 EUR/MWh, aggregator fee share 20%.

Then, timed: the raw COPY references (pre-rendered text of 1M rows of the settlement_line shape, sorted in
its primary key's order (run_id, seller_id, offer_id, isp_start), into an unindexed plain table, into a copy with
only that primary key and into ``settlement_line`` itself, each committed); ``settle_day(...,
RunKind.INITIAL, ...)`` in one transaction plus its commit, with a breakdown taken by wrapping the
service's own module-level functions with ``time.perf_counter`` (``mock.patch.object``; the service
code is not changed); a reconciliation after correcting 1% of the readings; ``issue_all`` for the
period (the statement job: Polars aggregates, numbers taken at once, no documents); and the downloads
of the issued statements as CSV: per statement the row (``session.get``), ``document_of`` (rebuilds
the document from the statement's runs) and ``to_csv``. The utility's statement (every award of the
day) is timed on its own; the others are rendered all when a probe of the first ones projects at most
``--csv-all-limit-s``, else a stratified random sample of ``--csv-sample`` (at least a few of every
role, within ``--csv-budget-s``) whose per-role means are extrapolated to every statement of that
role (the report says which). ``ANALYZE`` runs after each bulk load (what autovacuum would do on a
live system). Figures of the previous committed run (at git ae868e9, results committed in 80c43cb) are
kept in :data:`BEFORE` and shown next to this run's.

Run from the repository root (develop with ``--scale 0.1``)::

    .venv/bin/python -m benchmarks.settlement
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import resource
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from types import ModuleType
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import psycopg
from psycopg import sql
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

import settlement.delivery.service as delivery_service
import settlement.ledger.service as ledger_service
import settlement.runs.service as runs_service
import settlement.statements.service as statements_service
from benchmarks.common import (
    DEFAULT_ADMIN_URL,
    NOISY_CORES,
    _git,
    contamination_note,
    cpu_sample,
    cpu_used,
    environment,
    environment_markdown,
    say,
    scratch_database,
    write_results,
)
from market.core import audit, bulk
from market.core.db import make_engine, make_session_factory
from market.markets.calendar import MarketClock
from market.markets.models import GateClosureKind
from market.participants.models import Participant
from settlement.baselines.methods import REGISTRY, BaselineMethod
from settlement.runs.models import RunKind
from settlement.statements.models import Statement
from settlement.statements.render import to_csv

MODULE = "benchmarks.settlement"
NAME = "settlement"
MARKET_TZ = "Europe/Amsterdam"
ISP_MINUTES = 15
TARGET_SETTLE_S = 15.0
TARGET_STATEMENTS = 10_000
TERMS = {
    "currency": "EUR",
    "penalty_price_per_mwh": "100",
    "tolerance": "0.1",
    "operator_fee_per_mwh": "2",
    "aggregator_fee_share": "0.2",
    "sliding_scale": False,
    "availability_price_per_mw_h": "0",
}
MISSING_READING_SHARE = 0.002
NON_DELIVERY_SHARE = 0.03
CORRECTED_SHARE = 0.01
CHUNK_ROWS = 100_000
LINE_COLUMNS = (
    "run_id", "offer_id", "isp_start", "seller_id", "utility_id", "ordered_kw", "baseline_kw", "actual_kw", "status",
    "method", "method_version", "delivered_kw", "shortfall_kw", "price_per_mwh", "utilisation", "penalty",
    "availability", "fee", "net",
)  # fmt: skip
PLAIN_TABLE = "bench_settlement_line_plain"
PK_TABLE = "bench_settlement_line_pk"
REFERENCE_TABLES = {"plain_table": PLAIN_TABLE, "pk_only": PK_TABLE, "settlement_line": "settlement_line"}
RENDERED_TABLES = {
    "settlement_line": runs_service._LINE_MICRO,
    "delivery_line": ("ordered_kw", "baseline_kw", "actual_kw", "delivered_kw"),
}
MICRO = 1_000_000
PROBE_STATEMENTS = 50
"""Statements rendered first, in sample order, to project the time of rendering all of them."""
PER_ROLE_MIN = 5
"""At least this many statements of every role in the CSV sample (when there are that many)."""

INITIAL_STEPS_BEFORE: dict[str, float] = {
    "settle_day": 31.137,
    "settle_day/require_settleable": 0.0028,
    "settle_day/compute_delivery": 19.2017,
    "settle_day/compute_delivery/_awards": 1.7602,
    "settle_day/compute_delivery/_sites": 0.1245,
    "settle_day/compute_delivery/assignments_in_force": 0.0039,
    "settle_day/compute_delivery/_readings": 1.7215,
    "settle_day/compute_delivery/_excluded_days": 0.0745,
    "settle_day/compute_delivery/holidays_of": 0.0,
    "settle_day/compute_delivery/_nominations": 1.5708,
    "settle_day/compute_delivery/compute_baselines": 0.2736,
    "settle_day/compute_delivery/_delivered": 1.4285,
    "settle_day/compute_delivery/_offer_lines": 0.6292,
    "settle_day/compute_delivery/_store": 10.2897,
    "settle_day/compute_delivery/_store/_content_hash": 0.8305,
    "settle_day/compute_delivery/_store/copy_in(delivery_line)": 6.9268,
    "settle_day/compute_delivery/_store/copy_in(member_delivery)": 2.5248,
    "settle_day/_settle_lines": 0.2264,
    "settle_day/_settle_lines/frame_amounts": 0.0658,
    "settle_day/_pass_through": 0.0914,
    "settle_day/_pass_through/pass_through": 0.0464,
    "settle_day/_line_rows": 0.0005,
    "settle_day/copy_in(settlement_line)": 8.3324,
    "settle_day/copy_in(pass_through_share)": 0.0512,
    "settle_day/_post_differences": 3.1919,
    "settle_day/_post_differences/accounts_for": 0.7476,
    "settle_day/_post_differences/account_for": 0.0061,
    "settle_day/_post_differences/posted_totals": 0.0059,
    "settle_day/_post_differences/net_by_key": 0.0631,
    "settle_day/_post_differences/differences": 0.2833,
    "settle_day/_post_differences/post": 1.3253,
    "settle_day/_post_differences/post/_check_against_stored": 0.3804,
    "settle_day/_post_differences/post/_copy_entries": 0.7296,
    "settle_day/consume_marks": 0.0025,
    "settle_day/record": 0.0001,
    "commit": 0.002,
}
RECONCILIATION_STEPS_BEFORE: dict[str, float] = {
    "settle_day": 31.0628,
    "settle_day/require_settleable": 0.0014,
    "settle_day/compute_delivery": 19.9198,
    "settle_day/compute_delivery/_awards": 1.8865,
    "settle_day/compute_delivery/_sites": 0.1572,
    "settle_day/compute_delivery/assignments_in_force": 0.0016,
    "settle_day/compute_delivery/_readings": 1.5883,
    "settle_day/compute_delivery/_excluded_days": 0.08,
    "settle_day/compute_delivery/holidays_of": 0.0,
    "settle_day/compute_delivery/_nominations": 1.5069,
    "settle_day/compute_delivery/compute_baselines": 0.217,
    "settle_day/compute_delivery/_delivered": 1.3756,
    "settle_day/compute_delivery/_offer_lines": 0.614,
    "settle_day/compute_delivery/_store": 11.2445,
    "settle_day/compute_delivery/_store/_content_hash": 0.794,
    "settle_day/compute_delivery/_store/copy_in(delivery_line)": 7.41,
    "settle_day/compute_delivery/_store/copy_in(member_delivery)": 3.0358,
    "settle_day/_settle_lines": 0.2467,
    "settle_day/_settle_lines/frame_amounts": 0.0703,
    "settle_day/_pass_through": 0.0911,
    "settle_day/_pass_through/pass_through": 0.0433,
    "settle_day/_line_rows": 0.0006,
    "settle_day/copy_in(settlement_line)": 8.8606,
    "settle_day/copy_in(pass_through_share)": 0.0548,
    "settle_day/_post_differences": 1.8411,
    "settle_day/_post_differences/accounts_for": 0.2633,
    "settle_day/_post_differences/account_for": 0.0027,
    "settle_day/_post_differences/posted_totals": 0.5196,
    "settle_day/_post_differences/net_by_key": 0.2425,
    "settle_day/_post_differences/differences": 0.2451,
    "settle_day/_post_differences/post": 0.2785,
    "settle_day/_post_differences/post/_check_against_stored": 0.0509,
    "settle_day/_post_differences/post/_copy_entries": 0.1812,
    "settle_day/consume_marks": 0.0353,
    "settle_day/record": 0.0001,
    "commit": 0.0047,
}
BEFORE: dict[str, Any] = {
    "label": (
        "the previous committed run (2026-12-07 07:10 UTC at git ae868e9, results committed in 80c43cb; before "
        "b1cd242, 79de704 and dd863dd), measured while other agents were loading the machine"
    ),
    "initial_s": 31.139,
    "reconciliation_s": 31.067,
    "references_s": {"plain_table": 2.852, "pk_only": 4.359, "settlement_line": 8.218},
    "issue_all_s": 6.865,
    "statements": 8_999,
    "statement_table_bytes": 4_710_400,
    "runs_json_bytes_total": 980_891,
    "csv_s": 253.247,
    "csv_utility_s": 49.631,
    "csv_measured": "all 8,999 statements measured",
    "other_cores": {"initial settlement": 0.02, "reconciliation": 0.02, "issue_all": 0.0, "CSV rendering": 0.0},
    "initial_steps": INITIAL_STEPS_BEFORE,
    "reconciliation_steps": RECONCILIATION_STEPS_BEFORE,
}
"""Figures of the previous committed run of this benchmark on the same world (same seed and sizes), read from
``git show 80c43cb:benchmarks/results/settlement.json``: totals, the raw COPY references and the step seconds of
both runs (every path, down to three levels). Its primary-key-only reference had the key (run_id, offer_id,
isp_start) and settlement_line that key plus a seller index and a per-row foreign key to settlement_run. CSV then
as now: ``document_of`` and ``to_csv`` per statement (all of them measured then)."""
UNKEPT_BEFORE: dict[str, float] = {"quiet_initial_s": 26.45, "settlement_line_reference_s": 6.24}
"""Figures of the code before 79de704 that are in no results file: its initial settlement in an earlier run on
2026-12-07 on a quiet machine (not kept), and the raw COPY reference into settlement_line as measured when 79de704
was made (2.97 s after it)."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every participant/site/offer count")
    parser.add_argument("--household-sites", type=int, default=8_800, help="sites of households selling directly")
    parser.add_argument("--household-owners", type=int, default=7_928, help="households owning those sites")
    parser.add_argument("--aggregators", type=int, default=50)
    parser.add_argument("--members", type=int, default=20, help="member sites per aggregator portfolio (not scaled)")
    parser.add_argument("--portfolio-offers", type=int, default=4, help="offers per portfolio (not scaled)")
    parser.add_argument("--data-centers", type=int, default=20)
    parser.add_argument("--dc-sites", type=int, default=10, help="sites per data centre (not scaled)")
    parser.add_argument("--dc-offers", type=int, default=5, help="stacked offers per data-centre site (not scaled)")
    parser.add_argument("--feeders", type=int, default=4, help="feeders under the one root transformer")
    parser.add_argument("--days-ago", type=int, default=3, help="the delivery day, days before today")
    parser.add_argument("--reference-repeats", type=int, default=3, help="repetitions of each raw COPY reference")
    parser.add_argument("--seed", type=int, default=20_260_401)
    parser.add_argument(
        "--csv-all-limit-s",
        type=float,
        default=300.0,
        help="render every statement to CSV when the probe projects at most this many seconds, else a sample",
    )
    parser.add_argument(
        "--csv-sample", type=int, default=1_000, help="statements in the CSV sample (besides the utility's)"
    )
    parser.add_argument("--csv-budget-s", type=float, default=600.0, help="stop the CSV sample after this many seconds")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="PostgreSQL URL used to create the DB")
    parser.add_argument("--from-json", help="only rebuild the report from this saved results JSON")
    parser.add_argument(
        "--memory-limit-gb",
        type=float,
        default=20.0,
        help="address-space limit of this process (0: none), so running out of memory raises MemoryError here "
        "instead of waking the kernel's OOM killer on a shared machine",
    )
    return parser.parse_args()


# -- the world ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mix:
    household_sites: int
    household_owners: int
    aggregators: int
    members: int
    portfolio_offers: int
    data_centers: int
    dc_sites: int
    dc_offers: int
    feeders: int

    @classmethod
    def of(cls, args: argparse.Namespace) -> Mix:
        def scaled(n: int) -> int:
            return max(1, round(n * float(args.scale)))

        sites = scaled(args.household_sites)
        return cls(
            household_sites=sites,
            household_owners=min(sites, scaled(args.household_owners)),
            aggregators=scaled(args.aggregators),
            members=args.members,
            portfolio_offers=args.portfolio_offers,
            data_centers=scaled(args.data_centers),
            dc_sites=args.dc_sites,
            dc_offers=args.dc_offers,
            feeders=args.feeders,
        )

    @property
    def sites(self) -> int:
        return self.household_sites + self.aggregators * self.members + self.data_centers * self.dc_sites

    @property
    def offers(self) -> int:
        return (
            self.household_sites
            + self.aggregators * self.portfolio_offers
            + self.data_centers * self.dc_sites * self.dc_offers
        )

    @property
    def participants(self) -> int:
        """Operator, utility, sellers and member households."""
        return 2 + self.household_owners + self.aggregators * (1 + self.members) + self.data_centers


@dataclass
class World:
    market_id: uuid.UUID
    market_code: str
    operator_id: uuid.UUID
    utility_id: uuid.UUID
    day: date
    isps: list[datetime]
    clearing_id: uuid.UUID
    award_rows: int
    offers: int
    sites: int
    participants: int
    readings: int
    nominations: int
    portfolio_offers: int
    member_sites: int
    awards: pl.DataFrame
    """offer_id, isp_start, seller_id, accepted_w, price_milli: the reference rows are made from these."""
    readings_frame: pl.DataFrame
    """site_id, isp_start, net_micro_kwh, baseline_w: the corrections are made from these."""
    build_seconds: dict[str, float] = field(default_factory=dict)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _micro_text(column: str) -> pl.Expr:
    """Int64 millionths → exact decimal text."""
    value = pl.col(column)
    magnitude = value.abs()
    return (
        pl.when(value < 0).then(pl.lit("-")).otherwise(pl.lit(""))
        + (magnitude // MICRO).cast(pl.String)
        + pl.lit(".")
        + (magnitude % MICRO).cast(pl.String).str.zfill(6)
    ).alias(column)


def copy_frame(conn: psycopg.Connection[Any], table: str, frame: pl.DataFrame) -> int:
    """COPY ``frame`` (columns by name; values already in COPY text form or plain numbers) into ``table``."""
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), columns)
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for offset in range(0, frame.height, CHUNK_ROWS):
            buffer = io.BytesIO()
            frame.slice(offset, CHUNK_ROWS).write_csv(
                buffer, include_header=False, separator="\t", null_value="\\N", quote_style="never"
            )
            copy.write(buffer.getvalue())
    return frame.height


def _ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def delivery_day(days_ago: int) -> date:
    """A day that has ended, with 96 ISPs (no clock change)."""
    zone = ZoneInfo(MARKET_TZ)
    day = datetime.now(zone).date() - timedelta(days=days_ago)
    while True:
        start = datetime.combine(day, clock_time(0), zone)
        end = datetime.combine(day + timedelta(days=1), clock_time(0), zone)
        if end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=24):
            return day
        day -= timedelta(days=1)


def _point_prices(rng: np.random.Generator, points: int, isps: int) -> np.ndarray:
    """Locational prices in milli-EUR/MWh, shape (points, 2 directions, isps): ``up`` 60 + morning and
    evening peaks, ``down`` 40 + a midday peak (solar), each point scaled 0.9–1.2, plus noise."""
    hours = (np.arange(isps) + 0.5) * ISP_MINUTES / 60
    up = 60 + 120 * np.exp(-(((hours - 18.5) / 2) ** 2)) + 40 * np.exp(-(((hours - 8) / 1.5) ** 2))
    down = 40 + 80 * np.exp(-(((hours - 13) / 2.5) ** 2))
    shape = np.stack([up, down])[None, :, :] * rng.uniform(0.9, 1.2, (points, 1, 1))
    return np.round((shape + rng.uniform(0, 10, (points, 2, isps))) * 1000).astype(np.int64)


def _kw_text(watts: pl.Expr) -> pl.Expr:
    """Whole watts → kW text with 3 decimals (exact)."""
    magnitude = watts.abs()
    return (
        pl.when(watts < 0).then(pl.lit("-")).otherwise(pl.lit(""))
        + (magnitude // 1000).cast(pl.String)
        + pl.lit(".")
        + (magnitude % 1000).cast(pl.String).str.zfill(3)
    )


def build_world(url: str, mix: Mix, day: date, seed: int) -> World:  # noqa: PLR0915 - one linear recipe
    rng = np.random.default_rng(seed)
    timings: dict[str, float] = {}
    clock = MarketClock(MARKET_TZ, ISP_MINUTES, GateClosureKind.DAY_AHEAD, clock_time(12, 0))
    isps = clock.isps_of_day(day)
    n_isp = len(isps)
    day_start, day_end = clock.day_bounds(day)
    gate = datetime.combine(day - timedelta(days=1), clock_time(12, 0), ZoneInfo(MARKET_TZ)).astimezone(UTC)
    now = datetime.now(UTC)
    created = _ts(gate - timedelta(days=60))
    market_id, operator_id, utility_id, clearing_id = (uuid.uuid4() for _ in range(4))
    code = f"bench-{uuid.uuid4().hex[:6]}"

    # -- participants
    hh_ids = _ids(mix.household_owners)
    agg_ids = _ids(mix.aggregators)
    member_ids = _ids(mix.aggregators * mix.members)
    dc_ids = _ids(mix.data_centers)
    participants = pl.DataFrame(
        {
            "id": [str(operator_id), str(utility_id), *hh_ids, *agg_ids, *member_ids, *dc_ids],
            "role": ["operator", "utility"]
            + ["household"] * len(hh_ids)
            + ["aggregator"] * len(agg_ids)
            + ["household"] * len(member_ids)
            + ["data_center"] * len(dc_ids),
        }
    ).with_columns(
        name=pl.format("Benchmark {} {}", pl.col("role"), pl.int_range(pl.len()).cast(pl.String)),
        created_at=pl.lit(created),
    )

    # -- grid
    root_id = uuid.uuid4()
    feeder_ids = _ids(mix.feeders)
    points = pl.DataFrame(
        {
            "id": [str(root_id), *feeder_ids],
            "parent_id": [None, *[str(root_id)] * mix.feeders],
            "code": ["ROOT", *[f"F-{i:02d}" for i in range(mix.feeders)]],
            "kind": ["transformer", *["feeder"] * mix.feeders],
        }
    ).with_columns(
        market_id=pl.lit(str(market_id)),
        utility_id=pl.lit(str(utility_id)),
        name=pl.col("code"),
        created_at=pl.lit(created),
    )

    # -- sites: households (first owners get one, the rest of the sites go to random owners), members, data centres
    hh_site_owner = np.concatenate(
        [
            np.arange(mix.household_owners),
            rng.integers(0, mix.household_owners, mix.household_sites - mix.household_owners),
        ]
    )
    portfolio_ids = _ids(mix.aggregators)
    portfolio_point = rng.integers(0, mix.feeders, mix.aggregators)
    site_owner = (
        [hh_ids[i] for i in hh_site_owner]
        + member_ids
        + [dc_ids[i // mix.dc_sites] for i in range(mix.data_centers * mix.dc_sites)]
    )
    site_kind = (
        ["household"] * mix.household_sites
        + ["member"] * len(member_ids)
        + ["data_center"] * (mix.data_centers * mix.dc_sites)
    )
    site_portfolio = (
        [None] * mix.household_sites
        + [portfolio_ids[i // mix.members] for i in range(len(member_ids))]
        + [None] * (mix.data_centers * mix.dc_sites)
    )
    site_point_index = np.concatenate(
        [
            rng.integers(0, mix.feeders, mix.household_sites),
            np.repeat(portfolio_point, mix.members),
            rng.integers(0, mix.feeders, mix.data_centers * mix.dc_sites),
        ]
    )
    n_sites = len(site_owner)
    site_ids = _ids(n_sites)
    assets = np.array(['["battery"]', '["ev"]', '["heat_pump"]', '["pv"]'])
    sites = pl.DataFrame(
        {
            "id": site_ids,
            "owner_id": site_owner,
            "congestion_point_id": [feeder_ids[i] for i in site_point_index],
            "portfolio_id": site_portfolio,
            "kind": site_kind,
        },
        schema_overrides={"portfolio_id": pl.String},
    ).with_columns(
        meter_code=pl.format("EAN-{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(8)),
        name=pl.format("site {}", pl.int_range(pl.len()).cast(pl.String)),
        assets=pl.Series(assets[np.where(np.array(site_kind) == "data_center", 0, rng.integers(0, 4, n_sites))]),
        created_at=pl.lit(created),
    )
    site_direction = np.where(rng.random(n_sites) < 0.6, "up", "down")  # noqa: PLR2004 - 60% up
    # A portfolio's members and all offers on it share one direction.
    agg_direction = np.where(rng.random(mix.aggregators) < 0.6, "up", "down")  # noqa: PLR2004
    member_slice = slice(mix.household_sites, mix.household_sites + len(member_ids))
    site_direction[member_slice] = np.repeat(agg_direction, mix.members)

    # -- offers: one per household site, dc_offers per data-centre site, portfolio_offers per portfolio
    dc_first = mix.household_sites + len(member_ids)
    offer_site = np.concatenate(
        [np.arange(mix.household_sites), np.repeat(np.arange(dc_first, n_sites), mix.dc_offers)]
    )
    n_site_offers = len(offer_site)
    offer_portfolio = np.repeat(np.arange(mix.aggregators), mix.portfolio_offers)
    n_offers = n_site_offers + len(offer_portfolio)
    offer_ids = _ids(n_offers)
    offer_seller = [site_owner[i] for i in offer_site] + [agg_ids[i] for i in offer_portfolio]
    offer_point = np.concatenate([site_point_index[offer_site], portfolio_point[offer_portfolio]])
    offer_direction = np.concatenate([site_direction[offer_site], agg_direction[offer_portfolio]])
    kind_of_offer = np.array(site_kind)[offer_site].tolist() + ["portfolio"] * len(offer_portfolio)
    base_w = np.select(
        [np.array(kind_of_offer) == "household", np.array(kind_of_offer) == "data_center"],
        [rng.uniform(500, 8_000, n_offers), rng.uniform(100_000, 800_000, n_offers)],
        rng.uniform(10_000, 40_000, n_offers),
    )
    accepted_w = np.maximum(np.round(base_w[:, None] * rng.uniform(0.7, 1.0, (n_offers, n_isp))), 1).astype(np.int64)
    prices = _point_prices(rng, mix.feeders, n_isp)
    dir_index = (offer_direction == "down").astype(np.int64)
    award_price = prices[offer_point, dir_index, :]  # (offers, isps): the point's price, pay as clear
    floor_price = award_price.min(axis=1)
    offer_price = np.round(rng.uniform(0.1, 0.95, n_offers) * floor_price).astype(np.int64)

    isp_text = [_ts(t) for t in isps]
    quantities = [
        json.dumps([f"{w // 1000}.{w % 1000:03d}" for w in row.tolist()], separators=(",", ":")) for row in accepted_w
    ]
    offers = pl.DataFrame(
        {
            "id": offer_ids,
            "seller_id": offer_seller,
            "site_id": [site_ids[i] for i in offer_site] + [None] * len(offer_portfolio),
            "portfolio_id": [None] * n_site_offers + [portfolio_ids[i] for i in offer_portfolio],
            "price_milli": offer_price,
            "congestion_point_id": [feeder_ids[i] for i in offer_point],
            "direction": offer_direction,
            "quantities_kw": quantities,
        },
        schema_overrides={"site_id": pl.String, "portfolio_id": pl.String},
    ).with_columns(
        price_per_mwh=_kw_text(pl.col("price_milli")),
        min_acceptance_fraction=pl.lit("0"),
        is_block=pl.lit("f"),
        market_id=pl.lit(str(market_id)),
        period_start=pl.lit(_ts(day_start)),
        period_end=pl.lit(_ts(day_end)),
        revision=pl.lit(1),
        created_at=pl.lit(_ts(gate - timedelta(hours=3))),
        submitted_at=pl.lit(_ts(gate - timedelta(hours=3))),
    )
    awards = pl.DataFrame(
        {
            "offer_id": np.repeat(np.array(offer_ids), n_isp),
            "isp_start": np.tile(np.array(isp_text), n_offers),
            "seller_id": np.repeat(np.array(offer_seller), n_isp),
            "congestion_point_id": np.repeat(np.array([feeder_ids[i] for i in offer_point]), n_isp),
            "direction": np.repeat(offer_direction, n_isp),
            "accepted_w": accepted_w.ravel(),
            "price_milli": award_price.ravel(),
        }
    )
    flex_order = awards.select(
        "offer_id",
        "isp_start",
        "seller_id",
        "congestion_point_id",
        "direction",
        run_id=pl.lit(str(clearing_id)),
        accepted_kw=_kw_text(pl.col("accepted_w")),
        price_per_mwh=_kw_text(pl.col("price_milli")),
    )

    # -- nominated baselines and meter readings, per site and ISP (watts)
    hours = (np.arange(n_isp) + 0.5) * ISP_MINUTES / 60
    daily = 1 + 0.8 * np.exp(-(((hours - 19) / 2.5) ** 2)) + 0.3 * np.exp(-(((hours - 7.5) / 1.5) ** 2))
    is_dc = np.array(site_kind) == "data_center"
    site_base = np.where(is_dc, rng.uniform(3e6, 9e6, n_sites), rng.uniform(300, 2_500, n_sites))
    shape = np.where(is_dc[:, None], 1.0, daily[None, :])
    baseline_w = np.round(site_base[:, None] * shape * rng.uniform(0.95, 1.05, (n_sites, n_isp))).astype(np.int64)
    # What each site should deliver: Σ of its offers' awards; a member its weight's part of the portfolio's.
    target_w = np.zeros((n_sites, n_isp), dtype=np.float64)
    np.add.at(target_w, offer_site, accepted_w[:n_site_offers])
    portfolio_award = np.zeros((mix.aggregators, n_isp), dtype=np.float64)
    np.add.at(portfolio_award, offer_portfolio, accepted_w[n_site_offers:])
    weights = rng.dirichlet(np.ones(mix.members), mix.aggregators).ravel()
    target_w[member_slice] = np.repeat(portfolio_award, mix.members, axis=0) * weights[:, None]
    ratio = np.clip(rng.normal(0.95, 0.2, (n_sites, n_isp)), -0.3, 1.5)
    ratio[rng.random((n_sites, n_isp)) < NON_DELIVERY_SHARE] = 0.0
    delivered_w = np.round(target_w * ratio).astype(np.int64)
    sign = np.where(site_direction == "up", 1, -1)[:, None]
    actual_w = baseline_w - sign * delivered_w
    net_micro_kwh = actual_w * (MICRO // 1000) * ISP_MINUTES // 60  # W × h → kWh × 10^6
    present = rng.random((n_sites, n_isp)) >= MISSING_READING_SHARE
    readings_frame = pl.DataFrame(
        {
            "site_id": np.repeat(np.array(site_ids), n_isp),
            "isp_start": np.tile(np.array(isp_text), n_sites),
            "net_micro_kwh": net_micro_kwh.ravel(),
            "baseline_w": baseline_w.ravel(),
            "present": present.ravel(),
        }
    )
    meter_file_id = uuid.uuid4()
    readings = (
        readings_frame.filter("present")
        .with_columns(
            import_micro=pl.col("net_micro_kwh").clip(lower_bound=0),
            export_micro=(-pl.col("net_micro_kwh")).clip(lower_bound=0),
        )
        .select(
            "site_id",
            "isp_start",
            _micro_text("import_micro").alias("import_kwh"),
            _micro_text("export_micro").alias("export_kwh"),
            version=pl.lit(1),
            file_id=pl.lit(str(meter_file_id)),
            recorded_at=pl.lit(_ts(day_end + timedelta(hours=6))),
        )
    )
    nominations = readings_frame.join(sites.select(site_id="id", submitted_by="owner_id"), on="site_id").select(
        "isp_start",
        "submitted_by",
        resource_id="site_id",
        version=pl.lit(1),
        resource_kind=pl.lit("site"),
        market_id=pl.lit(str(market_id)),
        kw=_kw_text(pl.col("baseline_w")),
        submitted_at=pl.lit(_ts(gate - timedelta(hours=1))),
    )

    with psycopg.connect(url) as conn:
        start = time.perf_counter()
        conn.execute(
            """
            INSERT INTO market (id, code, name, timezone, isp_minutes, currency, pricing_rule, gate_closure_kind,
                                day_ahead_gate_time, min_price_per_mwh, max_price_per_mwh, max_quantity_kw, created_at)
            VALUES (%s, %s, 'Benchmark market', %s, %s, 'EUR', 'pay_as_clear', 'day_ahead', '12:00', 0, 5000, 10000,
                    %s)
            """,
            (market_id, code, MARKET_TZ, ISP_MINUTES, gate - timedelta(days=90)),
        )
        copy_frame(conn, "participant", participants)
        copy_frame(conn, "congestion_point", points)
        copy_frame(
            conn,
            "portfolio",
            pl.DataFrame(
                {
                    "id": portfolio_ids,
                    "aggregator_id": agg_ids,
                    "congestion_point_id": [feeder_ids[i] for i in portfolio_point],
                }
            ).with_columns(name=pl.format("Portfolio {}", pl.int_range(pl.len())), created_at=pl.lit(created)),
        )
        copy_frame(conn, "site", sites.drop("kind"))
        copy_frame(conn, "flex_offer", offers.drop("price_milli"))
        conn.execute(
            """
            INSERT INTO clearing_run (id, market_id, delivery_day, horizon_start, horizon_end, gate_closure_at,
                status, pricing_rule, solver, input_hash, result_hash, welfare, offer_count, request_count,
                award_count, book, triggered_by, created_at, duration_ms)
            VALUES (%s, %s, %s, %s, %s, %s, 'done', 'pay_as_clear', 'highs', %s, %s, 0, %s, 0, %s, '{}',
                    'benchmark', %s, 0)
            """,
            (
                clearing_id,
                market_id,
                day,
                day_start,
                day_end,
                gate,
                hashlib.sha256(b"input").hexdigest(),
                hashlib.sha256(code.encode()).hexdigest(),
                n_offers,
                flex_order.height,
                gate,
            ),
        )
        timings["participants_grid_sites_offers"] = time.perf_counter() - start
        start = time.perf_counter()
        copy_frame(conn, "flex_order", flex_order)
        timings["flex_order"] = time.perf_counter() - start
        start = time.perf_counter()
        _insert_meter_file(conn, meter_file_id, market_id, utility_id, "initial", day_end + timedelta(hours=6))
        copy_frame(conn, "meter_reading", readings)
        timings["meter_reading"] = time.perf_counter() - start
        start = time.perf_counter()
        copy_frame(conn, "baseline_nomination", nominations)
        conn.execute(
            """
            INSERT INTO baseline_assignment (id, market_id, resource_kind, resource_id, method, method_version,
                                             params, valid_from, created_by, created_at)
            VALUES (%s, %s, NULL, NULL, %s, %s, '{}', %s, %s, %s)
            """,
            (
                uuid.uuid4(),
                market_id,
                BaselineMethod.NOMINATED.value,
                REGISTRY[BaselineMethod.NOMINATED].version,
                day - timedelta(days=30),
                operator_id,
                gate - timedelta(days=30),
            ),
        )
        conn.execute(
            """
            INSERT INTO market_settlement_terms (market_id, terms, holiday_country, initial_after_hours,
                                                 final_after_days, updated_at)
            VALUES (%s, %s, NULL, 24, 30, %s)
            """,
            (market_id, json.dumps(TERMS), now),
        )
        timings["nominations_terms"] = time.perf_counter() - start
        conn.commit()
        start = time.perf_counter()
        conn.autocommit = True
        conn.execute("ANALYZE")
        timings["analyze"] = time.perf_counter() - start
    return World(
        market_id=market_id,
        market_code=code,
        operator_id=operator_id,
        utility_id=utility_id,
        day=day,
        isps=isps,
        clearing_id=clearing_id,
        award_rows=flex_order.height,
        offers=n_offers,
        sites=n_sites,
        participants=participants.height,
        readings=readings.height,
        nominations=nominations.height,
        portfolio_offers=len(offer_portfolio),
        member_sites=len(member_ids),
        awards=awards.select("offer_id", "isp_start", "seller_id", "accepted_w", "price_milli"),
        readings_frame=readings_frame.filter("present").drop("present"),
        build_seconds=timings,
    )


def _insert_meter_file(
    conn: psycopg.Connection[Any], file_id: uuid.UUID, market_id: uuid.UUID, by: uuid.UUID, tag: str, at: datetime
) -> None:
    body = f"benchmark meter file {tag} {file_id}".encode()
    conn.execute(
        """
        INSERT INTO meter_file (id, market_id, uploaded_by, filename, format, sha256, size_bytes, content, status,
                                resends, processed_at, created_at)
        VALUES (%s, %s, %s, %s, 'csv', %s, %s, %s, 'done', 0, %s, %s)
        """,
        (file_id, market_id, by, f"{tag}.csv", hashlib.sha256(body).hexdigest(), len(body), body, at, at),
    )


def correct_readings(url: str, world: World, seed: int) -> dict[str, int]:
    """New versions of ``CORRECTED_SHARE`` of the readings (actual power moved by 5–30% of the baseline,
    at least 100 W), from a new meter file, with a resettlement mark per corrected site."""
    rng = np.random.default_rng(seed + 1)
    chosen = world.readings_frame.sample(fraction=CORRECTED_SHARE, seed=seed)
    shift_w = np.maximum(np.abs(chosen["baseline_w"].to_numpy()) * rng.uniform(0.05, 0.3, chosen.height), 100)
    shift_w *= np.where(rng.random(chosen.height) < 0.5, -1, 1)  # noqa: PLR2004 - either way
    file_id = uuid.uuid4()
    at = world.isps[-1] + timedelta(days=2)
    corrected = (
        chosen.with_columns(
            net=pl.col("net_micro_kwh")
            + pl.Series(np.round(shift_w).astype(np.int64) * (MICRO // 1000) * ISP_MINUTES // 60)
        )
        .with_columns(import_micro=pl.col("net").clip(lower_bound=0), export_micro=(-pl.col("net")).clip(lower_bound=0))
        .select(
            "site_id",
            "isp_start",
            _micro_text("import_micro").alias("import_kwh"),
            _micro_text("export_micro").alias("export_kwh"),
            version=pl.lit(2),
            file_id=pl.lit(str(file_id)),
            recorded_at=pl.lit(_ts(at)),
        )
    )
    marks = (
        chosen.select("site_id")
        .unique()
        .with_columns(
            market_id=pl.lit(str(world.market_id)),
            delivery_day=pl.lit(world.day.isoformat()),
            file_id=pl.lit(str(file_id)),
            created_at=pl.lit(_ts(at)),
        )
    )
    with psycopg.connect(url) as conn:
        _insert_meter_file(conn, file_id, world.market_id, world.utility_id, "correction", at)
        copy_frame(conn, "meter_reading", corrected)
        copy_frame(conn, "resettlement_mark", marks)
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE meter_reading")
    return {"readings_corrected": corrected.height, "sites_marked": marks.height}


# -- timing the service's steps ------------------------------------------------------------------


@dataclass
class Stopwatch:
    """Seconds per call path ("settle_day/compute_delivery/_readings"), from wrappers around module functions."""

    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    longest: dict[str, float] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)
    """Paths in the order they were first entered (a parent before its children)."""
    stack: list[str] = field(default_factory=list)
    frames: dict[str, Any] = field(default_factory=dict)
    """The frame each ``copy_in`` wrote, by table (kept for the rendering diagnostic)."""

    side_root: list[str] = field(default_factory=list)
    """The path of the running ``read_side_by_side``: a worker thread's steps go under ``<it>/side``."""
    side_stacks: threading.local = field(default_factory=threading.local)

    def _stack(self) -> list[str]:
        if threading.current_thread() is threading.main_thread():
            return self.stack
        if not hasattr(self.side_stacks, "stack"):
            self.side_stacks.stack = [*self.side_root, "side"]
        stack: list[str] = self.side_stacks.stack
        return stack

    def _enter(self, label: str) -> str:
        stack = self._stack()
        path = "/".join([*stack, label])
        self.order.setdefault(path, len(self.order))
        stack.append(label)
        if label == "read_side_by_side":
            self.side_root = list(stack)
        return path

    def wrap(self, func: Callable[..., Any], name: str, by_table: bool) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            label = f"{name}({args[1]})" if by_table and len(args) > 1 else name
            if by_table and len(args) > 2:  # noqa: PLR2004 - copy_in(session, table, frame)
                self.frames[str(args[1])] = args[2]
            path = self._enter(label)
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self._leave(path, time.perf_counter() - start)

        return timed

    def _leave(self, path: str, seconds: float) -> None:
        self._stack().pop()
        self.seconds[path] = self.seconds.get(path, 0.0) + seconds
        self.calls[path] = self.calls.get(path, 0) + 1
        self.longest[path] = max(self.longest.get(path, 0.0), seconds)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        path = self._enter(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self._leave(path, time.perf_counter() - start)

    def tree(self) -> list[dict[str, Any]]:
        """Every path with its seconds, calls and the seconds not covered by its timed children (``self_s``)."""
        rows = []
        for path in sorted(self.seconds, key=self.order.__getitem__):
            seconds = self.seconds[path]
            children = sum(
                s for p, s in self.seconds.items() if p.startswith(path + "/") and "/" not in p[len(path) + 1 :]
            )
            rows.append(
                {
                    "path": path,
                    "seconds": round(seconds, 4),
                    "self_s": round(seconds - children, 4),
                    "calls": self.calls[path],
                    "longest_call_s": round(self.longest[path], 4),
                }
            )
        return rows


TIMED: dict[ModuleType, tuple[str, ...]] = {
    runs_service: (
        "compute_delivery", "require_settleable", "_settle_lines", "_pass_through", "_post_differences", "read_frame",
        "frame_amounts", "copy_in", "accounts_for", "account_for", "posted_totals", "net_by_key", "differences", "post",
        "consume_marks", "pass_through", "_line_rows", "store_delivery",
    ),
    delivery_service: (
        "_awards", "_sites", "assignments_in_force", "_readings", "_excluded_days", "_nominations", "compute_baselines",
        "_delivered", "_offer_lines", "_content_hash", "copy_in", "holidays_of", "read_side_by_side",
    ),
    ledger_service: ("_check_against_stored", "_copy_entries"),
    statements_service: (
        "load_period", "read_frame", "due_per_participant", "_latest_issued", "_take_numbers", "_issue_many",
        "document_of", "get_market", "build_document",
    ),
    audit: ("record",),
}  # fmt: skip
BY_TABLE = frozenset({"copy_in"})


@contextlib.contextmanager
def instrumented(watch: Stopwatch) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for module, names in TIMED.items():
            # The services evolve; a step that no longer exists is simply not timed.
            for name in (n for n in names if hasattr(module, n)):
                original = getattr(module, name)
                stack.enter_context(mock.patch.object(module, name, watch.wrap(original, name, name in BY_TABLE)))
        yield


# -- the timed parts -----------------------------------------------------------------------------


@dataclass
class Cpu:
    url: str
    start: dict[str, dict[int, float]] = field(default_factory=dict)

    def __enter__(self) -> Cpu:
        self.start = cpu_sample(os.getpid(), self.url)
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def used(self) -> dict[str, float]:
        """CPU seconds of this process (Polars threads included), PostgreSQL, and other processes."""
        raw = cpu_used(self.start, cpu_sample(os.getpid(), self.url))
        other = max(0.0, raw["machine"] - raw["client"] - raw["postgres"])
        return {"benchmark": raw["client"], "postgres": raw["postgres"], "other": round(other, 2)}


def reference_rows(world: World, run_id: uuid.UUID) -> list[bytes]:
    """The award rows in settlement_line's shape (amounts and the award's delivery), in COPY text, in chunks
    (rendered before timing)."""
    frame = world.awards.select(
        pl.lit(str(run_id)).alias("run_id"),
        "offer_id",
        "isp_start",
        "seller_id",
        pl.lit(str(world.utility_id)).alias("utility_id"),
        (pl.col("accepted_w") * 1000).alias("ordered_kw"),
        (pl.col("accepted_w") * 3000).alias("baseline_kw"),
        (pl.col("accepted_w") * 2050).alias("actual_kw"),
        pl.lit("ok").alias("status"),
        pl.lit("nominated").alias("method"),
        pl.lit(1, pl.Int64).alias("method_version"),
        (pl.col("accepted_w") * 950).alias("delivered_kw"),
        (pl.col("accepted_w") * 50).alias("shortfall_kw"),
        (pl.col("price_milli") * 1000).alias("price_per_mwh"),
        (pl.col("accepted_w") * pl.col("price_milli") // 4_000_000 * 10_000).alias("utilisation"),
        pl.lit(0, pl.Int64).alias("penalty"),
        pl.lit(0, pl.Int64).alias("availability"),
        (pl.col("accepted_w") // 2_000 * 10_000).alias("fee"),
    ).with_columns(net=pl.col("utilisation") - pl.col("fee"))
    # settlement_line's primary-key order (run_id is constant), as settle_day writes its lines
    frame = frame.sort("seller_id", "offer_id", "isp_start")
    money = (
        "ordered_kw", "baseline_kw", "actual_kw", "delivered_kw", "shortfall_kw", "price_per_mwh", "utilisation",
        "penalty", "availability",
    )  # fmt: skip
    text = frame.with_columns(*[_micro_text(c) for c in (*money, "fee", "net")]).select(LINE_COLUMNS)
    chunks = []
    for offset in range(0, text.height, CHUNK_ROWS):
        buffer = io.BytesIO()
        text.slice(offset, CHUNK_ROWS).write_csv(
            buffer, include_header=False, separator="\t", null_value="\\N", quote_style="never"
        )
        chunks.append(buffer.getvalue())
    return chunks


def raw_copy(conn: psycopg.Connection[Any], table: str, chunks: list[bytes]) -> float:
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in LINE_COLUMNS)
    )
    start = time.perf_counter()
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for chunk in chunks:
            copy.write(chunk)
    conn.commit()
    return time.perf_counter() - start


def measure_references(url: str, world: World, repeats: int) -> dict[str, Any]:
    """Raw COPY of the same number of rows into an unindexed plain table, a copy with only settlement_line's
    primary key, and settlement_line (under a throw-away failed run of the day before; truncated afterwards),
    each committed; median of ``repeats``."""
    dummy_run = uuid.uuid4()
    chunks = reference_rows(world, dummy_run)
    results: dict[str, list[float]] = {name: [] for name in REFERENCE_TABLES}
    cpu: dict[str, list[dict[str, float]]] = {name: [] for name in REFERENCE_TABLES}
    with psycopg.connect(url) as conn:
        for table in (PLAIN_TABLE, PK_TABLE):
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE settlement_line)").format(sql.Identifier(table)))
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (run_id, seller_id, offer_id, isp_start)").format(
                sql.Identifier(PK_TABLE)
            )
        )
        conn.execute(
            """
            INSERT INTO settlement_run (id, market_id, delivery_day, kind, version, status, clearing_run_id, terms,
                currency, line_count, entry_count, total_utilisation, total_penalty, total_availability, total_fee,
                inputs_hash, triggered_by, created_at)
            VALUES (%s, %s, %s, 'initial', 1, 'failed', %s, '{}', 'EUR', 0, 0, 0, 0, 0, 0, '', 'benchmark', now())
            """,
            (dummy_run, world.market_id, world.day - timedelta(days=1), world.clearing_id),
        )
        conn.commit()
        for _ in range(repeats):
            for name, table in REFERENCE_TABLES.items():
                with Cpu(url) as meter:
                    results[name].append(raw_copy(conn, table, chunks))
                cpu[name].append(meter.used())
                conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
                conn.commit()
        # Runs are never deleted (a trigger refuses it); this throw-away one goes with triggers off.
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM settlement_run WHERE id = %s", (dummy_run,))
        conn.execute("SET session_replication_role = DEFAULT")
        for table in (PLAIN_TABLE, PK_TABLE):
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
        conn.commit()
    rows = world.award_rows
    return {
        name: {
            "rows": rows,
            "seconds": [round(s, 3) for s in seconds],
            "median_s": round(statistics.median(seconds), 3),
            "rows_per_s": round(rows / statistics.median(seconds)),
            "cpu_s": cpu[name][len(seconds) // 2],
        }
        for name, seconds in results.items()
    }


def settle(factory: sessionmaker[Session], url: str, world: World, kind: RunKind) -> dict[str, Any]:
    """``settle_day`` in one transaction, then commit; timed with the step breakdown."""
    watch = Stopwatch()
    now = datetime.now(UTC)
    with Cpu(url) as meter, instrumented(watch), factory() as session:
        start = time.perf_counter()
        with watch.section("settle_day"):
            outcome = runs_service.settle_day(session, world.market_id, world.day, kind, now, "benchmark")
        with watch.section("commit"):
            session.commit()
        total = time.perf_counter() - start
        run = outcome.run
    rendering = {
        table: round(render_only(watch.frames[table], columns), 3)
        for table, columns in RENDERED_TABLES.items()
        if table in watch.frames
    }
    watch.frames.clear()
    return {
        "kind": kind.value,
        "created": outcome.created,
        "run_id": str(run.id),
        "version": run.version,
        "line_count": run.line_count,
        "entry_count": run.entry_count,
        "total_s": round(total, 3),
        "settle_day_s": round(watch.seconds["settle_day"], 3),
        "commit_s": round(watch.seconds["commit"], 3),
        "totals": {
            "utilisation": str(run.total_utilisation),
            "penalty": str(run.total_penalty),
            "availability": str(run.total_availability),
            "fee": str(run.total_fee),
        },
        "steps": watch.tree(),
        "cpu_s": meter.used(),
        "copy_in_client_rendering_s": rendering,
        "peak_rss_mb": peak_rss_mb(),
    }


def render_only(frame: pl.DataFrame, micro_columns: tuple[str, ...]) -> float:
    """Seconds ``copy_in`` spends on the client for ``frame``: the same text conversion and ``write_csv``
    chunks (:func:`market.core.bulk.copy_in`), without sending anything."""
    start = time.perf_counter()
    out = frame.with_columns(
        *[bulk._micro_text(c) for c in micro_columns if c in frame.columns],
        *[pl.col(c).dt.strftime("%Y-%m-%d %H:%M:%S%.f+00") for c, t in frame.schema.items() if t == pl.Datetime],
    )
    for offset in range(0, out.height, bulk._CHUNK_ROWS):
        buffer = io.BytesIO()
        out.slice(offset, bulk._CHUNK_ROWS).write_csv(
            buffer, include_header=False, separator="\t", null_value="\\N", quote_style="never"
        )
    return time.perf_counter() - start


def peak_rss_mb() -> float:
    """The benchmark process's peak resident memory so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def check_run(url: str, world: World, run_id: str) -> dict[str, Any]:
    """What the ledger holds for the day against the run's totals (every run's entries added up), and
    the delivery statuses of the run's computation."""
    with psycopg.connect(url) as conn:
        run = conn.execute(
            "SELECT total_utilisation, total_penalty, total_fee, entry_count, line_count, delivery_computation_id "
            "FROM settlement_run WHERE id = %s",
            (run_id,),
        ).fetchone()
        assert run is not None  # noqa: S101 - the run was just committed
        utility = conn.execute(
            "SELECT id FROM ledger_account WHERE participant_id = %s AND market_id = %s",
            (world.utility_id, world.market_id),
        ).fetchone()
        fees = conn.execute(
            "SELECT id FROM ledger_account WHERE kind = 'operator_fees' AND market_id = %s", (world.market_id,)
        ).fetchone()
        if utility is None or fees is None:
            raise RuntimeError("the first run creates the utility's and the operator's ledger accounts")
        flows = conn.execute(
            """
            SELECT kind,
                   COALESCE(SUM(amount) FILTER (WHERE debit_account_id = %(u)s), 0)
                 - COALESCE(SUM(amount) FILTER (WHERE credit_account_id = %(u)s), 0),
                   COALESCE(SUM(amount) FILTER (WHERE credit_account_id = %(f)s), 0)
                 - COALESCE(SUM(amount) FILTER (WHERE debit_account_id = %(f)s), 0),
                   COUNT(*) FILTER (WHERE settlement_run_id = %(r)s)
            FROM journal_entry WHERE delivery_day = %(d)s GROUP BY kind ORDER BY kind
            """,
            {"u": utility[0], "f": fees[0], "r": run_id, "d": world.day},
        ).fetchall()
        statuses = conn.execute(
            "SELECT status, COUNT(*) FROM settlement_line WHERE run_id = %s GROUP BY status ORDER BY status",
            (run_id,),
        ).fetchall()
        stored_lines = conn.execute("SELECT COUNT(*) FROM settlement_line WHERE run_id = %s", (run_id,)).fetchone()
    by_kind = {kind: (paid, to_fees, count) for kind, paid, to_fees, count in flows}
    utilisation = by_kind.get("utilisation", (0, 0, 0))[0]
    penalty = -by_kind.get("penalty", (0, 0, 0))[0]
    fee = by_kind.get("operator_fee", (0, 0, 0))[1]
    entries = sum(count for _, _, count in by_kind.values())
    checks = {
        "utility_paid_utilisation_equals_run_total": utilisation == run[0],
        "utility_received_penalty_equals_run_total": penalty == run[1],
        "operator_fee_account_equals_run_total": fee == run[2],
        "entries_of_run_equal_entry_count": entries == run[3],
        "stored_lines_equal_line_count": stored_lines is not None and stored_lines[0] == run[4],
    }
    if not all(checks.values()):
        raise RuntimeError(f"ledger and run disagree: {checks}; ledger {by_kind}; run {run}")
    return {
        "checks": checks,
        "entries_by_kind_of_run": {kind: count for kind, (_, _, count) in by_kind.items()},
        "delivery_statuses": dict(statuses),
    }


def issue_statements(factory: sessionmaker[Session], url: str, world: World) -> dict[str, Any]:
    """``issue_all`` for the day's period in one transaction, then commit, with its step breakdown."""
    watch = Stopwatch()
    now = datetime.now(UTC)
    with Cpu(url) as meter, instrumented(watch), factory() as session:
        start = time.perf_counter()
        with watch.section("issue_all"):
            created = statements_service.issue_all(session, world.market_id, world.day, world.day, "benchmark", now)
        with watch.section("commit"):
            session.commit()
        total = time.perf_counter() - start
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT COUNT(*), SUM(line_count), MAX(line_count), SUM(octet_length(runs::text)), "
            "pg_total_relation_size('statement') FROM statement WHERE market_id = %s",
            (world.market_id,),
        ).fetchone()
    assert row is not None  # noqa: S101 - an aggregate always returns a row
    count, lines, max_lines, runs_bytes, table_bytes = row
    return {
        "statements": created,
        "stored": count,
        "total_s": round(total, 3),
        "ms_per_statement": round(total / max(created, 1) * 1000, 3),
        "scaled_to_10k_s": round(total / max(created, 1) * TARGET_STATEMENTS, 2),
        "lines_total": int(lines or 0),
        "lines_max": int(max_lines or 0),
        "runs_json_bytes_total": int(runs_bytes or 0),
        "statement_table_bytes": int(table_bytes or 0),
        "steps": watch.tree(),
        "cpu_s": meter.used(),
        "peak_rss_mb": peak_rss_mb(),
    }


@dataclass(frozen=True)
class Issued:
    id: uuid.UUID
    number: str
    role: str
    line_count: int


def _issued(factory: sessionmaker[Session], world: World) -> list[Issued]:
    with factory() as session:
        rows = session.execute(
            select(Statement.id, Statement.number, Participant.role, Statement.line_count)
            .join(Participant, Participant.id == Statement.participant_id)
            .where(Statement.market_id == world.market_id)
            .order_by(Statement.sequence)
        ).all()
    return [Issued(sid, number, role.value, lines) for sid, number, role, lines in rows]


def sample_order(statements: list[Issued], seed: int) -> list[Issued]:
    """Random order with up to :data:`PER_ROLE_MIN` statements of every role first, so a sample of any
    length past that has every role (a role's mean is then measured, never assumed)."""
    rng = np.random.default_rng(seed)
    shuffled = [statements[i] for i in rng.permutation(len(statements))]
    first: list[Issued] = []
    for role in sorted({s.role for s in statements}):
        first += [s for s in shuffled if s.role == role][:PER_ROLE_MIN]
    chosen = {s.id for s in first}
    return first + [s for s in shuffled if s.id not in chosen]


@dataclass
class Download:
    """Seconds of one statement's download as CSV: the row, the rebuilt document, the CSV."""

    role: str
    lines: int
    get_s: float
    document_s: float
    csv_s: float
    csv_bytes: int

    @property
    def total_s(self) -> float:
        return self.get_s + self.document_s + self.csv_s


def download(session: Session, watch: Stopwatch, item: Issued) -> Download:
    """What ``GET /statements/{id}?format=csv`` does past authorisation: the row, ``document_of``, ``to_csv``."""
    start = time.perf_counter()
    with watch.section("get"):
        statement = session.get(Statement, item.id)
    got = time.perf_counter()
    assert statement is not None  # noqa: S101 - listed a moment ago
    doc = statements_service.document_of(session, statement)
    built = time.perf_counter()
    with watch.section("to_csv"):
        body = to_csv(doc)
    done = time.perf_counter()
    rows = len(doc.lines) + len(doc.pass_through_lines)
    if rows != statement.line_count:
        raise RuntimeError(f"statement {item.number}: {rows} rows rebuilt, {statement.line_count} issued")
    session.expunge_all()  # a download is its own request: nothing piles up in the identity map
    return Download(item.role, rows, got - start, built - got, done - built, len(body))


class _Captured(Exception):
    """Raised by the capturing ``read_frame`` to stop ``document_of`` once its lines query is known."""


def explain_lines_query(session: Session, item: Issued) -> list[str]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the settlement-lines query ``document_of`` runs for ``item`` (the
    first ``read_frame`` of ``load_period``, captured by a stand-in that stops ``document_of`` there;
    diagnostic, untimed)."""
    captured: list[tuple[str, dict[str, Any]]] = []

    def capture(_: Session, query: str, params: Any, *__: Any, **___: Any) -> pl.DataFrame:
        captured.append((query, dict(params)))
        raise _Captured

    statement = session.get(Statement, item.id)
    assert statement is not None  # noqa: S101 - listed a moment ago
    with mock.patch.object(statements_service, "read_frame", capture), contextlib.suppress(_Captured):
        statements_service.document_of(session, statement)
    query, params = captured[0]
    clause = text(f"EXPLAIN (ANALYZE, BUFFERS) {query}")
    bound = {k: v for k, v in params.items() if k in clause._bindparams}  # the names the query binds
    plan = [str(row[0]) for row in session.execute(clause, bound)]
    session.rollback()
    return plan


def _role_table(downloads: list[Download], population: dict[str, int]) -> dict[str, dict[str, Any]]:
    out = {}
    for role, count in sorted(population.items()):
        mine = [d for d in downloads if d.role == role]
        n = max(len(mine), 1)
        out[role] = {
            "population": count,
            "measured": len(mine),
            "mean_lines": round(sum(d.lines for d in mine) / n, 1),
            "mean_get_ms": round(sum(d.get_s for d in mine) / n * 1000, 3),
            "mean_document_of_ms": round(sum(d.document_s for d in mine) / n * 1000, 3),
            "mean_to_csv_ms": round(sum(d.csv_s for d in mine) / n * 1000, 3),
            "mean_total_ms": round(sum(d.total_s for d in mine) / n * 1000, 3),
            "max_total_ms": round(max((d.total_s for d in mine), default=0.0) * 1000, 3),
            "mean_csv_bytes": round(sum(d.csv_bytes for d in mine) / n),
        }
    return out


def render_statements(
    factory: sessionmaker[Session], url: str, world: World, args: argparse.Namespace
) -> dict[str, Any]:
    """Every statement's CSV download (row, ``document_of``, ``to_csv``): the utility's alone, then the
    others all or as a stratified sample extrapolated per role (see the module docstring)."""
    statements = _issued(factory, world)
    utility = max(statements, key=lambda s: s.line_count)
    others = sample_order([s for s in statements if s.id != utility.id], args.seed)
    population = {role: sum(1 for s in others if s.role == role) for role in {s.role for s in others}}
    utility_watch, watch = Stopwatch(), Stopwatch()
    with Cpu(url) as meter, factory() as session:
        with instrumented(utility_watch):
            big = download(session, utility_watch, utility)
        say(f"utility statement: {big.total_s:.1f} s for {big.lines:,} lines")
        downloads: list[Download] = []
        decision = "all"
        limit = len(others)
        start = time.perf_counter()
        with instrumented(watch):
            for index, item in enumerate(others):
                if index >= limit or time.perf_counter() - start > args.csv_budget_s:
                    break
                downloads.append(download(session, watch, item))
                if index + 1 == min(PROBE_STATEMENTS, len(others)):
                    projected = _extrapolate(downloads, population)
                    if projected > args.csv_all_limit_s:
                        decision, limit = "sample", min(args.csv_sample, len(others))
                    say(f"CSV probe: {projected:.0f} s projected for {len(others):,} statements -> {decision}")
        measured_s = time.perf_counter() - start
        plans = {
            "utility": explain_lines_query(session, utility),
            "household": explain_lines_query(session, next(s for s in others if s.role == "household")),
        }
    cpu = meter.used()
    budget_hit = decision == "sample" and len(downloads) < limit
    extrapolated = _extrapolate(downloads, population)
    by_role = _role_table(downloads, population)
    total = big.total_s + extrapolated
    return {
        "statements": len(statements),
        "decision": decision,
        "budget_hit": budget_hit,
        "measured_statements": len(downloads) + 1,
        "measured_wall_s": round(measured_s + big.total_s, 3),
        "utility": {**asdict(big), "total_s": round(big.total_s, 3), "number": utility.number},
        "utility_steps": utility_watch.tree(),
        "others": {
            "population": len(others),
            "measured": len(downloads),
            "measured_s": round(sum(d.total_s for d in downloads), 3),
            "get_s": round(sum(d.get_s for d in downloads), 3),
            "document_of_s": round(sum(d.document_s for d in downloads), 3),
            "to_csv_s": round(sum(d.csv_s for d in downloads), 3),
            "all_s": round(extrapolated, 3),
            "ms_per_statement": round(extrapolated / max(len(others), 1) * 1000, 3),
            "by_role": by_role,
            "slowest": [
                {"seconds": round(d.total_s, 3), "lines": d.lines, "role": d.role}
                for d in sorted(downloads, key=lambda d: -d.total_s)[:5]
            ],
        },
        "steps": watch.tree(),
        "total_s": round(total, 3),
        "ms_per_statement": round(total / max(len(statements), 1) * 1000, 3),
        "scaled_to_10k_s": round(total / max(len(statements), 1) * TARGET_STATEMENTS, 2),
        "explain_lines_query": plans,
        "cpu_s": cpu,
        "other_cores": round(cpu["other"] / max(measured_s + big.total_s, 1e-9), 2),
        "peak_rss_mb": peak_rss_mb(),
    }


def _extrapolate(downloads: list[Download], population: dict[str, int]) -> float:
    """Seconds for every statement of ``population``: each role's measured mean × its count (the overall
    mean for a role not measured yet)."""
    if not downloads:
        return 0.0
    overall = sum(d.total_s for d in downloads) / len(downloads)
    total = 0.0
    for role, count in population.items():
        mine = [d.total_s for d in downloads if d.role == role]
        total += (sum(mine) / len(mine) if mine else overall) * count
    return total


def postgres_settings(url: str) -> dict[str, str]:
    names = ("shared_buffers", "work_mem", "maintenance_work_mem", "synchronous_commit", "max_wal_size", "fsync")
    settings = {}
    with psycopg.connect(url) as conn:
        for name in names:
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            settings[name] = str(row[0]) if row is not None else "unknown"
    return settings


# -- the report ----------------------------------------------------------------------------------


def step_s(part: dict[str, Any], path: str) -> float:
    """Seconds of one step path (0 when the step did not run)."""
    return next((s["seconds"] for s in part["steps"] if s["path"] == path), 0.0)


def _change(before: float, now: float) -> str:
    if before <= 0:
        return "—"
    return f"{now / before:.2f}× ({100 * (now - before) / before:+.0f}%)"


def _step_rows(
    steps: list[dict[str, Any]], total: float, depth: int = 3, before: dict[str, float] | None = None
) -> list[str]:
    """The step table; with ``before``, a column with the previous run's seconds of the same path (and a
    row per path that ran only then)."""
    rows = []
    now_paths = {step["path"] for step in steps}
    for step in steps:
        level = step["path"].count("/")
        if level > depth:
            continue
        name = step["path"].rsplit("/", 1)[-1]
        indent = "&nbsp;&nbsp;" * level
        calls = f" ×{step['calls']:,} (longest {step['longest_call_s']:.3f})" if step["calls"] > 1 else ""
        cells = [f"{indent}{name}{calls}", f"{step['seconds']:.3f}", f"{step['self_s']:.3f}"]
        cells.append(f"{100 * step['seconds'] / total:.1f}%")
        if before is not None:
            cells.append(f"{before[step['path']]:.3f}" if step["path"] in before else "—")
        rows.append("| " + " | ".join(cells) + " |")
    if before is None:
        return ["| step | seconds | self | share of total |", "|---|---|---|---|", *rows]
    gone = [path for path in before if path not in now_paths and path.count("/") <= depth]
    rows += [f"| {path} (gone) | — | — | — | {before[path]:.3f} |" for path in gone]
    return [
        "| step | seconds | self | share of total | before (s) |",
        "|---|---|---|---|---|",
        *rows,
    ]


def _settle_section(title: str, part: dict[str, Any], before: dict[str, float]) -> list[str]:
    check = part["check"]
    return [
        title,
        "",
        f"- total {part['total_s']:.3f} s (settle_day {part['settle_day_s']:.3f} s + commit {part['commit_s']:.3f} s); "
        f"{part['line_count']:,} settlement lines stored, {part['entry_count']:,} ledger entries posted "
        f"(by kind: {check['entries_by_kind_of_run']}); run version {part['version']}",
        f"- CPU seconds: {part['cpu_s']}; peak RSS of the benchmark process so far {part['peak_rss_mb']:,.0f} MB",
        f"- client-side text rendering alone inside copy_in (diagnostic, no I/O): {part['copy_in_client_rendering_s']}",
        f"- delivery statuses: {check['delivery_statuses']}; ledger checks: {check['checks']}",
        "",
        "Steps (wall seconds; `self` = not covered by the timed sub-steps listed under it; `before` = the same "
        "path in the previous run; `(gone)` = a step of the previous run that no longer exists, by its full path):",
        "",
        *_step_rows(part["steps"], part["total_s"], before=before),
    ]


def csv_measured(render: dict[str, Any]) -> str:
    """Exactly what the CSV figure is made of."""
    others = render["others"]
    if render["decision"] == "all" and others["measured"] == others["population"]:
        return f"all {render['statements']:,} statements measured"
    stop = " (the time budget ended it)" if render["budget_hit"] else ""
    return (
        f"measured: the utility's statement and a stratified random sample of {others['measured']:,} of the other "
        f"{others['population']:,}{stop}; the others' time is each role's measured mean × its number of statements"
    )


def _summary_table(result: dict[str, Any]) -> list[str]:
    initial, recon, refs = result["initial"], result["reconciliation"], result["references"]
    issue, render = result["statements"], result["render"]
    rows = [
        ("Initial settlement (settle_day + commit)", BEFORE["initial_s"], initial["total_s"]),
        ("Reconciliation (1% of readings corrected)", BEFORE["reconciliation_s"], recon["total_s"]),
        *[
            (f"Raw COPY reference: {label}", BEFORE["references_s"][name], refs[name]["median_s"])
            for name, label in (
                ("plain_table", "unindexed table"),
                ("pk_only", "primary key only (before: (run, offer, ISP); now: (run, seller, offer, ISP))"),
                (
                    "settlement_line",
                    "settlement_line (before: PK (run, offer, ISP) + seller index + per-row FK; now: PK (run, "
                    "seller, offer, ISP) + a statement trigger checking the run once per COPY)",
                ),
            )
        ],
    ]
    if "error" not in issue:
        rows.append(
            (f"issue_all ({issue['statements']:,} statements) + commit", BEFORE["issue_all_s"], issue["total_s"])
        )
    if "error" not in render:
        rows += [
            (
                "CSV of every statement ("
                + ("measured all" if render["decision"] == "all" else "sampled and extrapolated, see below")
                + f"; before: {BEFORE['csv_measured']})",
                BEFORE["csv_s"],
                render["total_s"],
            ),
            ("&nbsp;&nbsp;the utility's statement", BEFORE["csv_utility_s"], render["utility"]["total_s"]),
            (
                "&nbsp;&nbsp;the others",
                BEFORE["csv_s"] - BEFORE["csv_utility_s"],
                render["others"]["all_s"],
            ),
        ]
    if "error" not in issue and "error" not in render:
        rows.append(
            (
                f"Statements: issue_all + every CSV, per {TARGET_STATEMENTS:,}",
                (BEFORE["issue_all_s"] + BEFORE["csv_s"]) / BEFORE["statements"] * TARGET_STATEMENTS,
                (issue["total_s"] + render["total_s"]) / issue["statements"] * TARGET_STATEMENTS,
            )
        )
    return [
        "| measurement | before (s) | now (s) | now / before |",
        "|---|---|---|---|",
        *[f"| {name} | {before:.2f} | {now:.2f} | {_change(before, now)} |" for name, before, now in rows],
    ]


def _statements_section(world: dict[str, Any], issue: dict[str, Any], render: dict[str, Any]) -> list[str]:
    lines = ["## Statements", ""]
    if "error" in issue:
        return [*lines, f"issue_all failed: {issue['error']}; peak RSS {issue['peak_rss_mb']:,.0f} MB."]
    lines += [
        f"issue_all for {world['day']} .. {world['day']} + commit: **{issue['total_s']:.3f} s for "
        f"{issue['statements']:,} statements** ({issue['ms_per_statement']:.2f} ms each, ≈ "
        f"{issue['scaled_to_10k_s']:.0f} s per {TARGET_STATEMENTS:,} if it grew with the count; it grows with the "
        f"period's lines); {issue['lines_total']:,} statement lines in all, at most {issue['lines_max']:,} in one "
        f"(the utility's: every award of the day); nothing but the row is stored per statement: the statement table "
        f"is {issue['statement_table_bytes'] / 1e6:,.1f} MB with its indexes, the run lists "
        f"{issue['runs_json_bytes_total'] / 1e6:,.2f} MB (before: {BEFORE['statement_table_bytes'] / 1e6:,.1f} MB "
        f"and {BEFORE['runs_json_bytes_total'] / 1e6:,.2f} MB). "
        f"CPU seconds: {issue['cpu_s']}; peak RSS so far {issue['peak_rss_mb']:,.0f} MB.",
        "",
        *_step_rows(issue["steps"], issue["total_s"], depth=3),
        "",
    ]
    if "error" in render:
        return [*lines, f"CSV rendering failed: {render['error']}; peak RSS {render['peak_rss_mb']:,.0f} MB."]
    big, others = render["utility"], render["others"]
    slowest = [(d["seconds"], d["lines"], d["role"]) for d in others["slowest"]]
    role_rows = [
        f"| {role} | {r['population']:,} | {r['measured']:,} | {r['mean_lines']:,.0f} | {r['mean_get_ms']:.2f} | "
        f"{r['mean_document_of_ms']:.1f} | {r['mean_to_csv_ms']:.2f} | {r['mean_total_ms']:.1f} | "
        f"{r['max_total_ms']:.1f} | {r['population'] * r['mean_total_ms'] / 1000:.1f} |"
        for role, r in others["by_role"].items()
    ]
    lines += [
        "### Downloading every statement as CSV (`session.get`, `document_of`, `to_csv`)",
        "",
        f"{csv_measured(render)}. All {render['statements']:,}: **{render['total_s']:.2f} s** "
        f"({render['ms_per_statement']:.1f} ms each, ≈ {render['scaled_to_10k_s']:.0f} s per {TARGET_STATEMENTS:,}); "
        f"wall time of what was measured {render['measured_wall_s']:.1f} s for {render['measured_statements']:,} "
        f"statements; CPU seconds {render['cpu_s']}; peak RSS so far {render['peak_rss_mb']:,.0f} MB.",
        "",
        f"- The utility's statement ({big['lines']:,} lines): {big['total_s']:.2f} s = row {big['get_s']:.3f} s + "
        f"document_of {big['document_s']:.2f} s + to_csv {big['csv_s']:.2f} s; {big['csv_bytes'] / 1e6:,.1f} MB "
        "of CSV.",
        f"- The other {others['population']:,}: {others['all_s']:.2f} s "
        f"({others['ms_per_statement']:.1f} ms each); the {others['measured']:,} measured took "
        f"{others['measured_s']:.2f} s: row {others['get_s']:.2f} s, document_of {others['document_of_s']:.2f} s, "
        f"to_csv {others['to_csv_s']:.2f} s. Slowest (seconds, lines, role): {slowest}.",
        "",
        "| role | statements | measured | mean lines | row ms | document_of ms | to_csv ms | mean ms | max ms | "
        "all of the role (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *role_rows,
        "",
        "The utility's download, steps:",
        "",
        *_step_rows(render["utility_steps"], big["total_s"], depth=3),
        "",
        f"The {others['measured']:,} other downloads measured, steps (share of their {others['measured_s']:.2f} s):",
        "",
        *_step_rows(render["steps"], others["measured_s"], depth=3),
        "",
    ]
    for who, plan in render["explain_lines_query"].items():
        lines += [
            f"`EXPLAIN (ANALYZE, BUFFERS)` of the lines query `document_of` runs for the {who}'s statement:",
            "",
            "```",
            *plan,
            "```",
            "",
        ]
    return lines


def markdown(result: dict[str, Any]) -> list[str]:
    env, world, refs = result["environment"], result["world"], result["references"]
    initial, recon = result["initial"], result["reconciliation"]
    issue, render = result["statements"], result["render"]
    plain, pk, line_ref = (refs[name]["median_s"] for name in ("plain_table", "pk_only", "settlement_line"))
    if initial["total_s"] <= TARGET_SETTLE_S:
        verdict = f"**met** ({initial['total_s']:.2f} s ≤ {TARGET_SETTLE_S:.0f} s)"
    else:
        over = initial["total_s"] - TARGET_SETTLE_S
        verdict = f"**missed** by {over:.2f} s ({initial['total_s'] / TARGET_SETTLE_S:.2f}× the target)"
    corrections = result["corrections"]
    untracked = ", ".join(env.get("git_untracked_files", [])) or "none"
    return [
        "# Settlement of a day and its statements (PostgreSQL)",
        "",
        *environment_markdown(env),
        f"- untracked files in the work tree (imported code among them counts too): {untracked}",
        f"- Polars {env['polars']} ({env['polars_threads']} threads); PostgreSQL settings: {env['postgres_settings']}",
        f"- world (scale {result['parameters']['scale']}): {world['participants']:,} participants, "
        f"{world['sites']:,} sites ({world['member_sites']:,} in {result['mix']['aggregators']} portfolios), "
        f"{world['offers']:,} offers ({world['portfolio_offers']} on portfolios), {world['award_rows']:,} award rows "
        f"(offer × ISP) on {world['day']} (96 ISPs), {world['readings']:,} meter readings, {world['nominations']:,} "
        "nominations; baseline method `nominated` (a market-default assignment + one nomination per site and ISP); "
        f"terms {TERMS}",
        f"- building the world (COPY, untimed for the targets), seconds: {world['build_seconds']}",
        "",
        "## Summary",
        "",
        f"Now against {BEFORE['label']}: the same world (sizes and seed) and the same reference rows, now sorted "
        "in settlement_line's new primary-key order (run_id, seller_id, offer_id, isp_start), the key the "
        f"primary-key-only table now has too. {_machine_note(result)} Compare the ratios to the raw COPY references "
        "measured in the same run as well as the seconds.",
        "",
        *_summary_table(result),
        "",
        f"- **Initial settlement of {initial['line_count']:,} award-ISPs: {initial['total_s']:.2f} s** "
        f"(target ≤ {TARGET_SETTLE_S:.0f} s on 2 cores: {verdict}); {initial['entry_count']:,} ledger entries.",
        f"- Raw COPY of the same {refs['plain_table']['rows']:,} rows (settlement_line shape, pre-rendered text, "
        f"committed; median of {len(refs['plain_table']['seconds'])}): unindexed plain table **{plain:.2f} s**, "
        f"the same table with only the primary key {pk:.2f} s, settlement_line itself (primary key + the statement "
        f"trigger that checks the run once per COPY) **{line_ref:.2f} s**. **Ratio settle / raw COPY: "
        f"{initial['total_s'] / plain:.1f}× (plain table), "
        f"{initial['total_s'] / line_ref:.1f}× (settlement_line)** (before: "
        f"{BEFORE['initial_s'] / BEFORE['references_s']['plain_table']:.1f}× and "
        f"{BEFORE['initial_s'] / BEFORE['references_s']['settlement_line']:.1f}×).",
        f"- Reconciliation after correcting {corrections['readings_corrected']:,} readings (1%, "
        f"{corrections['sites_marked']:,} sites marked): **{recon['total_s']:.2f} s**, "
        f"{recon['entry_count']:,} adjustment entries posted, {recon['line_count']:,} lines stored again.",
        *_statements_summary(issue, render),
        "",
        *_settle_section(
            "## Initial settlement: settle_day(INITIAL) in one transaction + commit", initial, BEFORE["initial_steps"]
        ),
        "",
        *_settle_section(
            "## Reconciliation after correcting 1% of the readings", recon, BEFORE["reconciliation_steps"]
        ),
        "",
        *_statements_section(world, issue, render),
        "## What dominates now, and what would bring settle_day to 15 s",
        "",
        *result["analysis"],
        "",
        *contamination_note(result["other_cores"]),
        f"The previous run's: {BEFORE['other_cores']}.",
    ]


def _machine_note(result: dict[str, Any]) -> str:
    """How much of the change since :data:`BEFORE` the machine explains, from work that did not change."""
    initial, refs = result["initial"], result["references"]
    delivery = "settle_day/compute_delivery"
    reads = [f"{delivery}/_awards", f"{delivery}/_readings", f"{delivery}/_nominations"]
    reads_before = sum(BEFORE["initial_steps"].get(path, 0.0) for path in reads)
    reads_now = sum(step_s(initial, path) for path in reads)
    plain_before, plain_now = BEFORE["references_s"]["plain_table"], refs["plain_table"]["median_s"]
    quiet = UNKEPT_BEFORE["quiet_initial_s"]
    return (
        "The previous run's other-process CPU figures (at the end) did not capture that load, but work that did "
        f"not change shows it: the raw COPY into the unindexed table took {plain_before:.2f} s then and "
        f"{plain_now:.2f} s now ({plain_now / plain_before:.2f}×), the reads of awards, readings and nominations "
        f"{reads_before:.2f} s then and {reads_now:.2f} s now. An earlier run of the code before 79de704 on a quiet "
        f"machine (not kept) took {quiet:.2f} s for the initial settlement: against that, this run's "
        f"{initial['total_s']:.2f} s is {initial['total_s'] / quiet:.2f}×, against the loaded "
        f"{BEFORE['initial_s']:.2f} s {initial['total_s'] / BEFORE['initial_s']:.2f}×."
    )


def per_10k(seconds: float, statements: int) -> float:
    return seconds / max(statements, 1) * TARGET_STATEMENTS


def _statements_summary(issue: dict[str, Any], render: dict[str, Any]) -> list[str]:
    if "error" in issue:
        return [f"- issue_all **failed**: {issue['error']} (peak RSS {issue['peak_rss_mb']:,.0f} MB)."]
    lines = [
        f"- issue_all: **{issue['statements']:,} statements in {issue['total_s']:.2f} s** "
        f"({issue['ms_per_statement']:.2f} ms each; before {BEFORE['issue_all_s']:.1f} s)."
    ]
    if "error" in render:
        return [*lines, f"- CSV rendering **failed**: {render['error']} (peak RSS {render['peak_rss_mb']:,.0f} MB)."]
    return [
        *lines,
        f"- Downloading every statement as CSV (`document_of` + `to_csv`): **{render['total_s']:.2f} s** "
        f"({render['ms_per_statement']:.1f} ms each; the utility's alone {render['utility']['total_s']:.1f} s, the "
        f"others {render['others']['ms_per_statement']:.1f} ms each; {csv_measured(render)}; before "
        f"{BEFORE['csv_s']:.1f} s, {BEFORE['csv_measured']}).",
        f"- **Generating {TARGET_STATEMENTS:,} statements as CSV** (issue_all + every download, scaled linearly from "
        f"{issue['statements']:,}): **≈ {per_10k(issue['total_s'] + render['total_s'], issue['statements']):.0f} s** "
        f"(before ≈ {per_10k(BEFORE['issue_all_s'] + BEFORE['csv_s'], BEFORE['statements']):.0f} s).",
    ]


def _self_s(part: dict[str, Any], path: str) -> float:
    return next((s["self_s"] for s in part["steps"] if s["path"] == path), 0.0)


def analysis(result: dict[str, Any]) -> list[str]:
    """Measured statements about where the time goes; every figure comes from this run or :data:`BEFORE`."""
    initial, refs = result["initial"], result["references"]
    total = initial["total_s"]
    top = "settle_day"
    delivery = f"{top}/compute_delivery"
    writes = {
        "delivery_line": step_s(initial, f"{delivery}/_store/copy_in(delivery_line)"),
        "member_delivery": step_s(initial, f"{delivery}/_store/copy_in(member_delivery)"),
        "settlement_line": step_s(initial, f"{top}/copy_in(settlement_line)"),
        "pass_through_share": step_s(initial, f"{top}/copy_in(pass_through_share)"),
        "journal_entry": step_s(initial, f"{top}/_post_differences/post/_copy_entries"),
    }
    reads = {
        "awards": step_s(initial, f"{delivery}/_awards"),
        "sites": step_s(initial, f"{delivery}/_sites"),
        "readings": step_s(initial, f"{delivery}/_readings"),
        "nominations": step_s(initial, f"{delivery}/_nominations"),
    }
    compute = {
        "baselines": step_s(initial, f"{delivery}/compute_baselines"),
        "delivered": step_s(initial, f"{delivery}/_delivered"),
        "offer lines": step_s(initial, f"{delivery}/_offer_lines"),
        "content hash (Arrow IPC of all lines)": step_s(initial, f"{delivery}/_store/_content_hash"),
        "compute_delivery's own code (joins, local time, the settle frame)": _self_s(initial, delivery),
        "_settle_lines (amounts, select, sort)": step_s(initial, f"{top}/_settle_lines"),
        "pass-through": step_s(initial, f"{top}/_pass_through"),
    }
    ledger = step_s(initial, f"{top}/_post_differences") - writes["journal_entry"]
    line_ref, plain, pk = (refs[n]["median_s"] for n in ("settlement_line", "plain_table", "pk_only"))
    line_before, pk_before = (BEFORE["references_s"][n] for n in ("settlement_line", "pk_only"))
    reads_before = {name: BEFORE["initial_steps"].get(f"{delivery}/_{name}", 0.0) for name in reads}
    cpu = initial["cpu_s"]
    lower = max(cpu["benchmark"], cpu["postgres"], (cpu["benchmark"] + cpu["postgres"]) / 2)
    others = cpu["other"] / total
    if lower > TARGET_SETTLE_S:
        alone = f"being alone on the machine does not reach {TARGET_SETTLE_S:.0f} s, the work itself has to shrink"
    else:
        alone = f"so {TARGET_SETTLE_S:.0f} s is within reach of the overlap alone"
    if others <= NOISY_CORES:
        alone += " (this run had the machine almost to itself)"

    def listed(parts: dict[str, float]) -> str:
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in parts.items())

    def share(parts: dict[str, float] | float) -> str:
        seconds = sum(parts.values()) if isinstance(parts, dict) else parts
        return f"**{seconds:.2f} s = {100 * seconds / total:.0f}%**"

    return [
        "### settle_day",
        "",
        f"- Writing rows (COPY through `copy_in` / the ledger's COPY): {share(writes)} of the initial run "
        f"({listed(writes)}). The raw COPY of the same number of pre-rendered rows into settlement_line takes "
        f"{line_ref:.2f} s ({plain:.2f} s into an unindexed table, {pk:.2f} s with only the primary key (run_id, "
        f"seller_id, offer_id, isp_start)), so the statement trigger that checks the run once per COPY costs "
        f"{line_ref - pk:.2f} s of it and the primary key {pk - plain:.2f} s. In the previous run, with the key "
        f"(run_id, offer_id, isp_start), a separate seller index and a per-row foreign key to settlement_run, the "
        f"same reference took {line_before:.2f} s, {line_before - pk_before:.2f} s above its primary-key-only "
        f"table ({pk_before:.2f} s); measured when that change (79de704) was made: "
        f"{UNKEPT_BEFORE['settlement_line_reference_s']:.2f} s before it. copy_in's client-side text rendering "
        f"alone: {initial['copy_in_client_rendering_s']}.",
        f"- Reading inputs: {share(reads)} ({listed(reads)}); the same queries as in the previous run "
        f"({listed(reads_before)} there, on the loaded machine).",
        f"- Polars and Python computation: {share(compute)} ({listed(compute)}).",
        f"- Ledger posting (`_post_differences` without its COPY, {initial['entry_count']:,} entries): "
        f"{share(ledger)}; the audit record: {step_s(initial, f'{top}/record'):.3f} s.",
        f"- CPU: this process {cpu['benchmark']:.1f} s and PostgreSQL {cpu['postgres']:.1f} s in {total:.1f} s of "
        f"wall time, while other processes used {others:.2f} of the 2 cores on average. The run is mostly "
        "sequential (Python computes, then the server writes), so on an idle machine it would still take between "
        f"{lower:.0f} s (client and server perfectly overlapped on the 2 cores) and "
        f"{cpu['benchmark'] + cpu['postgres']:.0f} s (strictly serial): {alone}.",
        "",
        *road_to_target(result),
        "",
        *statements_analysis(result),
    ]


def _then_now(initial: dict[str, Any], path: str) -> str:
    """A step's seconds in :data:`BEFORE`'s initial settlement and in this one."""
    return f"{BEFORE['initial_steps'].get(path, 0.0):.2f} → {step_s(initial, path):.2f} s"


def road_to_target(result: dict[str, Any]) -> list[str]:
    """What changed since :data:`BEFORE` (each step's seconds then and now), then the changes that would bring the
    initial settlement towards the target, each with the seconds this run measured for the part it removes (a
    step's time, or a difference of two measurements)."""
    initial, recon, refs = result["initial"], result["reconciliation"], result["references"]
    total = initial["total_s"]
    top, delivery = "settle_day", "settle_day/compute_delivery"
    accounts = f"{top}/_post_differences/accounts_for"
    line_ref, plain, pk = (refs[n]["median_s"] for n in ("settlement_line", "plain_table", "pk_only"))
    work_mem = result["environment"].get("postgres_settings", {}).get("work_mem", "?")
    utility_plan = result["render"].get("explain_lines_query", {}).get("utility", [])
    spills = any("temp written" in line for line in utility_plan)
    offer_lines_before = BEFORE["initial_steps"].get(f"{delivery}/_offer_lines", 0.0)
    offer_lines_trend = "slower" if step_s(initial, f"{delivery}/_offer_lines") > offer_lines_before else "faster"
    done = [
        "Done since the previous run (its initial settlement's seconds → this run's; the previous run's machine was "
        "slower, see the summary):",
        "",
        "- 79de704: no per-row foreign key on delivery_line, member_delivery and settlement_line (a statement "
        "trigger with a transition table checks the parent once per COPY; parents are never deleted, lines are "
        "append-only), and settlement_line keyed (run_id, seller_id, offer_id, isp_start) instead of (run_id, "
        "offer_id, isp_start) plus a seller index. Raw COPY reference into settlement_line "
        f"{BEFORE['references_s']['settlement_line']:.2f} → {line_ref:.2f} s "
        f"({UNKEPT_BEFORE['settlement_line_reference_s']:.2f} s before the change as measured for it); "
        f"copy_in(settlement_line) {_then_now(initial, f'{top}/copy_in(settlement_line)')}, copy_in(delivery_line) "
        f"{_then_now(initial, f'{delivery}/_store/copy_in(delivery_line)')}, copy_in(member_delivery) "
        f"{_then_now(initial, f'{delivery}/_store/copy_in(member_delivery)')}.",
        "- dd863dd: `_delivered` runs its window functions only on stacked awards "
        f"({_then_now(initial, f'{delivery}/_delivered')}); `_content_hash` hashes Arrow IPC instead of CSV "
        f"({_then_now(initial, f'{delivery}/_store/_content_hash')}). It also split `_offer_lines` into site and "
        "portfolio offers, which measured slower (1.04 s at dd863dd) and was taken back: "
        f"`_offer_lines` {_then_now(initial, f'{delivery}/_offer_lines')} ({offer_lines_trend} in this run).",
        "- b1cd242: `_excluded_days` reads one span per awarded offer instead of one row per award ISP "
        f"({_then_now(initial, f'{delivery}/_excluded_days')}).",
    ]
    items = [
        (
            "Write every award once: `delivery_line` and `settlement_line` hold the same 960k keys; store baseline, "
            "actual, status and direction in settlement_line (or the amounts in delivery_line). The statements' "
            "lines query then also loses its 1M-row join with delivery_line"
            + (f" (it spills to disk at `work_mem` {work_mem}, see the plan)" if spills else "")
            + ". settlement_line's COPY gets wider, so part of this saving comes back.",
            step_s(initial, f"{delivery}/_store/copy_in(delivery_line)"),
            "copy_in(delivery_line)",
        ),
        (
            "Keep member deliveries per member and day (what pass-through and the statements use), not per ISP "
            "(96× fewer rows), or write them only for portfolios with a positive net.",
            step_s(initial, f"{delivery}/_store/copy_in(member_delivery)"),
            "copy_in(member_delivery)",
        ),
        (
            "Create a participant's ledger account when it registers, not in its first settlement: this world's "
            "initial run creates every participant's account in `accounts_for`; the reconciliation, which finds "
            f"them, took {step_s(recon, accounts):.2f} s there. Only the first settlement a participant appears in "
            "pays this, so a fresh world like this one overstates the everyday cost.",
            max(0.0, step_s(initial, accounts) - step_s(recon, accounts)),
            "accounts_for, initial − reconciliation",
        ),
    ]
    rows, remaining = [], total
    for text_, seconds, measured in items:
        remaining -= seconds
        rows.append(f"| {text_} | {measured} | −{seconds:.1f} | {remaining:.1f} |")
    if remaining <= TARGET_SETTLE_S:
        verdict = (
            f"That leaves ≈ {remaining:.1f} s, {TARGET_SETTLE_S - remaining:.1f} s under the target only if every "
            "saving is realised in full and the replacements cost nothing; so these changes make "
            f"{TARGET_SETTLE_S:.0f} s possible, not certain."
        )
    else:
        verdict = f"That leaves ≈ {remaining:.1f} s: still {remaining - TARGET_SETTLE_S:.1f} s over the target."
    reads = [step_s(initial, f"{delivery}/{name}") for name in ("_awards", "_readings", "_nominations")]
    cpu = initial["cpu_s"]
    others = cpu["other"] / total
    own_per_wall = (cpu["benchmark"] + cpu["postgres"]) / total
    if others <= NOISY_CORES:
        machine = (
            f"This run had the machine almost to itself (other processes used {others:.2f} of the 2 cores), so "
            "these are idle-machine seconds."
        )
    else:
        machine = (
            f"Pro rata to this run's own CPU (this process and PostgreSQL used {own_per_wall:.2f} CPU-seconds per "
            f"wall second while other processes took {others:.1f} of the 2 cores), that is ≈ "
            f"{remaining * own_per_wall:.0f} CPU-seconds: on an idle machine between ≈ "
            f"{remaining * own_per_wall / 2:.0f} s (client and server fully overlapped) and ≈ "
            f"{remaining * own_per_wall:.0f} s (serial)."
        )
    rendering = initial["copy_in_client_rendering_s"].get("settlement_line", 0.0)
    return [
        "### What would bring settle_day to 15 s",
        "",
        f"The initial settlement took {total:.2f} s, "
        + (
            f"{total - TARGET_SETTLE_S:.2f} s over the {TARGET_SETTLE_S:.0f} s target."
            if total > TARGET_SETTLE_S
            else f"within the {TARGET_SETTLE_S:.0f} s target."
        ),
        "",
        *done,
        "",
        f"What would still close the gap, starting from this run's {total:.1f} s (each saving is what this run "
        "measured for the part removed):",
        "",
        "| change | measured as | seconds | left |",
        "|---|---|---|---|",
        *rows,
        "",
        f"{verdict} The biggest parts left after them (this run's seconds): the reads of awards, readings and "
        f"nominations ({reads[0]:.2f} + {reads[1]:.2f} + {reads[2]:.2f} = {sum(reads):.2f} s); the COPY into "
        f"settlement_line ({step_s(initial, f'{top}/copy_in(settlement_line)'):.2f} s, near its raw reference of "
        f"{line_ref:.2f} s: {pk:.2f} s with only the primary key, {plain:.2f} s unindexed; {rendering:.2f} s of it "
        "is copy_in's client-side text rendering); Polars work (delivered "
        f"{step_s(initial, f'{delivery}/_delivered'):.2f} s, offer lines "
        f"{step_s(initial, f'{delivery}/_offer_lines'):.2f} s, content hash "
        f"{step_s(initial, f'{delivery}/_store/_content_hash'):.2f} s, compute_delivery's own "
        f"{_self_s(initial, delivery):.2f} s) and the ledger (`_post_differences` "
        f"{step_s(initial, f'{top}/_post_differences'):.2f} s, `accounts_for`'s {step_s(initial, accounts):.2f} s "
        f"included). {machine} Not measured here, so not counted above: reading each offer's site, "
        "portfolio and utility once (10k rows) and joining them in Polars instead of three more UUID columns on each "
        "of the 960k award rows; reading readings and nominations on a second connection (same exported snapshot) "
        "while the awards are parsed; COPY into settlement_line in binary format instead of text.",
    ]


def _plan_figure(plan: list[str], label: str) -> str:
    """``Execution Time`` / ``Planning Time`` of an EXPLAIN ANALYZE plan, as written there ("?" if absent)."""
    return next((line.split(":")[1].strip() for line in plan if line.startswith(label)), "?")


def statements_analysis(result: dict[str, Any]) -> list[str]:
    issue, render = result["statements"], result["render"]
    if "error" in issue or "error" in render:
        return [f"- Statements failed: {issue.get('error') or render.get('error')}."]
    read = step_s(issue, "issue_all/load_period")
    many_self = _self_s(issue, "issue_all/_issue_many")
    big, others = render["utility"], render["others"]
    household = others["by_role"].get("household", {})
    household_plan = render["explain_lines_query"].get("household", [])
    utility_plan = render["explain_lines_query"].get("utility", [])
    work_mem = result["environment"].get("postgres_settings", {}).get("work_mem", "?")
    spill = (
        f"; its hash join with delivery_line spills to temp files at `work_mem` {work_mem}"
        if any("temp written" in line for line in utility_plan)
        else ""
    )
    utility_scan = next(
        (line.strip().lstrip("-> ").split("  (")[0] for line in utility_plan if "on settlement_line sl" in line), "?"
    )
    household_scan = next(
        (line.strip().lstrip("-> ").split("  (")[0] for line in household_plan if "on settlement_line sl" in line), "?"
    )
    by_key = (
        " (settlement_line's primary key (run_id, seller_id, offer_id, isp_start) serves a seller's lines of a run)"
        if "pk_settlement_line" in household_scan
        else ""
    )
    utility_read = step_s({"steps": render["utility_steps"]}, "document_of/load_period")
    utility_build = step_s({"steps": render["utility_steps"]}, "document_of/build_document")
    sample_read = step_s(render, "document_of/load_period")
    queries = next((s["calls"] for s in render["steps"] if s["path"] == "document_of/load_period/read_frame"), 0)
    per_query_ms = 1000 * step_s(render, "document_of/load_period/read_frame") / max(queries, 1)
    return [
        "### Statements",
        "",
        f"- issue_all: {issue['total_s']:.1f} s (before {BEFORE['issue_all_s']:.1f} s). `load_period` reads every "
        f"line of the period with its delivery, offer, site and portfolio ({issue['lines_max']:,} rows, 19 columns): "
        f"{read:.1f} s, though the statement job needs only the amounts per seller and utility "
        f"(`due_per_participant`, {step_s(issue, 'issue_all/_issue_many/due_per_participant'):.1f} s). The same query "
        f"for the utility's download executes in {_plan_figure(utility_plan, 'Execution Time')} on the server "
        f"(EXPLAIN ANALYZE, without producing text{spill}). A separate check at scale "
        "0.3 (288k lines, not in these files) split `read_frame` into about a third each: the query's execution, "
        "producing and sending the rows as text (COPY TO), and parsing and converting them in Polars (11 decimal "
        "columns). A `GROUP BY` in SQL over "
        "settlement_line alone (seller_id, utility_id, Σ amounts, count) returns ~9,000 rows. `_issue_many`'s own "
        f"{many_self:.1f} s is the ORM making and flushing {issue['statements']:,} `Statement` objects; one "
        "`insert(Statement)` with a list of dicts (or COPY) is a fraction of that.",
        "- Downloads: `document_of` reads a statement's lines by one column, `sl.seller_id = :p` (`sl.utility_id = "
        f":p` for a utility, which has no index: `{utility_scan}` in the utility's plan, as this world's one utility "
        "has every line). The household "
        f"plan is `{household_scan}`{by_key}, executing in {_plan_figure(household_plan, 'Execution Time')} on the "
        f"server after {_plan_figure(household_plan, 'Planning Time')} of planning. Households take "
        f"{household.get('mean_total_ms', 0.0):.1f} ms each: of the sample's {others['measured_s']:.2f} s, "
        f"`load_period` is {sample_read:.2f} s ({queries:,} `read_frame` queries, {per_query_ms:.1f} ms each: "
        f"lines, pass-through shares, runs), `build_document` {step_s(render, 'document_of/build_document'):.2f} s, "
        f"`to_csv` {step_s(render, 'to_csv'):.2f} s, the row {step_s(render, 'get'):.2f} s. So a small statement's "
        "time is a fixed cost per query and per document, not the rows it reads; fewer queries per statement (the "
        "runs are the same for every statement of a period) and rendering straight from the frame would cut it "
        f"(not measured here). At the sample's cost all {others['population']:,} take ≈ "
        f"{others['all_s'] / 60:.1f} min.",
        f"- The utility's download: {big['total_s']:.1f} s (before {BEFORE['csv_utility_s']:.1f} s): `load_period` "
        f"{utility_read:.1f} s, `build_document` {utility_build:.1f} s ({big['lines']:,} "
        f"`StatementLine`s of Decimals), `to_csv` {big['csv_s']:.1f} s. Rendering the CSV straight from the Polars "
        "frame (the exact micro-to-text expressions `copy_in` uses, `write_csv`) skips both Python passes; and a "
        "utility statement that lists every award of a month (30× this) should be aggregated (per congestion "
        "point and ISP, or per order and day) with the detail left in settlement_line.",
    ]


def from_saved(path: str) -> None:
    """Rebuild the Markdown report (and the analysis) from a saved results JSON."""
    with open(path) as source:
        result = json.load(source)
    result["analysis"] = analysis(result)
    json_path, md_path = write_results(NAME, result, markdown(result))
    say(f"wrote {json_path} and {md_path}")


def guarded(phase: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The phase's figures, or the error it failed with (running out of memory is a result at this scale)."""
    try:
        return phase()
    except (MemoryError, psycopg.Error, SQLAlchemyError) as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:500]}", "peak_rss_mb": peak_rss_mb()}


def limit_memory(gigabytes: float) -> None:
    if gigabytes > 0:
        limit = int(gigabytes * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main() -> None:
    args = parse_args()
    if args.from_json:
        from_saved(args.from_json)
        return
    limit_memory(args.memory_limit_gb)
    mix = Mix.of(args)
    day = delivery_day(args.days_ago)
    say(f"world: {mix} -> {mix.sites} sites, {mix.offers} offers, {mix.participants} participants, day {day}")
    with scratch_database(args.admin_url, "flex_bench_settle") as url:
        env = environment(url, MODULE)
        env["git_untracked_files"] = _git("ls-files", "--others", "--exclude-standard").splitlines()
        env["polars"] = pl.__version__
        env["polars_threads"] = pl.thread_pool_size()
        env["postgres_settings"] = postgres_settings(url)
        start = time.perf_counter()
        world = build_world(url, mix, day, args.seed)
        say(f"built in {time.perf_counter() - start:.1f} s: {world.award_rows} awards, {world.readings} readings")
        refs = measure_references(url, world, args.reference_repeats)
        say(
            f"raw COPY: plain {refs['plain_table']['median_s']} s, "
            f"settlement_line {refs['settlement_line']['median_s']} s"
        )
        engine = make_engine(url, pool_size=2)
        factory = make_session_factory(engine)
        initial = settle(factory, url, world, RunKind.INITIAL)
        initial["check"] = check_run(url, world, initial["run_id"])
        say(f"initial: {initial['total_s']} s, {initial['line_count']} lines, {initial['entry_count']} entries")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
        corrections = correct_readings(url, world, args.seed)
        recon = settle(factory, url, world, RunKind.RECONCILIATION)
        recon["check"] = check_run(url, world, recon["run_id"])
        say(f"reconciliation: {recon['total_s']} s, {recon['entry_count']} entries")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
        issued = guarded(lambda: issue_statements(factory, url, world))
        say(f"statements: {issued}"[:300])
        rendered = (
            guarded(lambda: render_statements(factory, url, world, args))
            if "error" not in issued
            else {"error": "skipped: issue_all failed", "peak_rss_mb": peak_rss_mb()}
        )
        say(f"csv: {rendered}"[:300])
        engine.dispose()
    other_cores = {
        "initial settlement": initial["cpu_s"]["other"] / initial["total_s"],
        "reconciliation": recon["cpu_s"]["other"] / recon["total_s"],
    }
    if "error" not in issued:
        other_cores["issue_all"] = issued["cpu_s"]["other"] / max(issued["total_s"], 1e-9)
    if "error" not in rendered:
        other_cores["CSV rendering"] = rendered["other_cores"]
    result: dict[str, Any] = {
        "environment": env,
        "parameters": vars(args),
        "mix": asdict(mix),
        "world": {
            "day": world.day.isoformat(),
            "participants": world.participants,
            "sites": world.sites,
            "member_sites": world.member_sites,
            "offers": world.offers,
            "portfolio_offers": world.portfolio_offers,
            "award_rows": world.award_rows,
            "readings": world.readings,
            "nominations": world.nominations,
            "baseline_method": "nominated",
            "build_seconds": {k: round(v, 2) for k, v in world.build_seconds.items()},
        },
        "targets": {"settle_s": TARGET_SETTLE_S, "statements": TARGET_STATEMENTS},
        "references": refs,
        "initial": initial,
        "ratio_initial_to_raw_copy": {
            "plain_table": round(initial["total_s"] / refs["plain_table"]["median_s"], 2),
            "pk_only": round(initial["total_s"] / refs["pk_only"]["median_s"], 2),
            "settlement_line": round(initial["total_s"] / refs["settlement_line"]["median_s"], 2),
        },
        "corrections": corrections,
        "reconciliation": recon,
        "statements": issued,
        "render": rendered,
        "other_cores": {k: round(v, 2) for k, v in other_cores.items()},
    }
    result["analysis"] = analysis(result)
    json_path, md_path = write_results(NAME, result, markdown(result))
    say(md_path.read_text())
    say(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
