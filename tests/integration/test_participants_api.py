"""Participants, sites and aggregator portfolios through the API."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy.orm import Session

from market.grid.models import CongestionPoint
from market.participants.models import Role
from tests import factories


class Grid:
    def __init__(self, db: Session) -> None:
        self.operator = factories.actor(db, Role.OPERATOR)
        self.utility = factories.actor(db, Role.UTILITY)
        market = factories.market(db, self.operator)
        self.root: CongestionPoint = factories.congestion_point(db, self.operator, market, self.utility)
        self.feeder: CongestionPoint = factories.congestion_point(db, self.operator, market, self.utility, self.root)


@pytest.fixture
def grid(db: Session) -> Grid:
    return Grid(db)


def _site(point: CongestionPoint, meter: str, **extra: Any) -> dict[str, Any]:
    return {"congestion_point_id": str(point.id), "meter_code": meter, "name": meter, **extra}


def test_operator_registers_participants_and_lists_by_role(client: TestClient[Litestar], grid: Grid) -> None:
    made = client.post(
        "/api/v1/participants",
        json={"name": "Home", "role": "household", "contact_email": "a@example.org"},
        headers=grid.operator.headers,
    )
    assert made.status_code == 201, made.text
    assert made.json()["role"] == "household"
    utilities = client.get("/api/v1/participants?role=utility", headers=grid.operator.headers).json()
    assert [p["id"] for p in utilities["items"]] == [str(grid.utility.id)]
    bad = client.post("/api/v1/participants", json={"name": "x", "role": "king"}, headers=grid.operator.headers)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "role"


def test_household_registers_a_site_and_sees_only_its_own(
    client: TestClient[Litestar], db: Session, grid: Grid
) -> None:
    home = factories.actor(db, Role.HOUSEHOLD)
    neighbour = factories.actor(db, Role.HOUSEHOLD)
    made = client.post(
        "/api/v1/sites", json=_site(grid.feeder, "EAN-1", assets=["battery", "pv"]), headers=home.headers
    )
    assert made.status_code == 201, made.text
    assert made.json()["owner_id"] == str(home.id)
    assert made.json()["assets"] == ["battery", "pv"]
    client.post("/api/v1/sites", json=_site(grid.root, "EAN-2"), headers=neighbour.headers)
    mine = client.get("/api/v1/sites", headers=home.headers).json()
    assert [s["meter_code"] for s in mine["items"]] == ["EAN-1"]
    by_point = client.get(f"/api/v1/sites?congestion_point_id={grid.root.id}", headers=grid.operator.headers).json()
    assert [s["meter_code"] for s in by_point["items"]] == ["EAN-2"]
    assert client.get("/api/v1/sites?congestion_point_id=nope", headers=home.headers).status_code == 422


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"meter_code": "EAN-1"}, "meter_code", 409),
        ({"congestion_point_id": "00000000-0000-0000-0000-000000000000"}, "congestion_point_id", 422),
        ({"assets": ["nuclear"]}, "assets[0]", 422),
        ({"name": ""}, "name", 422),
        ({"meter_code": "x" * 65}, "meter_code", 422),
    ],
)
def test_bad_sites_name_the_field(
    client: TestClient[Litestar], db: Session, grid: Grid, body: dict[str, Any], field: str, status: int
) -> None:
    home = factories.actor(db, Role.HOUSEHOLD)
    assert client.post("/api/v1/sites", json=_site(grid.feeder, "EAN-1"), headers=home.headers).status_code == 201
    response = client.post("/api/v1/sites", json={**_site(grid.feeder, "EAN-9"), **body}, headers=home.headers)
    assert response.status_code == status, response.text
    assert field in {e["field"] for e in response.json()["errors"]}
    assert client.get("/api/v1/sites", headers=home.headers).json()["total"] == 1


def test_roles_that_sell_nothing_cannot_own_sites(client: TestClient[Litestar], grid: Grid) -> None:
    response = client.post("/api/v1/sites", json=_site(grid.feeder, "EAN-U"), headers=grid.utility.headers)
    assert response.status_code == 403
    operator_without_owner = client.post(
        "/api/v1/sites", json=_site(grid.feeder, "EAN-O"), headers=grid.operator.headers
    )
    assert operator_without_owner.status_code == 422
    assert operator_without_owner.json()["errors"][0]["field"] == "owner_id"
    operator_for_utility = client.post(
        "/api/v1/sites", json=_site(grid.feeder, "EAN-O", owner_id=str(grid.utility.id)), headers=grid.operator.headers
    )
    assert operator_for_utility.status_code == 422


def test_portfolio_membership_flow(client: TestClient[Litestar], db: Session, grid: Grid) -> None:
    aggregator = factories.actor(db, Role.AGGREGATOR)
    home = factories.actor(db, Role.HOUSEHOLD)
    portfolio = client.post(
        "/api/v1/portfolios",
        json={"name": "P1", "congestion_point_id": str(grid.feeder.id)},
        headers=aggregator.headers,
    )
    assert portfolio.status_code == 201, portfolio.text
    pid = portfolio.json()["id"]
    site = client.post("/api/v1/sites", json=_site(grid.feeder, "EAN-M"), headers=home.headers).json()
    elsewhere = client.post("/api/v1/sites", json=_site(grid.root, "EAN-R"), headers=home.headers).json()

    # The aggregator cannot see the household's site until the household puts it in the portfolio.
    assert client.get(f"/api/v1/sites/{site['id']}", headers=aggregator.headers).status_code == 404
    joined = client.put(f"/api/v1/sites/{site['id']}/portfolio", json={"portfolio_id": pid}, headers=home.headers)
    assert joined.status_code == 200, joined.text
    assert client.get(f"/api/v1/sites/{site['id']}", headers=aggregator.headers).status_code == 200
    members = client.get(f"/api/v1/portfolios/{pid}", headers=aggregator.headers).json()["members"]
    assert [m["meter_code"] for m in members] == ["EAN-M"]
    in_portfolio = client.get(f"/api/v1/sites?portfolio_id={pid}", headers=aggregator.headers).json()
    assert [s["meter_code"] for s in in_portfolio["items"]] == ["EAN-M"]

    # A site at another congestion point cannot join; an aggregator cannot move the household's site.
    wrong_point = client.put(
        f"/api/v1/sites/{elsewhere['id']}/portfolio", json={"portfolio_id": pid}, headers=home.headers
    )
    assert wrong_point.status_code == 422
    assert wrong_point.json()["errors"][0]["field"] == "portfolio_id"
    assert (
        client.put(
            f"/api/v1/sites/{site['id']}/portfolio", json={"portfolio_id": None}, headers=aggregator.headers
        ).status_code
        == 404
    )

    removed = client.delete(f"/api/v1/portfolios/{pid}/members/{site['id']}", headers=aggregator.headers)
    assert removed.status_code == 204
    assert client.get(f"/api/v1/portfolios/{pid}", headers=aggregator.headers).json()["members"] == []
    assert (
        client.delete(f"/api/v1/portfolios/{pid}/members/{site['id']}", headers=aggregator.headers).status_code == 404
    )
    duplicate = client.post(
        "/api/v1/portfolios",
        json={"name": "P1", "congestion_point_id": str(grid.feeder.id)},
        headers=aggregator.headers,
    )
    assert duplicate.status_code == 409
    households_cannot = client.post(
        "/api/v1/portfolios", json={"name": "P2", "congestion_point_id": str(grid.feeder.id)}, headers=home.headers
    )
    assert households_cannot.status_code == 403


def test_pagination_bounds(client: TestClient[Litestar], db: Session, grid: Grid) -> None:
    home = factories.actor(db, Role.HOUSEHOLD)
    for i in range(5):
        client.post("/api/v1/sites", json=_site(grid.feeder, f"EAN-{i}"), headers=home.headers)
    page = client.get("/api/v1/sites?limit=2&offset=2", headers=home.headers).json()
    assert page["total"] == 5
    assert [s["meter_code"] for s in page["items"]] == ["EAN-2", "EAN-3"]
    too_big = client.get("/api/v1/sites?limit=1001", headers=home.headers)
    assert too_big.status_code == 422
    assert too_big.json()["errors"][0]["field"] == "query.limit"
    assert client.get("/api/v1/sites?offset=-1", headers=home.headers).status_code == 422
