"""The settlement stage of ``flexmarket demo``: baselines, meter data, delivery, settlement, statements, report.

Before the gate closes (baselines must be locked by then):

* the operator sets the settlement terms (:data:`TERMS`: penalty 150/MWh beyond a 10% tolerance,
  operator fee 2/MWh, aggregator fee share 15%) and the baseline methods: the market default is
  *high X of Y* (PJM High 4 of 5, weekends 2 of 3, with the capped same-day adjustment), which needs
  no participant input and suits households; each data center uses *nominated* (the USEF default)
  and posts its prognosis for every ISP of the day.

After clearing:

1. **Meter data.** The utility (the metered data responsible) uploads one CSV meter file per day
   for the :data:`HISTORY_DAYS` days before the delivery day and for the day itself, for every
   connection on its grid: kWh = kW × 0.25. Each site repeats one usual day with day-to-day and
   per-ISP noise. A household's is SimBench's (:mod:`market.demo_data`): the winter weekday
   (14 January 2016) of the H0 profile of the SimBench load it stands for, at that load's rated kW,
   its annual energy kept within :data:`HOME_KWH_PER_YEAR` (a SimBench load may be a building of
   several homes), plus its assets as the demo models them (heat pump, EV charging: synthetic; PV:
   :data:`PV_KWP` kWp on the SimBench PV profile of its feeder). A data center's is synthetic: flat
   IT load with a cooling bump. In its awarded ISPs a site lowers its consumption by its award × a
   delivery factor drawn per site: most deliver 0.9-1.1, about 15% deliver 0.3-0.7, a few nothing;
   one data center under-delivers. A portfolio's award is shared among its members that can shift
   in that ISP, in proportion to their kW.
2. **Delivery, settlement.** The day is in the future, and the API checks real time ("the day
   has not ended"), so these two time-travelling steps call the services the API calls, with the
   clock set after the day's end (as the demo's clearing does with the gate).
3. **Statements.** The operator issues everyone's statements through the API; a few are downloaded
   (CSV and PDF) into ``flexmarket-statements/`` next to the report.
4. **Report.** ``flexmarket-report.html`` (see :mod:`settlement.report`).

Everything else goes through the API. With workers (``--broker-url``) uploads and the statement
job are queued (202) and the stage polls for their results.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import polars as pl
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from market.core.db import make_engine, make_session_factory, unit_of_work
from market.demo import ISP_HOURS, TIMEZONE, DemoRun, DemoStage, Home, Seller, World
from market.demo_data.simbench_lv import load_lv_grids
from market.markets.calendar import MarketClock
from market.markets.models import GateClosureKind
from settlement.delivery.service import verify_day
from settlement.report import DeliverySeries, MeritOrder, MeritStep, PriceSeries, ReportData, build_report
from settlement.runs.models import RunKind
from settlement.runs.service import settle_day

TERMS = {
    "currency": "EUR",
    "penalty_price_per_mwh": "150",
    "tolerance": "0.1",
    "operator_fee_per_mwh": "2",
    "aggregator_fee_share": "0.15",
}
HISTORY_DAYS = 14
"""High 4 of 5 weekdays (2 of 3 weekend days) needs about two weeks of like-days."""
STATEMENTS_DIR = "flexmarket-statements"
DATA_CENTER_FACTORS = (0.97, 1.02, 0.55, 1.0)
"""Delivery factors of the data centers: the third one's backup generator fails to start fully."""
CLOCK = MarketClock(TIMEZONE, 15, GateClosureKind.DAY_AHEAD)
SEED = 20261125
HOME_KWH_PER_YEAR = (1000.0, 6000.0)
"""A SimBench household load's annual energy (rated kW × its profile's full-load hours) runs from
0.5 to 14.7 MWh; a demo household is one home, so its profile is scaled into this range."""
PV_KWP = 4.0
"""A household's roof PV (a typical Dutch home's, synthetic); its shape is SimBench's PV profile."""

FloatArray = npt.NDArray[np.float64]


# -- the sites' load -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteModel:
    """A site's usual net consumption per local slot (kW) and how well it delivers its awards."""

    seller: Seller
    profile_kw: FloatArray
    factor: float
    noise: float
    """Relative standard deviation of the per-ISP (and, a fifth of it, per-day) variation."""


_HOURS = np.arange(96) / 4 + 0.125
"""Local time of day at the middle of each 15-minute slot, in hours."""


def _window(hours: tuple[int, int]) -> FloatArray:
    inside = (hours[0] <= _HOURS) & (hours[1] > _HOURS)
    return inside.astype(np.float64)


def household_profile(assets: list[str], home: Home, scale: float = 1.0) -> FloatArray:
    """A home's usual winter weekday (kW per local slot): rated kW × the day of its SimBench H0 profile,
    scaled so its annual energy stays within :data:`HOME_KWH_PER_YEAR`, times ``scale``; plus its
    assets: heat pump 0.8 kW, 2.0 kW in the peaks; EV charging 3.7 kW 17:00-21:00; PV :data:`PV_KWP`
    kWp × the day of its feeder's SimBench PV profile (a share of kWp)."""
    profiles = load_lv_grids().profiles
    profile = profiles.load[home.load.profile]
    annual_kwh = home.load.rated_kw * profile.full_load_hours
    low, high = HOME_KWH_PER_YEAR
    to_one_home = min(max(annual_kwh, low), high) / annual_kwh
    load = home.load.rated_kw * to_one_home * scale * np.asarray(profile.day, dtype=np.float64)
    if "heat_pump" in assets:
        load = load + 0.8 + 1.2 * np.maximum(_window((7, 9)), _window((16, 21)))
    if "ev" in assets:
        load = load + 3.7 * _window((17, 21))
    if "pv" in assets:
        load = load - PV_KWP * np.asarray(profiles.pv[home.pv_profile].day, dtype=np.float64)
    return np.asarray(load, dtype=np.float64)


def _data_center_profile(base_kw: float) -> FloatArray:
    """Flat IT load with 8% more cooling in the afternoon."""
    return np.asarray(base_kw * (1 + 0.08 * np.clip(np.sin((_HOURS - 9) / 12 * np.pi), 0, None)), dtype=np.float64)


def site_models(world: World) -> list[SiteModel]:
    """Deterministic per world (seeded), so the nominations before the gate and the meter data after
    clearing describe the same sites."""
    rng = np.random.default_rng(SEED)
    models: list[SiteModel] = []
    for seller in world.households:
        draw = rng.random()
        factor = 0.0 if draw < 0.04 else rng.uniform(0.3, 0.7) if draw < 0.19 else rng.uniform(0.9, 1.1)  # noqa: PLR2004
        if seller.home is None:
            raise ValueError(f"{seller.name} stands for no SimBench load")
        # SimBench gives every load of a type the same shape: ±10% per home, so like homes still differ.
        profile = household_profile(seller.assets, seller.home, rng.uniform(0.9, 1.1))
        models.append(SiteModel(seller, profile, float(factor), 0.04))
    for i, seller in enumerate(world.data_centers):
        profile = _data_center_profile(rng.uniform(1500, 3000))
        factor = DATA_CENTER_FACTORS[i % len(DATA_CENTER_FACTORS)]
        models.append(SiteModel(seller, profile, factor, 0.002))
    return models


def _day_isps(day: date) -> tuple[list[datetime], npt.NDArray[np.int64]]:
    """UTC ISP starts of a local day and each one's local slot (92, 96 or 100 ISPs)."""
    starts = CLOCK.isps_of_day(day)
    zone = ZoneInfo(TIMEZONE)
    slots = [(s.astimezone(zone).hour * 60 + s.astimezone(zone).minute) // 15 for s in starts]
    return starts, np.asarray(slots, dtype=np.int64)


def usual_load(models: list[SiteModel], slots: npt.NDArray[np.int64], rng: np.random.Generator) -> FloatArray:
    """sites × ISPs kW: the profile × a day factor × per-ISP noise."""
    profiles = np.stack([m.profile_kw for m in models])[:, slots]
    noise = np.asarray([m.noise for m in models])[:, None]
    day = 1 + rng.normal(0, 1, (len(models), 1)) * noise / 5
    return np.asarray(profiles * day * (1 + rng.normal(0, 1, profiles.shape) * noise), dtype=np.float64)


def delivered_kw(run: DemoRun, models: list[SiteModel], starts: list[datetime]) -> tuple[FloatArray, FloatArray]:
    """sites × ISPs: the kW each site sheds in its awarded ISPs (award × its factor), and the data
    centers' rebound after a block (the block's activation × its rebound kW)."""
    index = {m.seller.site["id"]: i for i, m in enumerate(models)}
    column = {s: j for j, s in enumerate(starts)}
    zone = ZoneInfo(TIMEZONE)
    shed = np.zeros((len(models), len(starts)))
    rebound = np.zeros_like(shed)
    offers = {o["id"]: o for o in run.world.offers}
    members: dict[str, list[SiteModel]] = {}
    for m in models:
        if m.seller.site["portfolio_id"] is not None:
            members.setdefault(m.seller.site["portfolio_id"], []).append(m)
    for award in run.report["awards"]:
        offer = offers[award["offer_id"]]
        start = datetime.fromisoformat(award["isp_start"])
        j = column[start]
        kw = float(award["accepted_kw"])
        if offer["site_id"] is not None:
            i = index[offer["site_id"]]
            shed[i, j] += kw * models[i].factor
            continue
        hour = start.astimezone(zone).hour
        able = [m for m in members[offer["portfolio_id"]] if m.seller.flex and _can_shift(m.seller, hour)]
        total = sum(float(m.seller.flex.kw) for m in able if m.seller.flex)
        for m in able:
            assert m.seller.flex is not None  # noqa: S101 - filtered above
            i = index[m.seller.site["id"]]
            shed[i, j] += kw * float(m.seller.flex.kw) / total * m.factor
    for result in run.report["offer_results"]:
        offer = offers[result["offer_id"]]
        if offer["rebound"] and result["activation"] and offer["site_id"] in index:
            i = index[offer["site_id"]]
            for isp in offer["rebound"]:
                start = datetime.fromisoformat(isp["start"])
                if start in column:
                    rebound[i, column[start]] += float(isp["quantity_kw"]) * float(result["activation"])
    return shed, rebound


def _can_shift(seller: Seller, hour: int) -> bool:
    return seller.flex is not None and any(a <= hour < b for a, b in seller.flex.windows)


def meter_csv(models: list[SiteModel], starts: list[datetime], kw: FloatArray) -> bytes:
    """A meter file: one row per site and ISP, import/export kWh = max(±kW, 0) × 0.25, to the watt-hour."""
    stamps = [s.isoformat() for s in starts]
    kwh = np.round(kw * float(ISP_HOURS), 3)
    frame = pl.DataFrame(
        {
            "meter": np.repeat([m.seller.site["meter_code"] for m in models], len(starts)),
            "isp_start": stamps * len(models),
            "import_kwh": np.maximum(kwh, 0).ravel(),
            "export_kwh": np.maximum(-kwh, 0).ravel(),
        }
    )
    return frame.write_csv(float_precision=3).encode()


# -- before the gate -------------------------------------------------------------------------------


def _before_gate(run: DemoRun) -> None:
    api, world, mid = run.api, run.world, run.world.market["id"]
    with run.step("baselines"):
        api.call("PUT", f"/markets/{mid}/settlement-terms", TERMS)
        since = (run.day - timedelta(days=60)).isoformat()
        api.call("POST", f"/markets/{mid}/baseline-assignments", {"method": "high_x_of_y", "valid_from": since})
        starts, slots = _day_isps(run.day)
        for model in site_models(world)[len(world.households) :]:
            site = model.seller.site
            api.call(
                "POST",
                f"/markets/{mid}/baseline-assignments",
                {"method": "nominated", "valid_from": since, "resource_kind": "site", "resource_id": site["id"]},
            )
            values = [
                {"start": s.isoformat(), "kw": str(round(float(model.profile_kw[slot]), 3))}
                for s, slot in zip(starts, slots, strict=True)
            ]
            api.call("POST", f"/sites/{site['id']}/baseline-nominations", {"values": values}, token=model.seller.token)


# -- after clearing --------------------------------------------------------------------------------


def _upload(run: DemoRun, name: str, content: bytes) -> dict[str, Any]:
    mid = run.world.market["id"]
    sent = run.api.upload(
        f"/markets/{mid}/meter-files?format=csv&filename={name}", content, "text/csv", token=run.world.utility_token
    )
    if sent["status"] != "pending":
        return dict(sent)

    def done() -> dict[str, Any] | None:
        file = run.api.call("GET", f"/markets/{mid}/meter-files/{sent['id']}", token=run.world.utility_token)
        return None if file["status"] == "pending" else dict(file)

    return run.wait_for(f"meter file {name}", done)


def _meter_data(run: DemoRun, models: list[SiteModel]) -> dict[str, int]:
    rng = np.random.default_rng(SEED + 1)
    totals = {"files": 0, "rows": 0, "stored": 0, "rejected": 0}
    for offset in range(HISTORY_DAYS, -1, -1):
        day = run.day - timedelta(days=offset)
        starts, slots = _day_isps(day)
        kw = usual_load(models, slots, rng)
        if offset == 0:
            shed, rebound = delivered_kw(run, models, starts)
            kw = kw - shed + rebound
        file = _upload(run, f"meter-{day.isoformat()}.csv", meter_csv(models, starts, kw))
        report = file["report"] or {}
        totals["files"] += 1
        for key in ("rows", "stored", "rejected"):
            totals[key] += int(report.get(key, 0))
    return totals


def _after_the_day(run: DemoRun) -> tuple[sessionmaker[Session], uuid.UUID, datetime]:
    """For the time-travelling steps: sessions, the market id, and a clock one day after the day's end."""
    factory = make_session_factory(make_engine(run.settings.database.url))
    return factory, uuid.UUID(run.world.market["id"]), CLOCK.day_bounds(run.day)[1] + timedelta(days=1)


def _verify_delivery(run: DemoRun) -> str:
    """What POST /markets/{id}/deliveries does, with the clock after the day's end."""
    factory, market_id, now = _after_the_day(run)
    with unit_of_work(factory) as session:
        return str(verify_day(session, market_id, run.day, now).id)


def _settle(run: DemoRun) -> str:
    """What POST /markets/{id}/settlements {kind: initial} does, with the clock after the day's end."""
    factory, market_id, now = _after_the_day(run)
    with unit_of_work(factory) as session:
        return str(settle_day(session, market_id, run.day, RunKind.INITIAL, now, "demo").run.id)


def _issue_statements(run: DemoRun) -> int:
    """The operator's statement job; with workers it is queued, so wait for it and count what it issued."""
    api, world = run.api, run.world
    period = {"period_start": run.day.isoformat(), "period_end": run.day.isoformat()}
    job = api.call("POST", f"/markets/{world.market['id']}/statements", period)
    if job["issued"] is not None:
        return int(job["issued"])

    def count(participant_id: str) -> int:
        return int(api.call("GET", f"/participants/{participant_id}/statements?limit=1")["total"])

    # The job issues every statement in one transaction: once the utility's is there, all are.
    run.wait_for("the statement job", lambda: count(world.utility_id) or None)
    traders = [s.participant_id for s in [*world.households, *world.data_centers] if s.token]
    return sum(count(p) for p in [world.utility_id, world.aggregator_id, *traders])


def _download(run: DemoRun, who: Iterable[tuple[str, str, str]]) -> list[Path]:
    """Each (label, participant id, token)'s statements as CSV and PDF, downloaded with its own key."""
    folder = run.output_dir / STATEMENTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for label, participant_id, token in who:
        for statement in run.api.call("GET", f"/participants/{participant_id}/statements", token=token)["items"]:
            slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
            for fmt in ("csv", "pdf"):
                body = run.api.download(f"/statements/{statement['id']}/document?format={fmt}", token=token)
                path = folder / f"{statement['number']}-{slug}.{fmt}"
                path.write_bytes(body)
                paths.append(path)
    return paths


def _downloaders(world: World) -> list[tuple[str, str, str]]:
    """Whose statements the demo downloads, with their own keys: the utility, the aggregator, a data
    center, a portfolio member and a household trading directly."""
    member = next((s for s in world.households if s.token and s.site["portfolio_id"]), None)
    direct = next((s for s in world.households if s.token and not s.site["portfolio_id"]), None)
    return [
        ("utility", world.utility_id, world.utility_token),
        ("aggregator", world.aggregator_id, world.aggregator_token),
        *((s.name, s.participant_id, s.token) for s in [*world.data_centers[:1], member, direct] if s is not None),
    ]


def _money(run: DemoRun, settled: dict[str, Any]) -> dict[str, Decimal]:
    """The run's totals, and the ledger balances of each group of participants (read through the API)."""
    world = run.world

    def balances(sellers: Iterable[Seller]) -> Decimal:
        return sum((_balance(run, s.participant_id) for s in sellers), Decimal(0))

    return {
        "utilisation": Decimal(settled["total_utilisation"]),
        "penalty": Decimal(settled["total_penalty"]),
        "fee": Decimal(settled["total_fee"]),
        "centers": balances(world.data_centers),
        "members": balances(s for s in world.households if s.site["portfolio_id"]),
        "directs": balances(s for s in world.households if s.token and not s.site["portfolio_id"]),
        "aggregator": _balance(run, world.aggregator_id),
        "utility": _balance(run, world.utility_id),
    }


def _balance(run: DemoRun, participant_id: str) -> Decimal:
    rows = run.api.call("GET", f"/participants/{participant_id}/ledger/balances")
    return sum((Decimal(b["balance"]) for b in rows if b["market_id"] == run.world.market["id"]), Decimal(0))


def _quote(instant: datetime) -> str:
    return quote(instant.isoformat(), safe="")


def _local(instant: str | datetime) -> str:
    moment = datetime.fromisoformat(instant) if isinstance(instant, str) else instant
    return moment.astimezone(ZoneInfo(TIMEZONE)).strftime("%Y-%m-%d %H:%M")


def _delivery_series(run: DemoRun, model: SiteModel, offer: dict[str, Any], note: str) -> DeliverySeries | None:
    """A site's readings over the day, with the baseline and target where it was awarded."""
    api, site = run.api, model.seller.site
    starts, _ = _day_isps(run.day)
    readings = api.call(
        "GET",
        f"/sites/{site['id']}/readings?start={_quote(starts[0])}&end={_quote(starts[-1] + timedelta(minutes=15))}"
        "&limit=200",
    )["items"]
    actual = {
        datetime.fromisoformat(r["isp_start"]): float(Decimal(r["import_kwh"]) - Decimal(r["export_kwh"])) * 4
        for r in readings
    }
    baseline: dict[datetime, float] = {}
    target: dict[datetime, float] = {}
    if offer["site_id"] is not None:
        for line in api.call("GET", f"/flex-offers/{offer['id']}/delivery"):
            if line["baseline_kw"] is not None:
                at = datetime.fromisoformat(line["isp_start"])
                baseline[at] = float(line["baseline_kw"])
                target[at] = baseline[at] - float(line["ordered_kw"])
    else:
        for line in api.call("GET", f"/flex-offers/{offer['id']}/delivery/members"):
            if line["site_id"] == site["id"] and line["baseline_kw"] is not None:
                baseline[datetime.fromisoformat(line["isp_start"])] = float(line["baseline_kw"])
    if not baseline:
        return None
    return DeliverySeries(
        label=f"{model.seller.name}, {model.seller.point_code}",
        isp_starts=[_local(s) for s in starts],
        actual_kw=[actual.get(s) for s in starts],
        baseline_kw=[baseline.get(s) for s in starts],
        target_kw=[target.get(s) for s in starts],
        note=note,
    )


def _pick_deliveries(run: DemoRun, models: list[SiteModel]) -> list[DeliverySeries]:
    """A few telling sites: data centers (nominated), a household that delivered, one that did not,
    and a member of a portfolio."""
    awarded = {a["offer_id"] for a in run.report["awards"]}
    offers = [o for o in run.world.offers if o["id"] in awarded]
    by_site = {o["site_id"]: o for o in offers if o["site_id"]}
    by_portfolio = {o["portfolio_id"]: o for o in offers if o["portfolio_id"]}
    centers = [m for m in models if m.seller in run.world.data_centers and m.seller.site["id"] in by_site]
    chosen = [
        (m, by_site[m.seller.site["id"]], f"nominated baseline, delivery factor {m.factor:.2f}") for m in centers[:2]
    ]
    homes = [m for m in models if m.seller.site["id"] in by_site and m.seller not in run.world.data_centers]
    good = next((m for m in homes if m.factor >= 0.9), None)  # noqa: PLR2004
    poor = next((m for m in homes if 0 < m.factor < 0.8), None)  # noqa: PLR2004
    for m, what in ((good, "delivers"), (poor, "under-delivers")):
        if m is not None:
            chosen.append((m, by_site[m.seller.site["id"]], f"high 4 of 5 baseline, {what}: factor {m.factor:.2f}"))
    member = next((m for m in models if m.seller.site["portfolio_id"] in by_portfolio), None)
    if member is not None:
        chosen.append((member, by_portfolio[member.seller.site["portfolio_id"]], "aggregator portfolio member"))
    series = [_delivery_series(run, m, offer, note) for m, offer, note in chosen]
    return [s for s in series if s is not None]


def _prices(run: DemoRun) -> list[PriceSeries]:
    by_point: dict[str, list[dict[str, Any]]] = {}
    for p in run.report["prices"]:
        by_point.setdefault(run.world.codes[p["congestion_point_id"]], []).append(p)
    return [
        PriceSeries(
            point=code,
            isp_starts=[_local(r["isp_start"]) for r in rows],
            price_per_mwh=[float(r["price_per_mwh"]) for r in rows],
            requested_kw=[float(r["requested_kw"]) for r in rows],
            procured_kw=[float(r["procured_kw"]) for r in rows],
        )
        for code, rows in sorted(by_point.items())
        for rows in [sorted(rows, key=lambda r: str(r["isp_start"]))]
    ]


def _merit_order(run: DemoRun) -> MeritOrder | None:
    """The most congested point (most requested energy) at its largest request's peak ISP."""
    world = run.world
    requested: dict[str, Decimal] = {}
    for p in run.report["prices"]:
        requested[p["congestion_point_id"]] = requested.get(p["congestion_point_id"], Decimal(0)) + Decimal(
            p["requested_kw"]
        )
    if not requested:
        return None
    point_id = max(requested, key=lambda k: requested[k])
    code = world.codes[point_id]
    rows = [p for p in run.report["prices"] if p["congestion_point_id"] == point_id]
    peak = max(rows, key=lambda r: Decimal(r["requested_kw"]))
    at = datetime.fromisoformat(peak["isp_start"])

    def relieves(point_code: str) -> bool:
        current: str | None = point_code
        while current is not None:
            if current == code:
                return True
            current = world.parent_code(current)
        return False

    accepted = {
        a["offer_id"]: float(a["accepted_kw"])
        for a in run.report["awards"]
        if datetime.fromisoformat(a["isp_start"]) == at
    }
    steps: list[MeritStep] = []
    for offer in world.offers:
        if not relieves(world.codes[offer["congestion_point_id"]]):
            continue
        kw = next((float(q["quantity_kw"]) for q in offer["isps"] if datetime.fromisoformat(q["start"]) == at), 0.0)
        if not kw:
            continue
        label = _seller_label(run, offer)
        won = accepted.get(offer["id"], 0.0)
        if offer["tranches"]:
            left = won  # tranches fill in price order
            for t in offer["tranches"]:
                part = kw * float(t["share"])
                steps.append(MeritStep(label, float(t["price_per_mwh"]), part, min(part, left)))
                left = max(left - part, 0.0)
        else:
            steps.append(MeritStep(label, float(offer["price_per_mwh"]), kw, won))
    max_price = max(
        (float(r["max_price_per_mwh"]) for r in world.requests if r["congestion_point_id"] == point_id), default=0.0
    )
    return MeritOrder(code, _local(at), steps, max_price, float(peak["requested_kw"]), float(peak["price_per_mwh"]))


def _seller_label(run: DemoRun, offer: dict[str, Any]) -> str:
    if offer["portfolio_id"]:
        return f"aggregator portfolio {run.world.codes[offer['congestion_point_id']]}"
    seller = next(
        (s for s in [*run.world.households, *run.world.data_centers] if s.site["id"] == offer["site_id"]), None
    )
    return seller.name if seller else offer["site_id"]


def _after_clearing(run: DemoRun) -> None:
    api, world, mid = run.api, run.world, run.world.market["id"]
    models = site_models(world)
    with run.step("meter data"):
        meter = _meter_data(run, models)
    with run.step("delivery"):
        _verify_delivery(run)
        computations = api.call("GET", f"/markets/{mid}/deliveries?day={run.day.isoformat()}")
    with run.step("settlement"):
        run_id = _settle(run)
        settled = api.call("GET", f"/settlements/{run_id}")
        lines = api.all_pages(f"/settlements/{run_id}/lines")
    with run.step("statements"):
        issued = _issue_statements(run)
        files = _download(run, _downloaders(world))
    with run.step("report"):
        centers = world.data_centers
        money = _money(run, settled)
        trial = api.call("GET", f"/markets/{mid}/ledger/trial-balance")
        ordered_kwh = sum((Decimal(x["ordered_kw"]) for x in lines), Decimal(0)) * ISP_HOURS
        paid_kwh = (
            sum((min(Decimal(x["delivered_kw"]), Decimal(x["ordered_kw"])) for x in lines), Decimal(0)) * ISP_HOURS
        )
        short = [x for x in lines if Decimal(x["penalty"]) > 0]
        short_sellers = len({x["seller_id"] for x in short})
        rows = _money_rows(money, trial["totals"].get("EUR", "0"))
        facts = [
            ("Delivery day", run.day.isoformat()),
            (
                "Meter data",
                f"{meter['files']} files, {meter['stored']:,} readings stored, {meter['rejected']} rejected",
            ),
            ("Delivery computation", f"v{computations[-1]['version']}, {computations[-1]['line_count']} lines"),
            (
                "Settlement run",
                f"{settled['kind']} v{settled['version']}, {settled['line_count']} lines, "
                f"{settled['entry_count']} ledger entries",
            ),
            ("Energy ordered / paid", f"{ordered_kwh:.3f} / {paid_kwh:.3f} kWh"),
            ("Under-delivery", f"{len(short)} order ISPs of {short_sellers} sellers penalised"),
        ]
        names = [str(p.relative_to(run.output_dir)) for p in files]
        html = build_report(
            ReportData(
                title=f"flexmarket demo: {world.market['code']}, {run.day.isoformat()}",
                subtitle=f"{len(world.households)} households, {len(centers)} data centers, 1 aggregator, 1 utility; "
                f"terms: penalty {TERMS['penalty_price_per_mwh']}/MWh beyond {TERMS['tolerance']} tolerance, fee "
                f"{TERMS['operator_fee_per_mwh']}/MWh, aggregator share {TERMS['aggregator_fee_share']}",
                facts=facts,
                prices=_prices(run),
                merit=_merit_order(run),
                deliveries=_pick_deliveries(run, models),
                money=rows,
                files=names,
            )
        )
        run.report_path.write_text(html, encoding="utf-8")

    run.report["settlement"] = {"run": settled, "money": money, "trial_balance": trial, "issued": issued}
    table = Table(title=f"Settlement of {run.day} ({settled['kind']} run v{settled['version']}, EUR)")
    table.add_column("")
    table.add_column("amount", justify="right")
    for label, amount in rows:
        table.add_row(label, amount)
    run.summary.append(
        f"Meter data: {meter['files']} files from the utility, {meter['stored']:,} readings stored, "
        f"{meter['rejected']} rejected; baselines: high 4 of 5 (households), nominated (data centers)"
    )
    run.summary.append(
        f"Delivery: {ordered_kwh:.3f} kWh ordered, {paid_kwh:.3f} kWh delivered and paid; "
        f"under-delivery penalties on {len(short)} order ISPs of {short_sellers} sellers"
    )
    run.summary.append(table)
    run.summary.append(
        f"Statements issued: {issued}; downloaded {len(files)} files to {run.output_dir / STATEMENTS_DIR}:"
    )
    run.summary += [f"  {p}" for p in files]
    run.summary.append(f"Report: {run.report_path}")


def _money_rows(money: dict[str, Decimal], trial: str) -> list[tuple[str, str]]:
    cents = Decimal("0.01")
    return [
        ("Utilisation paid to sellers", f"{money['utilisation'].quantize(cents)}"),
        ("Under-delivery penalties (to the utility)", f"{money['penalty'].quantize(cents)}"),
        ("Operator fees", f"{money['fee'].quantize(cents)}"),
        ("Utility's total cost", f"{(-money['utility']).quantize(cents)}"),
        ("Data centers, net", f"{money['centers'].quantize(cents)}"),
        ("Households trading directly, net", f"{money['directs'].quantize(cents)}"),
        ("Pass-through to portfolio households", f"{money['members'].quantize(cents)}"),
        ("Aggregator keeps (fee share)", f"{money['aggregator'].quantize(cents)}"),
        ("Trial balance (must be 0)", f"{Decimal(trial).quantize(cents)}"),
    ]


STAGE = DemoStage(name="settlement", before_gate=_before_gate, after_clearing=_after_clearing, steps=6)
