"""A cleared delivery day ready to settle, with hand-computable figures.

The book (one ISP, 17:00 local): the utility requests 800 kW up at up to 150/MWh; a data center's
site offers 500 kW at 50, an aggregator's portfolio (two household member sites) 500 kW at 80. Pay
as clear: the data center gets 500 kW and the portfolio 300 kW, both at 80/MWh.

Nominated baselines and meter readings for that ISP (15 minutes, so kW = 4 × kWh):

* data center site: baseline 1000 kW, import 150 kWh → actual 600 kW → delivered 400 kW;
* member A: baseline 200 kW, import 5 kWh → 20 kW → delivered 180 kW;
* member B: baseline 200 kW, import 20 kWh → 80 kW → delivered 120 kW (portfolio: 300 kW).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from market.orders.models import FlexOffer, FlexRequest
from market.participants.models import Role, Site
from market.participants.service import set_site_portfolio
from settlement.baselines.models import BaselineNomination, ResourceKind
from settlement.metering.models import MeterFile, MeterFileFormat, MeterFileStatus, MeterReading
from tests import factories
from tests.factories import Actor
from tests.integration.orders_world import World, build_world, iso, local

TERMS = {
    "currency": "EUR",
    "penalty_price_per_mwh": "100",
    "tolerance": "0.1",
    "operator_fee_per_mwh": "2",
    "aggregator_fee_share": "0.2",
}


@dataclass
class SettlementWorld:
    w: World
    member_a: Actor
    member_b: Actor
    dc_site: Site
    site_a: Site
    site_b: Site
    day: date
    clearing_id: str

    @property
    def isp(self) -> datetime:
        return local(self.day, 17).astimezone(UTC)

    def read(self, db: Session, site: Site, import_kwh: str, export_kwh: str = "0") -> None:
        """Store a reading as a new version (a correction if one exists), the way the meter service does."""
        current = db.scalar(
            select(MeterReading)
            .where(MeterReading.site_id == site.id, MeterReading.isp_start == self.isp)
            .order_by(MeterReading.version.desc())
            .limit(1)
        )
        file = _meter_file(db, self.w, f"{site.meter_code}:{import_kwh}:{uuid.uuid4()}")
        db.add(
            MeterReading(
                site_id=site.id,
                isp_start=self.isp,
                version=(current.version + 1) if current else 1,
                import_kwh=Decimal(import_kwh),
                export_kwh=Decimal(export_kwh),
                file_id=file.id,
            )
        )
        db.commit()


def _meter_file(db: Session, w: World, content: str) -> MeterFile:
    body = content.encode()
    file = MeterFile(
        id=uuid.uuid4(),
        market_id=w.market.id,
        uploaded_by=w.operator.id,
        filename="test.csv",
        format=MeterFileFormat.CSV,
        content=body,
        sha256=hashlib.sha256(body).hexdigest(),
        size_bytes=len(body),
        status=MeterFileStatus.DONE,
    )
    db.add(file)
    db.flush()
    return file


def _shift(db: Session, days: int) -> None:
    shift = timedelta(days=days)
    for order in [*db.scalars(select(FlexOffer)), *db.scalars(select(FlexRequest))]:
        order.period_start -= shift
        order.period_end -= shift
    db.commit()


def _created(response: Any) -> Any:
    assert response.status_code in (200, 201), response.text
    return response.json()


def _history(db: Session, w: World, day: date, loads_kwh: list[tuple[Site, str]], days: int) -> None:
    """Every ISP of the ``days`` days before ``day`` and of ``day`` itself at a constant load per site
    (the event ISP of ``day`` is written by the caller)."""
    file = _meter_file(db, w, f"history:{uuid.uuid4()}")
    rows: list[dict[str, Any]] = []
    for offset in range(days, -1, -1):
        start = local(day - timedelta(days=offset), 0).astimezone(UTC)
        end = local(day - timedelta(days=offset - 1), 0).astimezone(UTC)
        instant = start
        while instant < end:
            if not (offset == 0 and instant == local(day, 17).astimezone(UTC)):
                rows += [
                    {
                        "site_id": site.id,
                        "isp_start": instant,
                        "version": 1,
                        "import_kwh": Decimal(kwh),
                        "export_kwh": Decimal(0),
                        "file_id": file.id,
                    }
                    for site, kwh in loads_kwh
                ]
            instant += timedelta(minutes=15)
    db.execute(insert(MeterReading), rows)
    db.commit()


def build(
    client: TestClient[Litestar],
    db: Session,
    terms: dict[str, str] | None = None,
    method: str = "nominated",
    history_days: int = 0,
    unread: tuple[str, ...] = (),
) -> SettlementWorld:
    """The day of the module docstring. With ``method`` other than nominated, the sites ran at their
    baseline load (1000, 200, 200 kW) for ``history_days`` days before and all of the day but 17:00.
    Sites named in ``unread`` (``dc``, ``a``, ``b``) have no reading for the 17:00 ISP."""
    w = build_world(db)
    w.market.max_quantity_kw = Decimal(5000)
    db.commit()
    member_a = factories.actor(db, Role.HOUSEHOLD, name="Household A")
    member_b = factories.actor(db, Role.HOUSEHOLD, name="Household B")
    dc_site = factories.site(db, w.data_center, w.feeder)
    site_a = factories.site(db, member_a, w.feeder)
    site_b = factories.site(db, member_b, w.feeder)
    for member, site in ((member_a, site_a), (member_b, site_b)):
        set_site_portfolio(db, member.principal, site.id, w.portfolio.id)
    db.commit()
    start = iso(local(w.open_day, 17))
    _created(
        client.post(
            "/api/v1/flex-requests",
            headers=w.utility.headers,
            json={
                "congestion_point_id": str(w.feeder.id),
                "direction": "up",
                "max_price_per_mwh": "150",
                "isps": [{"start": start, "quantity_kw": "800"}],
            },
        )
    )
    for who, resource, price in (
        (w.data_center, {"site_id": str(dc_site.id)}, "50"),
        (w.aggregator, {"portfolio_id": str(w.portfolio.id)}, "80"),
    ):
        _created(
            client.post(
                "/api/v1/flex-offers",
                headers=who.headers,
                json={
                    **resource,
                    "direction": "up",
                    "price_per_mwh": price,
                    "isps": [{"start": start, "quantity_kw": "500"}],
                },
            )
        )
    _shift(db, 7)
    day = w.open_day - timedelta(days=7)
    _created(
        client.post(
            f"/api/v1/markets/{w.market.id}/baseline-assignments",
            headers=w.operator.headers,
            json={"method": method, "valid_from": (day - timedelta(days=60)).isoformat()},
        )
    )
    clearing = _created(
        client.post(
            f"/api/v1/markets/{w.market.id}/clearings", headers=w.operator.headers, json={"day": day.isoformat()}
        )
    )
    _created(
        client.put(f"/api/v1/markets/{w.market.id}/settlement-terms", headers=w.operator.headers, json=terms or TERMS)
    )
    world = SettlementWorld(w, member_a, member_b, dc_site, site_a, site_b, day, clearing["id"])
    for site, kw in ((dc_site, "1000"), (site_a, "200"), (site_b, "200")):
        db.add(
            BaselineNomination(
                resource_id=site.id,
                isp_start=world.isp,
                version=1,
                resource_kind=ResourceKind.SITE,
                market_id=w.market.id,
                kw=Decimal(kw),
                submitted_by=w.operator.id,
                submitted_at=world.isp - timedelta(days=2),
            )
        )
    db.commit()
    if history_days:
        _history(db, w, day, [(dc_site, "250"), (site_a, "50"), (site_b, "50")], history_days)
    for name, site, kwh in (("dc", dc_site, "150"), ("a", site_a, "5"), ("b", site_b, "20")):
        if name not in unread:
            world.read(db, site, kwh)
    return world
