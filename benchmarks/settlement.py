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
live system). The "before" shown next to this run's figures is the results file committed at a git revision
(``--before-rev``, default ``HEAD``: the last committed run; see :func:`load_before`); the report compares
seconds and, because the machine's load varies between runs, the ratios to the raw COPY references measured
in the same run and the CPU seconds.

Run from the repository root (develop with ``--scale 0.1``)::

    .venv/bin/python -m benchmarks.settlement [--before-rev REV]
    .venv/bin/python -m benchmarks.settlement --from-json results.json [--before-rev REV]  # report only
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
    git_bytes,
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
from settlement.bulk import encode_binary
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
    "settlement_line": (),  # BIGINT millionths since migration 0011: no decimal text to render
    "member_delivery": (),  # BIGINT millionths too (migration 0011)
}
MICRO = 1_000_000
PROBE_STATEMENTS = 50
"""Statements rendered first, in sample order, to project the time of rendering all of them."""
PER_ROLE_MIN = 5
"""At least this many statements of every role in the CSV sample (when there are that many)."""
RESULTS_FILE = "benchmarks/results/settlement.json"
"""This benchmark's results file in the repository: the "before" of a run is read from it at a git revision."""
WORLD_PARAMETERS = (
    "scale", "household_sites", "household_owners", "aggregators", "members", "portfolio_offers", "data_centers",
    "dc_sites", "dc_offers", "feeders", "seed",
)  # fmt: skip
WORLD_COUNTS = ("participants", "sites", "offers", "award_rows", "readings", "nominations")
TOP_STEPS = 10
"""Steps listed in "what dominates" (by their own time)."""


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
    parser.add_argument(
        "--from-json",
        "--from-saved",
        dest="from_json",
        help="only rebuild the report from this saved results JSON (no measuring)",
    )
    parser.add_argument(
        "--before-rev",
        help="git revision whose committed benchmarks/results/settlement.json is the 'before' to compare with "
        "(default HEAD: the last committed run; with --from-json, the 'before' recorded in that JSON if any, else "
        "HEAD); an unavailable revision or file gives a report without 'before'",
    )
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
            bulk._micro_text("import_micro").alias("import_kwh"),
            bulk._micro_text("export_micro").alias("export_kwh"),
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
            bulk._micro_text("import_micro").alias("import_kwh"),
            bulk._micro_text("export_micro").alias("export_kwh"),
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
    """The main thread's open steps. Another thread (the service's COPY worker) keeps its own, which starts
    under the main thread's outermost open step (``settle_day``): its steps are that step's children."""
    frames: dict[str, Any] = field(default_factory=dict)
    """The frame each ``copy_in`` or ``copy_binary`` wrote, by table (kept for the rendering diagnostic)."""
    writers: dict[str, str] = field(default_factory=dict)
    """Which of the two wrote it."""
    _threads: threading.local = field(default_factory=threading.local)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _stack(self) -> list[str]:
        if threading.current_thread() is threading.main_thread():
            return self.stack
        if not hasattr(self._threads, "stack"):
            self._threads.stack = self.stack[:1]
        stack: list[str] = self._threads.stack
        return stack

    def _enter(self, label: str) -> str:
        stack = self._stack()
        path = "/".join([*stack, label])
        with self._lock:
            self.order.setdefault(path, len(self.order))
        stack.append(label)
        return path

    def wrap(self, func: Callable[..., Any], name: str, by_table: bool) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            label = f"{name}({args[1]})" if by_table and len(args) > 1 else name
            if by_table and len(args) > 2:  # noqa: PLR2004 - copy_in(session, table, frame)
                self.frames[str(args[1])] = args[2]
                self.writers[str(args[1])] = name
            path = self._enter(label)
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self._leave(path, time.perf_counter() - start)

        return timed

    def _leave(self, path: str, seconds: float) -> None:
        self._stack().pop()
        with self._lock:
            self._record(path, seconds)

    def _record(self, path: str, seconds: float) -> None:
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
        "consume_marks", "pass_through", "_line_rows", "store_delivery", "copy_binary", "_ledger_state", "_transfers",
    ),
    delivery_service: (
        "_awards", "_sites", "assignments_in_force", "_readings", "_excluded_days", "_nominations", "compute_baselines",
        "_delivered", "_offer_lines", "_content_hash", "copy_in", "holidays_of",
    ),
    ledger_service: ("_check_against_stored", "_copy_entries"),
    statements_service: (
        "load_period", "read_frame", "due_per_participant", "_latest_issued", "_take_numbers", "_issue_many",
        "document_of", "get_market", "build_document",
    ),
    audit: ("record",),
}  # fmt: skip
BY_TABLE = frozenset({"copy_in", "copy_binary"})


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
    # settlement_line's kW, prices and amounts are BIGINT millionths (migration 0011): written as integers.
    text = frame.select(LINE_COLUMNS)
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
            "other_cores": round(cpu[name][len(seconds) // 2]["other"] / seconds[len(seconds) // 2], 2),
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
        table: round(render_only(watch.frames[table], columns, watch.writers.get(table) == "copy_binary"), 3)
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


def render_only(frame: pl.DataFrame, micro_columns: tuple[str, ...], binary: bool = False) -> float:
    """Seconds ``copy_in`` spends on the client for ``frame``: the same text conversion and ``write_csv``
    chunks (:func:`market.core.bulk.copy_in`), without sending anything; with ``binary``, the binary
    tuples ``copy_binary`` builds for settlement_line (:func:`settlement.bulk.encode_binary`)."""
    start = time.perf_counter()
    if binary:
        for _ in encode_binary(frame.select(list(runs_service.LINE_TYPES)), runs_service.LINE_TYPES):
            pass
        return time.perf_counter() - start
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


# -- step tables ---------------------------------------------------------------------------------


def step_s(part: dict[str, Any], path: str) -> float:
    """Seconds of one step path (0 when the step did not run)."""
    return next((s["seconds"] for s in part["steps"] if s["path"] == path), 0.0)


def _self_s(part: dict[str, Any], path: str) -> float:
    return next((s["self_s"] for s in part["steps"] if s["path"] == path), 0.0)


def _leaf(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _level(path: str) -> int:
    """Nesting depth of a step path."""
    return path.count("/")


def _overlapped(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps whose timed sub-steps add up to more than their own wall time (beyond rounding): those sub-steps
    overlapped in time, so the step's ``self`` is not its own time."""
    return [step for step in steps if step["self_s"] < -0.01]  # noqa: PLR2004 - rounding of four decimals


def _in_parallel(steps: list[dict[str, Any]]) -> set[str]:
    """Paths that overlap other steps in wall time: those under an overlapped step."""
    overlapped = [step["path"] + "/" for step in _overlapped(steps)]
    return {step["path"] for step in steps if any(step["path"].startswith(parent) for parent in overlapped)}


def _change(before: float, now: float) -> str:
    if before <= 0:
        return "—"
    return f"{now / before:.2f}× ({100 * (now - before) / before:+.0f}%)"


def _moved_to(path: str, now_paths: list[str], before_paths: set[str]) -> str:
    """Where a step of the before run that is gone from its path runs now: the one new path with its name."""
    moved = [p for p in now_paths if _leaf(p) == _leaf(path) and p not in before_paths]
    return f"; `{_leaf(path)}` now at {moved[0]}" if len(moved) == 1 else ""


def _step_rows(
    steps: list[dict[str, Any]], total: float, depth: int = 3, before: list[dict[str, Any]] | None = None
) -> list[str]:
    """The step table; with ``before`` (the before run's steps), a column with its seconds of the same path (and
    a row per path that ran only then). Steps that overlap others in wall time are marked "(in parallel)"."""
    rows = []
    parallel = _in_parallel(steps)
    then = {step["path"]: step["seconds"] for step in before or []}
    now_paths = [step["path"] for step in steps]
    for step in steps:
        level = _level(step["path"])
        if level > depth:
            continue
        name = _leaf(step["path"])
        indent = "&nbsp;&nbsp;" * level
        calls = f" ×{step['calls']:,} (longest {step['longest_call_s']:.3f})" if step["calls"] > 1 else ""
        overlap = " (in parallel)" if step["path"] in parallel else ""
        cells = [f"{indent}{name}{calls}{overlap}", f"{step['seconds']:.3f}", f"{step['self_s']:.3f}"]
        cells.append(f"{100 * step['seconds'] / total:.1f}%")
        if before is not None:
            cells.append(f"{then[step['path']]:.3f}" if step["path"] in then else "—")
        rows.append("| " + " | ".join(cells) + " |")
    if before is None:
        return ["| step | seconds | self | share of total |", "|---|---|---|---|", *rows]
    gone = [path for path in then if path not in now_paths and _level(path) <= depth]
    rows += [
        f"| {path} (gone{_moved_to(path, now_paths, set(then))}) | — | — | — | {then[path]:.3f} |" for path in gone
    ]
    return [
        "| step | seconds | self | share of total | before (s) |",
        "|---|---|---|---|---|",
        *rows,
    ]


def _steps_legend(before: dict[str, Any] | None) -> str:
    text = (
        "Steps (wall seconds; `self` = not covered by the timed sub-steps listed under it; `(in parallel)` = a step "
        "under one whose timed sub-steps add up to more than its own wall time (they overlapped), so its parent's "
        "`self` is not its own time"
    )
    if before is not None:
        text += (
            "; `before` = the same path in the before run; `(gone)` = a step of the before run that no longer runs "
            "at that full path"
        )
    return text + "):"


def _settle_section(title: str, part: dict[str, Any], before: dict[str, Any] | None) -> list[str]:
    check = part["check"]
    return [
        title,
        "",
        f"- total {part['total_s']:.3f} s (settle_day {part['settle_day_s']:.3f} s + commit {part['commit_s']:.3f} s); "
        f"{part['line_count']:,} settlement lines stored, {part['entry_count']:,} ledger entries posted "
        f"(by kind: {check['entries_by_kind_of_run']}); run version {part['version']}",
        f"- CPU seconds: {part['cpu_s']}; peak RSS of the benchmark process so far {part['peak_rss_mb']:,.0f} MB",
        "- client-side rendering alone inside copy_in / copy_binary (text, or binary tuples where copy_binary "
        f"wrote; diagnostic, no I/O): {part['copy_in_client_rendering_s']}",
        f"- delivery statuses: {check['delivery_statuses']}; ledger checks: {check['checks']}",
        "",
        _steps_legend(before),
        "",
        *_step_rows(part["steps"], part["total_s"], before=before["steps"] if before is not None else None),
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


# -- the "before": a committed results file ------------------------------------------------------


def reference_other_cores(reference: dict[str, Any]) -> float | None:
    """Cores other processes used during a raw COPY reference (its ``cpu_s`` is of the middle repetition)."""
    seconds: list[float] = reference.get("seconds") or []
    cpu: dict[str, float] | None = reference.get("cpu_s")
    if not cpu or not seconds or seconds[len(seconds) // 2] <= 0:
        return None
    return round(cpu["other"] / seconds[len(seconds) // 2], 2)


def _settle_figures(part: dict[str, Any]) -> dict[str, Any]:
    keys = ("total_s", "settle_day_s", "commit_s", "line_count", "entry_count", "cpu_s", "copy_in_client_rendering_s")
    return {**{key: part.get(key) for key in keys}, "steps": part["steps"]}


def _statement_figures(issue: dict[str, Any]) -> dict[str, Any]:
    if "error" in issue:
        return {"error": issue["error"]}
    keys = (
        "statements", "total_s", "ms_per_statement", "lines_total", "lines_max", "runs_json_bytes_total",
        "statement_table_bytes", "cpu_s", "steps",
    )  # fmt: skip
    return {key: issue.get(key) for key in keys}


def _render_figures(render: dict[str, Any]) -> dict[str, Any]:
    if "error" in render:
        return {"error": render["error"]}
    others = render["others"]
    return {
        "statements": render["statements"],
        "decision": render["decision"],
        "total_s": render["total_s"],
        "ms_per_statement": render["ms_per_statement"],
        "measured": csv_measured(render),
        "utility": {key: render["utility"][key] for key in ("lines", "total_s", "get_s", "document_s", "csv_s")},
        "utility_steps": render["utility_steps"],
        "others": {key: others[key] for key in ("population", "measured", "all_s", "ms_per_statement")},
        "cpu_s": render.get("cpu_s"),
    }


def before_of(saved: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """What the report compares with, from a saved results JSON: its run's date and code, world, totals, step
    seconds, raw COPY references (with the CPU other processes used meanwhile), CPU seconds and statements."""
    env, refs = saved["environment"], saved["references"]
    initial = _settle_figures(saved["initial"])
    return {
        "source": {
            **source,
            "run_date": env.get("date"),
            "run_git_commit": env.get("git_commit"),
            "run_git_dirty_files": env.get("git_dirty_files", []),
            "run_command": env.get("command"),
        },
        "cpu_count": env.get("cpu_count"),
        "parameters": {key: saved["parameters"].get(key) for key in WORLD_PARAMETERS},
        "world": {key: saved["world"].get(key) for key in WORLD_COUNTS},
        "reference_columns": saved.get("reference_columns"),
        "references": {
            name: {
                "median_s": ref["median_s"],
                "seconds": ref.get("seconds"),
                "cpu_s": ref.get("cpu_s"),
                "other_cores": reference_other_cores(ref),
            }
            for name, ref in refs.items()
        },
        "ratio_initial_to_raw_copy": {
            name: round(initial["total_s"] / ref["median_s"], 2) for name, ref in refs.items() if ref["median_s"] > 0
        },
        "initial": initial,
        "reconciliation": _settle_figures(saved["reconciliation"]),
        "statements": _statement_figures(saved["statements"]),
        "render": _render_figures(saved["render"]),
        "other_cores": saved.get("other_cores", {}),
    }


def load_before(rev: str) -> dict[str, Any]:
    """The results committed at git ``rev`` as "before" (:func:`before_of`); when git, the revision or the file is
    unavailable or unreadable, only ``{"source": {..., "unavailable": why}}`` (the report then has no before)."""
    source: dict[str, Any] = {"rev": rev, "file": RESULTS_FILE}
    commit = git_bytes("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", timeout=60)
    if not commit:
        return {"source": {**source, "unavailable": f"git or the revision {rev!r} is unavailable"}}
    source["commit"] = commit.decode().strip()
    raw = git_bytes("show", f"{source['commit']}:{RESULTS_FILE}", timeout=60)
    if raw is None:
        return {"source": {**source, "unavailable": f"{RESULTS_FILE} does not exist at {rev}"}}
    changed = git_bytes("log", "-1", "--format=%H", source["commit"], "--", RESULTS_FILE, timeout=60)
    if changed:
        source["results_commit"] = changed.decode().strip()
    try:
        return before_of(json.loads(raw), source)
    except (ValueError, KeyError, TypeError, IndexError, ZeroDivisionError) as exc:
        return {"source": {**source, "unavailable": f"unreadable results there ({type(exc).__name__}: {exc})"}}


def attach_before(result: dict[str, Any], rev: str | None) -> None:
    """``result["before"]``: the one recorded in ``result`` when ``rev`` is None and there is one, else the
    results committed at ``rev`` (default HEAD) unless they are this very run."""
    recorded = result.get("before")
    if rev is None and isinstance(recorded, dict) and "initial" in recorded:
        return
    before = load_before(rev or "HEAD")
    source, env = before["source"], result["environment"]
    if "initial" in before and (source["run_date"], source["run_git_commit"]) == (env["date"], env["git_commit"]):
        before = {"source": {**source, "unavailable": f"the results at {source['rev']} are this same run"}}
    result["before"] = before


def _before_part(before: dict[str, Any] | None, key: str) -> dict[str, Any]:
    """One part of the before run's figures (``{"error": ...}`` when there is no before)."""
    if before is None:
        return {"error": "no before"}
    part: dict[str, Any] = before[key]
    return part


def _before(result: dict[str, Any]) -> dict[str, Any] | None:
    before = result.get("before")
    return before if isinstance(before, dict) and "initial" in before else None


def _when(iso: str | None) -> str:
    try:
        return datetime.fromisoformat(iso or "").astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return str(iso)


def before_label(before: dict[str, Any]) -> str:
    """Which run the before is: its date and code, and where it was read."""
    source = before["source"]
    dirty = [
        name
        for name in (line.split()[-1] for line in source.get("run_git_dirty_files") or [] if line.split())
        if not name.startswith("benchmarks/results/")
    ]
    code = f"git {str(source.get('run_git_commit'))[:7]}"
    if dirty:
        code += f" with uncommitted changes in {', '.join(dirty)}"
    where = f"`git show {source['rev']}:{source['file']}`"
    if source.get("results_commit"):
        where += f", committed in {source['results_commit'][:7]}"
    return f"the run of {_when(source.get('run_date'))} at {code} (read from {where})"


def world_differences(result: dict[str, Any], before: dict[str, Any]) -> list[str]:
    """Parameters of the world and its row counts that differ between the two runs."""
    differences = [
        f"{key} {before['parameters'].get(key)} → {result['parameters'].get(key)}"
        for key in WORLD_PARAMETERS
        if before["parameters"].get(key) != result["parameters"].get(key)
    ]
    differences += [
        f"{key} {before['world'].get(key)} → {result['world'].get(key)}"
        for key in WORLD_COUNTS
        if before["world"].get(key) != result["world"].get(key)
    ]
    return differences


# -- the report ----------------------------------------------------------------------------------


def _target_verdict(seconds: float) -> str:
    if seconds <= TARGET_SETTLE_S:
        return f"**met**, {TARGET_SETTLE_S - seconds:.2f} s under it"
    return f"**missed** by {seconds - TARGET_SETTLE_S:.2f} s ({seconds / TARGET_SETTLE_S:.2f}× the target)"


def per_10k(seconds: float, statements: int) -> float:
    return seconds / max(statements, 1) * TARGET_STATEMENTS


def _cpu_work(part: dict[str, Any]) -> float | None:
    """CPU seconds of the benchmark process and PostgreSQL (what the work itself cost, load aside)."""
    cpu = part.get("cpu_s")
    return cpu["benchmark"] + cpu["postgres"] if cpu else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}×" if unit == "×" else f"{value:.2f}"


def _summary_table(result: dict[str, Any], before: dict[str, Any] | None) -> list[str]:
    """Now against before: seconds, CPU seconds, the ratios to the same run's raw COPY references, the load."""
    initial, recon, refs = result["initial"], result["reconciliation"], result["references"]
    issue, render = result["statements"], result["render"]
    b_initial = before["initial"] if before else {}
    b_recon = before["reconciliation"] if before else {}
    b_refs = before["references"] if before else {}
    b_issue = _before_part(before, "statements")
    b_render = _before_part(before, "render")
    b_cores = before["other_cores"] if before else {}

    def ref_s(figures: dict[str, Any], name: str) -> float | None:
        return figures[name]["median_s"] if name in figures else None

    labels = {
        "plain_table": "an unindexed table",
        "pk_only": "a table with only settlement_line's primary key",
        "settlement_line": "settlement_line",
    }
    rows: list[tuple[str, float | None, float | None, str]] = [
        ("Initial settlement (settle_day + commit), s", b_initial.get("total_s"), initial["total_s"], "s"),
        ("&nbsp;&nbsp;CPU seconds of this process + PostgreSQL", _cpu_work(b_initial), _cpu_work(initial), "s"),
        *[
            (
                f"&nbsp;&nbsp;÷ raw COPY into {label} (same run)",
                _ratio(b_initial.get("total_s"), ref_s(b_refs, name)),
                _ratio(initial["total_s"], ref_s(refs, name)),
                "×",
            )
            for name, label in labels.items()
            if name in refs
        ],
        (
            "&nbsp;&nbsp;cores used by other processes meanwhile",
            b_cores.get("initial settlement"),
            result["other_cores"].get("initial settlement"),
            "cores",
        ),
        ("Reconciliation (1% of readings corrected), s", b_recon.get("total_s"), recon["total_s"], "s"),
        ("&nbsp;&nbsp;CPU seconds of this process + PostgreSQL", _cpu_work(b_recon), _cpu_work(recon), "s"),
        (
            "&nbsp;&nbsp;÷ raw COPY into settlement_line (same run)",
            _ratio(b_recon.get("total_s"), ref_s(b_refs, "settlement_line")),
            _ratio(recon["total_s"], ref_s(refs, "settlement_line")),
            "×",
        ),
        *[
            (f"Raw COPY reference into {label}, s", ref_s(b_refs, name), ref_s(refs, name), "s")
            for name, label in labels.items()
            if name in refs
        ],
        (
            "&nbsp;&nbsp;cores used by other processes during the settlement_line reference",
            b_refs.get("settlement_line", {}).get("other_cores"),
            reference_other_cores(refs["settlement_line"]) if "settlement_line" in refs else None,
            "cores",
        ),
    ]
    if "error" not in issue:
        rows.append(
            (
                f"issue_all ({issue['statements']:,} statements) + commit, s",
                b_issue.get("total_s"),
                issue["total_s"],
                "s",
            )
        )
    if "error" not in render:
        rows += [
            (
                "CSV of every statement ("
                + ("all measured" if render["decision"] == "all" else "sampled and extrapolated, see below")
                + "), s",
                b_render.get("total_s"),
                render["total_s"],
                "s",
            ),
            (
                "&nbsp;&nbsp;the utility's statement",
                b_render["utility"]["total_s"] if "utility" in b_render else None,
                render["utility"]["total_s"],
                "s",
            ),
            (
                "&nbsp;&nbsp;the others",
                b_render["others"]["all_s"] if "others" in b_render else None,
                render["others"]["all_s"],
                "s",
            ),
        ]
    if "error" not in issue and "error" not in render:
        both_before = "error" not in b_issue and "error" not in b_render
        rows.append(
            (
                f"Statements: issue_all + every CSV, per {TARGET_STATEMENTS:,}, s",
                per_10k(b_issue["total_s"] + b_render["total_s"], b_issue["statements"]) if both_before else None,
                per_10k(issue["total_s"] + render["total_s"], issue["statements"]),
                "s",
            )
        )
    if before is None:
        return [
            "| measurement | now |",
            "|---|---|",
            *[f"| {name} | {_cell(now, unit)} |" for name, _, now, unit in rows],
        ]
    lines = []
    for name, then, now, unit in rows:
        change = _change(then, now) if then is not None and now is not None and unit != "cores" else "—"
        lines.append(f"| {name} | {_cell(then, unit)} | {_cell(now, unit)} | {change} |")
    return ["| measurement | before | now | now / before |", "|---|---|---|---|", *lines]


def load_note(result: dict[str, Any], before: dict[str, Any] | None) -> str:
    """How loaded the machine was in each run (other processes' cores, measured), and what that means for
    reading the comparison."""
    cores = result["environment"].get("cpu_count") or "?"
    refs = result["references"]
    now_cores = result["other_cores"].get("initial settlement", 0.0)
    ref_cores = [c for c in (reference_other_cores(ref) for ref in refs.values()) if c is not None]
    text = f"Other processes used {now_cores:.2f} of the {cores} cores during this run's initial settlement" + (
        f" and up to {max(ref_cores):.2f} during its raw COPY references" if ref_cores else ""
    )
    now_noisy = now_cores > NOISY_CORES or any(c > NOISY_CORES for c in ref_cores)
    before_noisy = False
    if before is not None:
        then_cores = before["other_cores"].get("initial settlement", 0.0)
        then_refs = [ref["other_cores"] for ref in before["references"].values() if ref.get("other_cores") is not None]
        before_noisy = then_cores > NOISY_CORES or any(c > NOISY_CORES for c in then_refs)
        text += f"; in the before run {then_cores:.2f}" + (f" and up to {max(then_refs):.2f}" if then_refs else "")
    text += "."
    if now_noisy or before_noisy:
        loaded = " and ".join(
            name for name, noisy in (("this run", now_noisy), ("the before run", before_noisy)) if noisy
        )
        text += (
            f" **Other processes competed for the CPU in {loaded}** (above {NOISY_CORES} cores), so "
            f"{'their' if now_noisy and before_noisy else 'its'} seconds are slower than on a quiet machine: compare "
            "the CPU seconds and the ratios to the raw COPY references measured in the same run rather than the "
            "seconds (the load need not slow the settlement and the COPY alike, so the ratios are less sensitive to "
            "it, not insensitive)."
        )
    else:
        who = (
            "Both runs had the machine almost to themselves" if before else "This run had the machine almost to itself"
        )
        text += f" {who} (at most {NOISY_CORES} cores to others)."
    return text


def reference_note(result: dict[str, Any], before: dict[str, Any] | None) -> str:
    """Whether the raw COPY references of the two runs copied rows of the same shape."""
    now_columns, then_columns = result.get("reference_columns"), before.get("reference_columns") if before else None
    if before is None:
        return ""
    if now_columns is None or then_columns is None:
        missing = " and ".join(
            name for name, columns in (("this run", now_columns), ("the before run", then_columns)) if columns is None
        )
        return (
            f" The reference rows' columns are not recorded for {missing}: if they differ (settlement_line's shape "
            "changes with the schema), the references and the ratios differ for that reason too."
        )
    if list(now_columns) != list(then_columns):
        return (
            f" The reference rows differ: {len(then_columns)} columns then, {len(now_columns)} now (settlement_line's "
            "shape), so the references and the ratios differ for that reason too."
        )
    return f" The reference rows have the same {len(now_columns)} columns in both runs."


def _statements_summary(issue: dict[str, Any], render: dict[str, Any], before: dict[str, Any] | None) -> list[str]:
    b_issue = _before_part(before, "statements")
    b_render = _before_part(before, "render")
    if "error" in issue:
        return [f"- issue_all **failed**: {issue['error']} (peak RSS {issue['peak_rss_mb']:,.0f} MB)."]
    then = f"; before {b_issue['total_s']:.2f} s for {b_issue['statements']:,}" if "error" not in b_issue else ""
    lines = [
        f"- issue_all: **{issue['statements']:,} statements in {issue['total_s']:.2f} s** "
        f"({issue['ms_per_statement']:.2f} ms each{then})."
    ]
    if "error" in render:
        return [*lines, f"- CSV rendering **failed**: {render['error']} (peak RSS {render['peak_rss_mb']:,.0f} MB)."]
    csv_then = ""
    if "error" not in b_render:
        how = "measured the same way" if b_render["measured"] == csv_measured(render) else b_render["measured"]
        csv_then = f"; before {b_render['total_s']:.1f} s, {how}"
    total_then = (
        f" (before ≈ {per_10k(b_issue['total_s'] + b_render['total_s'], b_issue['statements']):.0f} s)"
        if "error" not in b_issue and "error" not in b_render
        else ""
    )
    return [
        *lines,
        f"- Downloading every statement as CSV (`document_of` + `to_csv`): **{render['total_s']:.2f} s** "
        f"({render['ms_per_statement']:.1f} ms each; the utility's alone {render['utility']['total_s']:.1f} s, the "
        f"others {render['others']['ms_per_statement']:.1f} ms each; {csv_measured(render)}{csv_then}).",
        f"- **Generating {TARGET_STATEMENTS:,} statements as CSV** (issue_all + every download, scaled linearly from "
        f"{issue['statements']:,}): **≈ {per_10k(issue['total_s'] + render['total_s'], issue['statements']):.0f} s**"
        f"{total_then}.",
    ]


def _ratio_sentence(result: dict[str, Any], before: dict[str, Any] | None) -> str:
    initial, refs = result["initial"], result["references"]
    parts = []
    for name, label in (("plain_table", "an unindexed table"), ("settlement_line", "settlement_line")):
        if name not in refs or refs[name]["median_s"] <= 0:
            continue
        now = initial["total_s"] / refs[name]["median_s"]
        text = f"{now:.2f}× the raw COPY into {label}"
        then = before["ratio_initial_to_raw_copy"].get(name) if before else None
        if then:
            text += f" (before {then:.2f}×, {100 * (now - then) / then:+.0f}%)"
        parts.append(text)
    return "; ".join(parts)


def summary(result: dict[str, Any]) -> list[str]:
    """The summary: every figure from this run's data or the before's."""
    before = _before(result)
    world, refs = result["world"], result["references"]
    initial, recon, corrections = result["initial"], result["reconciliation"], result["corrections"]
    plain, pk, line_ref = (refs[name]["median_s"] for name in ("plain_table", "pk_only", "settlement_line"))
    cores = result["environment"].get("cpu_count") or "?"
    if before is None:
        reason = (result.get("before") or {}).get("source", {}).get("unavailable", "none was loaded")
        head = f"No before to compare with ({reason})."
    else:
        differences = world_differences(result, before)
        same = (
            "the same world (sizes, seed and row counts)"
            if not differences
            else f"**a different world** ({'; '.join(differences)}), so the figures are not directly comparable"
        )
        head = f"Before = {before_label(before)}: {same}."
    lines = [
        f"{head} {load_note(result, before)}{reference_note(result, before)}",
        "",
        *_summary_table(result, before),
        "",
        f"- **Initial settlement of {initial['line_count']:,} award-ISPs: {initial['total_s']:.2f} s**, target ≤ "
        f"{TARGET_SETTLE_S:.0f} s on {cores} cores: {_target_verdict(initial['total_s'])}"
        + (
            f"; before {before['initial']['total_s']:.2f} s: {_target_verdict(before['initial']['total_s'])}"
            if before
            else ""
        )
        + f". {initial['entry_count']:,} ledger entries. This run's initial settlement took "
        f"{_ratio_sentence(result, before)}.",
        f"- Raw COPY of the same {refs['plain_table']['rows']:,} rows (settlement_line's shape, pre-rendered text, "
        f"committed; median of {len(refs['plain_table']['seconds'])}): unindexed table **{plain:.2f} s**, with only "
        f"settlement_line's primary key {pk:.2f} s, settlement_line itself **{line_ref:.2f} s**"
        + (
            " (before: {:.2f}, {:.2f} and {:.2f} s)".format(
                *(before["references"][n]["median_s"] for n in ("plain_table", "pk_only", "settlement_line"))
            )
            if before and all(n in before["references"] for n in ("plain_table", "pk_only", "settlement_line"))
            else ""
        )
        + ".",
        f"- Reconciliation after correcting {corrections['readings_corrected']:,} readings (1%, "
        f"{corrections['sites_marked']:,} sites marked): **{recon['total_s']:.2f} s**"
        + (f" (before {before['reconciliation']['total_s']:.2f} s)" if before else "")
        + f", {recon['entry_count']:,} adjustment entries posted, {recon['line_count']:,} lines stored again; "
        f"{recon['total_s'] / line_ref:.2f}× the raw COPY into settlement_line.",
        *_statements_summary(result["statements"], result["render"], before),
    ]
    if world["award_rows"] != initial["line_count"]:
        lines.append(f"- Note: {world['award_rows']:,} award rows but {initial['line_count']:,} lines settled.")
    return lines


def _statements_section(
    world: dict[str, Any], issue: dict[str, Any], render: dict[str, Any], before: dict[str, Any] | None
) -> list[str]:
    lines = ["## Statements", ""]
    if "error" in issue:
        return [*lines, f"issue_all failed: {issue['error']}; peak RSS {issue['peak_rss_mb']:,.0f} MB."]
    b_issue = _before_part(before, "statements")
    b_render = _before_part(before, "render")
    sizes_then = (
        f" (before: {b_issue['statement_table_bytes'] / 1e6:,.1f} MB and "
        f"{b_issue['runs_json_bytes_total'] / 1e6:,.2f} MB)"
        if "error" not in b_issue and b_issue.get("statement_table_bytes") is not None
        else ""
    )
    lines += [
        f"issue_all for {world['day']} .. {world['day']} + commit: **{issue['total_s']:.3f} s for "
        f"{issue['statements']:,} statements** ({issue['ms_per_statement']:.2f} ms each, ≈ "
        f"{issue['scaled_to_10k_s']:.0f} s per {TARGET_STATEMENTS:,} if it grew with the count; it grows with the "
        f"period's lines); {issue['lines_total']:,} statement lines in all, at most {issue['lines_max']:,} in one; "
        f"the statement table is {issue['statement_table_bytes'] / 1e6:,.1f} MB with its indexes, the run lists "
        f"{issue['runs_json_bytes_total'] / 1e6:,.2f} MB{sizes_then}. "
        f"CPU seconds: {issue['cpu_s']}; peak RSS so far {issue['peak_rss_mb']:,.0f} MB.",
        "",
        *_step_rows(
            issue["steps"], issue["total_s"], depth=3, before=b_issue["steps"] if "error" not in b_issue else None
        ),
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
        f"{csv_measured(render).capitalize()}. All {render['statements']:,}: **{render['total_s']:.2f} s** "
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
        *_step_rows(
            render["utility_steps"],
            big["total_s"],
            depth=3,
            before=b_render["utility_steps"] if "error" not in b_render else None,
        ),
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
    env, world = result["environment"], result["world"]
    initial, recon = result["initial"], result["reconciliation"]
    issue, render = result["statements"], result["render"]
    before = _before(result)
    untracked = ", ".join(env.get("git_untracked_files", [])) or "none"
    load = contamination_note(result["other_cores"])
    if before is not None:
        then = contamination_note(before["other_cores"])[0].removeprefix("**Warning**: ")
        load.append(f"The before run ({_when(before['source'].get('run_date'))}): {then[:1].lower()}{then[1:]}")
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
        *summary(result),
        "",
        *_settle_section(
            "## Initial settlement: settle_day(INITIAL) in one transaction + commit",
            initial,
            before["initial"] if before else None,
        ),
        "",
        *_settle_section(
            "## Reconciliation after correcting 1% of the readings",
            recon,
            before["reconciliation"] if before else None,
        ),
        "",
        *_statements_section(world, issue, render, before),
        "## What dominates",
        "",
        *result["analysis"],
        "",
        *load,
    ]


def dominating(part: dict[str, Any], before: dict[str, Any] | None, top: int = TOP_STEPS) -> list[str]:
    """The steps with the most own time (``self``), which add up to the wall time, with the
    before run's own time of the same path; then what ran in parallel to them."""
    steps, total = part["steps"], part["total_s"]
    parallel = _in_parallel(steps)
    serial = sorted((s for s in steps if s["path"] not in parallel), key=lambda s: -s["self_s"])
    then = {s["path"]: s["self_s"] for s in before["steps"]} if before else {}
    now_paths = {s["path"] for s in steps}
    listed = [s for s in serial[:top] if s["self_s"] > 0]

    def then_cell(path: str) -> str:
        if path in then:
            return f" {then[path]:.3f} |"
        moved = [p for p in then if _leaf(p) == _leaf(path) and p not in now_paths]
        return f" {then[moved[0]]:.3f} (at {moved[0]}) |" if len(moved) == 1 else " — |"

    rows = [
        f"| {s['path']} | {s['self_s']:.3f} | {100 * s['self_s'] / total:.1f}% |"
        + (then_cell(s["path"]) if before else "")
        for s in listed
    ]
    own = sum(max(s["self_s"], 0.0) for s in listed)
    lines = [
        "| step (own time, not in its timed sub-steps) | self (s) | share of total |"
        + (" before self (s) |" if before else ""),
        "|---|---|---|" + ("---|" if before else ""),
        *rows,
        "",
        f"These {len(listed)} steps' own time is {own:.2f} s of the {total:.2f} s "
        f"({100 * own / total:.0f}%); the other {len(serial) - len(listed)} steps' "
        f"{sum(max(s['self_s'], 0.0) for s in serial[len(listed) :]):.2f} s.",
    ]
    for step in _overlapped(steps):
        children = step["seconds"] - step["self_s"]
        lines.append(
            f"`{step['path']}`'s timed sub-steps add up to {children:.2f} s, more than its own {step['seconds']:.2f} s "
            "of wall time: they overlapped in time, so its `self` is not its own time and the steps under it are "
            "counted as in parallel here."
        )
    side = [s for s in steps if s["path"] in parallel and not any(s["path"].startswith(p + "/") for p in parallel)]
    if side:
        listed_side = ", ".join(f"`{s['path']}` {s['seconds']:.2f} s" for s in side)
        lines.append(f"In parallel with the other steps (wall seconds, not added above): {listed_side}.")
    return lines


def analysis(result: dict[str, Any]) -> list[str]:
    """Where the time goes, generated from the step tables; every figure comes from this run or the before."""
    before = _before(result)
    initial, recon, refs = result["initial"], result["reconciliation"], result["references"]
    total = initial["total_s"]
    steps = initial["steps"]
    parallel = _in_parallel(steps)
    copies = {
        s["path"]: s["self_s"]
        for s in steps
        if s["path"] not in parallel
        and (_leaf(s["path"]).startswith(("copy_in(", "copy_binary(")) or _leaf(s["path"]) == "_copy_entries")
    }
    line_copy = next(
        (s for s in steps if _leaf(s["path"]) in ("copy_in(settlement_line)", "copy_binary(settlement_line)")), None
    )
    line_ref = refs["settlement_line"]["median_s"]
    cpu = initial["cpu_s"]
    cores = int(result["environment"].get("cpu_count") or 2)
    floor = (cpu["benchmark"] + cpu["postgres"]) / cores
    lines = [
        "### The initial settlement's steps by own time",
        "",
        *dominating(initial, before["initial"] if before else None),
        "",
    ]
    if total > TARGET_SETTLE_S:
        gap = total - TARGET_SETTLE_S
        serial = sorted((s for s in steps if s["path"] not in parallel), key=lambda s: -s["self_s"])
        alone = [s["path"] for s in serial if s["self_s"] >= gap]
        lines.append(
            f"- The target needs {gap:.2f} s less wall time. "
            + (
                f"Only {', '.join(f'`{p}`' for p in alone)} has that much own time by itself."
                if alone
                else f"No single step has that much own time (the largest: `{serial[0]['path']}` "
                f"{serial[0]['self_s']:.2f} s), so it takes several of them."
            )
        )
    else:
        lines.append(f"- The target is met with {TARGET_SETTLE_S - total:.2f} s to spare.")
    if copies:
        lines.append(
            f"- COPY into tables (`copy_in`, `copy_binary`, the ledger's `_copy_entries`; not counting the "
            f"COPYs that ran in parallel with other steps): {sum(copies.values()):.2f} s = "
            f"{100 * sum(copies.values()) / total:.0f}% of the initial settlement ("
            + ", ".join(f"{_leaf(p)} {s:.2f} s" for p, s in copies.items())
            + ")."
        )
    if line_copy is not None and line_ref > 0:
        rendering = initial["copy_in_client_rendering_s"].get("settlement_line")
        lines.append(
            f"- `{_leaf(line_copy['path'])}` took {line_copy['seconds']:.2f} s, "
            f"{line_copy['seconds'] / line_ref:.2f}× the raw COPY of as many pre-rendered rows (text format) into "
            f"settlement_line in this run ({line_ref:.2f} s)"
            + (f"; its client-side rendering alone (measured apart, no I/O) is {rendering:.2f} s" if rendering else "")
            + "."
        )
    lines.append(
        f"- CPU: this process {cpu['benchmark']:.1f} s and PostgreSQL {cpu['postgres']:.1f} s in {total:.1f} s of wall "
        f"time, while other processes used {cpu['other'] / total:.2f} of the {cores} cores on average. That CPU "
        f"time needs at least {floor:.1f} s of wall time on {cores} cores (all of them busy throughout): "
        + (
            f"more than the {TARGET_SETTLE_S:.0f} s target, so even alone on the machine this work cannot meet it; "
            "the work itself has to shrink."
            if floor > TARGET_SETTLE_S
            else f"below the {TARGET_SETTLE_S:.0f} s target, so this bound does not rule the target out (a bound "
            f"only: the run kept {(cpu['benchmark'] + cpu['postgres']) / total:.2f} of the {cores} cores busy on "
            "average)."
        )
    )
    return [
        *lines,
        "",
        "### The reconciliation's steps by own time",
        "",
        *dominating(recon, before["reconciliation"] if before else None, top=5),
        "",
        *statements_analysis(result),
    ]


def _calls(part: dict[str, Any], path: str) -> str:
    """A step's calls and its longest call, as words."""
    step = next((s for s in part["steps"] if s["path"] == path), None)
    if step is None:
        return f"no `{_leaf(path)}`"
    return f"{step['calls']:,} `{_leaf(path)}` calls, the longest {step['longest_call_s']:.2f} s"


def _plan_figure(plan: list[str], label: str) -> str:
    """``Execution Time`` / ``Planning Time`` of an EXPLAIN ANALYZE plan, as written there ("?" if absent)."""
    return next((line.split(":")[1].strip() for line in plan if line.startswith(label)), "?")


def _plan_scan(plan: list[str], table: str) -> str:
    """The plan node that reads ``table`` ("?" if none)."""
    return next((line.strip().lstrip("-> ").split("  (")[0] for line in plan if f" on {table} " in line + " "), "?")


def statements_analysis(result: dict[str, Any]) -> list[str]:
    issue, render = result["statements"], result["render"]
    if "error" in issue or "error" in render:
        return [f"- Statements failed: {issue.get('error') or render.get('error')}."]
    before = _before(result)
    b_issue = _before_part(before, "statements")
    b_render = _before_part(before, "render")
    biggest = max(issue["steps"], key=lambda s: s["self_s"])
    big, others = render["utility"], render["others"]
    household = others["by_role"].get("household", {})
    household_plan = render["explain_lines_query"].get("household", [])
    utility_plan = render["explain_lines_query"].get("utility", [])
    work_mem = result["environment"].get("postgres_settings", {}).get("work_mem", "?")
    spill = (
        f"; it writes temporary files at `work_mem` {work_mem}"
        if any("temp written" in line for line in utility_plan)
        else ""
    )
    utility_steps = {"steps": render["utility_steps"]}
    queries = next((s["calls"] for s in render["steps"] if s["path"] == "document_of/load_period/read_frame"), 0)
    per_query_ms = 1000 * step_s(render, "document_of/load_period/read_frame") / max(queries, 1)
    issue_then = f" (before {b_issue['total_s']:.2f} s)" if "error" not in b_issue else ""
    utility_then = f" (before {b_render['utility']['total_s']:.2f} s)" if "error" not in b_render else ""
    return [
        "### Statements",
        "",
        f"- issue_all: {issue['total_s']:.2f} s{issue_then}; its step with the most own time is `{biggest['path']}`, "
        f"{biggest['self_s']:.2f} s ({100 * biggest['self_s'] / issue['total_s']:.0f}%). `load_period` "
        f"{step_s(issue, 'issue_all/load_period'):.2f} s ({_calls(issue, 'issue_all/load_period/read_frame')}); "
        f"`due_per_participant` {step_s(issue, 'issue_all/_issue_many/due_per_participant'):.2f} s; `_issue_many`'s "
        f"own time {_self_s(issue, 'issue_all/_issue_many'):.2f} s for {issue['statements']:,} statements.",
        f"- The lines query `document_of` runs: for the utility (`{_plan_scan(utility_plan, 'settlement_line')}`) "
        f"it executes in {_plan_figure(utility_plan, 'Execution Time')} on the server{spill}; for a household "
        f"(`{_plan_scan(household_plan, 'settlement_line')}`) in {_plan_figure(household_plan, 'Execution Time')} "
        f"after {_plan_figure(household_plan, 'Planning Time')} of planning (EXPLAIN ANALYZE, without sending rows). "
        f"In the sample, a `read_frame` call ({queries:,} of them, {queries / max(others['measured'], 1):.0f} per "
        f"statement) took {per_query_ms:.1f} ms on average, and households {household.get('mean_total_ms', 0.0):.1f} "
        f"ms per download: `load_period` {step_s(render, 'document_of/load_period'):.2f} s, `build_document` "
        f"{step_s(render, 'document_of/build_document'):.2f} s, `to_csv` {step_s(render, 'to_csv'):.2f} s and the "
        f"row {step_s(render, 'get'):.2f} s of the sample's {others['measured_s']:.2f} s.",
        f"- The utility's download: {big['total_s']:.2f} s{utility_then}: `load_period` "
        f"{step_s(utility_steps, 'document_of/load_period'):.2f} s, `build_document` "
        f"{step_s(utility_steps, 'document_of/build_document'):.2f} s ({big['lines']:,} lines), `to_csv` "
        f"{big['csv_s']:.2f} s.",
    ]


def from_saved(path: str, before_rev: str | None) -> None:
    """Rebuild the Markdown report (and the analysis) from a saved results JSON, with the before of
    :func:`attach_before`."""
    with open(path) as source:
        result = json.load(source)
    attach_before(result, before_rev)
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
        from_saved(args.from_json, args.before_rev)
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
        "reference_columns": list(LINE_COLUMNS),
    }
    attach_before(result, args.before_rev or "HEAD")
    result["analysis"] = analysis(result)
    json_path, md_path = write_results(NAME, result, markdown(result))
    say(md_path.read_text())
    say(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
