"""Factories for test data. They go through the services, so the data obeys the same rules as
data made through the API, and they commit so the app under test sees it."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import time
from decimal import Decimal

from sqlalchemy.orm import Session

from market.auth.principal import Principal, Scope
from market.auth.service import issue_key
from market.core.config import DatabaseSettings, JobSettings, SecuritySettings, Settings
from market.grid.models import CongestionPoint, CongestionPointKind
from market.grid.schemas import CongestionPointCreate
from market.grid.service import create_congestion_point
from market.markets.models import GateClosureKind, Market, PricingRule
from market.markets.schemas import MarketCreate
from market.markets.service import create_market
from market.participants.models import Participant, Portfolio, Role, Site
from market.participants.schemas import PortfolioCreate, SiteCreate
from market.participants.service import create_portfolio, create_site

_seq = itertools.count(1)
PEPPER = "test-pepper"


def in_process_settings(database_url: str) -> Settings:
    """The tests' settings for a database: jobs run in-process, keys hashed with :data:`PEPPER`."""
    return Settings(
        database=DatabaseSettings(url=database_url),
        jobs=JobSettings(broker_url="in-process"),
        security=SecuritySettings(api_key_pepper=PEPPER),
    )


@dataclass
class Actor:
    participant: Participant
    token: str
    principal: Principal

    @property
    def id(self) -> uuid.UUID:
        return self.participant.id

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def actor(session: Session, role: Role, scopes: list[Scope] | None = None, name: str | None = None) -> Actor:
    participant = Participant(id=uuid.uuid4(), name=name or f"{role.value} {next(_seq)}", role=role)
    session.add(participant)
    session.flush()
    granted = scopes if scopes is not None else list(Scope)
    key, token = issue_key(session, participant, "test", granted, PEPPER)
    session.commit()
    principal = Principal(participant_id=participant.id, role=role, scopes=frozenset(granted), api_key_id=key.id)
    return Actor(participant, token, principal)


def market(session: Session, operator: Actor, **overrides: object) -> Market:
    fields: dict[str, object] = {
        "code": f"m-{next(_seq)}",
        "name": "Test market",
        "timezone": "Europe/Amsterdam",
        "currency": "EUR",
        "pricing_rule": PricingRule.PAY_AS_CLEAR,
        "gate_closure_kind": GateClosureKind.DAY_AHEAD,
        "day_ahead_gate_time": time(12, 0),
        "min_price_per_mwh": Decimal(0),
        "max_price_per_mwh": Decimal(5000),
        "max_quantity_kw": Decimal(10000),
    }
    fields.update(overrides)
    created = create_market(session, operator.principal, MarketCreate(**fields))  # type: ignore[arg-type]
    session.commit()
    return created


def congestion_point(
    session: Session,
    operator: Actor,
    market_: Market,
    utility: Actor,
    parent: CongestionPoint | None = None,
    kind: CongestionPointKind = CongestionPointKind.FEEDER,
) -> CongestionPoint:
    point = create_congestion_point(
        session,
        operator.principal,
        market_.id,
        CongestionPointCreate(
            code=f"CP-{next(_seq)}",
            name="point",
            kind=kind,
            utility_id=utility.id,
            parent_id=parent.id if parent else None,
        ),
    )
    session.commit()
    return point


def site(session: Session, owner: Actor, point: CongestionPoint) -> Site:
    created = create_site(
        session,
        owner.principal,
        SiteCreate(congestion_point_id=point.id, meter_code=f"EAN-{next(_seq):06d}", name="site"),
    )
    session.commit()
    return created


def portfolio(session: Session, aggregator: Actor, point: CongestionPoint) -> Portfolio:
    created = create_portfolio(
        session, aggregator.principal, PortfolioCreate(name=f"portfolio {next(_seq)}", congestion_point_id=point.id)
    )
    session.commit()
    return created
