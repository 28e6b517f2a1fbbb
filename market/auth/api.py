from __future__ import annotations

import uuid

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.pagination import OffsetPagination
from litestar.params import FromPath, JSONBody
from sqlalchemy.orm import Session

from market.auth import service
from market.auth.principal import Principal, Scope
from market.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead, WhoAmI
from market.core.http import requires
from market.core.idempotency import Idempotency
from market.core.queries import Page


class ApiKeyController(Controller):
    tags = ("api keys",)

    @get("/me", sync_to_thread=False, summary="Who the presented API key belongs to")
    def me(self, principal: NamedDependency[Principal]) -> WhoAmI:
        return WhoAmI(
            participant_id=principal.participant_id,
            role=principal.role,
            scopes=sorted(principal.scopes),
            api_key_id=principal.api_key_id,
        )

    @post(
        "/participants/{participant_id:uuid}/api-keys",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        summary="Issue an API key; the token is shown in this response only",
    )
    def create(
        self,
        request: Request[Principal, uuid.UUID, State],
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        participant_id: FromPath[uuid.UUID],
        data: JSONBody[ApiKeyCreate],
    ) -> Response[ApiKeyCreated]:
        def issue() -> ApiKeyCreated:
            key, token = service.create_key(
                db_session, principal, participant_id, data.name, data.scopes, request.app.state.api_key_pepper
            )
            return ApiKeyCreated(key=ApiKeyRead.from_model(key), token=token)

        # The token is never stored, so a replay cannot show it again: it is refused with a 409.
        return idempotency.run(db_session, principal, issue, store_body=False)

    @get(
        "/participants/{participant_id:uuid}/api-keys",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        summary="List a participant's API keys (never their secrets)",
    )
    def list(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        participant_id: FromPath[uuid.UUID],
        page: NamedDependency[Page],
    ) -> OffsetPagination[ApiKeyRead]:
        rows, total = service.list_keys(db_session, principal, participant_id, page)
        return OffsetPagination([ApiKeyRead.from_model(r) for r in rows], page.limit, page.offset, total)

    @post(
        "/api-keys/{api_key_id:uuid}/revoke",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        status_code=200,
        summary="Revoke an API key at once",
    )
    def revoke(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        api_key_id: FromPath[uuid.UUID],
    ) -> Response[ApiKeyRead]:
        return idempotency.run(
            db_session,
            principal,
            lambda: ApiKeyRead.from_model(service.revoke_key(db_session, principal, api_key_id)),
            status_code=200,
        )
