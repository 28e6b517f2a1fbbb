"""A participant cannot set what the server owns: the price of an award, settlement amounts, another
participant's id, a run's version. Unknown fields are refused by name (every API struct forbids
them), and there is no endpoint that writes awards, lines or ledger entries at all."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from settlement.ledger.models import JournalEntry
from settlement.runs.models import SettlementLine
from tests.integration.orders_world import iso, local
from tests.integration.settlement_world import build


def _fields(response: object) -> list[str]:
    return [e["field"] for e in response.json()["errors"]]  # type: ignore[attr-defined]


def test_order_bodies_refuse_server_owned_fields(client: TestClient[Litestar], db: Session) -> None:
    sw = build(client, db)
    w = sw.w
    start = iso(local(w.open_day, 17))
    offer = {
        "site_id": str(sw.dc_site.id),
        "direction": "up",
        "price_per_mwh": "50",
        "isps": [{"start": start, "quantity_kw": "5"}],
    }
    for field, value in (
        ("seller_id", str(w.household.id)),  # another participant's id
        ("accepted_kw", "5"),  # an award
        ("award_price_per_mwh", "999"),
        ("revision", 7),
        ("submitted_at", "2020-01-01T00:00:00Z"),  # time priority
    ):
        refused = client.post("/api/v1/flex-offers", headers=w.data_center.headers, json={**offer, field: value})
        assert refused.status_code == 422, refused.text
        assert any(field in f for f in _fields(refused)), refused.text


def test_settlement_figures_cannot_be_written_by_a_client(client: TestClient[Litestar], db: Session) -> None:
    sw = build(client, db)
    w = sw.w
    run = client.post(
        f"/api/v1/markets/{w.market.id}/settlements", headers=w.operator.headers, json={"day": sw.day.isoformat()}
    ).json()
    lines = db.scalar(select(func.count()).select_from(SettlementLine))
    entries = db.scalar(select(func.count()).select_from(JournalEntry))
    # No write method exists on lines, runs or the ledger: 405 for every attempt, even by the operator.
    for method, path in (
        ("POST", f"/api/v1/settlements/{run['id']}/lines"),
        ("PUT", f"/api/v1/settlements/{run['id']}"),
        ("PATCH", f"/api/v1/settlements/{run['id']}"),
        ("DELETE", f"/api/v1/settlements/{run['id']}"),
        ("POST", f"/api/v1/participants/{w.data_center.id}/ledger/entries"),
    ):
        for who in (w.data_center, w.operator):
            response = client.request(method, path, headers=who.headers, json={"net": "1000000"})
            assert response.status_code == 405, (method, path, response.text)
    # A run request carries a day and a kind, nothing else: amounts and versions are refused by name.
    for field, value in (("version", 9), ("total_utilisation", "1000000"), ("terms", {"penalty_price_per_mwh": "0"})):
        refused = client.post(
            f"/api/v1/markets/{w.market.id}/settlements",
            headers=w.operator.headers,
            json={"day": sw.day.isoformat(), "kind": "reconciliation", field: value},
        )
        assert refused.status_code == 422, refused.text
        assert any(field in f for f in _fields(refused))
    # A statement request names a period; its amount is the server's.
    refused = client.post(
        f"/api/v1/participants/{w.data_center.id}/statements",
        headers=w.data_center.headers,
        json={
            "market_id": str(w.market.id),
            "period_start": sw.day.isoformat(),
            "period_end": sw.day.isoformat(),
            "amount_due": "1000000",
        },
    )
    assert refused.status_code == 422
    assert db.scalar(select(func.count()).select_from(SettlementLine)) == lines
    assert db.scalar(select(func.count()).select_from(JournalEntry)) == entries
    balances = client.get(f"/api/v1/participants/{w.data_center.id}/ledger/balances", headers=w.data_center.headers)
    assert sum(Decimal(b["balance"]) for b in balances.json()) == Decimal("6.55")


def test_api_keys_are_never_logged(client: TestClient[Litestar], db: Session, caplog: pytest.LogCaptureFixture) -> None:
    """The secret appears in no log record, whatever happens to the request it came with."""
    caplog.set_level(logging.DEBUG)
    sw = build(client, db)
    w = sw.w
    client.get("/api/v1/me", headers=w.household.headers)
    client.post("/api/v1/flex-offers", headers=w.household.headers, json={"broken": True})
    client.get("/api/v1/me", headers={"Authorization": w.household.headers["Authorization"] + "x"})
    secret = w.household.token[21:]  # fmk_<16 hex>_<43 chars>; the secret may itself hold "_"
    assert len(secret) == 43
    assert secret not in caplog.text
