"""Authorization matrix: every endpoint x every role x another participant's object.

A non-operator never gets another participant's data: a foreign id gives 403 or 404 and the body
names none of the victim's data. The operator (excepted by MARKET.md) succeeds, which shows each
row really reaches its object. A test below fails if an endpoint exists that no row covers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy.orm import Session

from market.clearing.service import clear_day
from market.core.db import utcnow
from market.orders.models import Direction
from market.orders.schemas import FlexOfferCreate, FlexRequestCreate, IspQuantity
from market.orders.service import create_offer, create_request
from market.participants.models import Role
from market.participants.service import set_site_portfolio
from settlement.metering.models import MeterFileFormat
from settlement.metering.service import process_file, upload_file
from settlement.runs.models import RunKind
from settlement.runs.service import settle_day
from settlement.statements.service import issue as issue_statement
from tests import factories
from tests.factories import Actor

PAST_DAY = date(2020, 1, 1)
CALLER_ROLES = [Role.HOUSEHOLD, Role.AGGREGATOR, Role.DATA_CENTER, Role.UTILITY]


@dataclass
class World:
    operator: Actor
    callers: dict[Role, Actor]
    victim_household: Actor
    victim_aggregator: Actor
    market_id: str
    point_id: str
    victim_site_id: str
    victim_site_meter: str
    victim_portfolio_id: str
    victim_key_id: str
    victim_key_public_id: str
    victim_offer_id: str
    victim_request_id: str
    run_id: str
    settlement_id: str
    statement_id: str
    meter_file_id: str
    day: str
    offer_body: dict[str, Any]
    request_body: dict[str, Any]


@pytest.fixture
def world(db: Session) -> World:
    operator = factories.actor(db, Role.OPERATOR)
    utility = factories.actor(db, Role.UTILITY)
    market = factories.market(db, operator)
    point = factories.congestion_point(db, operator, market, utility)
    callers = {role: factories.actor(db, role) for role in CALLER_ROLES}
    # Callers own objects too, so "own" lists are not trivially empty.
    factories.site(db, callers[Role.HOUSEHOLD], point)
    factories.portfolio(db, callers[Role.AGGREGATOR], point)
    victim_household = factories.actor(db, Role.HOUSEHOLD, name="Victim household")
    victim_aggregator = factories.actor(db, Role.AGGREGATOR, name="Victim aggregator")
    site = factories.site(db, victim_household, point)
    portfolio = factories.portfolio(db, victim_aggregator, point)
    set_site_portfolio(db, victim_household.principal, site.id, portfolio.id)
    db.commit()
    day = datetime.now(UTC).date() + timedelta(days=5)
    isps = [IspQuantity(start=datetime.combine(day, time(17), tzinfo=UTC), quantity_kw=Decimal(2))]
    offer = create_offer(
        db,
        victim_household.principal,
        FlexOfferCreate(direction=Direction.UP, isps=isps, site_id=site.id, price_per_mwh=Decimal("777.123")),
        utcnow(),
    )
    request = create_request(
        db,
        utility.principal,
        FlexRequestCreate(
            congestion_point_id=point.id, direction=Direction.UP, isps=isps, max_price_per_mwh=Decimal("900.5")
        ),
        utcnow(),
    )
    db.commit()
    isp_json = [{"start": isps[0].start.isoformat(), "quantity_kw": "1"}]
    run = clear_day(db, market.id, day, datetime.combine(day, time(23), tzinfo=UTC), triggered_by="test")
    db.commit()
    assert run.award_count == 1  # the victim's offer is awarded, so the award rows below are not vacuous
    # The day is settled (as if two days later) and the victim household has a statement.
    after = datetime.combine(day + timedelta(days=2), time(12), tzinfo=UTC)
    settlement = settle_day(db, market.id, day, RunKind.INITIAL, after, "test").run
    statement, _ = issue_statement(db, operator.principal, market.id, victim_household.id, day, day, after)
    # The victim utility's meter file, with a reading of the victim's site.
    csv_body = f"meter,isp_start,import_kwh,export_kwh\n{site.meter_code},{isps[0].start.isoformat()},1.5,0\n"
    meter_file, _ = upload_file(
        db, utility.principal, market.id, MeterFileFormat.CSV, "m.csv", csv_body.encode(), after
    )
    process_file(db, meter_file.id, after)
    # An empty day long past, cleared, for the operator rows that verify, settle or issue.
    clear_day(db, market.id, PAST_DAY, datetime.combine(PAST_DAY, time(23), tzinfo=UTC), triggered_by="test")
    db.commit()
    return World(
        operator=operator,
        callers=callers,
        victim_household=victim_household,
        victim_aggregator=victim_aggregator,
        market_id=str(market.id),
        point_id=str(point.id),
        victim_site_id=str(site.id),
        victim_site_meter=site.meter_code,
        victim_portfolio_id=str(portfolio.id),
        victim_key_id=str(victim_household.principal.api_key_id),
        victim_key_public_id=victim_household.token.split("_")[1],
        victim_offer_id=str(offer.id),
        victim_request_id=str(request.id),
        run_id=str(run.id),
        settlement_id=str(settlement.id),
        statement_id=str(statement.id),
        meter_file_id=str(meter_file.id),
        day=day.isoformat(),
        offer_body={"site_id": str(site.id), "direction": "up", "price_per_mwh": "1", "isps": isp_json},
        request_body={
            "congestion_point_id": str(point.id),
            "direction": "up",
            "max_price_per_mwh": "1",
            "isps": isp_json,
        },
    )


@dataclass(frozen=True)
class Row:
    method: str
    route: str
    path: Callable[[World], str]
    body: Callable[[World], Any] | None = None
    operator_may: bool = True
    """False where even the operator is refused: it does not trade on a participant's behalf."""


def _market_body(w: World) -> dict[str, Any]:
    return {
        "code": "another",
        "name": "x",
        "timezone": "UTC",
        "currency": "EUR",
        "pricing_rule": "pay_as_bid",
        "gate_closure_kind": "intraday",
        "intraday_lead_minutes": 15,
        "min_price_per_mwh": "0",
        "max_price_per_mwh": "100",
        "max_quantity_kw": "10",
    }


# Rows whose path names an object owned by the victim participants.
FOREIGN_OBJECT_ROWS = [
    Row("GET", "/api/v1/participants/{participant_id:uuid}", lambda w: f"/api/v1/participants/{w.victim_household.id}"),
    Row(
        "GET",
        "/api/v1/participants/{participant_id:uuid}/api-keys",
        lambda w: f"/api/v1/participants/{w.victim_household.id}/api-keys",
    ),
    Row(
        "POST",
        "/api/v1/participants/{participant_id:uuid}/api-keys",
        lambda w: f"/api/v1/participants/{w.victim_household.id}/api-keys",
        lambda w: {"name": "stolen", "scopes": ["trade"]},
    ),
    Row("POST", "/api/v1/api-keys/{api_key_id:uuid}/revoke", lambda w: f"/api/v1/api-keys/{w.victim_key_id}/revoke"),
    Row("GET", "/api/v1/sites/{site_id:uuid}", lambda w: f"/api/v1/sites/{w.victim_site_id}"),
    Row(
        "PUT",
        "/api/v1/sites/{site_id:uuid}/portfolio",
        lambda w: f"/api/v1/sites/{w.victim_site_id}/portfolio",
        lambda w: {"portfolio_id": None},
    ),
    Row("GET", "/api/v1/portfolios/{portfolio_id:uuid}", lambda w: f"/api/v1/portfolios/{w.victim_portfolio_id}"),
    Row(
        "DELETE",
        "/api/v1/portfolios/{portfolio_id:uuid}/members/{site_id:uuid}",
        lambda w: f"/api/v1/portfolios/{w.victim_portfolio_id}/members/{w.victim_site_id}",
    ),
    Row("GET", "/api/v1/flex-offers/{offer_id:uuid}", lambda w: f"/api/v1/flex-offers/{w.victim_offer_id}"),
    Row(
        "PUT",
        "/api/v1/flex-offers/{offer_id:uuid}",
        lambda w: f"/api/v1/flex-offers/{w.victim_offer_id}",
        lambda w: w.offer_body,
        operator_may=False,
    ),
    Row(
        "POST",
        "/api/v1/flex-offers/{offer_id:uuid}/revoke",
        lambda w: f"/api/v1/flex-offers/{w.victim_offer_id}/revoke",
    ),
    Row("GET", "/api/v1/flex-requests/{request_id:uuid}", lambda w: f"/api/v1/flex-requests/{w.victim_request_id}"),
    Row(
        "PUT",
        "/api/v1/flex-requests/{request_id:uuid}",
        lambda w: f"/api/v1/flex-requests/{w.victim_request_id}",
        lambda w: w.request_body,
        operator_may=False,
    ),
    Row(
        "POST",
        "/api/v1/flex-requests/{request_id:uuid}/revoke",
        lambda w: f"/api/v1/flex-requests/{w.victim_request_id}/revoke",
    ),
]

# Rows only the operator may call: market and grid configuration, registering participants.
OPERATOR_ROWS = [
    Row("POST", "/api/v1/markets", lambda w: "/api/v1/markets", _market_body),
    Row(
        "PATCH",
        "/api/v1/markets/{market_id:uuid}",
        lambda w: f"/api/v1/markets/{w.market_id}",
        lambda w: {"name": "renamed"},
    ),
    Row(
        "POST",
        "/api/v1/markets/{market_id:uuid}/congestion-points",
        lambda w: f"/api/v1/markets/{w.market_id}/congestion-points",
        lambda w: {"code": "NEW", "name": "n", "kind": "feeder", "utility_id": str(w.callers[Role.UTILITY].id)},
    ),
    Row(
        "PUT",
        "/api/v1/markets/{market_id:uuid}/sensitivities",
        lambda w: f"/api/v1/markets/{w.market_id}/sensitivities",
        lambda w: {"entries": []},
    ),
    Row(
        "POST", "/api/v1/participants", lambda w: "/api/v1/participants", lambda w: {"name": "new", "role": "household"}
    ),
]

# Market-wide reference data every participant may read: it is nobody's private data.
PUBLIC_ROWS = [
    Row("GET", "/api/v1/markets", lambda w: "/api/v1/markets"),
    Row("GET", "/api/v1/markets/{market_id:uuid}", lambda w: f"/api/v1/markets/{w.market_id}"),
    Row(
        "GET",
        "/api/v1/markets/{market_id:uuid}/delivery-days/{day:str}",
        lambda w: f"/api/v1/markets/{w.market_id}/delivery-days/2026-10-25",
    ),
    Row(
        "GET",
        "/api/v1/markets/{market_id:uuid}/congestion-points",
        lambda w: f"/api/v1/markets/{w.market_id}/congestion-points",
    ),
    Row("GET", "/api/v1/congestion-points/{point_id:uuid}", lambda w: f"/api/v1/congestion-points/{w.point_id}"),
    Row("GET", "/api/v1/markets/{market_id:uuid}/relief", lambda w: f"/api/v1/markets/{w.market_id}/relief"),
]

# Lists and creates scoped to the caller: the victim's objects must never show up, and a caller
# may not create objects in the victim's name.
OWN_ROWS = [
    Row("GET", "/api/v1/me", lambda w: "/api/v1/me"),
    Row("GET", "/api/v1/participants", lambda w: "/api/v1/participants"),
    Row("GET", "/api/v1/sites", lambda w: "/api/v1/sites"),
    Row("GET", "/api/v1/portfolios", lambda w: "/api/v1/portfolios"),
    Row(
        "POST",
        "/api/v1/sites",
        lambda w: "/api/v1/sites",
        lambda w: {
            "owner_id": str(w.victim_household.id),
            "congestion_point_id": w.point_id,
            "meter_code": "EAN-STOLEN",
            "name": "x",
        },
    ),
    Row(
        "POST",
        "/api/v1/portfolios",
        lambda w: "/api/v1/portfolios",
        lambda w: {"aggregator_id": str(w.victim_aggregator.id), "congestion_point_id": w.point_id, "name": "x"},
    ),
]

OPERATOR_ROWS += [
    Row(
        "POST",
        "/api/v1/markets/{market_id:uuid}/clearings",
        lambda w: f"/api/v1/markets/{w.market_id}/clearings",
        lambda w: {"day": "2020-01-01"},
    ),
    Row("POST", "/api/v1/clearings/{run_id:uuid}/verify", lambda w: f"/api/v1/clearings/{w.run_id}/verify"),
]

PUBLIC_ROWS += [
    Row("GET", "/api/v1/markets/{market_id:uuid}/clearings", lambda w: f"/api/v1/markets/{w.market_id}/clearings"),
    Row("GET", "/api/v1/clearings/{run_id:uuid}", lambda w: f"/api/v1/clearings/{w.run_id}"),
    Row("GET", "/api/v1/clearings/{run_id:uuid}/prices", lambda w: f"/api/v1/clearings/{w.run_id}/prices"),
]

OWN_ROWS += [
    # Awards, outcomes and procurement of the run belong to the victims; callers see only their own.
    Row("GET", "/api/v1/clearings/{run_id:uuid}/awards", lambda w: f"/api/v1/clearings/{w.run_id}/awards"),
    Row(
        "GET", "/api/v1/clearings/{run_id:uuid}/offer-results", lambda w: f"/api/v1/clearings/{w.run_id}/offer-results"
    ),
    Row("GET", "/api/v1/clearings/{run_id:uuid}/procurement", lambda w: f"/api/v1/clearings/{w.run_id}/procurement"),
]

OWN_ROWS += [
    Row("GET", "/api/v1/flex-offers", lambda w: "/api/v1/flex-offers"),
    Row("GET", "/api/v1/flex-requests", lambda w: "/api/v1/flex-requests"),
    # The victim's site and the victim utility's congestion point, used by someone else.
    Row("POST", "/api/v1/flex-offers", lambda w: "/api/v1/flex-offers", lambda w: w.offer_body),
    Row(
        "POST", "/api/v1/flex-offers/batch", lambda w: "/api/v1/flex-offers/batch", lambda w: {"offers": [w.offer_body]}
    ),
    Row("POST", "/api/v1/flex-requests", lambda w: "/api/v1/flex-requests", lambda w: w.request_body),
]

# -- settlement ----------------------------------------------------------------------------------

FOREIGN_OBJECT_ROWS += [
    Row("GET", "/api/v1/statements/{statement_id:uuid}", lambda w: f"/api/v1/statements/{w.statement_id}"),
    Row(
        "GET",
        "/api/v1/statements/{statement_id:uuid}/document",
        lambda w: f"/api/v1/statements/{w.statement_id}/document?format=csv",
    ),
    Row(
        "GET",
        "/api/v1/participants/{participant_id:uuid}/statements",
        lambda w: f"/api/v1/participants/{w.victim_household.id}/statements",
    ),
    Row(
        "POST",
        "/api/v1/participants/{participant_id:uuid}/statements",
        lambda w: f"/api/v1/participants/{w.victim_household.id}/statements",
        lambda w: {"market_id": w.market_id, "period_start": w.day, "period_end": w.day},
    ),
    Row(
        "GET",
        "/api/v1/sites/{site_id:uuid}/baseline-nominations",
        lambda w: (
            f"/api/v1/sites/{w.victim_site_id}/baseline-nominations?start={w.day}T00:00:00Z&end={w.day}T23:00:00Z"
        ),
    ),
    Row(
        "POST",
        "/api/v1/sites/{site_id:uuid}/baseline-nominations",
        lambda w: f"/api/v1/sites/{w.victim_site_id}/baseline-nominations",
        lambda w: {"values": [{"start": "2099-01-01T12:00:00Z", "kw": "3"}]},
    ),
    Row(
        "GET",
        "/api/v1/sites/{site_id:uuid}/baseline-accuracy",
        lambda w: f"/api/v1/sites/{w.victim_site_id}/baseline-accuracy",
    ),
    Row(
        "GET",
        "/api/v1/flex-offers/{offer_id:uuid}/delivery",
        lambda w: f"/api/v1/flex-offers/{w.victim_offer_id}/delivery",
    ),
    Row(
        "GET",
        "/api/v1/flex-offers/{offer_id:uuid}/delivery/members",
        lambda w: f"/api/v1/flex-offers/{w.victim_offer_id}/delivery/members",
    ),
]

OPERATOR_ROWS += [
    Row(
        "PUT",
        "/api/v1/markets/{market_id:uuid}/settlement-terms",
        lambda w: f"/api/v1/markets/{w.market_id}/settlement-terms",
        lambda w: {"currency": "EUR", "penalty_price_per_mwh": "50"},
    ),
    Row(
        "POST",
        "/api/v1/markets/{market_id:uuid}/settlements",
        lambda w: f"/api/v1/markets/{w.market_id}/settlements",
        lambda w: {"day": PAST_DAY.isoformat()},
    ),
    Row("GET", "/api/v1/markets/{market_id:uuid}/settlements", lambda w: f"/api/v1/markets/{w.market_id}/settlements"),
    Row("GET", "/api/v1/settlements/{run_id:uuid}", lambda w: f"/api/v1/settlements/{w.settlement_id}"),
    Row(
        "POST",
        "/api/v1/markets/{market_id:uuid}/baseline-assignments",
        lambda w: f"/api/v1/markets/{w.market_id}/baseline-assignments",
        lambda w: {"method": "middle_x_of_y", "valid_from": "2099-01-01"},
    ),
    Row(
        "POST",
        "/api/v1/markets/{market_id:uuid}/deliveries",
        lambda w: f"/api/v1/markets/{w.market_id}/deliveries",
        lambda w: {"day": PAST_DAY.isoformat()},
    ),
    Row(
        "GET",
        "/api/v1/markets/{market_id:uuid}/deliveries",
        lambda w: f"/api/v1/markets/{w.market_id}/deliveries?day={w.day}",
    ),
    Row(
        "POST",
        "/api/v1/markets/{market_id:uuid}/statements",
        lambda w: f"/api/v1/markets/{w.market_id}/statements",
        lambda w: {"period_start": PAST_DAY.isoformat(), "period_end": PAST_DAY.isoformat()},
    ),
]

PUBLIC_ROWS += [
    Row("GET", "/api/v1/baseline-methods", lambda w: "/api/v1/baseline-methods"),
    Row(
        "GET",
        "/api/v1/markets/{market_id:uuid}/baseline-assignments",
        lambda w: f"/api/v1/markets/{w.market_id}/baseline-assignments",
    ),
    Row(
        "GET",
        "/api/v1/markets/{market_id:uuid}/settlement-terms",
        lambda w: f"/api/v1/markets/{w.market_id}/settlement-terms",
    ),
]

FOREIGN_OBJECT_ROWS += [
    Row(
        "GET",
        "/api/v1/participants/{participant_id:uuid}/ledger/balances",
        lambda w: f"/api/v1/participants/{w.victim_household.id}/ledger/balances",
    ),
    Row(
        "GET",
        "/api/v1/participants/{participant_id:uuid}/ledger/entries",
        lambda w: f"/api/v1/participants/{w.victim_household.id}/ledger/entries",
    ),
]
OPERATOR_ROWS += [
    Row(
        "GET",
        "/api/v1/markets/{market_id:uuid}/ledger/trial-balance",
        lambda w: f"/api/v1/markets/{w.market_id}/ledger/trial-balance",
    ),
]

FOREIGN_OBJECT_ROWS += [
    Row(
        "GET",
        "/api/v1/sites/{site_id:uuid}/readings",
        lambda w: f"/api/v1/sites/{w.victim_site_id}/readings?start={w.day}T00:00:00Z&end={w.day}T23:00:00Z",
    ),
    Row(
        "GET",
        "/api/v1/markets/{market_id:uuid}/meter-files/{file_id:uuid}",
        lambda w: f"/api/v1/markets/{w.market_id}/meter-files/{w.meter_file_id}",
    ),
]

# Uploading is for the operator and the utilities (the metered data responsible); a utility's file
# naming another utility's meter is refused row by row as an unknown meter. Its own test,
# tests/integration/test_metering.py::test_who_may_upload_and_read, covers every role.
ELSEWHERE_ROWS = [
    Row(
        "POST",
        "/api/v1/markets/{market_id:uuid}/meter-files",
        lambda w: f"/api/v1/markets/{w.market_id}/meter-files?format=csv",
    ),
]

OWN_ROWS += [
    Row("GET", "/api/v1/markets/{market_id:uuid}/meter-files", lambda w: f"/api/v1/markets/{w.market_id}/meter-files"),
    # The settled day's lines: callers see only those where they are the seller or the utility.
    Row("GET", "/api/v1/settlements/{run_id:uuid}/lines", lambda w: f"/api/v1/settlements/{w.settlement_id}/lines"),
]

# The audit log names every participant's actions: the operator (admin scope) alone reads it.
OPERATOR_ROWS += [
    Row("GET", "/api/v1/audit-events", lambda w: f"/api/v1/audit-events?object_id={w.victim_offer_id}"),
]

ALL_ROWS = FOREIGN_OBJECT_ROWS + OPERATOR_ROWS + PUBLIC_ROWS + OWN_ROWS + ELSEWHERE_ROWS


def _call(client: TestClient[Litestar], row: Row, w: World, who: Actor) -> Any:
    body = row.body(w) if row.body else None
    return client.request(row.method, row.path(w), json=body, headers=who.headers)


def _victim_data(w: World) -> list[str]:
    return [
        "777.123",
        "654.321",
        w.victim_site_meter,
        "Victim household",
        "Victim aggregator",
        w.victim_key_public_id,
        str(w.victim_aggregator.id),
    ]


def test_every_endpoint_is_in_the_matrix(app: Litestar) -> None:
    routes = {
        (method, route.path)
        for route in app.routes
        if route.path.startswith("/api/v1")
        for method in getattr(route, "methods", set())
        if method not in {"OPTIONS", "HEAD"}
    }
    covered = {(row.method, row.route) for row in ALL_ROWS}
    assert routes - covered == set(), "add the new endpoints to the authorization matrix"
    assert covered - routes == set(), "the matrix names endpoints that no longer exist"


@pytest.mark.parametrize("role", CALLER_ROLES, ids=lambda r: r.value)
@pytest.mark.parametrize("row", FOREIGN_OBJECT_ROWS, ids=lambda r: f"{r.method} {r.route}")
def test_foreign_objects_are_never_reachable(client: TestClient[Litestar], world: World, row: Row, role: Role) -> None:
    response = _call(client, row, world, world.callers[role])
    assert response.status_code in (403, 404), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    for secret in _victim_data(world):
        assert secret not in response.text


@pytest.mark.parametrize("row", FOREIGN_OBJECT_ROWS + OPERATOR_ROWS, ids=lambda r: f"{r.method} {r.route}")
def test_the_operator_reaches_every_object(client: TestClient[Litestar], world: World, row: Row) -> None:
    response = _call(client, row, world, world.operator)
    expected = (200, 201, 204) if row.operator_may else (403,)
    assert response.status_code in expected, response.text


@pytest.mark.parametrize("role", CALLER_ROLES, ids=lambda r: r.value)
@pytest.mark.parametrize("row", OPERATOR_ROWS, ids=lambda r: f"{r.method} {r.route}")
def test_only_the_operator_configures(client: TestClient[Litestar], world: World, row: Row, role: Role) -> None:
    response = _call(client, row, world, world.callers[role])
    assert response.status_code == 403, response.text


@pytest.mark.parametrize("role", [*CALLER_ROLES, Role.OPERATOR], ids=lambda r: r.value)
@pytest.mark.parametrize("row", PUBLIC_ROWS, ids=lambda r: f"{r.method} {r.route}")
def test_market_reference_data_is_readable(client: TestClient[Litestar], world: World, row: Row, role: Role) -> None:
    who = world.operator if role is Role.OPERATOR else world.callers[role]
    response = _call(client, row, world, who)
    assert response.status_code == 200, response.text
    for secret in _victim_data(world):
        assert secret not in response.text


@pytest.mark.parametrize("role", CALLER_ROLES, ids=lambda r: r.value)
@pytest.mark.parametrize("row", OWN_ROWS, ids=lambda r: f"{r.method} {r.route}")
def test_own_lists_and_creates_never_touch_the_victim(
    client: TestClient[Litestar], world: World, row: Row, role: Role
) -> None:
    response = _call(client, row, world, world.callers[role])
    if row.method == "POST":
        assert response.status_code in (403, 422), response.text
    else:
        assert response.status_code == 200, response.text
    for secret in [*_victim_data(world), world.victim_offer_id, world.victim_request_id]:
        assert secret not in response.text


def test_no_key_is_401_everywhere(client: TestClient[Litestar], world: World) -> None:
    for row in ALL_ROWS:
        body = row.body(world) if row.body else None
        response = client.request(row.method, row.path(world), json=body)
        assert response.status_code == 401, (row, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
