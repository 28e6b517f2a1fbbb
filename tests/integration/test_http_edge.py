"""The HTTP edge: limits, problem+json, OpenAPI and health."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy.orm import Session

from market.core.config import Settings
from market.participants.models import Role
from tests import factories


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
