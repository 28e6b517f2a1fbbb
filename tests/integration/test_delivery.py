"""Delivery verification through the API, with a history baseline and with missing meter data.

The day of tests/integration/settlement_world.py, but the market's default method is PJM-style
high 4 of 5 with the same-day additive adjustment. Every site ran at a constant load for 45 days
and all of the event day except the 17:00 ISP, so every like-day's event-window mean is the
constant, the 4 highest average to it, and the adjustment window (13:00–16:00) differs by 0:
baselines 1000, 200 and 200 kW, the same as the nominations of the flow tests, so the same money.
"""

from __future__ import annotations

import uuid
from datetime import UTC, timedelta
from decimal import Decimal

from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.clearing.models import ClearingRun, FlexOrderAward, RunStatus
from settlement.delivery.models import DeliveryComputation, DeliveryLine
from settlement.metering.models import MeterReading
from settlement.runs.models import SettlementLine
from tests.integration.orders_world import local
from tests.integration.settlement_world import SettlementWorld, build


def _offer_ids(client: TestClient[Litestar], sw: SettlementWorld) -> tuple[str, str]:
    awards = client.get(f"/api/v1/clearings/{sw.clearing_id}/awards", headers=sw.w.operator.headers).json()["items"]
    by_seller = {a["seller_id"]: a["offer_id"] for a in awards}
    return by_seller[str(sw.w.data_center.id)], by_seller[str(sw.w.aggregator.id)]


def test_high_4_of_5_verifies_delivery_and_settles_the_same_money(client: TestClient[Litestar], db: Session) -> None:
    sw = build(client, db, method="high_x_of_y", history_days=45)
    w = sw.w
    made = client.post(
        f"/api/v1/markets/{w.market.id}/deliveries", headers=w.operator.headers, json={"day": sw.day.isoformat()}
    )
    assert made.status_code == 201, made.text
    assert made.json()["version"] == 1
    dc_offer, portfolio_offer = _offer_ids(client, sw)

    [line] = client.get(f"/api/v1/flex-offers/{dc_offer}/delivery", headers=w.data_center.headers).json()
    assert (line["baseline_kw"], line["actual_kw"], line["delivered_kw"]) == ("1000", "600", "400")
    assert (line["status"], line["method"], line["method_version"]) == ("ok", "high_x_of_y", 1)
    [portfolio] = client.get(f"/api/v1/flex-offers/{portfolio_offer}/delivery", headers=w.aggregator.headers).json()
    assert (portfolio["baseline_kw"], portfolio["actual_kw"], portfolio["delivered_kw"]) == ("400", "100", "300")
    members = client.get(f"/api/v1/flex-offers/{portfolio_offer}/delivery/members", headers=w.aggregator.headers)
    assert sorted(m["delivered_kw"] for m in members.json()) == ["120", "180"]
    # The utility of the congestion point may read it too; a member household may not read the offer.
    assert client.get(f"/api/v1/flex-offers/{dc_offer}/delivery", headers=w.utility.headers).status_code == 200
    assert client.get(f"/api/v1/flex-offers/{dc_offer}/delivery", headers=sw.member_a.headers).status_code == 404

    # Verifying again with unchanged inputs makes no new version.
    again = client.post(
        f"/api/v1/markets/{w.market.id}/deliveries", headers=w.operator.headers, json={"day": sw.day.isoformat()}
    )
    assert again.json()["id"] == made.json()["id"]

    run = client.post(
        f"/api/v1/markets/{w.market.id}/settlements", headers=w.operator.headers, json={"day": sw.day.isoformat()}
    ).json()
    assert (Decimal(run["total_utilisation"]), Decimal(run["total_penalty"])) == (Decimal(14), Decimal("1.25"))


def test_a_run_writes_each_award_once_and_serves_its_delivery(client: TestClient[Litestar], db: Session) -> None:
    """Settled without an earlier verification, the run's own (embedded) computation writes no delivery_line
    rows: its settlement lines carry each award's delivery, and the delivery API reads them from there."""
    sw = build(client, db, method="high_x_of_y", history_days=45)
    w = sw.w
    run = client.post(
        f"/api/v1/markets/{w.market.id}/settlements", headers=w.operator.headers, json={"day": sw.day.isoformat()}
    ).json()
    assert (Decimal(run["total_utilisation"]), Decimal(run["total_penalty"])) == (Decimal(14), Decimal("1.25"))
    computation = db.get(DeliveryComputation, uuid.UUID(run["delivery_computation_id"]))
    assert computation is not None
    assert computation.embedded
    stored = db.scalar(
        select(func.count()).select_from(DeliveryLine).where(DeliveryLine.computation_id == computation.id)
    )
    assert stored == 0
    assert computation.line_count == db.scalar(
        select(func.count()).select_from(SettlementLine).where(SettlementLine.run_id == uuid.UUID(run["id"]))
    )

    dc_offer, portfolio_offer = _offer_ids(client, sw)
    [line] = client.get(f"/api/v1/flex-offers/{dc_offer}/delivery", headers=w.data_center.headers).json()
    assert line["computation_id"] == str(computation.id)
    assert (line["baseline_kw"], line["actual_kw"], line["delivered_kw"], line["ordered_kw"]) == (
        "1000", "600", "400", "500",
    )  # fmt: skip
    assert (line["status"], line["method"], line["method_version"], line["direction"]) == (
        "ok", "high_x_of_y", 1, "up",
    )  # fmt: skip
    [portfolio] = client.get(f"/api/v1/flex-offers/{portfolio_offer}/delivery", headers=w.aggregator.headers).json()
    assert (portfolio["baseline_kw"], portfolio["actual_kw"], portfolio["delivered_kw"]) == ("400", "100", "300")
    members = client.get(f"/api/v1/flex-offers/{portfolio_offer}/delivery/members", headers=w.aggregator.headers)
    assert sorted(m["delivered_kw"] for m in members.json()) == ["120", "180"]
    assert client.get(f"/api/v1/flex-offers/{dc_offer}/delivery", headers=sw.member_a.headers).status_code == 404

    # Verifying the day afterwards finds the run's computation: same content, no new version.
    again = client.post(
        f"/api/v1/markets/{w.market.id}/deliveries", headers=w.operator.headers, json={"day": sw.day.isoformat()}
    )
    assert again.json()["id"] == str(computation.id)


def test_missing_readings_count_as_not_delivered(client: TestClient[Litestar], db: Session) -> None:
    sw = build(client, db, method="high_x_of_y", history_days=45, unread=("b",))
    w = sw.w
    client.post(
        f"/api/v1/markets/{w.market.id}/deliveries", headers=w.operator.headers, json={"day": sw.day.isoformat()}
    )
    _, portfolio_offer = _offer_ids(client, sw)
    [line] = client.get(f"/api/v1/flex-offers/{portfolio_offer}/delivery", headers=w.aggregator.headers).json()
    # Member B's ISP is unverifiable: it delivered 0; the portfolio line says so and sums what is known.
    assert (line["status"], line["delivered_kw"], line["actual_kw"]) == ("missing_readings", "180", None)
    # Unchanged inputs, the same computation: the content hash is canonical (equal frames, equal hash),
    # also with mixed statuses and null actuals (an Arrow IPC hash was not, and made a new version each time).
    for _ in range(3):
        again = client.post(
            f"/api/v1/markets/{w.market.id}/deliveries", headers=w.operator.headers, json={"day": sw.day.isoformat()}
        )
        assert again.status_code in (200, 201), again.text
        assert again.json()["version"] == 1
    listed = client.get(
        f"/api/v1/markets/{w.market.id}/deliveries", headers=w.operator.headers, params={"day": sw.day.isoformat()}
    )
    assert [c["version"] for c in listed.json()] == [1]


def test_too_little_history_means_no_baseline(client: TestClient[Litestar], db: Session) -> None:
    sw = build(client, db, method="high_x_of_y", history_days=2)  # 4 of 5 needs at least 4 like-days
    w = sw.w
    client.post(
        f"/api/v1/markets/{w.market.id}/deliveries", headers=w.operator.headers, json={"day": sw.day.isoformat()}
    )
    dc_offer, _ = _offer_ids(client, sw)
    [line] = client.get(f"/api/v1/flex-offers/{dc_offer}/delivery", headers=w.data_center.headers).json()
    assert (line["status"], line["baseline_kw"], line["delivered_kw"]) == ("no_baseline", None, "0")


def test_days_with_earlier_awards_are_not_like_days(client: TestClient[Litestar], db: Session) -> None:
    """A week before (the same weekday), at 17:00, the data center ran at 2000 kW (500 kWh). As a
    like-day that day is among the X highest: on a weekday (high 4 of 5) the baseline is
    (2000 + 3 × 1000) / 4 = 1250 kW, on a weekend (2 of 3) (2000 + 1000) / 2 = 1500 kW. Once that day
    is known as an event day of the site (an award then), it is excluded: 1000 kW again."""
    sw = build(client, db, method="high_x_of_y", history_days=45)
    w = sw.w
    week_before = sw.day - timedelta(days=7)
    earlier_isp = local(week_before, 17).astimezone(UTC)
    file_id = db.scalar(select(MeterReading.file_id).where(MeterReading.site_id == sw.dc_site.id).limit(1))
    db.add(
        MeterReading(
            site_id=sw.dc_site.id,
            isp_start=earlier_isp,
            version=2,
            import_kwh=Decimal(500),
            export_kwh=Decimal(0),
            file_id=file_id,
        )
    )
    db.commit()
    dc_offer, _ = _offer_ids(client, sw)

    def baseline() -> str:
        client.post(
            f"/api/v1/markets/{w.market.id}/deliveries", headers=w.operator.headers, json={"day": sw.day.isoformat()}
        )
        [line] = client.get(f"/api/v1/flex-offers/{dc_offer}/delivery", headers=w.data_center.headers).json()
        return str(line["baseline_kw"])

    x = 4 if sw.day.weekday() < 5 else 2
    assert baseline() == str((2000 + (x - 1) * 1000) // x)
    clearing = ClearingRun(
        id=uuid.uuid4(),
        market_id=w.market.id,
        delivery_day=week_before,
        horizon_start=earlier_isp,
        horizon_end=earlier_isp + timedelta(minutes=15),
        gate_closure_at=earlier_isp - timedelta(days=1),
        status=RunStatus.DONE,
        pricing_rule="pay_as_clear",
        solver="test",
        input_hash="0" * 64,
        result_hash="0" * 64,
        welfare=Decimal(0),
        offer_count=1,
        request_count=1,
        award_count=1,
        book={},
        triggered_by="test",
        duration_ms=0,
    )
    db.add(clearing)
    db.flush()
    db.add(
        FlexOrderAward(
            run_id=clearing.id,
            offer_id=uuid.UUID(dc_offer),
            isp_start=earlier_isp,
            seller_id=w.data_center.id,
            congestion_point_id=w.feeder.id,
            direction="up",
            accepted_kw=Decimal(100),
            price_per_mwh=Decimal(80),
        )
    )
    db.commit()
    assert baseline() == "1000"
