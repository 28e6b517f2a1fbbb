"""A small market for order tests: a day-ahead market on Europe/Amsterdam, a grid, and one actor of
every role with a site or portfolio. ``open_day`` is a delivery day whose gate is still open."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from market.grid.models import CongestionPoint, CongestionPointKind
from market.markets.models import Market
from market.participants.models import Portfolio, Role, Site
from tests import factories
from tests.factories import Actor

AMS = ZoneInfo("Europe/Amsterdam")


def local(day: date, hour: int, minute: int = 0, fold: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=AMS).replace(fold=fold)


def iso(instant: datetime) -> str:
    return instant.isoformat()


@dataclass
class World:
    operator: Actor
    utility: Actor
    other_utility: Actor
    household: Actor
    aggregator: Actor
    data_center: Actor
    market: Market
    root: CongestionPoint
    feeder: CongestionPoint
    site: Site
    portfolio: Portfolio
    open_day: date

    def offer(self, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "site_id": str(self.site.id),
            "direction": "up",
            "price_per_mwh": "120.5",
            "isps": [
                {"start": iso(local(self.open_day, 17, 0)), "quantity_kw": "3.5"},
                {"start": iso(local(self.open_day, 17, 15)), "quantity_kw": "4"},
            ],
        }
        body.update(overrides)
        return body

    def request(self, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "congestion_point_id": str(self.feeder.id),
            "direction": "up",
            "max_price_per_mwh": "300",
            "isps": [{"start": iso(local(self.open_day, 17, 0)), "quantity_kw": "50"}],
        }
        body.update(overrides)
        return body


def build_world(db: Session) -> World:
    operator = factories.actor(db, Role.OPERATOR)
    utility = factories.actor(db, Role.UTILITY)
    other_utility = factories.actor(db, Role.UTILITY)
    market = factories.market(db, operator, max_price_per_mwh=Decimal(1000), max_quantity_kw=Decimal(500))
    root = factories.congestion_point(db, operator, market, utility, kind=CongestionPointKind.TRANSFORMER)
    feeder = factories.congestion_point(db, operator, market, utility, parent=root)
    household = factories.actor(db, Role.HOUSEHOLD)
    aggregator = factories.actor(db, Role.AGGREGATOR)
    data_center = factories.actor(db, Role.DATA_CENTER)
    site = factories.site(db, household, feeder)
    portfolio = factories.portfolio(db, aggregator, feeder)
    open_day = datetime.now(UTC).astimezone(AMS).date() + timedelta(days=5)
    return World(
        operator,
        utility,
        other_utility,
        household,
        aggregator,
        data_center,
        market,
        root,
        feeder,
        site,
        portfolio,
        open_day,
    )
