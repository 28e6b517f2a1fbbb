"""The embedded default: the same hand-computed day settles on SQLite (bulk reads and writes take
the executemany path there; decimals are integer millionths), and an offer batch is all or nothing
there too."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.core.app import create_app
from market.core.audit import AuditEvent
from market.core.db import make_engine, make_session_factory
from market.core.migrate import upgrade
from market.orders.models import FlexOffer
from settlement.ledger.service import trial_balance
from tests.factories import in_process_settings
from tests.integration.orders_world import build_world
from tests.integration.settlement_world import build


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[tuple[TestClient[Litestar], Session]]:
    url = f"sqlite:///{tmp_path / 'flex.db'}"
    upgrade(url)
    settings = in_process_settings(url)
    engine = make_engine(url)
    with TestClient(app=create_app(settings)) as client, make_session_factory(engine)() as session:
        yield client, session
    engine.dispose()


def test_a_day_settles_on_sqlite(sqlite: tuple[TestClient[Litestar], Session]) -> None:
    client, db = sqlite
    sw = build(client, db, method="high_x_of_y", history_days=21)
    w = sw.w
    run = client.post(
        f"/api/v1/markets/{w.market.id}/settlements", headers=w.operator.headers, json={"day": sw.day.isoformat()}
    )
    assert run.status_code == 201, run.text
    assert (Decimal(run.json()["total_utilisation"]), Decimal(run.json()["total_penalty"])) == (
        Decimal(14),
        Decimal("1.25"),
    )

    def balance(who: object) -> Decimal:
        items = client.get(f"/api/v1/participants/{who.id}/ledger/balances", headers=who.headers).json()  # type: ignore[attr-defined]
        return sum((Decimal(b["balance"]) for b in items), Decimal(0))

    assert (balance(w.data_center), balance(w.utility), balance(sw.member_a), balance(sw.member_b)) == (
        Decimal("6.55"),
        Decimal("-12.75"),
        Decimal("2.81"),
        Decimal("1.87"),
    )
    sw.read(db, sw.dc_site, "100")
    again = client.post(
        f"/api/v1/markets/{w.market.id}/settlements",
        headers=w.operator.headers,
        json={"day": sw.day.isoformat(), "kind": "reconciliation"},
    )
    assert again.json()["version"] == 2
    assert balance(w.data_center) == Decimal("9.75")
    assert trial_balance(db, w.market.id) == {"EUR": Decimal(0)}
    period = {"period_start": sw.day.isoformat(), "period_end": sw.day.isoformat()}
    job = client.post(f"/api/v1/markets/{w.market.id}/statements", headers=w.operator.headers, json=period)
    assert job.json()["issued"] == 5
    [statement] = client.get(f"/api/v1/participants/{w.utility.id}/statements", headers=w.utility.headers).json()[
        "items"
    ]
    assert Decimal(statement["amount_due"]) == Decimal("-16.00")
    pdf = client.get(
        f"/api/v1/statements/{statement['id']}/document", params={"format": "pdf"}, headers=w.utility.headers
    )
    assert pdf.content.startswith(b"%PDF")


def test_a_refused_offer_batch_stores_nothing_on_sqlite(sqlite: tuple[TestClient[Litestar], Session]) -> None:
    # On SQLite the batch goes through executemany inside the same savepoint as on PostgreSQL.
    client, db = sqlite
    w = build_world(db)
    offers = [w.offer(price_per_mwh=str(100 + i)) for i in range(30)]
    offers[20] = w.offer(price_per_mwh="5000")
    refused = client.post("/api/v1/flex-offers/batch", json={"offers": offers}, headers=w.household.headers)
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["offers[20].price_per_mwh"]
    assert db.scalar(select(func.count()).select_from(FlexOffer)) == 0
    good = client.post("/api/v1/flex-offers/batch", json={"offers": offers[:20]}, headers=w.household.headers)
    assert good.status_code == 201, good.text
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(FlexOffer)) == 20
    assert db.scalar(select(func.count()).where(AuditEvent.action == "offer.create")) == 20
