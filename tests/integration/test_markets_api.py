"""Markets and the grid through the API: happy paths and every rule's error naming its field."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy.orm import Session

from market.participants.models import Role
from tests import factories
from tests.factories import Actor

MARKET = {
    "code": "nl-north",
    "name": "NL north",
    "timezone": "Europe/Amsterdam",
    "currency": "EUR",
    "pricing_rule": "pay_as_clear",
    "gate_closure_kind": "day_ahead",
    "day_ahead_gate_time": "12:00:00",
    "min_price_per_mwh": "0",
    "max_price_per_mwh": "3000.50",
    "max_quantity_kw": "5000",
}


@pytest.fixture
def operator(db: Session) -> Actor:
    return factories.actor(db, Role.OPERATOR)


def _fields(response: Any) -> dict[str, str]:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return {e["field"]: e["reason"] for e in response.json().get("errors", [])}


def test_operator_creates_and_reads_a_market(client: TestClient[Litestar], operator: Actor) -> None:
    created = client.post("/api/v1/markets", json=MARKET, headers=operator.headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["max_price_per_mwh"] == "3000.5"
    assert body["isp_minutes"] == 15
    read = client.get(f"/api/v1/markets/{body['id']}", headers=operator.headers).json()
    assert read == body
    listed = client.get("/api/v1/markets", headers=operator.headers).json()
    assert listed["total"] == 1
    assert listed["items"][0]["code"] == "nl-north"


@pytest.mark.parametrize(
    ("change", "field", "status"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone", 422),
        ({"currency": "euro"}, "currency", 422),
        ({"isp_minutes": 7}, "isp_minutes", 422),
        ({"pricing_rule": "pay_as_you_like"}, "pricing_rule", 422),
        ({"day_ahead_gate_time": None}, "day_ahead_gate_time", 422),
        ({"gate_closure_kind": "intraday"}, "intraday_lead_minutes", 422),
        ({"min_price_per_mwh": "4000"}, "min_price_per_mwh", 422),
        ({"max_price_per_mwh": "NaN"}, "max_price_per_mwh", 422),
        ({"max_price_per_mwh": "1.0000001"}, "max_price_per_mwh", 422),
        ({"max_quantity_kw": "0"}, "max_quantity_kw", 422),
        ({"max_quantity_kw": "-5"}, "max_quantity_kw", 422),
        ({"max_quantity_kw": "abc"}, "max_quantity_kw", 422),
        ({"code": "has space"}, "code", 422),
        ({"created_at": "2026-01-01T00:00:00Z"}, "created_at", 422),
        ({"id": "00000000-0000-0000-0000-000000000001"}, "id", 422),
    ],
)
def test_bad_market_names_the_field_and_stores_nothing(
    client: TestClient[Litestar], operator: Actor, change: dict[str, Any], field: str, status: int
) -> None:
    response = client.post("/api/v1/markets", json={**MARKET, **change}, headers=operator.headers)
    assert response.status_code == status, response.text
    fields = _fields(response)
    assert field in fields, fields
    assert fields[field]
    assert client.get("/api/v1/markets", headers=operator.headers).json()["total"] == 0


def test_duplicate_market_code_is_a_conflict(client: TestClient[Litestar], operator: Actor) -> None:
    assert client.post("/api/v1/markets", json=MARKET, headers=operator.headers).status_code == 201
    again = client.post("/api/v1/markets", json=MARKET, headers=operator.headers)
    assert again.status_code == 409
    assert _fields(again) == {"code": "already used by another market"}


def test_update_checks_the_rules_of_the_result(client: TestClient[Litestar], operator: Actor) -> None:
    market = client.post("/api/v1/markets", json=MARKET, headers=operator.headers).json()
    path = f"/api/v1/markets/{market['id']}"
    bad = client.patch(path, json={"gate_closure_kind": "intraday"}, headers=operator.headers)
    assert bad.status_code == 422
    assert "intraday_lead_minutes" in _fields(bad)
    good = client.patch(
        path, json={"gate_closure_kind": "intraday", "intraday_lead_minutes": 30}, headers=operator.headers
    )
    assert good.status_code == 200, good.text
    assert good.json()["intraday_lead_minutes"] == 30
    assert client.patch(path, json={"timezone": "UTC"}, headers=operator.headers).status_code == 422


@pytest.mark.parametrize(
    ("day", "count", "first_gate"),
    [
        ("2026-03-29", 92, "2026-03-28T11:00:00Z"),
        ("2026-06-15", 96, "2026-06-14T10:00:00Z"),
        ("2026-10-25", 100, "2026-10-24T10:00:00Z"),
    ],
)
def test_delivery_day_has_the_clock_change_isp_counts(
    client: TestClient[Litestar], operator: Actor, day: str, count: int, first_gate: str
) -> None:
    market = client.post("/api/v1/markets", json=MARKET, headers=operator.headers).json()
    response = client.get(f"/api/v1/markets/{market['id']}/delivery-days/{day}", headers=operator.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["isp_count"] == count == len(body["isp_starts"])
    assert body["gate_closures"][0] == first_gate
    bad = client.get(f"/api/v1/markets/{market['id']}/delivery-days/2026-13-01", headers=operator.headers)
    assert bad.status_code == 422
    assert "path.day" in _fields(bad)


def test_grid_tree_and_relief(client: TestClient[Litestar], db: Session, operator: Actor) -> None:
    utility = factories.actor(db, Role.UTILITY)
    household = factories.actor(db, Role.HOUSEHOLD)
    market = client.post("/api/v1/markets", json=MARKET, headers=operator.headers).json()
    points = f"/api/v1/markets/{market['id']}/congestion-points"

    def add(code: str, kind: str, parent: str | None) -> dict[str, Any]:
        body = {"code": code, "name": code, "kind": kind, "utility_id": str(utility.id), "parent_id": parent}
        response = client.post(points, json=body, headers=operator.headers)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    zone = add("Z", "zone", None)
    trafo = add("T", "transformer", zone["id"])
    feeder = add("F", "feeder", trafo["id"])
    relief = client.get(f"/api/v1/markets/{market['id']}/relief", headers=household.headers).json()
    pairs = {(r["source_id"], r["target_id"]): r["factor"] for r in relief}
    assert pairs == {
        (zone["id"], zone["id"]): "1",
        (trafo["id"], trafo["id"]): "1",
        (trafo["id"], zone["id"]): "1",
        (feeder["id"], feeder["id"]): "1",
        (feeder["id"], trafo["id"]): "1",
        (feeder["id"], zone["id"]): "1",
    }
    # A meshed matrix row for the feeder replaces its radial path; the others keep theirs.
    matrix = {
        "entries": [
            {"source_id": feeder["id"], "target_id": feeder["id"], "factor": "1"},
            {"source_id": feeder["id"], "target_id": zone["id"], "factor": "0.35"},
        ]
    }
    put = client.put(f"/api/v1/markets/{market['id']}/sensitivities", json=matrix, headers=operator.headers)
    assert put.status_code == 200, put.text
    pairs = {(r["source_id"], r["target_id"]): (r["factor"], r["from_matrix"]) for r in put.json()}
    assert pairs[(feeder["id"], zone["id"])] == ("0.35", True)
    assert (feeder["id"], trafo["id"]) not in pairs
    assert pairs[(trafo["id"], zone["id"])] == ("1", False)

    listed = client.get(points, headers=household.headers).json()
    assert [p["code"] for p in listed["items"]] == ["F", "T", "Z"]
    assert client.get(f"/api/v1/congestion-points/{feeder['id']}", headers=household.headers).json() == feeder


def test_grid_rules_name_their_field(client: TestClient[Litestar], db: Session, operator: Actor) -> None:
    utility = factories.actor(db, Role.UTILITY)
    household = factories.actor(db, Role.HOUSEHOLD)
    market = factories.market(db, operator)
    other_market = factories.market(db, operator)
    foreign_point = factories.congestion_point(db, operator, other_market, utility)
    path = f"/api/v1/markets/{market.id}/congestion-points"
    base = {"code": "A", "name": "a", "kind": "feeder", "utility_id": str(utility.id)}

    not_utility = client.post(path, json={**base, "utility_id": str(household.id)}, headers=operator.headers)
    assert "utility_id" in _fields(not_utility)
    cross_market = client.post(path, json={**base, "parent_id": str(foreign_point.id)}, headers=operator.headers)
    assert "parent_id" in _fields(cross_market)
    assert client.post(path, json=base, headers=operator.headers).status_code == 201
    duplicate = client.post(path, json=base, headers=operator.headers)
    assert duplicate.status_code == 409
    assert "code" in _fields(duplicate)

    matrix_path = f"/api/v1/markets/{market.id}/sensitivities"
    point_id = client.get(path, headers=operator.headers).json()["items"][0]["id"]
    bad = client.put(
        matrix_path,
        headers=operator.headers,
        json={
            "entries": [
                {"source_id": point_id, "target_id": str(foreign_point.id), "factor": "0.5"},
                {"source_id": point_id, "target_id": point_id, "factor": "Infinity"},
                {"source_id": point_id, "target_id": point_id, "factor": "1"},
            ]
        },
    )
    assert bad.status_code == 422
    assert set(_fields(bad)) == {"entries[0].target_id", "entries[1].factor", "entries[2]"}
    assert client.get(f"/api/v1/markets/{market.id}/relief", headers=operator.headers).json()[0]["from_matrix"] is False
    missing = client.post(f"/api/v1/markets/{other_market.id}0/congestion-points", json=base, headers=operator.headers)
    assert missing.status_code == 404
