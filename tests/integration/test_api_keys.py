"""API keys: shown once, stored hashed, scoped, revocable at once."""

from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from market.auth.models import ApiKey
from market.participants.models import Role
from tests import factories


def test_key_is_shown_once_and_stored_only_as_a_hash(client: TestClient[Litestar], db: Session) -> None:
    operator = factories.actor(db, Role.OPERATOR)
    home = factories.actor(db, Role.HOUSEHOLD)
    made = client.post(
        f"/api/v1/participants/{home.id}/api-keys", json={"name": "app", "scopes": ["trade"]}, headers=operator.headers
    )
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert token.startswith("fmk_")
    key_id, secret = token[4:20], token[21:]
    assert len(secret) == 43  # 256 random bits, URL-safe base64
    stored = db.scalars(select(ApiKey).where(ApiKey.key_id == key_id)).one()
    assert secret not in stored.secret_hash
    assert token not in str(stored.__dict__)
    listed = client.get(f"/api/v1/participants/{home.id}/api-keys", headers=operator.headers)
    assert secret not in listed.text
    assert "secret_hash" not in listed.text
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["participant_id"] == str(home.id)
    assert me["scopes"] == ["trade"]


def test_revoked_key_fails_at_once(client: TestClient[Litestar], db: Session) -> None:
    home = factories.actor(db, Role.HOUSEHOLD)
    assert client.get("/api/v1/me", headers=home.headers).status_code == 200
    revoked = client.post(f"/api/v1/api-keys/{home.principal.api_key_id}/revoke", headers=home.headers)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    after = client.get("/api/v1/me", headers=home.headers)
    assert after.status_code == 401
    assert after.json()["detail"] == "the API key is unknown or revoked"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer fmk_",
        "Basic abc",
        "Bearer fmk_0123456789abcdef_" + "A" * 43,
        "Bearer " + "x" * 5000,
    ],
)
def test_bad_credentials_are_401(client: TestClient[Litestar], db: Session, header: str) -> None:
    response = client.get("/api/v1/me", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


def test_scopes_are_enforced(client: TestClient[Litestar], db: Session) -> None:
    operator = factories.actor(db, Role.OPERATOR)
    finance_only = factories.actor(db, Role.HOUSEHOLD, scopes=[])
    made = client.post(
        f"/api/v1/participants/{finance_only.id}/api-keys",
        json={"name": "f", "scopes": ["finance"]},
        headers=operator.headers,
    ).json()
    headers = {"Authorization": f"Bearer {made['token']}"}
    point_needed = client.post("/api/v1/sites", json={}, headers=headers)
    assert point_needed.status_code == 403
    assert "trade" in point_needed.json()["detail"]
    no_admin = client.post(
        f"/api/v1/participants/{finance_only.id}/api-keys", json={"name": "x", "scopes": ["trade"]}, headers=headers
    )
    assert no_admin.status_code == 403
    operator_trade_only = factories.actor(db, Role.OPERATOR, scopes=[])
    trade_key = client.post(
        f"/api/v1/participants/{operator_trade_only.id}/api-keys",
        json={"name": "t", "scopes": ["trade"]},
        headers=operator.headers,
    ).json()["token"]
    refused = client.post(
        "/api/v1/participants",
        json={"name": "x", "role": "household"},
        headers={"Authorization": f"Bearer {trade_key}"},
    )
    assert refused.status_code == 403
    empty_scopes = client.post(
        f"/api/v1/participants/{finance_only.id}/api-keys", json={"name": "x", "scopes": []}, headers=operator.headers
    )
    assert empty_scopes.status_code == 422
    assert empty_scopes.json()["errors"][0]["field"] == "scopes"


def test_a_participant_manages_its_own_keys(client: TestClient[Litestar], db: Session) -> None:
    home = factories.actor(db, Role.HOUSEHOLD)
    made = client.post(
        f"/api/v1/participants/{home.id}/api-keys", json={"name": "second", "scopes": ["finance"]}, headers=home.headers
    )
    assert made.status_code == 201
    listed = client.get(f"/api/v1/participants/{home.id}/api-keys", headers=home.headers).json()
    assert sorted(k["name"] for k in listed["items"]) == ["second", "test"]
