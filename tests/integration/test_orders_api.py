"""The order book through the API: every validation rule by hand, gate closure, revisions,
revocation, the all-or-nothing batch, idempotency and listing."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import date, timedelta
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from market.core.audit import AuditEvent
from market.core.db import utcnow
from market.core.errors import Conflict, InvalidInput
from market.orders import service
from market.orders.models import FlexOffer, FlexRequest
from market.orders.schemas import FlexOfferCreate
from tests.integration.orders_world import World, build_world, iso, local

OFFERS = "/api/v1/flex-offers"
REQUESTS = "/api/v1/flex-requests"


@pytest.fixture
def w(db: Session) -> World:
    return build_world(db)


def _count(db: Session, model: type[FlexOffer] | type[FlexRequest]) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(model)) or 0


def _fields(response: Any) -> dict[str, str]:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return {e["field"]: e["reason"] for e in response.json().get("errors", [])}


# -- offers: the happy paths ----------------------------------------------------------------------


def test_household_offer_is_stored_exactly(client: TestClient[Litestar], w: World, db: Session) -> None:
    response = client.post(OFFERS, json=w.offer(), headers=w.household.headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["market_id"] == str(w.market.id)
    assert body["congestion_point_id"] == str(w.feeder.id)
    assert body["seller_id"] == str(w.household.id)
    assert body["state"] == "active"
    assert body["revision"] == 1
    assert body["price_per_mwh"] == "120.5"
    assert [(i["start"], i["quantity_kw"]) for i in body["isps"]] == [
        (local(w.open_day, 17, 0).astimezone().isoformat().replace("+00:00", "Z"), "3.5"),
        (local(w.open_day, 17, 15).astimezone().isoformat().replace("+00:00", "Z"), "4"),
    ]
    assert client.get(f"{OFFERS}/{body['id']}", headers=w.household.headers).json() == body
    assert _count(db, FlexOffer) == 1


def test_offer_with_every_option(client: TestClient[Litestar], w: World) -> None:
    body = w.offer(
        portfolio_id=str(w.portfolio.id),
        site_id=None,
        price_per_mwh=None,
        tranches=[{"share": "0.25", "price_per_mwh": "50"}, {"share": "0.75", "price_per_mwh": "80"}],
        min_acceptance_fraction="1",
        block=True,
        rebound=[{"start": iso(local(w.open_day, 18, 0)), "quantity_kw": "2"}],
        storage={"capacity_kwh": "10", "initial_kwh": "5", "efficiency": "0.95"},
        expires_at=iso(local(w.open_day, 9, 0)),
    )
    response = client.post(OFFERS, json=body, headers=w.aggregator.headers)
    assert response.status_code == 201, response.text
    read = response.json()
    assert read["tranches"] == [{"share": "0.25", "price_per_mwh": "50"}, {"share": "0.75", "price_per_mwh": "80"}]
    assert read["block"] is True
    assert read["min_acceptance_fraction"] == "1"
    assert read["rebound"][0]["quantity_kw"] == "2"
    assert read["storage"] == {"capacity_kwh": "10", "initial_kwh": "5", "efficiency": "0.95"}


def test_gaps_in_the_profile_are_kept_as_gaps(client: TestClient[Litestar], w: World) -> None:
    isps = [
        {"start": iso(local(w.open_day, 10, 0)), "quantity_kw": "1"},
        {"start": iso(local(w.open_day, 11, 0)), "quantity_kw": "2"},
    ]
    read = client.post(OFFERS, json=w.offer(isps=isps), headers=w.household.headers).json()
    assert [i["quantity_kw"] for i in read["isps"]] == ["1", "2"]


# -- offers: every rule names its field -----------------------------------------------------------


def _bad_offer_cases(w: World) -> list[tuple[dict[str, Any], str]]:
    day = w.open_day
    return [
        ({"isps": [{"start": iso(local(day, 17, 7)), "quantity_kw": "1"}]}, "isps[0].start"),
        ({"isps": [{"start": local(day, 17).replace(tzinfo=None).isoformat(), "quantity_kw": "1"}]}, "isps[0].start"),
        ({"isps": [{"start": iso(local(day, 17)), "quantity_kw": "1"}] * 2}, "isps[1].start"),
        ({"isps": [{"start": iso(local(day, 17)), "quantity_kw": "-1"}]}, "isps[0].quantity_kw"),
        ({"isps": [{"start": iso(local(day, 17)), "quantity_kw": "0"}]}, "isps[0].quantity_kw"),
        ({"isps": [{"start": iso(local(day, 17)), "quantity_kw": "501"}]}, "isps[0].quantity_kw"),
        ({"isps": [{"start": iso(local(day, 17)), "quantity_kw": "1.0000001"}]}, "isps[0].quantity_kw"),
        ({"isps": [{"start": iso(local(day, 17)), "quantity_kw": "NaN"}]}, "isps[0].quantity_kw"),
        (
            {
                "isps": [
                    {"start": iso(local(day, 0)), "quantity_kw": "1"},
                    {"start": iso(local(day + timedelta(days=3), 0)), "quantity_kw": "1"},
                ]
            },
            "isps",
        ),
        ({"isps": []}, "isps"),
        ({"price_per_mwh": "1000.01"}, "price_per_mwh"),
        ({"price_per_mwh": "-1"}, "price_per_mwh"),
        ({"price_per_mwh": None}, "price_per_mwh"),
        ({"tranches": [{"share": "1", "price_per_mwh": "5"}]}, "price_per_mwh"),
        ({"price_per_mwh": None, "tranches": [{"share": "0.5", "price_per_mwh": "5"}]}, "tranches"),
        (
            {
                "price_per_mwh": None,
                "tranches": [{"share": "0.5", "price_per_mwh": "9"}, {"share": "0.5", "price_per_mwh": "5"}],
            },
            "tranches[1].price_per_mwh",
        ),
        (
            {
                "price_per_mwh": None,
                "tranches": [{"share": "0", "price_per_mwh": "5"}, {"share": "1", "price_per_mwh": "5"}],
            },
            "tranches[0].share",
        ),
        ({"min_acceptance_fraction": "1.5"}, "min_acceptance_fraction"),
        ({"min_acceptance_fraction": "-0.1"}, "min_acceptance_fraction"),
        ({"rebound": [{"start": iso(local(day, 19)), "quantity_kw": "1"}]}, "rebound"),
        ({"block": True, "rebound": [{"start": iso(local(day, 17)), "quantity_kw": "1"}]}, "rebound"),
        ({"storage": {"capacity_kwh": "10", "initial_kwh": "11"}}, "storage.initial_kwh"),
        ({"storage": {"capacity_kwh": "0", "initial_kwh": "0"}}, "storage.capacity_kwh"),
        ({"storage": {"capacity_kwh": "10", "initial_kwh": "1", "efficiency": "1.2"}}, "storage.efficiency"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"site_id": None}, "site_id"),
        ({"portfolio_id": str(w.portfolio.id)}, "site_id"),
        ({"site_id": "00000000-0000-0000-0000-000000000000"}, "site_id"),
        ({"direction": "sideways"}, "direction"),
        ({"seller_id": str(w.data_center.id)}, "seller_id"),
        ({"state": "active"}, "state"),
    ]


def test_every_bad_offer_names_its_field_and_stores_nothing(
    client: TestClient[Litestar], w: World, db: Session
) -> None:
    for change, field in _bad_offer_cases(w):
        response = client.post(OFFERS, json=w.offer(**change), headers=w.household.headers)
        assert response.status_code == 422, (change, response.text)
        fields = _fields(response)
        assert field in fields, (change, fields)
    assert _count(db, FlexOffer) == 0


def test_site_of_another_participant_is_refused(client: TestClient[Litestar], w: World, db: Session) -> None:
    stolen = client.post(OFFERS, json=w.offer(), headers=w.data_center.headers)
    assert stolen.status_code == 422
    assert _fields(stolen) == {"site_id": "not a site of yours"}
    other_portfolio = client.post(
        OFFERS, json=w.offer(site_id=None, portfolio_id=str(w.portfolio.id)), headers=w.household.headers
    )
    assert _fields(other_portfolio) == {"portfolio_id": "not a portfolio of yours"}
    assert client.post(OFFERS, json=w.offer(), headers=w.utility.headers).status_code == 403
    assert _count(db, FlexOffer) == 0


# -- gate closure and clock changes ---------------------------------------------------------------


def test_offer_after_gate_closure_is_409(client: TestClient[Litestar], w: World, db: Session) -> None:
    # Tomorrow's ISPs closed at D-1 12:00 at the latest, i.e. today; today's closed yesterday.
    today = local(w.open_day - timedelta(days=5), 23, 45)
    response = client.post(
        OFFERS, json=w.offer(isps=[{"start": iso(today), "quantity_kw": "1"}]), headers=w.household.headers
    )
    assert response.status_code == 409, response.text
    assert "gate" in _fields(response)["isps"]
    assert _count(db, FlexOffer) == 0


@pytest.mark.parametrize(("day", "isp_count"), [(date(2027, 3, 28), 92), (date(2027, 10, 31), 100)])
def test_clock_change_days(client: TestClient[Litestar], w: World, day: date, isp_count: int) -> None:
    grid = client.get(f"/api/v1/markets/{w.market.id}/delivery-days/{day}", headers=w.household.headers).json()
    assert grid["isp_count"] == isp_count
    isps = [{"start": start, "quantity_kw": "1"} for start in grid["isp_starts"]]
    response = client.post(OFFERS, json=w.offer(isps=isps), headers=w.household.headers)
    assert response.status_code == 201, response.text
    assert len(response.json()["isps"]) == isp_count


def test_the_repeated_hour_has_two_distinct_isps(client: TestClient[Litestar], w: World) -> None:
    first = "2027-10-31T02:15:00+02:00"
    second = "2027-10-31T02:15:00+01:00"
    response = client.post(
        OFFERS,
        json=w.offer(isps=[{"start": first, "quantity_kw": "1"}, {"start": second, "quantity_kw": "2"}]),
        headers=w.household.headers,
    )
    assert response.status_code == 201, response.text
    assert [i["start"] for i in response.json()["isps"]] == ["2027-10-31T00:15:00Z", "2027-10-31T01:15:00Z"]


# -- revise and revoke ----------------------------------------------------------------------------


def test_revise_then_revoke(client: TestClient[Litestar], w: World) -> None:
    made = client.post(OFFERS, json=w.offer(), headers=w.household.headers).json()
    revised = client.put(f"{OFFERS}/{made['id']}", json=w.offer(price_per_mwh="99"), headers=w.household.headers)
    assert revised.status_code == 200, revised.text
    assert revised.json()["revision"] == 2
    assert revised.json()["price_per_mwh"] == "99"
    assert revised.json()["submitted_at"] >= made["submitted_at"]
    bad = client.put(f"{OFFERS}/{made['id']}", json=w.offer(price_per_mwh="-5"), headers=w.household.headers)
    assert bad.status_code == 422
    assert client.get(f"{OFFERS}/{made['id']}", headers=w.household.headers).json()["price_per_mwh"] == "99"
    revoked = client.post(f"{OFFERS}/{made['id']}/revoke", headers=w.household.headers)
    assert revoked.status_code == 200
    assert revoked.json()["state"] == "revoked"
    again = client.put(f"{OFFERS}/{made['id']}", json=w.offer(), headers=w.household.headers)
    assert again.status_code == 409
    assert "revoked" in _fields(again)["state"]
    assert client.post(f"{OFFERS}/{made['id']}/revoke", headers=w.household.headers).status_code == 200


def _wait_for_lock_wait(db: Session, pid: int) -> None:
    """Until the backend ``pid`` waits for a row lock (at most 10 s)."""
    deadline = time.monotonic() + 10
    query = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid AND wait_event_type = 'Lock'")
    while not db.execute(query, {"pid": pid}).scalar_one():
        db.rollback()  # pg_stat_activity is a snapshot per transaction
        assert time.monotonic() < deadline, "the second change never waited for the first"
        time.sleep(0.01)
    db.rollback()


def _change(session: Session, w: World, offer_id: str, action: str, price: str) -> None:
    if action == "revise":
        data = msgspec.convert(w.offer(price_per_mwh=price), FlexOfferCreate, strict=False)
        service.revise_offer(session, w.household.principal, uuid.UUID(offer_id), data, utcnow())
    else:
        service.revoke_offer(session, w.household.principal, uuid.UUID(offer_id), utcnow())


@pytest.mark.parametrize(
    ("first", "second", "refusal", "stored", "events"),
    [
        # A revision that lost the race was validated against a revision that no longer is: 409.
        ("revise", "revise", "revision", (2, "99", "active"), ["create", "revise"]),
        ("revoke", "revise", "state", (1, "120.5", "revoked"), ["create", "revoke"]),
        # A revocation does not depend on what it read: it revokes the new revision...
        ("revise", "revoke", None, (2, "99", "revoked"), ["create", "revise", "revoke"]),
        # ... or finds the order revoked already, which changes nothing and logs nothing.
        ("revoke", "revoke", None, (1, "120.5", "revoked"), ["create", "revoke"]),
    ],
)
def test_a_change_racing_another_never_overwrites_it(
    client: TestClient[Litestar],
    w: World,
    db: Session,
    session_factory: sessionmaker[Session],
    first: str,
    second: str,
    refusal: str | None,
    stored: tuple[int, str, str],
    events: list[str],
) -> None:
    """Two requests read revision 1 of an offer. The first changes it and holds its row until it
    commits; the second, which read revision 1 too, waits for that row. It must then see the first
    change: never write over it, nor log a ``before`` that no longer was."""
    made = client.post(OFFERS, json=w.offer(), headers=w.household.headers).json()
    outcome: dict[str, Any] = {}

    def race() -> None:
        with session_factory() as session:
            session.execute(text("SET lock_timeout = '20s'"))  # never hang the suite
            outcome["pid"] = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            try:
                _change(session, w, made["id"], second, "77")
                session.commit()
                outcome["result"] = "stored"
            except Conflict as exc:
                outcome["result"] = exc

    holder = session_factory()
    racer = threading.Thread(target=race, daemon=True)
    try:
        _change(holder, w, made["id"], first, "99")
        racer.start()
        deadline = time.monotonic() + 10
        while "pid" not in outcome and time.monotonic() < deadline:
            time.sleep(0.005)
        _wait_for_lock_wait(db, outcome["pid"])
        holder.commit()
    finally:
        holder.rollback()
        holder.close()
    racer.join(timeout=30)
    result = outcome.get("result")
    if refusal is None:
        assert result == "stored", result
    else:
        assert isinstance(result, Conflict), result
        assert result.errors[0].field == refusal, result.errors
    read = client.get(f"{OFFERS}/{made['id']}", headers=w.household.headers).json()
    assert (read["revision"], read["price_per_mwh"], read["state"]) == stored
    db.expire_all()
    logged = db.execute(
        select(AuditEvent.action, AuditEvent.before).where(AuditEvent.object_id == uuid.UUID(made["id"]))
    ).all()
    assert sorted(a.removeprefix("offer.") for a, _ in logged) == sorted(events)
    for action, before in logged:
        if action == "offer.revoke":  # the state it revoked, as it was
            assert before["revision"] == stored[0]


def test_revising_into_a_closed_gate_is_409(client: TestClient[Litestar], w: World) -> None:
    made = client.post(OFFERS, json=w.offer(), headers=w.household.headers).json()
    closed = local(w.open_day - timedelta(days=5), 23, 0)
    response = client.put(
        f"{OFFERS}/{made['id']}",
        json=w.offer(isps=[{"start": iso(closed), "quantity_kw": "1"}]),
        headers=w.household.headers,
    )
    assert response.status_code == 409
    assert client.get(f"{OFFERS}/{made['id']}", headers=w.household.headers).json()["revision"] == 1


def test_orders_past_their_gate_cannot_change(client: TestClient[Litestar], w: World, db: Session) -> None:
    made = client.post(OFFERS, json=w.offer(), headers=w.household.headers).json()
    offer = db.get(FlexOffer, made["id"])
    assert offer is not None
    closed = local(w.open_day - timedelta(days=5), 22, 0)
    offer.period_start, offer.period_end = closed, closed + timedelta(minutes=30)
    db.commit()
    revoke = client.post(f"{OFFERS}/{made['id']}/revoke", headers=w.household.headers)
    assert revoke.status_code == 409
    assert "gate" in _fields(revoke)["isps"]


def test_expired_offers_are_listed_as_expired(client: TestClient[Litestar], w: World, db: Session) -> None:
    made = client.post(OFFERS, json=w.offer(), headers=w.household.headers).json()
    offer = db.get(FlexOffer, made["id"])
    assert offer is not None
    offer.expires_at = local(w.open_day - timedelta(days=6), 12)
    db.commit()
    assert client.get(f"{OFFERS}/{made['id']}", headers=w.household.headers).json()["state"] == "expired"
    expired = client.get(f"{OFFERS}?state=expired", headers=w.household.headers).json()
    assert [o["id"] for o in expired["items"]] == [made["id"]]
    assert client.get(f"{OFFERS}?state=active", headers=w.household.headers).json()["total"] == 0
    assert client.put(f"{OFFERS}/{made['id']}", json=w.offer(), headers=w.household.headers).status_code == 409


# -- the batch ------------------------------------------------------------------------------------


def _post_refused_batch(client: TestClient[Litestar], w: World, db: Session, count: int, bad: tuple[int, int]) -> None:
    """A batch of ``count`` offers with a price above the market's bound at ``bad[0]`` and an ISP off
    the market's grid at ``bad[1]``: refused with both named, and nothing stored."""
    price_at, isp_at = bad
    offers = [w.offer(price_per_mwh=str(100 + i % 50)) for i in range(count)]
    offers[price_at] = w.offer(price_per_mwh="5000")
    offers[isp_at] = w.offer(isps=[{"start": iso(local(w.open_day, 1, 5)), "quantity_kw": "1"}])
    response = client.post(f"{OFFERS}/batch", json={"offers": offers}, headers=w.household.headers)
    assert response.status_code == 422
    assert set(_fields(response)) == {f"offers[{price_at}].price_per_mwh", f"offers[{isp_at}].isps[0].start"}
    assert _count(db, FlexOffer) == 0


def test_batch_is_all_or_nothing_and_names_each_bad_item(client: TestClient[Litestar], w: World, db: Session) -> None:
    _post_refused_batch(client, w, db, 50, (7, 31))
    good = client.post(f"{OFFERS}/batch", json={"offers": [w.offer() for _ in range(50)]}, headers=w.household.headers)
    assert good.status_code == 201, good.text
    assert good.json()["count"] == 50
    assert _count(db, FlexOffer) == 50
    read = client.get(f"{OFFERS}/{good.json()['ids'][0]}", headers=w.household.headers).json()
    assert read["isps"][1]["quantity_kw"] == "4"


def test_a_bad_offer_after_streamed_chunks_stores_nothing(client: TestClient[Litestar], w: World, db: Session) -> None:
    # Offers stream to PostgreSQL as they pass validation, 1,000 a chunk: by offer 2,500 two chunks
    # have been inserted. The refusal must take them back, with the events, and still name every
    # bad offer, including one after the first.
    _post_refused_batch(client, w, db, 3_000, (2_500, 2_999))
    assert db.scalar(select(func.count()).where(AuditEvent.action == "offer.create")) == 0


def test_a_refused_batch_leaves_the_transaction_usable(w: World, db: Session) -> None:
    good = [msgspec.convert(w.offer(), FlexOfferCreate) for _ in range(1_500)]
    bad = [*good, msgspec.convert(w.offer(price_per_mwh="5000"), FlexOfferCreate)]
    now = utcnow()
    with pytest.raises(InvalidInput):
        service.create_offers(db, w.household.principal, bad, now)
    # The inserted chunks were rolled back to a savepoint: the same transaction goes on and commits.
    ids = service.create_offers(db, w.household.principal, good[:10], now)
    db.commit()
    assert _count(db, FlexOffer) == 10
    assert sorted(db.scalars(select(FlexOffer.id))) == sorted(ids)


def test_batch_limits(client: TestClient[Litestar], w: World) -> None:
    too_many = client.post(f"{OFFERS}/batch", json={"offers": [w.offer()] * 10_001}, headers=w.household.headers)
    assert too_many.status_code in (413, 422)
    empty = client.post(f"{OFFERS}/batch", json={"offers": []}, headers=w.household.headers)
    assert empty.status_code == 422
    assert "offers" in _fields(empty)


def test_batch_body_errors_name_the_field(client: TestClient[Litestar], w: World, db: Session) -> None:
    """Each offer of a batch is decoded as the batch streams (``FlexOfferBatchBody``): its errors
    still name the field and the reason, like every other body's, every bad offer is named, not
    only the first, and the lax mode still takes numbers for amounts."""
    offers = [w.offer() for _ in range(3)]
    wrong_type = [*offers[:2], {**offers[2], "isps": [{"start": offers[2]["isps"][0]["start"], "quantity_kw": []}]}]
    response = client.post(f"{OFFERS}/batch", json={"offers": wrong_type}, headers=w.household.headers)
    assert response.status_code == 422
    assert set(_fields(response)) == {"offers[2].isps[0].quantity_kw"}
    assert "decimal" in _fields(response)["offers[2].isps[0].quantity_kw"]

    smuggled = [offers[0], {**offers[1], "seller_id": str(w.household.id)}]
    response = client.post(f"{OFFERS}/batch", json={"offers": smuggled}, headers=w.household.headers)
    assert response.status_code == 422
    assert set(_fields(response)) == {"offers[1].seller_id"}

    missing = [{k: v for k, v in offers[0].items() if k != "direction"}]
    response = client.post(f"{OFFERS}/batch", json={"offers": missing}, headers=w.household.headers)
    assert response.status_code == 422
    assert set(_fields(response)) == {"offers[0].direction"}

    several = [{**offers[0], "price_per_mwh": "12.1234567"}, 7, {**offers[2], "direction": "sideways"}]
    response = client.post(f"{OFFERS}/batch", json={"offers": several}, headers=w.household.headers)
    assert response.status_code == 422
    assert _fields(response) == {
        "offers[0].price_per_mwh": "at most 6 decimal places",
        "offers[1]": "Expected `object`, got `int`",
        "offers[2].direction": "Invalid enum value 'sideways'",
    }

    malformed = client.post(
        f"{OFFERS}/batch",
        content=b'{"offers": [',
        headers={**w.household.headers, "Content-Type": "application/json"},
    )
    assert malformed.status_code == 400
    assert set(_fields(malformed)) == {"body"}
    assert _count(db, FlexOffer) == 0

    numbers = [{**offers[0], "price_per_mwh": 120.25, "isps": [{**offers[0]["isps"][0], "quantity_kw": 2.5}]}]
    accepted = client.post(f"{OFFERS}/batch", json={"offers": numbers}, headers=w.household.headers)
    assert accepted.status_code == 201, accepted.text
    stored = client.get(f"{OFFERS}/{accepted.json()['ids'][0]}", headers=w.household.headers).json()
    assert (stored["price_per_mwh"], stored["isps"][0]["quantity_kw"]) == ("120.25", "2.5")


def test_batch_above_the_general_body_limit(client: TestClient[Litestar], w: World, db: Session) -> None:
    # 1,800 offers of 92 ISPs are about 9.8 MB: over the general 8 MiB limit, within the batch's own.
    isps = [{"start": iso(local(w.open_day, 0) + timedelta(minutes=15 * i)), "quantity_kw": "1.5"} for i in range(92)]
    response = client.post(
        f"{OFFERS}/batch", json={"offers": [w.offer(isps=isps)] * 1_800}, headers=w.household.headers
    )
    assert len(response.request.content) > 8 * 1024 * 1024
    assert response.status_code == 201, response.text[:500]
    assert _count(db, FlexOffer) == 1_800


def test_batch_of_ten_thousand(client: TestClient[Litestar], w: World, db: Session) -> None:
    response = client.post(f"{OFFERS}/batch", json={"offers": [w.offer()] * 10_000}, headers=w.household.headers)
    assert response.status_code == 201, response.text[:500]
    assert _count(db, FlexOffer) == 10_000


# -- idempotency ----------------------------------------------------------------------------------


def test_idempotency_key_replays_and_refuses_a_different_body(
    client: TestClient[Litestar], w: World, db: Session
) -> None:
    headers = {**w.household.headers, "Idempotency-Key": "order-42"}
    first = client.post(OFFERS, json=w.offer(), headers=headers)
    second = client.post(OFFERS, json=w.offer(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert _count(db, FlexOffer) == 1
    different = client.post(OFFERS, json=w.offer(price_per_mwh="1"), headers=headers)
    assert different.status_code == 409
    assert "header.Idempotency-Key" in _fields(different)
    # Keys are per participant: another seller's identical key is independent.
    other = client.post(
        OFFERS,
        json=w.offer(site_id=None, portfolio_id=str(w.portfolio.id)),
        headers={**w.aggregator.headers, "Idempotency-Key": "order-42"},
    )
    assert other.status_code == 201
    bad_key = client.post(OFFERS, json=w.offer(), headers={**w.household.headers, "Idempotency-Key": "x" * 256})
    assert bad_key.status_code == 422


def test_failed_requests_are_not_remembered(client: TestClient[Litestar], w: World) -> None:
    headers = {**w.household.headers, "Idempotency-Key": "retry-me"}
    assert client.post(OFFERS, json=w.offer(price_per_mwh="-1"), headers=headers).status_code == 422
    assert client.post(OFFERS, json=w.offer(price_per_mwh="-1"), headers=headers).status_code == 422


# -- requests -------------------------------------------------------------------------------------


def test_utility_posts_revises_and_revokes_a_request(client: TestClient[Litestar], w: World) -> None:
    made = client.post(REQUESTS, json=w.request(expires_at=iso(local(w.open_day, 8))), headers=w.utility.headers)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["utility_id"] == str(w.utility.id)
    assert body["max_price_per_mwh"] == "300"
    revised = client.put(f"{REQUESTS}/{body['id']}", json=w.request(max_price_per_mwh="350"), headers=w.utility.headers)
    assert revised.json()["revision"] == 2
    revoked = client.post(f"{REQUESTS}/{body['id']}/revoke", headers=w.utility.headers)
    assert revoked.json()["state"] == "revoked"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"congestion_point_id": "00000000-0000-0000-0000-000000000000"}, "congestion_point_id"),
        ({"max_price_per_mwh": "1000.5"}, "max_price_per_mwh"),
        ({"isps": [{"start": "2027-01-01T00:05:00Z", "quantity_kw": "1"}]}, "isps[0].start"),
        ({"isps": [{"start": "2027-01-01T00:00:00Z", "quantity_kw": "-1"}]}, "isps[0].quantity_kw"),
        ({"expires_at": "2021-01-01T00:00:00+01:00"}, "expires_at"),
    ],
)
def test_bad_requests_name_their_field(
    client: TestClient[Litestar], w: World, db: Session, change: dict[str, Any], field: str
) -> None:
    response = client.post(REQUESTS, json=w.request(**change), headers=w.utility.headers)
    assert response.status_code == 422, response.text
    assert field in _fields(response)
    assert _count(db, FlexRequest) == 0


def test_only_the_managing_utility_requests_at_a_point(client: TestClient[Litestar], w: World) -> None:
    foreign = client.post(REQUESTS, json=w.request(), headers=w.other_utility.headers)
    assert foreign.status_code == 422
    assert _fields(foreign) == {"congestion_point_id": "this congestion point is managed by another utility"}
    assert client.post(REQUESTS, json=w.request(), headers=w.household.headers).status_code == 403


# -- listing --------------------------------------------------------------------------------------


def test_listing_filters_and_pages(client: TestClient[Litestar], w: World) -> None:
    for hour in (8, 9, 10, 11):
        client.post(
            OFFERS,
            json=w.offer(
                isps=[{"start": iso(local(w.open_day, hour)), "quantity_kw": "1"}],
                direction="up" if hour % 2 else "down",
            ),
            headers=w.household.headers,
        )
    client.post(OFFERS, json=w.offer(site_id=None, portfolio_id=str(w.portfolio.id)), headers=w.aggregator.headers)
    mine = client.get(f"{OFFERS}?limit=3", headers=w.household.headers).json()
    assert mine["total"] == 4
    assert len(mine["items"]) == 3
    down = client.get(f"{OFFERS}?direction=down", headers=w.household.headers).json()
    assert {o["direction"] for o in down["items"]} == {"down"}
    assert down["total"] == 2
    window = client.get(
        OFFERS,
        params={"delivery_from": iso(local(w.open_day, 9)), "delivery_to": iso(local(w.open_day, 10))},
        headers=w.household.headers,
    ).json()
    assert window["total"] == 1
    assert client.get(OFFERS, headers=w.operator.headers).json()["total"] == 5
    assert client.get(f"{OFFERS}?market_id={w.market.id}", headers=w.aggregator.headers).json()["total"] == 1
    client.post(REQUESTS, json=w.request(), headers=w.utility.headers)
    assert client.get(REQUESTS, headers=w.utility.headers).json()["total"] == 1
    assert client.get(REQUESTS, headers=w.other_utility.headers).json()["total"] == 0
    assert client.get(f"{OFFERS}?state=bogus", headers=w.household.headers).status_code == 422
