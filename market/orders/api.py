from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from litestar import Controller, Response, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.pagination import OffsetPagination
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlalchemy.orm import Session

from market.auth.principal import Principal, Scope
from market.core.db import utcnow
from market.core.http import OnePassJSON, committed, requires
from market.core.idempotency import Idempotency
from market.core.queries import Page
from market.orders import service
from market.orders.models import Direction, OrderState
from market.orders.schemas import (
    BatchAccepted,
    FlexOfferBatchBody,
    FlexOfferCreate,
    FlexOfferRead,
    FlexRequestCreate,
    FlexRequestRead,
)

StateFilter = Annotated[OrderState | None, QueryParameter(name="state", description="active, revoked or expired")]


def provide_order_filters(
    market_id: FromQuery[uuid.UUID | None] = None,
    congestion_point_id: FromQuery[uuid.UUID | None] = None,
    direction: FromQuery[Direction | None] = None,
    order_state: StateFilter = None,
    delivery_from: FromQuery[datetime | None] = None,
    delivery_to: FromQuery[datetime | None] = None,
) -> dict[str, object]:
    """The filters of an order listing, shared by requests and offers."""
    return {
        "market_id": market_id,
        "congestion_point_id": congestion_point_id,
        "direction": direction,
        "state": order_state,
        "delivery_from": delivery_from,
        "delivery_to": delivery_to,
    }


BATCH_MAX_BODY_BYTES = 96 * 1024 * 1024
"""10,000 offers of 96 ISPs are about 60 MB of JSON; the general 8 MiB limit would cap such a batch
at about 1,400 offers."""

FILTERS = {"filters": Provide(provide_order_filters, sync_to_thread=False)}


class FlexRequestController(Controller):
    path = "/flex-requests"
    tags = ("orders",)
    dependencies = FILTERS

    @post(guards=[requires(Scope.TRADE)], sync_to_thread=True, status_code=201, summary="Post a FlexRequest (utility)")
    def create(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        data: JSONBody[FlexRequestCreate],
    ) -> Response[FlexRequestRead]:
        return idempotency.run(
            db_session, principal, lambda: service.create_request(db_session, principal, data, utcnow())
        )

    @get(sync_to_thread=True, summary="List one's FlexRequests (the operator sees all)")
    def list(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        page: NamedDependency[Page],
        filters: NamedDependency[dict[str, object]],
    ) -> OffsetPagination[FlexRequestRead]:
        rows, total = service.list_requests(db_session, principal, page, utcnow(), **filters)
        return OffsetPagination(rows, page.limit, page.offset, total)

    @get("/{request_id:uuid}", sync_to_thread=True, summary="Read a FlexRequest")
    def read(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        request_id: FromPath[uuid.UUID],
    ) -> FlexRequestRead:
        return service.get_request(db_session, principal, request_id, utcnow())

    @put(
        "/{request_id:uuid}",
        guards=[requires(Scope.TRADE)],
        sync_to_thread=True,
        summary="Revise a FlexRequest before gate closure; its revision goes up by one",
        description="The revision applies to the order as this request read it: if another change committed "
        "meanwhile, the answer is 409 (on `revision`, or on `state` if it was revoked); read it again and retry.",
    )
    def revise(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        request_id: FromPath[uuid.UUID],
        data: JSONBody[FlexRequestCreate],
    ) -> FlexRequestRead:
        return committed(db_session, service.revise_request(db_session, principal, request_id, data, utcnow()))

    @post(
        "/{request_id:uuid}/revoke",
        guards=[requires(Scope.TRADE)],
        sync_to_thread=True,
        status_code=200,
        summary="Revoke a FlexRequest before gate closure",
    )
    def revoke(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        request_id: FromPath[uuid.UUID],
    ) -> Response[FlexRequestRead]:
        return idempotency.run(
            db_session,
            principal,
            lambda: service.revoke_request(db_session, principal, request_id, utcnow()),
            status_code=200,
        )


class FlexOfferController(Controller):
    path = "/flex-offers"
    tags = ("orders",)
    dependencies = FILTERS

    @post(
        guards=[requires(Scope.TRADE)],
        sync_to_thread=True,
        status_code=201,
        summary="Submit a FlexOffer (household, aggregator, data center)",
    )
    def create(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        data: JSONBody[FlexOfferCreate],
    ) -> Response[FlexOfferRead]:
        return idempotency.run(
            db_session, principal, lambda: service.create_offer(db_session, principal, data, utcnow())
        )

    @post(
        "/batch",
        guards=[requires(Scope.TRADE)],
        sync_to_thread=True,
        status_code=201,
        summary="Submit up to 10,000 FlexOffers, all or nothing",
        request_max_body_size=BATCH_MAX_BODY_BYTES,
        dto=OnePassJSON[FlexOfferBatchBody],
        return_dto=None,
    )
    def create_batch(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        data: JSONBody[FlexOfferBatchBody],
    ) -> Response[BatchAccepted]:
        def produce() -> BatchAccepted:
            ids = service.create_offers(db_session, principal, data.offers, utcnow())
            return BatchAccepted(count=len(ids), ids=ids)

        return idempotency.run(db_session, principal, produce)

    @get(sync_to_thread=True, summary="List one's FlexOffers (the operator sees all)")
    def list(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        page: NamedDependency[Page],
        filters: NamedDependency[dict[str, object]],
    ) -> OffsetPagination[FlexOfferRead]:
        rows, total = service.list_offers(db_session, principal, page, utcnow(), **filters)
        return OffsetPagination(rows, page.limit, page.offset, total)

    @get("/{offer_id:uuid}", sync_to_thread=True, summary="Read a FlexOffer")
    def read(
        self, db_session: NamedDependency[Session], principal: NamedDependency[Principal], offer_id: FromPath[uuid.UUID]
    ) -> FlexOfferRead:
        return service.get_offer(db_session, principal, offer_id, utcnow())

    @put(
        "/{offer_id:uuid}",
        guards=[requires(Scope.TRADE)],
        sync_to_thread=True,
        summary="Revise a FlexOffer before gate closure; it queues anew (time priority)",
        description="The revision applies to the order as this request read it: if another change committed "
        "meanwhile, the answer is 409 (on `revision`, or on `state` if it was revoked); read it again and retry.",
    )
    def revise(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        offer_id: FromPath[uuid.UUID],
        data: JSONBody[FlexOfferCreate],
    ) -> FlexOfferRead:
        return committed(db_session, service.revise_offer(db_session, principal, offer_id, data, utcnow()))

    @post(
        "/{offer_id:uuid}/revoke",
        guards=[requires(Scope.TRADE)],
        sync_to_thread=True,
        status_code=200,
        summary="Revoke a FlexOffer before gate closure",
    )
    def revoke(
        self,
        db_session: NamedDependency[Session],
        principal: NamedDependency[Principal],
        idempotency: NamedDependency[Idempotency],
        offer_id: FromPath[uuid.UUID],
    ) -> Response[FlexOfferRead]:
        return idempotency.run(
            db_session,
            principal,
            lambda: service.revoke_offer(db_session, principal, offer_id, utcnow()),
            status_code=200,
        )
