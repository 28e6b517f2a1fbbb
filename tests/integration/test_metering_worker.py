"""A meter file through a real Celery worker on Redis: upload (202) → worker → readings in PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from market.core.app import create_app
from market.core.config import Settings
from market.participants.models import Role
from settlement.delivery.models import DeliveryLine
from settlement.ledger.service import trial_balance
from settlement.metering.models import MeterReading
from tests import factories
from tests.integration.settlement_world import build
from tests.integration.workers import celery_worker

MIDNIGHT = datetime(2026, 5, 31, 22, tzinfo=UTC)  # 2026-06-01 00:00 in Amsterdam


@pytest.fixture
def worker(settings: Settings) -> Iterator[Settings]:
    """A Celery worker consuming a queue of this test only (tests/integration/workers.py)."""
    with celery_worker(settings, "flex-metering") as running:
        yield running.settings


def test_an_uploaded_file_is_processed_by_the_worker(worker: Settings, db: Session) -> None:
    operator = factories.actor(db, Role.OPERATOR)
    utility = factories.actor(db, Role.UTILITY)
    household = factories.actor(db, Role.HOUSEHOLD)
    market = factories.market(db, operator)
    site = factories.site(db, household, factories.congestion_point(db, operator, market, utility))
    rows = [f"{site.meter_code},{(MIDNIGHT + timedelta(minutes=15 * k)).isoformat()},{k}.5,0" for k in range(96)]
    rows.append(f"{site.meter_code},2026-06-01T00:07:00+02:00,1,0")  # off the grid: rejected
    body = ("meter,isp_start,import_kwh,export_kwh\n" + "\n".join(rows) + "\n").encode()

    app = create_app(worker)
    assert app.state.tasks_in_process is False
    with TestClient(app=app) as client:
        made = client.post(
            f"/api/v1/markets/{market.id}/meter-files",
            params={"format": "csv", "filename": "day.csv"},
            content=body,
            headers={**utility.headers, "Content-Type": "text/csv"},
        )
        assert made.status_code == 202, made.text
        assert made.json()["status"] == "pending"
        url = f"/api/v1/markets/{market.id}/meter-files/{made.json()['id']}"

        def processed() -> bool:
            return bool(client.get(url, headers=utility.headers).json()["status"] != "pending")

        deadline = time.monotonic() + 20
        while not processed():
            assert time.monotonic() < deadline, "the worker did not process the file within 20 s"
            time.sleep(0.2)
        file = client.get(url, headers=utility.headers).json()
    assert file["status"] == "done"
    report = file["report"]
    assert (report["rows"], report["stored"], report["rejected"]) == (97, 96, 1)
    assert report["issue_counts"] == {"misaligned_timestamp": 1}
    db.expire_all()
    stored = db.execute(
        select(MeterReading.isp_start, MeterReading.import_kwh, MeterReading.version)
        .where(MeterReading.site_id == site.id)
        .order_by(MeterReading.isp_start)
    ).all()
    assert len(stored) == 96
    assert (stored[0][0], stored[0][1], stored[0][2]) == (MIDNIGHT, Decimal("0.5"), 1)
    assert (stored[-1][0], stored[-1][1]) == (MIDNIGHT + timedelta(minutes=15 * 95), Decimal("95.5"))


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


def test_a_day_settles_end_to_end_through_the_worker(
    worker: Settings, client: TestClient[Litestar], db: Session
) -> None:
    """Meter file upload → worker stores readings → delivery → initial settlement → correction file →
    reconciliation, every step queued by the API and run by the worker; the money is the
    hand-computed money of tests/integration/test_settlement_flow.py."""
    sw = build(client, db, unread=("dc", "a", "b"))
    w = sw.w
    with TestClient(app=create_app(worker)) as queued:

        def upload(rows: list[tuple[str, str]]) -> None:
            lines = [f"{meter},{sw.isp.isoformat()},{kwh},0" for meter, kwh in rows]
            body = ("meter,isp_start,import_kwh,export_kwh\n" + "\n".join(lines) + "\n").encode()
            made = queued.post(
                f"/api/v1/markets/{w.market.id}/meter-files",
                params={"format": "csv"},
                content=body,
                headers={**w.utility.headers, "Content-Type": "text/csv"},
            )
            assert made.status_code == 202, made.text
            url = f"/api/v1/markets/{w.market.id}/meter-files/{made.json()['id']}"
            _wait(lambda: queued.get(url, headers=w.utility.headers).json()["status"] == "done", "the meter file")

        def settle(kind: str, version: int) -> None:
            made = queued.post(
                f"/api/v1/markets/{w.market.id}/settlements",
                headers=w.operator.headers,
                json={"day": sw.day.isoformat(), "kind": kind},
            )
            assert made.status_code == 202, made.text

            def done() -> bool:
                runs = queued.get(f"/api/v1/markets/{w.market.id}/settlements", headers=w.operator.headers).json()
                return any(r["version"] == version and r["status"] == "done" for r in runs["items"])

            _wait(done, f"settlement run version {version}")

        def balance(who: Any) -> Decimal:
            items = queued.get(f"/api/v1/participants/{who.id}/ledger/balances", headers=who.headers).json()
            return sum((Decimal(b["balance"]) for b in items), Decimal(0))

        upload([(sw.dc_site.meter_code, "150"), (sw.site_a.meter_code, "5"), (sw.site_b.meter_code, "20")])
        verified = queued.post(
            f"/api/v1/markets/{w.market.id}/deliveries", headers=w.operator.headers, json={"day": sw.day.isoformat()}
        )
        assert verified.status_code == 202, verified.text
        _wait(
            lambda: bool(
                queued.get(
                    f"/api/v1/markets/{w.market.id}/deliveries",
                    params={"day": sw.day.isoformat()},
                    headers=w.operator.headers,
                ).json()
            ),
            "the delivery computation",
        )
        db.expire_all()
        delivered = sorted(db.scalars(select(DeliveryLine.delivered_kw)))
        assert delivered == [Decimal(300), Decimal(400)]

        settle("initial", 1)
        assert (balance(w.data_center), balance(w.utility), balance(sw.member_a)) == (
            Decimal("6.55"),
            Decimal("-12.75"),
            Decimal("2.81"),
        )
        upload([(sw.dc_site.meter_code, "100")])  # a correction: version 2 of the data center's reading
        settle("reconciliation", 2)
        assert (balance(w.data_center), balance(w.utility)) == (Decimal("9.75"), Decimal("-16.00"))
    db.expire_all()
    assert trial_balance(db, w.market.id) == {"EUR": Decimal(0)}
