"""Issuing, listing, revoking and checking API keys."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from market.auth.keys import generate_key, hash_secret, parse_token, secret_matches
from market.auth.lookup import KeyRow, read_key
from market.auth.models import ApiKey
from market.auth.principal import Principal, Scope
from market.core import audit
from market.core.db import utcnow
from market.core.errors import Conflict, NotFound
from market.core.queries import Page, get_or_404, paginate
from market.participants.models import Participant, Role


def issue_key(
    session: Session, participant: Participant, name: str, scopes: list[Scope], pepper: str
) -> tuple[ApiKey, str]:
    """Create a key and return it with its token. The token exists only in this return value."""
    new = generate_key()
    key = ApiKey(
        id=uuid.uuid4(),
        participant_id=participant.id,
        key_id=new.key_id,
        secret_hash=hash_secret(new.secret, pepper),
        name=name,
        scopes=sorted({s.value for s in scopes}),
    )
    session.add(key)
    session.flush()
    return key, new.token


def create_key(
    session: Session, principal: Principal, participant_id: uuid.UUID, name: str, scopes: list[Scope], pepper: str
) -> tuple[ApiKey, str]:
    if not principal.may_act_for(participant_id):
        raise NotFound.of("participant", participant_id)
    participant = get_or_404(session, Participant, participant_id, "participant")
    key, token = issue_key(session, participant, name, scopes, pepper)
    audit.record(session, "api_key.issue", "api_key", key.id, after=_key_snapshot(key), principal=principal)
    return key, token


def list_keys(
    session: Session, principal: Principal, participant_id: uuid.UUID, page: Page
) -> tuple[list[ApiKey], int]:
    if not principal.may_act_for(participant_id):
        raise NotFound.of("participant", participant_id)
    get_or_404(session, Participant, participant_id, "participant")
    statement = select(ApiKey).where(ApiKey.participant_id == participant_id).order_by(ApiKey.created_at, ApiKey.id)
    return paginate(session, statement, page)


def revoke_key(session: Session, principal: Principal, api_key_id: uuid.UUID) -> ApiKey:
    """Revoke at once: the next request with the key is refused. Revoking twice is a no-op."""
    key = session.get(ApiKey, api_key_id)
    if key is None or not principal.may_act_for(key.participant_id):
        raise NotFound.of("API key", api_key_id)
    if key.revoked_at is None:
        before = _key_snapshot(key)
        key.revoked_at = utcnow()
        session.flush()
        audit.record(
            session, "api_key.revoke", "api_key", key.id, before=before, after=_key_snapshot(key), principal=principal
        )
    return key


def _key_snapshot(key: ApiKey) -> dict[str, object]:
    return audit.snapshot(key, exclude=("secret_hash",))


def authenticate(session: Session, token: str, pepper: str) -> Principal | None:
    """The principal a token stands for, or None for an unknown, malformed or revoked key (the
    dashboard's check, in its request's session; the API's runs in :mod:`market.auth.lookup`)."""
    parsed = parse_token(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    return principal_of(read_key(session, key_id), secret, pepper)


def principal_of(row: KeyRow | None, secret: str, pepper: str) -> Principal | None:
    """The principal of a stored key presented with ``secret``; None if there is no such key, it
    is revoked or the secret does not match."""
    if row is None or row.revoked_at is not None or not secret_matches(secret, row.secret_hash, pepper):
        return None
    return Principal(
        participant_id=row.participant_id,
        role=row.role,
        scopes=frozenset(Scope(s) for s in row.scopes),
        api_key_id=row.id,
    )


def bootstrap_operator(session: Session, name: str, pepper: str) -> tuple[Participant, str]:
    """Create the market operator and its first key (all scopes). Refused once an operator key exists."""
    active = session.scalar(
        select(ApiKey.id)
        .join(Participant, Participant.id == ApiKey.participant_id)
        .where(Participant.role == Role.OPERATOR, ApiKey.revoked_at.is_(None))
    )
    if active is not None:
        raise Conflict(detail="an operator key exists already; use it to issue more keys through the API")
    operator = session.scalar(
        select(Participant).where(Participant.role == Role.OPERATOR).order_by(Participant.created_at)
    )
    if operator is None:
        operator = Participant(id=uuid.uuid4(), name=name, role=Role.OPERATOR)
        session.add(operator)
        session.flush()
    key, token = issue_key(session, operator, "bootstrap", list(Scope), pepper)
    audit.record(session, "api_key.issue", "api_key", key.id, after=_key_snapshot(key), actor="bootstrap")
    return operator, token
