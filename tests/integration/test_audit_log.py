"""The audit log: every audited action writes exactly one event with the right actor, object,
before/after and request id; failed or replayed requests write none; the table is append-only on
both backends; only the operator (admin scope) reads it."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from market.auth.principal import Scope
from market.clearing.service import clear_day
from market.core import audit
from market.core.audit import AuditEvent, request_id_from
from market.core.db import make_engine, make_session_factory, unit_of_work, utcnow
from market.core.migrate import upgrade
from market.orders.models import Direction, FlexOffer
from market.orders.schemas import FlexOfferCreate, IspQuantity
from market.orders.service import create_offer
from market.participants.models import Role
from tests import factories
from tests.integration.orders_world import World, build_world, iso, local

OFFERS = "/api/v1/flex-offers"
REQUESTS = "/api/v1/flex-requests"
AUDIT = "/api/v1/audit-events"
PAST_DAY = date(2020, 1, 1)


@pytest.fixture
def w(db: Session) -> World:
    return build_world(db)


def _events(db: Session, **where: Any) -> list[AuditEvent]:
    db.expire_all()
    statement = select(AuditEvent).filter_by(**where).order_by(AuditEvent.at, AuditEvent.id)
    return list(db.scalars(statement))


def _with_id(headers: dict[str, str], request_id: str) -> dict[str, str]:
    return {**headers, "X-Request-ID": request_id}


# -- orders -------------------------------------------------------------------------------------


def test_an_offer_created_revised_and_revoked_leaves_three_events(
    client: TestClient[Litestar], w: World, db: Session
) -> None:
    who = w.household
    made = client.post(OFFERS, json=w.offer(price_per_mwh="100"), headers=_with_id(who.headers, "create-1"))
    assert made.status_code == 201, made.text
    offer_id = made.json()["id"]
    revised = client.put(
        f"{OFFERS}/{offer_id}", json=w.offer(price_per_mwh="120"), headers=_with_id(who.headers, "revise.2")
    )
    assert revised.status_code == 200, revised.text
    revoked = client.post(f"{OFFERS}/{offer_id}/revoke", headers=_with_id(who.headers, "revoke_3"))
    assert revoked.status_code == 200, revoked.text
    # Revoking again changes nothing, so it logs nothing.
    assert client.post(f"{OFFERS}/{offer_id}/revoke", headers=who.headers).status_code == 200

    events = _events(db, object_id=uuid.UUID(offer_id))
    assert [(e.action, e.request_id) for e in events] == [
        ("offer.create", "create-1"),
        ("offer.revise", "revise.2"),
        ("offer.revoke", "revoke_3"),
    ]
    for event in events:
        assert event.object_type == "flex_offer"
        assert event.actor == f"household:{who.id}"
        assert event.actor_participant_id == who.id
        assert event.actor_api_key_id == who.principal.api_key_id
    create, revise, revoke = events
    assert create.before is None
    assert create.after is not None
    assert create.after["price_per_mwh"] == "100"
    assert create.after["quantities_kw"] == ["3.5", "4"]
    assert revise.before == create.after
    assert revise.after is not None
    assert (revise.before["price_per_mwh"], revise.after["price_per_mwh"]) == ("100", "120")
    assert (revise.before["revision"], revise.after["revision"]) == (1, 2)
    assert revoke.before == revise.after
    assert revoke.after is not None
    assert revoke.before["revoked_at"] is None
    assert revoke.after["revoked_at"] is not None


def test_a_request_created_revised_and_revoked_leaves_three_events(
    client: TestClient[Litestar], w: World, db: Session
) -> None:
    who = w.utility
    made = client.post(REQUESTS, json=w.request(max_price_per_mwh="300"), headers=_with_id(who.headers, "r1"))
    assert made.status_code == 201, made.text
    request_id = made.json()["id"]
    revised = client.put(
        f"{REQUESTS}/{request_id}", json=w.request(max_price_per_mwh="310.5"), headers=_with_id(who.headers, "r2")
    )
    assert revised.status_code == 200, revised.text
    assert client.post(f"{REQUESTS}/{request_id}/revoke", headers=_with_id(who.headers, "r3")).status_code == 200

    events = _events(db, object_id=uuid.UUID(request_id))
    assert [(e.action, e.object_type, e.request_id, e.actor_participant_id) for e in events] == [
        ("request.create", "flex_request", "r1", who.id),
        ("request.revise", "flex_request", "r2", who.id),
        ("request.revoke", "flex_request", "r3", who.id),
    ]
    revise = events[1]
    assert revise.before is not None
    assert revise.after is not None
    assert (revise.before["max_price_per_mwh"], revise.after["max_price_per_mwh"]) == ("300", "310.5")


def test_a_batch_writes_one_event_per_offer(client: TestClient[Litestar], w: World, db: Session) -> None:
    offers = [w.offer(price_per_mwh=str(price)) for price in (10, 20, 30)]
    offers[1]["isps"] = [{"start": iso(local(w.open_day, 18, 0)), "quantity_kw": "1.25"}]
    response = client.post(f"{OFFERS}/batch", json={"offers": offers}, headers=_with_id(w.household.headers, "batch-7"))
    assert response.status_code == 201, response.text
    ids = [uuid.UUID(i) for i in response.json()["ids"]]
    events = _events(db, action="offer.create")
    assert sorted(e.object_id for e in events) == sorted(ids)
    by_offer = {e.object_id: e for e in events}
    for offer_id, price in zip(ids, ("10", "20", "30"), strict=True):
        event = by_offer[offer_id]
        assert event.request_id == "batch-7"
        assert event.actor_participant_id == w.household.id
        assert event.actor_api_key_id == w.household.principal.api_key_id
        assert event.before is None
        assert event.after is not None
        assert event.after["id"] == str(offer_id)
        assert event.after["price_per_mwh"] == price
        stored = db.get(FlexOffer, offer_id)
        assert stored is not None
        assert event.after["quantities_kw"] == stored.quantities_kw
    second = by_offer[ids[1]].after
    assert second is not None
    assert second["quantities_kw"] == ["1.25"]


def test_record_many_keeps_awkward_text_exact(db: Session) -> None:
    """COPY's text format treats backslash, tab and newline specially; values come back as sent."""
    awkward = 'a\\b\tc\nd\re "quoted" é'
    rows = [
        audit.event_row("offer.create", "flex_offer", uuid.uuid4(), after={"note": awkward, "n": i}, actor=awkward)
        for i in range(3)
    ]
    audit.record_many(db, rows)
    db.commit()
    events = _events(db, action="offer.create")
    assert sorted(e.after["n"] for e in events if e.after) == [0, 1, 2]
    assert {e.actor for e in events} == {awkward}
    assert {e.after["note"] for e in events if e.after} == {awkward}
    assert {e.request_id for e in events} == {None}


# -- markets, keys, runs ------------------------------------------------------------------------


def test_market_create_and_update_are_logged(client: TestClient[Litestar], w: World, db: Session) -> None:
    body = {
        "code": "audited",
        "name": "Before",
        "timezone": "UTC",
        "currency": "EUR",
        "pricing_rule": "pay_as_bid",
        "gate_closure_kind": "intraday",
        "intraday_lead_minutes": 15,
        "min_price_per_mwh": "0",
        "max_price_per_mwh": "100",
        "max_quantity_kw": "10",
    }
    made = client.post("/api/v1/markets", json=body, headers=_with_id(w.operator.headers, "m1"))
    assert made.status_code == 201, made.text
    market_id = uuid.UUID(made.json()["id"])
    patched = client.patch(
        f"/api/v1/markets/{market_id}", json={"name": "After"}, headers=_with_id(w.operator.headers, "m2")
    )
    assert patched.status_code == 200, patched.text
    events = _events(db, object_id=market_id)
    assert [(e.action, e.request_id, e.actor_participant_id) for e in events] == [
        ("market.create", "m1", w.operator.id),
        ("market.update", "m2", w.operator.id),
    ]
    assert events[0].after is not None
    assert events[0].after["code"] == "audited"
    assert events[1].before is not None
    assert events[1].after is not None
    assert (events[1].before["name"], events[1].after["name"]) == ("Before", "After")
    assert events[1].after["max_price_per_mwh"] == "100"


def test_api_key_issue_and_revoke_are_logged_without_secrets(
    client: TestClient[Litestar], w: World, db: Session
) -> None:
    issued = client.post(
        f"/api/v1/participants/{w.household.id}/api-keys",
        json={"name": "second", "scopes": ["trade"]},
        headers=_with_id(w.household.headers, "k1"),
    )
    assert issued.status_code == 201, issued.text
    key_id = uuid.UUID(issued.json()["key"]["id"])
    token = issued.json()["token"]
    revoked = client.post(f"/api/v1/api-keys/{key_id}/revoke", headers=_with_id(w.operator.headers, "k2"))
    assert revoked.status_code == 200, revoked.text

    issue, revoke = _events(db, object_id=key_id)
    assert (issue.action, issue.object_type, issue.request_id) == ("api_key.issue", "api_key", "k1")
    assert (issue.actor_participant_id, issue.actor_api_key_id) == (w.household.id, w.household.principal.api_key_id)
    assert (revoke.action, revoke.request_id, revoke.actor_participant_id) == ("api_key.revoke", "k2", w.operator.id)
    assert issue.after is not None
    assert issue.after["participant_id"] == str(w.household.id)
    assert issue.after["scopes"] == ["trade"]
    assert revoke.before is not None
    assert revoke.after is not None
    assert revoke.before["revoked_at"] is None
    assert revoke.after["revoked_at"] is not None
    secret = token[21:]  # fmk_<16 hex>_<43 chars>; the secret may itself hold "_"
    assert len(secret) == 43
    for event in (issue, revoke):
        for snapshot in (event.before, event.after):
            assert "secret_hash" not in (snapshot or {})
            assert secret not in str(snapshot)


def test_clearing_and_settlement_runs_are_logged_with_the_operator(
    client: TestClient[Litestar], w: World, db: Session
) -> None:
    headers = _with_id(w.operator.headers, "ops-1")
    cleared = client.post(f"/api/v1/markets/{w.market.id}/clearings", json={"day": "2020-01-01"}, headers=headers)
    assert cleared.status_code == 201, cleared.text
    settled = client.post(f"/api/v1/markets/{w.market.id}/settlements", json={"day": "2020-01-01"}, headers=headers)
    assert settled.status_code == 201, settled.text

    (clearing,) = _events(db, action="clearing.run")
    assert clearing.object_id == uuid.UUID(cleared.json()["id"])
    assert clearing.object_type == "clearing_run"
    # The service is handed no principal: the request's principal is the actor, named as the API named it.
    assert clearing.actor == f"operator:{w.operator.id}"
    assert (clearing.actor_participant_id, clearing.actor_api_key_id) == (
        w.operator.id,
        w.operator.principal.api_key_id,
    )
    assert clearing.request_id == "ops-1"
    assert clearing.after is not None
    assert clearing.after["delivery_day"] == "2020-01-01"
    assert "book" not in clearing.after
    (settlement,) = _events(db, action="settlement.run")
    assert settlement.object_id == uuid.UUID(settled.json()["id"])
    assert (settlement.actor_participant_id, settlement.request_id) == (w.operator.id, "ops-1")
    assert settlement.after is not None
    assert (settlement.after["kind"], settlement.after["version"]) == ("initial", 1)


def test_a_task_is_logged_by_its_name_without_a_request_id(w: World, session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        run = clear_day(
            session, w.market.id, PAST_DAY, datetime.combine(PAST_DAY, time(23), tzinfo=UTC), triggered_by="schedule"
        )
    with session_factory() as session:
        (event,) = _events(session, object_id=run.id)
    assert (event.action, event.actor, event.actor_participant_id, event.actor_api_key_id, event.request_id) == (
        "clearing.run",
        "schedule",
        None,
        None,
        None,
    )


# -- what is not logged -------------------------------------------------------------------------


def test_failed_requests_write_no_event(client: TestClient[Litestar], w: World, db: Session) -> None:
    made = client.post(OFFERS, json=w.offer(), headers=w.household.headers).json()
    closed = local(w.open_day - timedelta(days=5), 23, 0)
    late = client.put(
        f"{OFFERS}/{made['id']}",
        json=w.offer(isps=[{"start": iso(closed), "quantity_kw": "1"}]),
        headers=w.household.headers,
    )
    assert late.status_code == 409, late.text
    bad = client.put(f"{OFFERS}/{made['id']}", json=w.offer(price_per_mwh="-5"), headers=w.household.headers)
    assert bad.status_code == 422, bad.text
    late_new = client.post(
        OFFERS, json=w.offer(isps=[{"start": iso(closed), "quantity_kw": "1"}]), headers=w.household.headers
    )
    assert late_new.status_code == 409, late_new.text
    bad_batch = client.post(
        f"{OFFERS}/batch", json={"offers": [w.offer(), w.offer(price_per_mwh="-1")]}, headers=w.household.headers
    )
    assert bad_batch.status_code == 422, bad_batch.text
    # The gate of the stored offer passes: revoking it now is refused, and logged as nothing.
    offer = db.get(FlexOffer, uuid.UUID(made["id"]))
    assert offer is not None
    offer.period_start, offer.period_end = closed, closed + timedelta(minutes=30)
    db.commit()
    assert client.post(f"{OFFERS}/{made['id']}/revoke", headers=w.household.headers).status_code == 409
    assert [e.action for e in _events(db, actor_participant_id=w.household.id)] == ["offer.create"]


def test_an_idempotent_replay_writes_no_second_event(client: TestClient[Litestar], w: World, db: Session) -> None:
    headers = {**w.household.headers, "Idempotency-Key": "once"}
    first = client.post(OFFERS, json=w.offer(), headers=headers)
    again = client.post(OFFERS, json=w.offer(), headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(_events(db, action="offer.create")) == 1


def test_a_rolled_back_change_leaves_no_event(w: World, session_factory: sessionmaker[Session]) -> None:
    isps = [IspQuantity(start=local(w.open_day, 17), quantity_kw=Decimal(1))]
    data = FlexOfferCreate(direction=Direction.UP, isps=isps, site_id=w.site.id, price_per_mwh=Decimal(5))

    def crash() -> None:
        with unit_of_work(session_factory) as session:
            create_offer(session, w.household.principal, data, utcnow())
            session.flush()
            raise RuntimeError("crash after the change, before the commit")

    with pytest.raises(RuntimeError, match="crash"):
        crash()
    with session_factory() as session:
        assert _events(session, action="offer.create") == []
        assert session.scalar(select(FlexOffer.id)) is None


# -- request ids --------------------------------------------------------------------------------


def test_request_ids_are_echoed_or_made(client: TestClient[Litestar], w: World) -> None:
    sane = "Abc-123_x.y"
    assert client.get("/api/v1/me", headers=_with_id(w.household.headers, sane)).headers["X-Request-ID"] == sane
    for odd in ("x" * 65, "has space", "semi;colon", ""):
        echoed = client.get("/api/v1/me", headers=_with_id(w.household.headers, odd)).headers["X-Request-ID"]
        assert echoed != odd
        assert uuid.UUID(echoed)
    made = client.get("/api/v1/me", headers=w.household.headers).headers["X-Request-ID"]
    assert uuid.UUID(made)
    # Errors carry it too: 401 from authentication, 404 from a handler.
    assert client.get("/api/v1/me", headers={"X-Request-ID": "no-key"}).headers["X-Request-ID"] == "no-key"
    missing = client.get(f"{OFFERS}/{uuid.uuid4()}", headers=_with_id(w.household.headers, "nf"))
    assert (missing.status_code, missing.headers["X-Request-ID"]) == (404, "nf")


def test_request_id_from_accepts_only_sane_tokens() -> None:
    assert request_id_from("a" * 64) == "a" * 64
    assert request_id_from("A.b_c-9") == "A.b_c-9"
    for odd in (None, "", "a" * 65, "a/b", "a\nb", "é"):
        assert uuid.UUID(request_id_from(odd))


# -- append-only and who reads ------------------------------------------------------------------


def _one_event(session: Session) -> uuid.UUID:
    event_id = audit.record(session, "market.update", "market", uuid.uuid4(), before={"a": 1}, after={"a": 2})
    session.commit()
    return event_id


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_event SET action = 'tampered' WHERE id = :id", "DELETE FROM audit_event WHERE id = :id"],
    ids=["update", "delete"],
)
def test_postgres_refuses_changing_the_log(db: Session, statement: str) -> None:
    event_id = _one_event(db)
    with pytest.raises(DBAPIError, match="append-only"):
        db.execute(text(statement), {"id": event_id})
    db.rollback()
    (event,) = _events(db)
    assert event.action == "market.update"


def test_sqlite_refuses_changing_the_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            event_id = _one_event(session)
            for statement in ("UPDATE audit_event SET action = 'x' WHERE id = :id", "DELETE FROM audit_event"):
                with pytest.raises(DBAPIError, match="append-only"):
                    session.execute(text(statement), {"id": event_id.hex})
                session.rollback()
            # The embedded store takes a batch through executemany, with the same JSON.
            audit.record_many(session, [audit.event_row("offer.create", "flex_offer", event_id, after={"p": "1.5"})])
            session.commit()
            stored = session.scalars(select(AuditEvent).order_by(AuditEvent.action)).all()
            assert [(e.action, e.after) for e in stored] == [
                ("market.update", {"a": 2}),
                ("offer.create", {"p": "1.5"}),
            ]
    finally:
        engine.dispose()


def test_only_the_operator_with_admin_scope_reads_the_log(client: TestClient[Litestar], w: World, db: Session) -> None:
    made = client.post(OFFERS, json=w.offer(), headers=w.household.headers).json()
    client.post(f"{OFFERS}/{made['id']}/revoke", headers=w.household.headers)
    for caller in (w.household, w.utility, w.aggregator, w.data_center):
        response = client.get(AUDIT, headers=caller.headers)
        assert response.status_code == 403, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert made["id"] not in response.text
    trade_only = factories.actor(db, Role.OPERATOR, scopes=[Scope.TRADE])
    assert client.get(AUDIT, headers=trade_only.headers).status_code == 403

    def read(query: str) -> dict[str, Any]:
        response = client.get(f"{AUDIT}?{query}", headers=w.operator.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    by_object = read(f"object_id={made['id']}")
    assert [i["action"] for i in by_object["items"]] == ["offer.create", "offer.revoke"]
    assert by_object["total"] == 2
    assert by_object["items"][1]["before"]["revoked_at"] is None
    assert [i["action"] for i in read(f"actor={w.household.id}")["items"]] == ["offer.create", "offer.revoke"]
    assert read(f"actor=household:{w.household.id}&action=offer.revoke")["total"] == 1
    assert read("action=offer.create&limit=1&offset=0")["items"][0]["object_id"] == made["id"]
    page = read("limit=1&offset=1")
    assert len(page["items"]) == 1
    assert page["total"] >= 3  # the world's market and the offer's two events
    assert read("actor=nobody")["total"] == 0
