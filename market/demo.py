"""``flexmarket demo``: builds a market through the HTTP API, in-process, and prints what it made.

It uses the same app, services and database a production deployment uses; only the transport is
in-process (Litestar's test client), so no server or port is needed.
"""

from __future__ import annotations

import random
import secrets
from typing import Any

from litestar.testing import TestClient
from rich.console import Console
from rich.table import Table
from rich.tree import Tree
from sqlalchemy import select

from market.auth.principal import Scope
from market.auth.service import issue_key
from market.core.app import create_app
from market.core.config import Settings
from market.core.db import make_engine, make_session_factory, unit_of_work
from market.core.migrate import upgrade
from market.participants.models import Participant, Role

FEEDERS_PER_TRANSFORMER = 3
TRANSFORMERS = 2
HOUSEHOLDS = 24
DATA_CENTERS = 2


class DemoClient:
    """A thin JSON client that fails loudly on any non-2xx reply."""

    def __init__(self, client: TestClient[Any], token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else self.headers
        response = self.client.request(method, f"/api/v1{path}", json=body, headers=headers)
        if response.status_code >= 300:  # noqa: PLR2004 - any non-2xx is a failure of the demo
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text}")
        return response.json() if response.content else None


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


def run_demo(settings: Settings, console: Console | None = None) -> dict[str, Any]:
    """Build one market with a grid tree, a utility, households, an aggregator and data centers."""
    console = console or Console()
    rng = random.Random(20261125)  # noqa: S311 - reproducible demo data, not a secret
    upgrade(settings.database.url)
    token = _operator_token(settings)
    suffix = secrets.token_hex(3)
    with TestClient(app=create_app(settings)) as http:
        api = DemoClient(http, token)
        market = api.call(
            "POST",
            "/markets",
            {
                "code": f"demo-{suffix}",
                "name": "Demo local flexibility market",
                "timezone": "Europe/Amsterdam",
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
        root = api.call(
            "POST",
            f"/markets/{mid}/congestion-points",
            {"code": "ZONE-1", "name": "Zone 1", "kind": "zone", "utility_id": utility["id"]},
        )
        feeders: list[dict[str, Any]] = []
        tree = Tree(f"[bold]{root['code']}[/] {root['name']}")
        for t in range(1, TRANSFORMERS + 1):
            trafo = api.call(
                "POST",
                f"/markets/{mid}/congestion-points",
                {
                    "code": f"TR-{t}",
                    "name": f"Transformer {t}",
                    "kind": "transformer",
                    "utility_id": utility["id"],
                    "parent_id": root["id"],
                },
            )
            branch = tree.add(f"[bold]{trafo['code']}[/] {trafo['name']}")
            for f in range(1, FEEDERS_PER_TRANSFORMER + 1):
                feeder = api.call(
                    "POST",
                    f"/markets/{mid}/congestion-points",
                    {
                        "code": f"TR-{t}-F{f}",
                        "name": f"Feeder {t}.{f}",
                        "kind": "feeder",
                        "utility_id": utility["id"],
                        "parent_id": trafo["id"],
                    },
                )
                feeders.append(feeder)
                branch.add(f"{feeder['code']} {feeder['name']}")

        aggregator = api.call("POST", "/participants", {"name": "Demo aggregator", "role": "aggregator"})
        agg_key = api.call(
            "POST", f"/participants/{aggregator['id']}/api-keys", {"name": "demo", "scopes": ["trade", "finance"]}
        )["token"]
        portfolios = {
            f["id"]: api.call(
                "POST", "/portfolios", {"name": f"Portfolio {f['code']}", "congestion_point_id": f["id"]}, token=agg_key
            )
            for f in feeders[:2]
        }

        table = Table(title=f"Participants of market {market['code']}")
        for column in ("participant", "role", "site", "congestion point", "assets", "portfolio"):
            table.add_column(column)
        asset_choices = [["battery"], ["ev"], ["heat_pump"], ["pv", "battery"], ["pv"]]
        members = 0
        for h in range(1, HOUSEHOLDS + 1):
            household = api.call("POST", "/participants", {"name": f"Household {h:03d}", "role": "household"})
            key = api.call("POST", f"/participants/{household['id']}/api-keys", {"name": "demo", "scopes": ["trade"]})[
                "token"
            ]
            feeder = feeders[h % len(feeders)]
            site = api.call(
                "POST",
                "/sites",
                {
                    "congestion_point_id": feeder["id"],
                    "meter_code": f"EAN-{suffix}-H{h:04d}",
                    "name": f"Home {h:03d}",
                    "assets": rng.choice(asset_choices),
                },
                token=key,
            )
            portfolio_name = ""
            if feeder["id"] in portfolios and h % 2 == 0:
                portfolio = portfolios[feeder["id"]]
                api.call("PUT", f"/sites/{site['id']}/portfolio", {"portfolio_id": portfolio["id"]}, token=key)
                portfolio_name = portfolio["name"]
                members += 1
            table.add_row(
                household["name"],
                "household",
                site["meter_code"],
                feeder["code"],
                ", ".join(site["assets"]),
                portfolio_name,
            )
        for d in range(1, DATA_CENTERS + 1):
            center = api.call("POST", "/participants", {"name": f"Data center {d}", "role": "data_center"})
            feeder = feeders[-d]
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
            table.add_row(center["name"], "data_center", site["meter_code"], feeder["code"], "flexible_load", "")

        relief = api.call("GET", f"/markets/{mid}/relief")
        day = api.call("GET", f"/markets/{mid}/delivery-days/2026-03-29")

    console.print(
        f"[bold green]Market[/] {market['code']} ({market['timezone']}, {market['isp_minutes']}-minute ISPs,"
        f" {market['pricing_rule']}, gate D-1 {market['day_ahead_gate_time']})"
    )
    console.print(tree)
    console.print(table)
    console.print(f"Aggregator portfolios: {len(portfolios)} with {members} member sites")
    console.print(f"Relief factors (radial tree): {len(relief)}")
    console.print(f"Delivery day 2026-03-29 (clocks go forward): {day['isp_count']} ISPs")
    console.print(f"Database: {settings.database.url}")
    return {
        "market": market,
        "feeders": len(feeders),
        "households": HOUSEHOLDS,
        "portfolio_members": members,
        "relief_entries": len(relief),
        "dst_day_isps": day["isp_count"],
    }
