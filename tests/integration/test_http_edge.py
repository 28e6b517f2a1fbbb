"""The HTTP edge: limits, problem+json, OpenAPI and health."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from market.core.audit import AuditEvent
from market.core.config import Settings
from market.orders.models import FlexOffer
from market.participants.models import Role
from tests import factories
from tests.integration.orders_world import build_world


def test_oversized_body_is_413(client: TestClient[Litestar], db: Session, settings: Settings) -> None:
    operator = factories.actor(db, Role.OPERATOR)
    body = b'{"name": "' + b"x" * (settings.api.max_body_bytes + 10) + b'", "role": "household"}'
    response = client.post(
        "/api/v1/participants", content=body, headers={**operator.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")


def test_oversized_list_is_422(client: TestClient[Litestar], db: Session) -> None:
    operator = factories.actor(db, Role.OPERATOR)
    market = factories.market(db, operator)
    entry = {
        "source_id": "00000000-0000-0000-0000-000000000000",
        "target_id": "00000000-0000-0000-0000-000000000000",
        "factor": "1",
    }
    response = client.put(
        f"/api/v1/markets/{market.id}/sensitivities", json={"entries": [entry] * 50_001}, headers=operator.headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "entries"


def test_malformed_json_is_a_clear_400(client: TestClient[Litestar], db: Session) -> None:
    operator = factories.actor(db, Role.OPERATOR)
    response = client.post(
        "/api/v1/participants", content=b"{not json", headers={**operator.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"


def test_unknown_route_is_problem_json(client: TestClient[Litestar], db: Session) -> None:
    operator = factories.actor(db, Role.OPERATOR)
    response = client.get("/api/v1/nowhere", headers=operator.headers)
    assert response.status_code == 404
    assert response.json()["status"] == 404


def test_openapi_is_served_without_a_key(client: TestClient[Litestar]) -> None:
    schema = client.get("/schema/openapi.json")
    assert schema.status_code == 200
    spec = schema.json()
    assert "/api/v1/markets" in spec["paths"]
    assert spec["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert client.get("/health").json() == {"status": "ok"}


@pytest.fixture
def failing_commit(engine: Engine) -> Iterator[None]:
    """A deferred constraint trigger on flex_offer that refuses every transaction at COMMIT, as a
    deferred foreign key or exclusion constraint would: the INSERT passes, the commit fails."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE FUNCTION test_refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'check_violation'; END $$"
            )
        )
        connection.execute(
            text(
                "CREATE CONSTRAINT TRIGGER test_refuse_at_commit AFTER INSERT ON flex_offer "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_refuse_at_commit()"
            )
        )
    try:
        yield
    finally:
        with engine.begin() as connection:
            connection.execute(text("SET LOCAL lock_timeout = '10s'"))  # fail, never hang, on a lock
            connection.execute(text("DROP TRIGGER test_refuse_at_commit ON flex_offer"))
            connection.execute(text("DROP FUNCTION test_refuse_at_commit()"))


def test_a_commit_that_fails_fails_the_request(
    client: TestClient[Litestar], db: Session, failing_commit: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The unit of work commits before the response is sent: a refused commit is the client's
    error response, never a 201 for an offer that was not stored."""
    w = build_world(db)
    db.commit()
    response = client.post("/api/v1/flex-offers", json=w.offer(), headers=w.household.headers)
    assert response.status_code == 409, response.text  # a constraint refused it
    assert response.headers["content-type"].startswith("application/problem+json")
    assert db.scalar(select(func.count()).select_from(FlexOffer)) == 0
    assert db.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "offer.create")) == 0
    assert "refused at commit" in caplog.text  # the operator's log names the cause
    # The same process serves the next request normally.
    assert client.get("/api/v1/flex-offers", headers=w.household.headers).json()["items"] == []
    db.rollback()  # the fixture drops its trigger, which waits for this session's read of flex_offer
