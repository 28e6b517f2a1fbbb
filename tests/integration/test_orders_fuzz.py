"""Hypothesis-generated offers and requests, mostly bad: nothing invalid is ever stored, no input
gives a 5xx, and whatever is stored obeys every rule of the market."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from market.markets.service import clock_of
from market.orders.models import FlexOffer, FlexRequest
from tests.integration.orders_world import World, build_world, local

FUZZ = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def w(db: Session) -> World:
    return build_world(db)


def amounts() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.decimals(min_value=Decimal("0.001"), max_value=Decimal(400), places=3).map(str),
        st.decimals(allow_nan=True, allow_infinity=True).map(str),
        st.sampled_from(["0", "-1", "1e9", "1.0000001", "abc", "", "  5", "5e-7"]),
        st.integers(min_value=-(10**20), max_value=10**20),
        st.floats(allow_nan=False, allow_infinity=False),
        st.none(),
    )


def starts(w: World) -> st.SearchStrategy[Any]:
    base = local(w.open_day, 0)
    aligned = st.integers(min_value=-200, max_value=300).map(lambda i: base + timedelta(minutes=15 * i))
    any_minute = st.integers(min_value=-5000, max_value=5000).map(lambda m: base + timedelta(minutes=m))
    offsets = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=45)), timezone(timedelta(hours=-3))])
    return st.one_of(
        st.tuples(aligned, offsets).map(lambda t: t[0].astimezone(t[1]).isoformat()),
        st.tuples(any_minute, offsets).map(lambda t: t[0].astimezone(t[1]).isoformat()),
        aligned.map(lambda d: d.replace(tzinfo=None).isoformat()),
        st.sampled_from(["2027-02-30T00:00:00Z", "yesterday", "", "2020-01-01T00:00:00Z"]),
    )


def isp_lists(w: World) -> st.SearchStrategy[Any]:
    return st.lists(st.fixed_dictionaries({"start": starts(w), "quantity_kw": amounts()}), min_size=0, max_size=6)


def offers(w: World) -> st.SearchStrategy[dict[str, Any]]:
    resource = st.sampled_from(
        [
            {"site_id": str(w.site.id)},
            {"portfolio_id": str(w.portfolio.id)},
            {"site_id": str(w.site.id), "portfolio_id": str(w.portfolio.id)},
            {},
            {"site_id": "00000000-0000-0000-0000-000000000000"},
            {"site_id": "not-a-uuid"},
        ]
    )
    optional = st.fixed_dictionaries(
        {},
        optional={
            "price_per_mwh": amounts(),
            "tranches": st.lists(st.fixed_dictionaries({"share": amounts(), "price_per_mwh": amounts()}), max_size=3),
            "min_acceptance_fraction": amounts(),
            "block": st.booleans(),
            "rebound": isp_lists(w),
            "storage": st.fixed_dictionaries(
                {"capacity_kwh": amounts(), "initial_kwh": amounts()}, optional={"efficiency": amounts()}
            ),
            "expires_at": starts(w),
            "seller_id": st.just(str(w.data_center.id)),
        },
    )
    return st.tuples(resource, optional, st.sampled_from(["up", "down", "sideways"]), isp_lists(w)).map(
        lambda t: {**t[0], **t[1], "direction": t[2], "isps": t[3]}
    )


def valid_offers(w: World) -> st.SearchStrategy[dict[str, Any]]:
    """Offers that should pass, so the property is not vacuous."""
    base = local(w.open_day, 6)
    isp = st.fixed_dictionaries(
        {
            "start": st.integers(min_value=0, max_value=60).map(
                lambda i: (base + timedelta(minutes=15 * i)).isoformat()
            ),
            "quantity_kw": st.decimals(min_value=Decimal("0.001"), max_value=Decimal(500), places=3).map(str),
        }
    )
    return st.fixed_dictionaries(
        {
            "site_id": st.just(str(w.site.id)),
            "direction": st.sampled_from(["up", "down"]),
            "isps": st.lists(isp, min_size=1, max_size=4, unique_by=lambda i: i["start"]),
            "price_per_mwh": st.decimals(min_value=Decimal(0), max_value=Decimal(1000), places=2).map(str),
        },
        optional={"min_acceptance_fraction": st.sampled_from(["0", "0.5", "1"])},
    )


def _assert_stored_offer_is_valid(w: World, offer: FlexOffer) -> None:
    clock = clock_of(w.market)
    assert clock.is_aligned(offer.period_start)
    quantities = [Decimal(q) for q in offer.quantities_kw]
    assert quantities
    assert quantities[0] > 0
    assert quantities[-1] > 0
    assert all(0 <= q <= w.market.max_quantity_kw for q in quantities)
    assert offer.period_end == offer.period_start + len(quantities) * clock.isp
    assert datetime.now(UTC) < clock.gate_closure(offer.period_start)
    prices = [offer.price_per_mwh] if offer.price_per_mwh is not None else [Decimal(p) for _, p in offer.tranches or []]
    assert prices
    assert all(w.market.min_price_per_mwh <= p <= w.market.max_price_per_mwh for p in prices)
    assert prices == sorted(prices)
    if offer.tranches:
        assert sum(Decimal(s) for s, _ in offer.tranches) == 1
    assert 0 <= offer.min_acceptance_fraction <= 1
    assert (offer.site_id is None) != (offer.portfolio_id is None)
    assert offer.seller_id in (w.household.id, w.aggregator.id)
    if offer.storage_capacity_kwh is not None:
        assert 0 <= (offer.storage_initial_kwh or 0) <= offer.storage_capacity_kwh
        assert 0 < (offer.storage_efficiency or 0) <= 1


def test_fuzzed_offers(client: TestClient[Litestar], w: World, db: Session) -> None:
    @FUZZ
    @given(body=st.one_of(offers(w), valid_offers(w)), seller=st.sampled_from(["household", "aggregator"]))
    def check(body: dict[str, Any], seller: str) -> None:
        actor = w.household if seller == "household" else w.aggregator
        before = set(db.scalars(select(FlexOffer.id)))
        response = client.post("/api/v1/flex-offers", json=body, headers=actor.headers)
        event(f"status {response.status_code}")
        assert response.status_code < 500, response.text
        db.expire_all()
        after = set(db.scalars(select(FlexOffer.id)))
        seen.add(response.status_code)
        if response.status_code == 201:
            assert len(after - before) == 1
            stored = db.get(FlexOffer, (after - before).pop())
            assert stored is not None
            _assert_stored_offer_is_valid(w, stored)
        else:
            assert response.status_code in (400, 403, 409, 413, 422), response.text
            assert response.json()["detail"]
            assert after == before

    seen: set[int] = set()
    check()
    assert 201 in seen, "no generated offer was valid: the property checked nothing"
    assert 422 in seen


def test_fuzzed_batches_store_all_or_nothing(client: TestClient[Litestar], w: World, db: Session) -> None:
    @FUZZ
    @given(bodies=st.lists(offers(w), min_size=1, max_size=5))
    def check(bodies: list[dict[str, Any]]) -> None:
        before = set(db.scalars(select(FlexOffer.id)))
        response = client.post("/api/v1/flex-offers/batch", json={"offers": bodies}, headers=w.household.headers)
        event(f"status {response.status_code}")
        assert response.status_code < 500, response.text
        db.expire_all()
        after = set(db.scalars(select(FlexOffer.id)))
        if response.status_code == 201:
            assert len(after - before) == len(bodies) == response.json()["count"]
        else:
            assert after == before

    check()


def test_fuzzed_requests(client: TestClient[Litestar], w: World, db: Session) -> None:
    @FUZZ
    @given(isps=isp_lists(w), price=amounts(), direction=st.sampled_from(["up", "down", "left"]))
    def check(isps: Any, price: Any, direction: str) -> None:
        before = set(db.scalars(select(FlexRequest.id)))
        body = {
            "congestion_point_id": str(w.feeder.id),
            "direction": direction,
            "max_price_per_mwh": price,
            "isps": isps,
        }
        response = client.post("/api/v1/flex-requests", json=body, headers=w.utility.headers)
        event(f"status {response.status_code}")
        assert response.status_code < 500, response.text
        db.expire_all()
        after = set(db.scalars(select(FlexRequest.id)))
        if response.status_code == 201:
            stored = db.get(FlexRequest, (after - before).pop())
            assert stored is not None
            assert w.market.min_price_per_mwh <= stored.max_price_per_mwh <= w.market.max_price_per_mwh
            assert all(Decimal(q) >= 0 for q in stored.quantities_kw)
        else:
            assert after == before

    check()
