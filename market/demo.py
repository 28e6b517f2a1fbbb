"""``flexmarket demo``: a market day through the HTTP API, in-process, printed as it goes.

It uses the same app, services and database a production deployment uses; only the transport is
in-process (Litestar's test client), so no server or port is needed. Steps:

1. a market with a grid tree, a utility, households, an aggregator and data centers;
2. the utility's FlexRequests on congested feeders for the evening peak of a delivery day whose
   gate is still open, and FlexOffers from households (single), the aggregator (one batch) and data
   centers (blocks with a rebound);
3. clearing at gate closure. The demo cannot wait for the real gate, so it clears with a clock set
   just past it (the service takes the time as an argument; the API and the scheduled task pass
   the real time);
4. prices per congestion point, volume procured, awards and the clearing's hashes.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from litestar.testing import TestClient
from rich.console import Console
from rich.table import Table
from rich.tree import Tree
from sqlalchemy import select

from market.auth.principal import Scope
from market.auth.service import issue_key
from market.clearing.service import clear_day, day_gate
from market.core.app import create_app
from market.core.config import Settings
from market.core.db import make_engine, make_session_factory, unit_of_work
from market.core.migrate import upgrade
from market.markets.service import clock_of, get_market
from market.participants.models import Participant, Role

FEEDERS_PER_TRANSFORMER = 3
TRANSFORMERS = 2
HOUSEHOLDS = 24
DATA_CENTERS = 2
TIMEZONE = "Europe/Amsterdam"
PEAK_HOURS = (17, 18, 19)
CONGESTED_FEEDERS = 3
ASSET_MIX = (["battery"], ["ev"], ["heat_pump"], ["pv", "battery"], ["pv"])
# kW a household can shift per asset during the evening peak, and its price per MWh.
ASSET_FLEX = {"battery": (Decimal("3.5"), 90), "ev": (Decimal("7.4"), 140), "heat_pump": (Decimal("2.0"), 60)}


class DemoClient:
    """A thin JSON client that fails loudly on any non-2xx reply."""

    def __init__(self, client: TestClient[Any], token: str) -> None:
        self.client = client
        self.token = token

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        response = self.client.request(method, f"/api/v1{path}", json=body, headers=headers)
        if response.status_code >= 300:  # noqa: PLR2004 - any non-2xx is a failure of the demo
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def key_for(self, participant_id: str, scopes: list[str]) -> str:
        made = self.call("POST", f"/participants/{participant_id}/api-keys", {"name": "demo", "scopes": scopes})
        return str(made["token"])


@dataclass
class Seller:
    name: str
    token: str
    site: dict[str, Any]
    assets: list[str]


@dataclass
class World:
    market: dict[str, Any]
    utility_token: str
    feeders: list[dict[str, Any]]
    tree: Tree
    households: list[Seller] = field(default_factory=list)
    data_centers: list[Seller] = field(default_factory=list)
    aggregator_token: str = ""
    portfolios: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: int = 0


def _operator_token(settings: Settings) -> str:
    """Issue a fresh operator key for this run; keys can never be read back from the database."""
    factory = make_session_factory(make_engine(settings.database.url))
    with unit_of_work(factory) as session:
        operator = session.scalar(select(Participant).where(Participant.role == Role.OPERATOR))
        if operator is None:
            operator = Participant(name="Demo market operator", role=Role.OPERATOR)
            session.add(operator)
            session.flush()
        _, token = issue_key(session, operator, "demo run", list(Scope), settings.security.api_key_pepper)
    return token


def _build_grid(api: DemoClient, suffix: str) -> World:
    market = api.call(
        "POST",
        "/markets",
        {
            "code": f"demo-{suffix}",
            "name": "Demo local flexibility market",
            "timezone": TIMEZONE,
            "currency": "EUR",
            "pricing_rule": "pay_as_clear",
            "gate_closure_kind": "day_ahead",
            "day_ahead_gate_time": "12:00:00",
            "isp_minutes": 15,
            "min_price_per_mwh": "0",
            "max_price_per_mwh": "3000",
            "max_quantity_kw": "50000",
        },
    )
    mid = market["id"]
    utility = api.call("POST", "/participants", {"name": "Demo DSO", "role": "utility"})

    def point(code: str, name: str, kind: str, parent: str | None) -> dict[str, Any]:
        body = {"code": code, "name": name, "kind": kind, "utility_id": utility["id"], "parent_id": parent}
        return dict(api.call("POST", f"/markets/{mid}/congestion-points", body))

    root = point("ZONE-1", "Zone 1", "zone", None)
    tree = Tree(f"[bold]{root['code']}[/] {root['name']}")
    feeders = []
    for t in range(1, TRANSFORMERS + 1):
        trafo = point(f"TR-{t}", f"Transformer {t}", "transformer", root["id"])
        branch = tree.add(f"[bold]{trafo['code']}[/] {trafo['name']}")
        for f in range(1, FEEDERS_PER_TRANSFORMER + 1):
            feeder = point(f"TR-{t}-F{f}", f"Feeder {t}.{f}", "feeder", trafo["id"])
            feeders.append(feeder)
            branch.add(f"{feeder['code']} {feeder['name']}")
    return World(market, api.key_for(utility["id"], ["trade", "finance"]), feeders, tree)


def _add_participants(api: DemoClient, world: World, rng: random.Random, suffix: str) -> None:
    aggregator = api.call("POST", "/participants", {"name": "Demo aggregator", "role": "aggregator"})
    world.aggregator_token = api.key_for(aggregator["id"], ["trade", "finance"])
    for feeder in world.feeders[:2]:
        world.portfolios[feeder["id"]] = api.call(
            "POST",
            "/portfolios",
            {"name": f"Portfolio {feeder['code']}", "congestion_point_id": feeder["id"]},
            token=world.aggregator_token,
        )
    for h in range(1, HOUSEHOLDS + 1):
        household = api.call("POST", "/participants", {"name": f"Household {h:03d}", "role": "household"})
        token = api.key_for(household["id"], ["trade"])
        feeder = world.feeders[h % len(world.feeders)]
        assets = rng.choice(ASSET_MIX)
        site = api.call(
            "POST",
            "/sites",
            {
                "congestion_point_id": feeder["id"],
                "meter_code": f"EAN-{suffix}-H{h:04d}",
                "name": f"Home {h:03d}",
                "assets": assets,
            },
            token=token,
        )
        if feeder["id"] in world.portfolios and h % 2 == 0:
            portfolio = world.portfolios[feeder["id"]]
            site = api.call("PUT", f"/sites/{site['id']}/portfolio", {"portfolio_id": portfolio["id"]}, token=token)
            world.members += 1
        world.households.append(Seller(household["name"], token, site, assets))
    for d in range(1, DATA_CENTERS + 1):
        center = api.call("POST", "/participants", {"name": f"Data center {d}", "role": "data_center"})
        feeder = world.feeders[-d]
        site = api.call(
            "POST",
            "/sites",
            {
                "owner_id": center["id"],
                "congestion_point_id": feeder["id"],
                "meter_code": f"EAN-{suffix}-DC{d}",
                "name": f"DC campus {d}",
                "assets": ["flexible_load"],
            },
        )
        world.data_centers.append(Seller(center["name"], api.key_for(center["id"], ["trade"]), site, ["flexible_load"]))


def _delivery_day(now: datetime) -> date:
    """The first local day whose day-ahead gate (D-1 12:00) is still open, plus one for margin."""
    zone = ZoneInfo(TIMEZONE)
    local_now = now.astimezone(zone)
    return local_now.date() + timedelta(days=2)


def _isp_starts(day: date) -> list[str]:
    zone = ZoneInfo(TIMEZONE)
    return [
        datetime.combine(day, time(hour, minute), tzinfo=zone).isoformat()
        for hour in PEAK_HOURS
        for minute in (0, 15, 30, 45)
    ]


def _post_orders(api: DemoClient, world: World, day: date, rng: random.Random) -> tuple[int, int]:
    """Requests on the congested feeders; offers from every seller with flexible assets there."""
    starts = _isp_starts(day)
    congested = {f["id"] for f in world.feeders[:CONGESTED_FEEDERS]}
    requests = 0
    for feeder in world.feeders[:CONGESTED_FEEDERS]:
        need = Decimal(rng.randrange(8, 20))
        api.call(
            "POST",
            "/flex-requests",
            {
                "congestion_point_id": feeder["id"],
                "direction": "up",
                "max_price_per_mwh": str(rng.randrange(150, 400)),
                "isps": [{"start": s, "quantity_kw": str(need)} for s in starts],
            },
            token=world.utility_token,
        )
        requests += 1
    offers = 0
    batch: list[dict[str, Any]] = []
    for seller in world.households:
        flexible = [a for a in seller.assets if a in ASSET_FLEX]
        if not flexible or seller.site["congestion_point_id"] not in congested:
            continue
        kw, price = ASSET_FLEX[flexible[0]]
        body: dict[str, Any] = {
            "direction": "up",
            "price_per_mwh": str(price + rng.randrange(0, 40)),
            "isps": [{"start": s, "quantity_kw": str(kw)} for s in starts],
        }
        if flexible[0] == "battery":  # a 5 kWh battery, 80 % charged, cannot discharge all evening
            body["storage"] = {"capacity_kwh": "5", "initial_kwh": "4", "efficiency": "0.92"}
        if seller.site["portfolio_id"] is not None:
            batch.append({**body, "portfolio_id": seller.site["portfolio_id"]})
        else:
            api.call("POST", "/flex-offers", {**body, "site_id": seller.site["id"]}, token=seller.token)
            offers += 1
    if batch:
        offers += api.call("POST", "/flex-offers/batch", {"offers": batch}, token=world.aggregator_token)["count"]
    for seller in world.data_centers:
        if seller.site["congestion_point_id"] not in congested:
            continue
        rebound_day = datetime.fromisoformat(starts[-1]) + timedelta(hours=2)
        api.call(
            "POST",
            "/flex-offers",
            {
                "site_id": seller.site["id"],
                "direction": "up",
                "price_per_mwh": "210",
                "block": True,
                "isps": [{"start": s, "quantity_kw": "25"} for s in starts[:8]],
                "rebound": [
                    {"start": (rebound_day + timedelta(minutes=15 * i)).isoformat(), "quantity_kw": "12.5"}
                    for i in range(4)
                ],
            },
            token=seller.token,
        )
        offers += 1
    return requests, offers


def _clear(settings: Settings, market_id: str, day: date) -> tuple[str, datetime]:
    """Clear the day as the scheduled task does, with the clock set just past the gate."""
    import uuid  # noqa: PLC0415 - local to the one place ids are parsed

    factory = make_session_factory(make_engine(settings.database.url))
    with unit_of_work(factory) as session:
        market = get_market(session, uuid.UUID(market_id))
        gate = day_gate(clock_of(market), day)
        run = clear_day(session, market.id, day, gate + timedelta(minutes=1), triggered_by="demo")
        return str(run.id), gate


def run_demo(settings: Settings, console: Console | None = None) -> dict[str, Any]:
    """Run the demo market day; print and return its summary."""
    console = console or Console()
    rng = random.Random(20261125)  # noqa: S311 - reproducible demo data, not a secret
    upgrade(settings.database.url)
    token = _operator_token(settings)
    suffix = secrets.token_hex(3)
    day = _delivery_day(datetime.now(UTC))
    with TestClient(app=create_app(settings)) as http:
        api = DemoClient(http, token)
        with console.status("building the market, grid and participants"):
            world = _build_grid(api, suffix)
            _add_participants(api, world, rng, suffix)
        mid = world.market["id"]
        with console.status(f"posting requests and offers for {day}"):
            requests, offers = _post_orders(api, world, day, rng)
        with console.status("clearing at gate closure"):
            run_id, gate = _clear(settings, mid, day)
        run = api.call("GET", f"/clearings/{run_id}")
        prices = api.call("GET", f"/clearings/{run_id}/prices")
        awards = api.call("GET", f"/clearings/{run_id}/awards?limit=1000")
        relief = api.call("GET", f"/markets/{mid}/relief")
        dst_day = api.call("GET", f"/markets/{mid}/delivery-days/2027-03-28")

    codes = {f["id"]: f["code"] for f in world.feeders}
    console.print(
        f"[bold green]Market[/] {world.market['code']} ({TIMEZONE}, 15-minute ISPs, pay-as-clear, gate D-1 12:00)"
    )
    console.print(world.tree)
    console.print(
        f"Participants: {HOUSEHOLDS} households ({world.members} in {len(world.portfolios)} aggregator "
        f"portfolios), {DATA_CENTERS} data centers, 1 utility; {len(relief)} relief factors"
    )
    console.print(f"Delivery day {day}: {requests} requests and {offers} offers; gate closed {gate.isoformat()}")
    table = Table(title=f"Prices per congestion point, {day} {PEAK_HOURS[0]}:00-{PEAK_HOURS[-1] + 1}:00 (EUR/MWh)")
    for column in ("congestion point", "ISPs", "requested kW", "procured kW", "unmet kW", "price min", "price max"):
        table.add_column(column, justify="right")
    by_point: dict[str, list[dict[str, Any]]] = {}
    for p in prices:
        by_point.setdefault(codes.get(p["congestion_point_id"], p["congestion_point_id"]), []).append(p)
    for code, rows in sorted(by_point.items()):
        table.add_row(
            code,
            str(len(rows)),
            str(sum(Decimal(r["requested_kw"]) for r in rows)),
            str(sum(Decimal(r["procured_kw"]) for r in rows)),
            str(sum(Decimal(r["unmet_kw"]) for r in rows)),
            min((r["price_per_mwh"] for r in rows), key=Decimal),
            max((r["price_per_mwh"] for r in rows), key=Decimal),
        )
    console.print(table)
    isp_hours = Decimal(15) / 60
    procured_kwh = sum((Decimal(a["accepted_kw"]) for a in awards["items"]), Decimal(0)) * isp_hours
    payments = (
        sum((Decimal(a["accepted_kw"]) * Decimal(a["price_per_mwh"]) for a in awards["items"]), Decimal(0))
        * isp_hours
        / 1000
    )
    console.print(
        f"Awards: {awards['total']} FlexOrder ISPs, {procured_kwh.quantize(Decimal('0.001'))} kWh procured, "
        f"EUR {payments.quantize(Decimal('0.01'))} to sellers; welfare EUR {run['welfare']}"
    )
    console.print(
        f"Clearing run {run_id}: input hash {run['input_hash'][:16]}…, result hash {run['result_hash'][:16]}…"
    )
    console.print(f"Clock-change day 2027-03-28 has {dst_day['isp_count']} ISPs")
    console.print(f"Database: {settings.database.url}")
    return {
        "market": world.market,
        "requests": requests,
        "offers": offers,
        "awards": awards["total"],
        "run": run,
        "dst_day_isps": dst_day["isp_count"],
        "portfolio_members": world.members,
    }
