"""``flexmarket demo``: a complete market day through the HTTP API, in-process, with a progress bar.

It uses the same app, services and database a production deployment uses; only the transport is
in-process (Litestar's test client), so no server or port is needed. With ``--database-url`` and
``--broker-url`` the same scenario runs on PostgreSQL with Redis and Celery workers: the API then
queues the jobs (202) and the demo polls for their results.

The scenario (:data:`HOUSEHOLDS` households by default, reproducible from a fixed seed):

1. **Build.** A market on Europe/Amsterdam (15-minute ISPs, pay-as-clear, day-ahead gate D-1 12:00).
   The grid comes from SimBench (:mod:`market.demo_data`, a small data set derived from three German
   SimBench LV grids and shipped with the package): one MV zone (synthetic: it only groups them) over
   the three grids' MV/LV transformers ``TR-1``..``TR-3`` (semi-urban, rural, urban), each with its
   real LV feeders ``TR-t-F1``.. (the lines leaving its LV busbar), numbered most loaded first (annual
   peak net load over the head cable's thermal limit). Households are placed on the feeders in
   proportion to SimBench's household loads there (:func:`place_households`), each standing for one
   of them (its H0 profile and rated kW; the settlement stage turns that into its meter data).
   SimBench's own peaks stay under 31% of every feeder cable and 36% of every transformer, so no
   point is congested in the data: the congestion is the demo's scenario, configured
   (:data:`CONGESTED_FEEDERS`, :data:`CONGESTED_TRANSFORMER`) on the points the data ranks most
   loaded (the four most loaded feeders of the 22, and the most loaded transformer). Synthetic,
   too: which households have a battery, an EV or a heat pump that can shift load (every third of
   each feeder; the rest plain or PV), the aggregator with portfolios on three congested feeders
   that some flexible households join, the :data:`DATA_CENTERS` data centers (two on congested
   feeders, one under the congested transformer, one on a commercial feeder where no congestion
   is; MW-scale sites, which in reality connect at MV, attached to feeder points for the story),
   and the utility (DSO).
2. **Orders.** The utility's FlexRequests: the evening peak (16:00-21:00) on four feeders and one
   transformer, the morning peak (07:00-09:00) on the most loaded feeder (:data:`MORNING_FEEDER`),
   sized from the flexibility connected there (its heat pumps in the morning) so some need stays
   unmet. FlexOffers from the flexible households (their own, batteries with storage limits), the
   aggregator (one batch: an offer per portfolio with a price curve from its members' prices) and
   the data centers (tranches; a block with a rebound; an all-or-nothing block).
3. **Clearing at gate closure.** The demo cannot wait for the real gate, so it clears with a clock
   set just past it (the service takes the time as an argument; the API and the scheduled task pass
   the real time).
4. Every installed context's :class:`DemoStage` (``Context.demo_stages``): settlement nominates
   baselines before the gate and, after clearing, sends meter data, verifies delivery, settles the
   day, issues statements and writes the HTML report.
5. A summary: prices per congestion point, awards, volume and money, and each stage's own tables.
"""

from __future__ import annotations

import importlib
import random
import secrets
import time as clock
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from litestar.testing import TestClient
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.tree import Tree
from sqlalchemy import select
from sqlalchemy.engine import make_url

from market.auth.principal import Scope
from market.auth.service import issue_key
from market.clearing.service import clear_day, day_gate
from market.core.app import create_app
from market.core.config import Settings
from market.core.contexts import load_contexts
from market.core.db import make_engine, make_session_factory, unit_of_work
from market.core.migrate import upgrade
from market.demo_data.simbench_lv import Feeder, Load, LvGrids, Transformer, load_lv_grids, pv_profile_of
from market.markets.service import clock_of, get_market
from market.participants.models import Participant, Role

T = TypeVar("T")

TIMEZONE = "Europe/Amsterdam"
HOUSEHOLDS = 300
"""Close to the 307 household loads of the three SimBench grids: each household stands for its own."""
DATA_CENTERS = 4
FLEXIBLE_EVERY = 3
"""Every third household of each feeder has an asset that can shift load."""
ISP_HOURS = Decimal(15) / 60
EVENING = (16, 21)
"""Local hours [16:00, 21:00) of the evening peak."""
MORNING = (7, 9)
CONGESTED_FEEDERS = {"TR-1-F1": 220, "TR-1-F2": 260, "TR-2-F1": 300, "TR-3-F1": 350}
"""Feeders congested in the evening peak, with the utility's value (max price per MWh): the most loaded
feeders of the SimBench data (feeders are numbered most loaded first), with loads the scenario adds."""
CONGESTED_TRANSFORMER = ("TR-2", 280)
"""The rural grid's transformer, the most loaded of the three in the SimBench data."""
MORNING_FEEDER = ("TR-1-F1", 180)
PORTFOLIO_FEEDERS = ("TR-1-F1", "TR-2-F1", "TR-3-F1")
DATA_CENTER_FEEDERS = ("TR-1-F1", "TR-2-F3", "TR-3-F1", "TR-1-F4")
"""TR-1-F4 is the semi-urban grid's commercial feeder (one SimBench G3 load, no households)."""
DATA_CENTER_KW = (200, 150, 100, 120)
"""kW each data center offers in the evening peak."""


@dataclass(frozen=True)
class AssetFlex:
    """What an asset can shift: kW less consumption, at about ``price`` per MWh, in local-hour windows
    during which it runs in the household's usual load (so it can stop or discharge then)."""

    kw: Decimal
    price: int
    windows: tuple[tuple[int, int], ...]


ASSET_FLEX = {
    "battery": AssetFlex(Decimal("3.5"), 90, (EVENING,)),
    "ev": AssetFlex(Decimal("3.7"), 140, ((17, 21),)),
    "heat_pump": AssetFlex(Decimal("2.0"), 60, (MORNING, EVENING)),
}
FLEXIBLE_MIX = (["battery"], ["ev"], ["heat_pump"], ["pv", "battery"], ["ev", "pv"], ["heat_pump", "pv"])
PLAIN_MIX: tuple[list[str], ...] = ([], ["pv"], [])


class DemoClient:
    """A thin JSON client that fails loudly on any non-2xx reply (after waiting out a 429, as a
    well-behaved client does: the operator's many set-up calls share one rate-limit budget)."""

    def __init__(self, client: TestClient[Any], token: str) -> None:
        self.client = client
        self.token = token

    def _send(self, method: str, path: str, token: str | None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or self.token}", **kwargs.pop("headers", {})}
        while True:
            response = self.client.request(method, f"/api/v1{path}", headers=headers, **kwargs)
            if response.status_code != 429:  # noqa: PLR2004 - Too Many Requests
                break
            clock.sleep(float(response.headers.get("Retry-After", "1")))
        if response.status_code >= 300:  # noqa: PLR2004 - any non-2xx is a failure of the demo
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        response = self._send(method, path, token, json=body)
        return response.json() if response.content else None

    def upload(self, path: str, content: bytes, media_type: str, token: str | None = None) -> Any:
        """POST a raw body (a meter file) and return the JSON reply."""
        return self._send("POST", path, token, content=content, headers={"Content-Type": media_type}).json()

    def download(self, path: str, token: str | None = None) -> bytes:
        return bytes(self._send("GET", path, token).content)

    def all_pages(self, path: str, token: str | None = None, limit: int = 1000) -> list[Any]:
        """Every item of a paginated list."""
        items: list[Any] = []
        joiner = "&" if "?" in path else "?"
        while True:
            page = self.call("GET", f"{path}{joiner}limit={limit}&offset={len(items)}", token=token)
            items += page["items"]
            if len(items) >= page["total"] or not page["items"]:
                return items

    def key_for(self, participant_id: str, scopes: list[str]) -> str:
        made = self.call("POST", f"/participants/{participant_id}/api-keys", {"name": "demo", "scopes": scopes})
        return str(made["token"])


@dataclass
class Seller:
    name: str
    participant_id: str
    token: str
    """Empty for households without flexibility: they never call the API."""
    site: dict[str, Any]
    assets: list[str]
    point_code: str
    flex: AssetFlex | None = None
    home: Home | None = None
    """The SimBench load a household stands for (None for data centers)."""


@dataclass(frozen=True)
class Home:
    """What a demo household stands for: a SimBench household load (H0 profile, rated kW) on its feeder,
    and the SimBench PV profile a roof there follows."""

    load: Load
    pv_profile: str


@dataclass(frozen=True)
class Placement:
    """Where a household goes: its feeder's code, the SimBench load it stands for, and whether it has
    an asset that can shift load."""

    code: str
    home: Home
    flexible: bool


@dataclass
class World:
    market: dict[str, Any]
    utility_id: str
    utility_token: str
    points: dict[str, dict[str, Any]]
    """Congestion points by code."""
    tree: Tree
    households: list[Seller] = field(default_factory=list)
    data_centers: list[Seller] = field(default_factory=list)
    aggregator_id: str = ""
    aggregator_token: str = ""
    portfolios: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Portfolios by the code of their congestion point."""
    members: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    offers: list[dict[str, Any]] = field(default_factory=list)
    """Every posted offer as the API read it back."""

    @property
    def codes(self) -> dict[str, str]:
        """Congestion point code by id."""
        return {p["id"]: code for code, p in self.points.items()}

    @property
    def feeders(self) -> list[dict[str, Any]]:
        return [p for p in self.points.values() if p["kind"] == "feeder"]

    def parent_code(self, code: str) -> str | None:
        parent = self.points[code]["parent_id"]
        return self.codes[parent] if parent else None


@dataclass(frozen=True)
class DemoStage:
    """Steps a bounded context adds to the demo: ``before_gate`` runs while the gate is still open
    (after the orders), ``after_clearing`` once the day is cleared. ``steps`` is how many progress
    steps the two together advance (one per :meth:`DemoRun.step`)."""

    name: str
    after_clearing: Callable[[DemoRun], None]
    before_gate: Callable[[DemoRun], None] | None = None
    steps: int = 1


@dataclass
class DemoRun:
    """What a stage needs: the API client, the world, the delivery day, the settings, the console and
    progress, the clearing run, a ``report`` dict to read and add to, and where to write files."""

    api: DemoClient
    settings: Settings
    world: World
    day: date
    console: Console
    progress: Progress
    task: TaskID
    rng: random.Random
    output_dir: Path
    clearing_run_id: str = ""
    gate: datetime | None = None
    report: dict[str, Any] = field(default_factory=dict)
    summary: list[RenderableType] = field(default_factory=list)
    """Tables and lines printed after the market's own summary."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per progress step."""

    @property
    def report_path(self) -> Path:
        return self.output_dir / "flexmarket-report.html"

    @property
    def in_process(self) -> bool:
        return self.settings.jobs.in_process

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        started = clock.monotonic()
        with progress_step(self.progress, self.task, label):
            yield
        self.timings[label] = clock.monotonic() - started

    def wait_for(self, what: str, ready: Callable[[], T | None], timeout_s: float = 600.0) -> T:
        """Poll ``ready`` until it returns a value (a queued job's result, with workers)."""
        deadline = clock.monotonic() + timeout_s
        while True:
            value = ready()
            if value is not None:
                return value
            if clock.monotonic() > deadline:
                raise TimeoutError(f"no result for {what} after {timeout_s:.0f} s: is a worker running on the broker?")
            clock.sleep(0.25)


def load_stages() -> list[DemoStage]:
    """Every installed context's demo stages, in context order."""
    stages: list[DemoStage] = []
    for ctx in load_contexts():
        for path in ctx.demo_stages:
            module, _, attribute = path.partition(":")
            stage = getattr(importlib.import_module(module), attribute)
            if not isinstance(stage, DemoStage):
                raise TypeError(f"{path} in context {ctx.name} must be a DemoStage, got {stage!r}")
            stages.append(stage)
    return stages


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


def grid_points(grids: LvGrids) -> Iterator[tuple[str, Transformer, Feeder | None]]:
    """The codes of the SimBench transformers (``TR-t``, feeder None) and their feeders (``TR-t-Ff``), in
    the data's order: grids as listed, feeders most loaded first."""
    for t, trafo in enumerate(grids.transformers, start=1):
        yield f"TR-{t}", trafo, None
        for f, feeder in enumerate(trafo.feeders, start=1):
            yield f"TR-{t}-F{f}", trafo, feeder


def place_households(grids: LvGrids, households: int) -> list[Placement]:
    """Each household's feeder, SimBench load and flexibility, in household order.

    Seats go one at a time to the feeder with the highest ``w_f / (2 s_f + 1)`` (Sainte-Laguë, ties to
    the first feeder), where ``w_f`` is the number of SimBench household loads on feeder f and ``s_f``
    the households it has: every prefix of the order is apportioned in proportion to ``w``, so a small
    demo takes the larger feeders and 300 households nearly cover the 307 loads one to one. A feeder's
    k-th household stands for its k-th household load (cycling if there are more households than
    loads) and is flexible iff ``(k + p) % 3 == 0``, p being the rank of the feeder's first seat: every
    third household of each feeder, the feeders' first flexible ones staggered.
    """
    feeders = [(code, trafo, feeder) for code, trafo, feeder in grid_points(grids) if feeder and feeder.households]
    seats = [0] * len(feeders)
    first_seat: dict[int, int] = {}
    placed: list[Placement] = []
    for _ in range(households):
        i = max(range(len(feeders)), key=lambda j: (len(feeders[j][2].households) / (2 * seats[j] + 1), -j))
        code, trafo, feeder = feeders[i]
        k = seats[i]
        seats[i] += 1
        rank = first_seat.setdefault(i, len(first_seat))
        home = Home(feeder.households[k % len(feeder.households)], pv_profile_of(trafo, feeder))
        placed.append(Placement(code, home, (k + rank) % FLEXIBLE_EVERY == 0))
    return placed


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


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
    points: dict[str, dict[str, Any]] = {}

    def point(code: str, name: str, kind: str, parent: str | None) -> dict[str, Any]:
        body = {"code": code, "name": name, "kind": kind, "utility_id": utility["id"], "parent_id": parent}
        points[code] = dict(api.call("POST", f"/markets/{mid}/congestion-points", body))
        return points[code]

    root = point("ZONE-1", "MV zone 1 (synthetic: groups the three SimBench LV grids)", "zone", None)
    tree = Tree(f"[bold]{root['code']}[/] {root['name']}")
    trafo_point, branch = root, tree
    for code, trafo, feeder in grid_points(load_lv_grids()):
        if feeder is None:
            name = f"{trafo.name} ({trafo.grid}, {trafo.rating_kva:.0f} kVA)"
            trafo_point = point(code, name, "transformer", root["id"])
            branch = tree.add(f"[bold]{code}[/] {name}")
            continue
        name = (
            f"{feeder.head_line}: {_count(feeder.load_count, 'load')} ({_count(len(feeder.households), 'household')}), "
            f"{feeder.pv_kwp:.0f} kWp PV, peak {feeder.peak_kw:.0f} kW of {feeder.thermal_limit_kw:.0f} kW"
        )
        point(code, name, "feeder", trafo_point["id"])
        branch.add(f"{code} {name}")
    return World(market, utility["id"], api.key_for(utility["id"], ["trade", "finance"]), points, tree)


def _add_participants(api: DemoClient, world: World, rng: random.Random, suffix: str, households: int) -> None:
    aggregator = api.call("POST", "/participants", {"name": "Demo aggregator", "role": "aggregator"})
    world.aggregator_id = aggregator["id"]
    world.aggregator_token = api.key_for(aggregator["id"], ["trade", "finance"])
    for code in PORTFOLIO_FEEDERS:
        world.portfolios[code] = api.call(
            "POST",
            "/portfolios",
            {"name": f"Portfolio {code}", "congestion_point_id": world.points[code]["id"]},
            token=world.aggregator_token,
        )
    for h, placed in enumerate(place_households(load_lv_grids(), households), start=1):
        feeder, flexible = world.points[placed.code], placed.flexible
        assets = list(rng.choice(FLEXIBLE_MIX if flexible else PLAIN_MIX))
        household = api.call("POST", "/participants", {"name": f"Household {h:03d}", "role": "household"})
        site_body = {
            "congestion_point_id": feeder["id"],
            "meter_code": f"EAN-{suffix}-H{h:04d}",
            "name": f"Home {h:03d}",
            "assets": assets,
        }
        if not flexible:  # registered by the operator; it never trades, so it has no key
            site = api.call("POST", "/sites", {**site_body, "owner_id": household["id"]})
            world.households.append(
                Seller(household["name"], household["id"], "", site, assets, feeder["code"], home=placed.home)
            )
            continue
        token = api.key_for(household["id"], ["trade", "finance"])
        site = api.call("POST", "/sites", site_body, token=token)
        flex = ASSET_FLEX[next(a for a in assets if a in ASSET_FLEX)]
        if feeder["code"] in world.portfolios and rng.random() < 0.6:  # noqa: PLR2004 - most join the aggregator
            portfolio = world.portfolios[feeder["code"]]
            site = api.call("PUT", f"/sites/{site['id']}/portfolio", {"portfolio_id": portfolio["id"]}, token=token)
            world.members += 1
        world.households.append(
            Seller(household["name"], household["id"], token, site, assets, feeder["code"], flex, placed.home)
        )
    for d, code in enumerate(DATA_CENTER_FEEDERS[:DATA_CENTERS], start=1):
        center = api.call("POST", "/participants", {"name": f"Data center {d}", "role": "data_center"})
        site = api.call(
            "POST",
            "/sites",
            {
                "owner_id": center["id"],
                "congestion_point_id": world.points[code]["id"],
                "meter_code": f"EAN-{suffix}-DC{d}",
                "name": f"DC campus {d}",
                "assets": ["flexible_load"],
            },
        )
        token = api.key_for(center["id"], ["trade", "finance"])
        world.data_centers.append(Seller(center["name"], center["id"], token, site, ["flexible_load"], code))


def _delivery_day(now: datetime) -> date:
    """The first local day whose day-ahead gate (D-1 12:00) is still open, plus one for margin."""
    return now.astimezone(ZoneInfo(TIMEZONE)).date() + timedelta(days=2)


def isp_starts(day: date, hours: tuple[int, int]) -> list[datetime]:
    """Local ISP starts in the hours [first, last) of ``day``."""
    zone = ZoneInfo(TIMEZONE)
    return [
        datetime.combine(day, time(hour, minute), tzinfo=zone) for hour in range(*hours) for minute in (0, 15, 30, 45)
    ]


def _bell(count: int) -> list[Decimal]:
    """A peak-shaped need over ``count`` ISPs: from 0.55 at the edges to 1.0 in the middle."""
    middle = (count - 1) / 2
    return [Decimal(str(round(1 - 0.45 * abs(i - middle) / max(middle, 1), 3))) for i in range(count)]


def _request(api: DemoClient, world: World, code: str, starts: list[datetime], peak_kw: Decimal, price: int) -> None:
    isps = [
        {"start": s.isoformat(), "quantity_kw": str((peak_kw * share).quantize(Decimal(1)))}
        for s, share in zip(starts, _bell(len(starts)), strict=True)
    ]
    world.requests.append(
        api.call(
            "POST",
            "/flex-requests",
            {
                "congestion_point_id": world.points[code]["id"],
                "direction": "up",
                "max_price_per_mwh": str(price),
                "isps": isps,
            },
            token=world.utility_token,
        )
    )


def _post_requests(api: DemoClient, world: World, day: date) -> None:
    """Sized from the flexibility connected below each point, so prices form and some need stays unmet."""
    evening = isp_starts(day, EVENING)
    flex_at: dict[str, Decimal] = {}
    for seller in world.households:
        if seller.flex is not None:  # every flexible asset runs in the evening peak
            flex_at[seller.point_code] = flex_at.get(seller.point_code, Decimal(0)) + seller.flex.kw
    dc_kw = {code: Decimal(kw) for code, kw in zip(DATA_CENTER_FEEDERS, DATA_CENTER_KW, strict=True)}
    for code, price in CONGESTED_FEEDERS.items():
        # More than a data center's block, so an all-or-nothing block never over-procures.
        peak = Decimal("0.8") * flex_at.get(code, Decimal(0)) + Decimal("1.4") * dc_kw.get(code, Decimal(0))
        _request(api, world, code, evening, max(peak, Decimal(10)), price)
    trafo, trafo_price = CONGESTED_TRANSFORMER
    below = [c for c in world.points if world.parent_code(c) == trafo]
    peak = Decimal("0.5") * sum((flex_at.get(c, Decimal(0)) + dc_kw.get(c, Decimal(0)) for c in below), Decimal(0))
    _request(api, world, trafo, isp_starts(day, (17, 20)), peak, trafo_price)
    code, price = MORNING_FEEDER
    heat_pumps = sum(
        (
            s.flex.kw
            for s in world.households
            if s.flex is not None and MORNING in s.flex.windows and s.point_code == code
        ),
        Decimal(0),
    )
    _request(api, world, code, isp_starts(day, MORNING), max(Decimal("0.9") * heat_pumps, Decimal(5)), price)


def _tranches(prices: list[tuple[int, Decimal]]) -> list[dict[str, str]]:
    """A convex price curve for a portfolio: members' kW grouped by price, shares summing to exactly 1."""
    total = sum((kw for _, kw in prices), Decimal(0))
    by_price: dict[int, Decimal] = {}
    for price, kw in sorted(prices):
        band = price // 20 * 20 + 10  # 20-EUR bands keep the curve short (at most 20 tranches)
        by_price[band] = by_price.get(band, Decimal(0)) + kw
    shares = [(kw / total).quantize(Decimal("0.0001")) for kw in by_price.values()]
    shares[-1] = Decimal(1) - sum(shares[:-1], Decimal(0))
    return [{"share": str(s), "price_per_mwh": str(p)} for p, s in zip(by_price, shares, strict=True)]


def _post_offers(api: DemoClient, world: World, day: date, rng: random.Random) -> None:
    """Households offer their own flexibility; the aggregator batches one offer per portfolio; data
    centers offer tranches, a block with a rebound, and an all-or-nothing block."""
    members: dict[str, list[tuple[Seller, int]]] = {}
    for seller in world.households:
        if seller.flex is None:
            continue
        price = seller.flex.price + rng.randrange(0, 40)  # each household prices its own comfort
        if seller.site["portfolio_id"] is not None:
            members.setdefault(seller.point_code, []).append((seller, price))
            continue
        starts = [s for window in seller.flex.windows for s in isp_starts(day, window)]
        body: dict[str, Any] = {
            "site_id": seller.site["id"],
            "direction": "up",
            "price_per_mwh": str(price),
            "isps": [{"start": s.isoformat(), "quantity_kw": str(seller.flex.kw)} for s in starts],
        }
        if "battery" in seller.assets and seller.flex is ASSET_FLEX["battery"]:
            body["storage"] = {"capacity_kwh": "5", "initial_kwh": "4", "efficiency": "0.92"}
        world.offers.append(api.call("POST", "/flex-offers", body, token=seller.token))
    batch = []
    for code, group in members.items():
        quantities: dict[datetime, Decimal] = {}
        for seller, _ in group:
            assert seller.flex is not None  # noqa: S101
            for window in seller.flex.windows:
                for s in isp_starts(day, window):
                    quantities[s] = quantities.get(s, Decimal(0)) + seller.flex.kw
        curve = _tranches([(price, s.flex.kw) for s, price in group if s.flex is not None])
        batch.append(
            {
                "portfolio_id": world.portfolios[code]["id"],
                "direction": "up",
                "tranches": curve,
                "isps": [{"start": s.isoformat(), "quantity_kw": str(kw)} for s, kw in sorted(quantities.items())],
            }
        )
    if batch:
        made = api.call("POST", "/flex-offers/batch", {"offers": batch}, token=world.aggregator_token)
        world.offers += [api.call("GET", f"/flex-offers/{i}", token=world.aggregator_token) for i in made["ids"]]
    for i, seller in enumerate(world.data_centers):
        world.offers.append(api.call("POST", "/flex-offers", _data_center_offer(i, seller, day), token=seller.token))


def _data_center_offer(i: int, seller: Seller, day: date) -> dict[str, Any]:
    """The i-th data center's offer: tranches, a block with a rebound, or an all-or-nothing block."""
    kw = Decimal(DATA_CENTER_KW[i % len(DATA_CENTER_KW)])
    block = isp_starts(day, (17, 19))
    body: dict[str, Any] = {"site_id": seller.site["id"], "direction": "up"}
    if i == 0:  # shifts batch jobs: divisible, a cheap and a dear half
        return body | {
            "tranches": [{"share": "0.5", "price_per_mwh": "150"}, {"share": "0.5", "price_per_mwh": "200"}],
            "isps": [{"start": s.isoformat(), "quantity_kw": str(kw)} for s in isp_starts(day, EVENING)],
        }
    if i == 1:  # pre-cools, then catches up after 21:00: a block with a rebound
        rebound_start = datetime.combine(day, time(21), tzinfo=ZoneInfo(TIMEZONE))
        return body | {
            "price_per_mwh": "210",
            "block": True,
            "isps": [{"start": s.isoformat(), "quantity_kw": str(kw)} for s in block],
            "rebound": [
                {"start": (rebound_start + timedelta(minutes=15 * j)).isoformat(), "quantity_kw": str(kw / 2)}
                for j in range(4)
            ],
        }
    return body | {  # switches to its own generator: all or nothing
        "price_per_mwh": str(190 + 10 * i),
        "block": True,
        "min_acceptance_fraction": "1",
        "isps": [{"start": s.isoformat(), "quantity_kw": str(kw)} for s in block],
    }


def _clear(settings: Settings, market_id: str, day: date) -> tuple[str, datetime]:
    """Clear the day as the scheduled task does, with the clock set just past the gate."""
    factory = make_session_factory(make_engine(settings.database.url))
    with unit_of_work(factory) as session:
        market = get_market(session, uuid.UUID(market_id))
        gate = day_gate(clock_of(market), day)
        run = clear_day(session, market.id, day, gate + timedelta(minutes=1), triggered_by="demo")
        return str(run.id), gate


def _prices_table(world: World, day: date, prices: list[dict[str, Any]]) -> Table:
    codes = world.codes
    table = Table(title=f"Prices per congestion point, {day} (EUR/MWh)")
    for column in ("congestion point", "ISPs", "requested kWh", "procured kWh", "unmet kWh", "price min", "price max"):
        table.add_column(column, justify="right")
    by_point: dict[str, list[dict[str, Any]]] = {}
    for p in prices:
        by_point.setdefault(codes.get(p["congestion_point_id"], p["congestion_point_id"]), []).append(p)
    for code, rows in sorted(by_point.items()):
        table.add_row(
            code,
            str(len(rows)),
            *(
                _kwh(sum((Decimal(r[key]) for r in rows), Decimal(0)))
                for key in ("requested_kw", "procured_kw", "unmet_kw")
            ),
            str(min(Decimal(r["price_per_mwh"]) for r in rows).quantize(Decimal("0.01"))),
            str(max(Decimal(r["price_per_mwh"]) for r in rows).quantize(Decimal("0.01"))),
        )
    return table


def _kwh(kw_isps: Decimal) -> str:
    """Σ kW over ISPs as kWh, to the watt-hour."""
    return str((kw_isps * ISP_HOURS).quantize(Decimal("0.001")))


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def run_demo(
    settings: Settings,
    console: Console | None = None,
    households: int = HOUSEHOLDS,
    output_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the demo market day with ``households`` households; print the summary and return the
    report data (``run.report``). Files (the report, statements) go to ``output_dir`` (default: the
    working directory)."""
    console = console or Console()
    rng = random.Random(20261125)  # noqa: S311 - reproducible demo data, not a secret
    started = clock.monotonic()
    upgrade(settings.database.url)
    token = _operator_token(settings)
    suffix = secrets.token_hex(3)
    day = _delivery_day(datetime.now(UTC))
    stages = load_stages()
    with TestClient(app=create_app(settings)) as http, _progress(console) as progress:
        api = DemoClient(http, token)
        task = progress.add_task("starting", total=3 + sum(s.steps for s in stages))
        with progress_step(progress, task, f"building {households} households, grid"):
            world = _build_grid(api, suffix)
            _add_participants(api, world, rng, suffix, households)
        run = DemoRun(api, settings, world, day, console, progress, task, rng, output_dir or Path.cwd())
        run.timings["build"] = clock.monotonic() - started
        with run.step("orders"):
            _post_requests(api, world, day)
            _post_offers(api, world, day, rng)
        for stage in stages:
            if stage.before_gate is not None:
                stage.before_gate(run)
        with run.step("clearing"):
            _clear_and_read(run)
        for stage in stages:
            stage.after_clearing(run)
        progress.update(task, description=f"done in {clock.monotonic() - started:.0f} s")
    _print_summary(run, started)
    return run.report


def _clear_and_read(run: DemoRun) -> None:
    """Clear at gate closure, then read the results back through the API into ``run.report``."""
    api, world, mid = run.api, run.world, run.world.market["id"]
    run.clearing_run_id, run.gate = _clear(run.settings, mid, run.day)
    run.report |= {
        "market": world.market,
        "points": world.codes,
        "requests": world.requests,
        "offers": world.offers,
        "clearing": api.call("GET", f"/clearings/{run.clearing_run_id}"),
        "prices": api.call("GET", f"/clearings/{run.clearing_run_id}/prices"),
        "awards": api.all_pages(f"/clearings/{run.clearing_run_id}/awards"),
        "offer_results": api.all_pages(f"/clearings/{run.clearing_run_id}/offer-results"),
        "relief": api.call("GET", f"/markets/{mid}/relief"),
        "dst_day": api.call("GET", f"/markets/{mid}/delivery-days/2027-03-28"),
    }


def _print_summary(run: DemoRun, started: float) -> None:
    console, world, report = run.console, run.world, run.report
    console.print(
        f"[bold green]Market[/] {world.market['code']} ({TIMEZONE}, 15-minute ISPs, pay-as-clear, gate D-1 12:00)"
    )
    console.print(world.tree)
    flexible = sum(1 for s in world.households if s.flex is not None)
    console.print(
        f"Participants: {len(world.households)} households ({flexible} with flexible assets, {world.members} in "
        f"{len(world.portfolios)} aggregator portfolios), {len(world.data_centers)} data centers, 1 aggregator, "
        f"1 utility; {len(report['relief'])} relief factors"
    )
    console.print(
        f"Delivery day {run.day}: {len(world.requests)} requests and {len(world.offers)} offers; "
        f"gate closed {run.gate.isoformat() if run.gate else '?'}"
    )
    console.print(_prices_table(world, run.day, report["prices"]))
    awards, cleared = report["awards"], report["clearing"]
    procured_kwh = sum((Decimal(a["accepted_kw"]) for a in awards), Decimal(0)) * ISP_HOURS
    payments = sum((Decimal(a["accepted_kw"]) * Decimal(a["price_per_mwh"]) for a in awards), Decimal(0)) * ISP_HOURS
    accepted = sum(1 for r in report["offer_results"] if r["outcome"] == "accepted")
    console.print(
        f"Awards: {len(awards)} FlexOrder ISPs on {accepted} of {len(report['offer_results'])} offers, "
        f"{procured_kwh.quantize(Decimal('0.001'))} kWh procured, EUR {(payments / 1000).quantize(Decimal('0.01'))} "
        f"ordered; welfare EUR {cleared['welfare']}"
    )
    console.print(
        f"Clearing run {run.clearing_run_id}: input hash {cleared['input_hash'][:16]}…, "
        f"result hash {cleared['result_hash'][:16]}…"
    )
    for renderable in run.summary:
        console.print(renderable)
    console.print(f"Clock-change day 2027-03-28 has {report['dst_day']['isp_count']} ISPs")
    console.print(f"Database: {make_url(run.settings.database.url).render_as_string(hide_password=True)}")
    steps = ", ".join(f"{label} {seconds:.1f}" for label, seconds in run.timings.items())
    console.print(f"Finished in {clock.monotonic() - started:.1f} s (seconds per step: {steps})")


@contextmanager
def progress_step(progress: Progress, task: TaskID, label: str) -> Iterator[None]:
    """A progress step before the :class:`DemoRun` exists (building the world)."""
    progress.update(task, description=label)
    yield
    progress.advance(task)
