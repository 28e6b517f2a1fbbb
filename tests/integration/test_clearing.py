"""Clearing end to end: orders in the database -> clearing -> awards and prices through the API,
in-process and by a real Celery worker on Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.clearing import tasks
from market.clearing.models import ClearingRun, FlexOrderAward
from market.core.config import JobSettings, Settings
from market.core.jobs import celery_app, configure
from market.orders.models import FlexOffer, FlexRequest
from tests.integration.orders_world import World, build_world, iso, local

REDIS_URL = os.environ.get("FLEX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def w(db: Session) -> World:
    return build_world(db)


def _book(client: TestClient[Litestar], w: World) -> None:
    """A request of 8 kW at 150/MWh at 17:00 and three offers; moved a week back so its gate has closed."""
    start = iso(local(w.open_day, 17))
    request = client.post(
        "/api/v1/flex-requests",
        headers=w.utility.headers,
        json={
            "congestion_point_id": str(w.feeder.id),
            "direction": "up",
            "max_price_per_mwh": "150",
            "isps": [{"start": start, "quantity_kw": "8"}],
        },
    )
    assert request.status_code == 201, request.text
    for price, who, resource in (
        ("50", w.household, {"site_id": str(w.site.id)}),
        ("80", w.aggregator, {"portfolio_id": str(w.portfolio.id)}),
        ("200", w.household, {"site_id": str(w.site.id)}),
    ):
        offer = client.post(
            "/api/v1/flex-offers",
            headers=who.headers,
            json={
                **resource,
                "direction": "up",
                "price_per_mwh": price,
                "isps": [{"start": start, "quantity_kw": "5"}],
            },
        )
        assert offer.status_code == 201, offer.text


def _shift_into_the_past(db: Session, days: int = 7) -> None:
    shift = timedelta(days=days)
    for order in [*db.scalars(select(FlexOffer)), *db.scalars(select(FlexRequest))]:
        order.period_start -= shift
        order.period_end -= shift
    db.commit()


def test_operator_clears_a_day_and_participants_read_their_awards(
    client: TestClient[Litestar], w: World, db: Session
) -> None:
    _book(client, w)
    too_early = client.post(
        f"/api/v1/markets/{w.market.id}/clearings", headers=w.operator.headers, json={"day": w.open_day.isoformat()}
    )
    assert too_early.status_code == 409
    assert too_early.json()["errors"][0]["field"] == "day"

    _shift_into_the_past(db)
    day = (w.open_day - timedelta(days=7)).isoformat()
    made = client.post(f"/api/v1/markets/{w.market.id}/clearings", headers=w.operator.headers, json={"day": day})
    assert made.status_code == 201, made.text
    run = made.json()
    assert run["offer_count"] == 3
    assert run["request_count"] == 1
    assert run["award_count"] == 2
    # 8 kW at 150 minus 5 kW at 50 and 3 kW at 80, for a quarter hour: (1200 - 250 - 240) * 0.25 / 1000.
    assert run["welfare"] == "0.18"  # 0.1775 rounded half-even to cents

    again = client.post(f"/api/v1/markets/{w.market.id}/clearings", headers=w.operator.headers, json={"day": day})
    assert again.json()["id"] == run["id"]
    assert db.scalar(select(func.count()).select_from(ClearingRun)) == 1

    prices = client.get(f"/api/v1/clearings/{run['id']}/prices", headers=w.household.headers).json()
    assert [(p["requested_kw"], p["procured_kw"], p["unmet_kw"], p["price_per_mwh"]) for p in prices] == [
        ("8", "8", "0", "80")
    ]
    mine = client.get(f"/api/v1/clearings/{run['id']}/awards", headers=w.household.headers).json()
    assert [(a["accepted_kw"], a["price_per_mwh"]) for a in mine["items"]] == [("5", "80")]
    theirs = client.get(f"/api/v1/clearings/{run['id']}/awards", headers=w.aggregator.headers).json()
    assert [(a["accepted_kw"], a["price_per_mwh"]) for a in theirs["items"]] == [("3", "80")]
    outcomes = client.get(f"/api/v1/clearings/{run['id']}/offer-results", headers=w.household.headers).json()
    assert sorted(o["outcome"] for o in outcomes["items"]) == ["above_marginal_price", "accepted"]
    procurement = client.get(f"/api/v1/clearings/{run['id']}/procurement", headers=w.utility.headers).json()
    assert [(p["requested_kw"], p["procured_kw"]) for p in procurement["items"]] == [("8", "8")]
    assert (
        client.get(f"/api/v1/clearings/{run['id']}/procurement", headers=w.other_utility.headers).json()["total"] == 0
    )
    verified = client.post(f"/api/v1/clearings/{run['id']}/verify", headers=w.operator.headers).json()
    assert verified["matches"] is True
    listed = client.get(f"/api/v1/markets/{w.market.id}/clearings", headers=w.data_center.headers).json()
    assert [r["id"] for r in listed["items"]] == [run["id"]]
    assert (
        client.post(
            f"/api/v1/markets/{w.market.id}/clearings", headers=w.household.headers, json={"day": day}
        ).status_code
        == 403
    )


# -- a real worker on Redis -------------------------------------------------------------------------


@pytest.fixture
def worker(settings: Settings) -> Iterator[tuple[str, Settings]]:
    """A Celery worker subprocess on Redis, consuming a queue of this test only."""
    queue = f"flex-test-{uuid.uuid4().hex[:8]}"
    redis_settings = settings.model_copy(update={"jobs": JobSettings(broker_url=REDIS_URL)})
    configure(celery_app, redis_settings)
    celery_app.conf.task_default_queue = queue
    env = {
        **os.environ,
        "FLEX_DATABASE_URL": settings.database.url,
        "FLEX_BROKER_URL": REDIS_URL,
        "FLEX_API_KEY_PEPPER": settings.security.api_key_pepper,
    }
    exe = str(Path(sys.executable).parent / "flexmarket")
    process = subprocess.Popen(  # noqa: S603 - our own CLI
        [exe, "worker", "--concurrency", "1", "--queues", queue],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield queue, redis_settings
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        configure(celery_app, settings)


def _wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError("timed out waiting for the worker")


def test_worker_clears_the_due_day_once(
    client: TestClient[Litestar], w: World, db: Session, worker: tuple[str, Settings]
) -> None:
    _book(client, w)
    _shift_into_the_past(db)
    day = w.open_day - timedelta(days=7)
    # Beat's job finds the due day from the database and enqueues it; a duplicate enqueue and a
    # direct call race it. Exactly one run results.
    tasks.schedule_due_clearings.apply_async(queue=worker[0])
    tasks.clear_delivery_day.apply_async(args=(str(w.market.id), day.isoformat()), queue=worker[0])
    tasks.clear_delivery_day.apply_async(args=(str(w.market.id), day.isoformat()), queue=worker[0])

    def done() -> bool:
        db.expire_all()
        return db.scalar(select(func.count()).select_from(ClearingRun)) == 1 and bool(
            db.scalar(select(func.count()).select_from(FlexOrderAward))
        )

    _wait_for(done)
    time.sleep(2)  # let the duplicates finish too
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(ClearingRun)) == 1
    run = db.scalars(select(ClearingRun)).one()
    assert run.delivery_day == day
    assert db.scalar(select(func.count()).select_from(FlexOrderAward)) == 2
    assert isinstance(run.delivery_day, date)
