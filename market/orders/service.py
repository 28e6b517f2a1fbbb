"""The order book: create, revise, revoke and list FlexRequests and FlexOffers.

Every order is validated in full (pure rules in :mod:`market.orders.validation`, ownership and
existence here) before anything of it is kept: a single order before it is written, a batch as it
streams into PostgreSQL, inside a savepoint that a single bad offer rolls back. Gate closure is
checked against ``now``, which the caller passes, so tests and replays control the clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
from psycopg import sql
from sqlalchemy import Select, bindparam, insert, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql import Executable

from market.auth.principal import Principal
from market.core import audit
from market.core.errors import Conflict, FieldError, Forbidden, GateClosed, InvalidInput, NotFound
from market.core.queries import Page, paginate
from market.core.schema import error_field
from market.grid.models import CongestionPoint
from market.markets.models import Market
from market.markets.service import clock_of
from market.orders.models import Direction, FlexOffer, FlexRequest, OrderState
from market.orders.schemas import (
    FlexOfferCreate,
    FlexOfferRead,
    FlexRequestCreate,
    FlexRequestRead,
    IspQuantity,
    Storage,
    Tranche,
)
from market.orders.validation import Bounds, Profile, gate_errors, validate_offer, validate_request
from market.participants.models import FLEX_SELLERS, Portfolio, Role, Site

MAX_REPORTED_ERRORS = 1_000


def bounds_of(market: Market) -> Bounds:
    return Bounds(
        clock=clock_of(market),
        min_price_per_mwh=market.min_price_per_mwh,
        max_price_per_mwh=market.max_price_per_mwh,
        max_quantity_kw=market.max_quantity_kw,
    )


def state_of(order: FlexRequest | FlexOffer, now: datetime) -> OrderState:
    if order.revoked_at is not None:
        return OrderState.REVOKED
    if order.expires_at is not None and order.expires_at <= now:
        return OrderState.EXPIRED
    return OrderState.ACTIVE


def _dense(values: Sequence[str] | None) -> list[Decimal]:
    return [Decimal(v) for v in values or []]


def _isps(start: datetime, quantities: Sequence[str], market: Market) -> list[IspQuantity]:
    isp = clock_of(market).isp
    return [
        IspQuantity(start=start + i * isp, quantity_kw=Decimal(q)) for i, q in enumerate(quantities) if Decimal(q) != 0
    ]


def _profile_of(order: FlexRequest | FlexOffer) -> Profile:
    return Profile(start=order.period_start, end=order.period_end, quantities_kw=_dense(order.quantities_kw))


def _utc(instant: datetime | None) -> datetime | None:
    return instant.astimezone(UTC) if instant is not None else None


def _as_text(values: Sequence[Decimal]) -> list[str]:
    return [str(v) for v in values]


# -- reads --------------------------------------------------------------------------------------


def request_read(request: FlexRequest, market: Market, now: datetime) -> FlexRequestRead:
    return FlexRequestRead(
        id=request.id,
        market_id=request.market_id,
        utility_id=request.utility_id,
        congestion_point_id=request.congestion_point_id,
        direction=request.direction,
        isps=_isps(request.period_start, request.quantities_kw, market),
        max_price_per_mwh=request.max_price_per_mwh,
        revision=request.revision,
        state=state_of(request, now),
        expires_at=request.expires_at,
        revoked_at=request.revoked_at,
        created_at=request.created_at,
        submitted_at=request.submitted_at,
    )


def offer_read(offer: FlexOffer, market: Market, now: datetime) -> FlexOfferRead:
    storage = None
    if offer.storage_capacity_kwh is not None:
        storage = Storage(
            capacity_kwh=offer.storage_capacity_kwh,
            initial_kwh=offer.storage_initial_kwh or Decimal(0),
            efficiency=offer.storage_efficiency or Decimal(1),
        )
    return FlexOfferRead(
        id=offer.id,
        market_id=offer.market_id,
        seller_id=offer.seller_id,
        site_id=offer.site_id,
        portfolio_id=offer.portfolio_id,
        congestion_point_id=offer.congestion_point_id,
        direction=offer.direction,
        isps=_isps(offer.period_start, offer.quantities_kw, market),
        price_per_mwh=offer.price_per_mwh,
        tranches=[Tranche(share=Decimal(s), price_per_mwh=Decimal(p)) for s, p in offer.tranches]
        if offer.tranches
        else None,
        min_acceptance_fraction=offer.min_acceptance_fraction,
        block=offer.is_block,
        rebound=_isps(offer.rebound_start, offer.rebound_kw, market)
        if offer.rebound_start is not None and offer.rebound_kw
        else None,
        storage=storage,
        revision=offer.revision,
        state=state_of(offer, now),
        expires_at=offer.expires_at,
        revoked_at=offer.revoked_at,
        created_at=offer.created_at,
        submitted_at=offer.submitted_at,
    )


class MarketCache:
    """Markets by id, and their order bounds, loaded once per unit of work."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.markets: dict[uuid.UUID, Market] = {}
        self._bounds: dict[uuid.UUID, Bounds] = {}

    def get(self, market_id: uuid.UUID) -> Market:
        if market_id not in self.markets:
            market = self.session.get(Market, market_id)
            if market is None:
                raise NotFound.of("market", market_id)
            self.markets[market_id] = market
        return self.markets[market_id]

    def bounds(self, market: Market) -> Bounds:
        bounds = self._bounds.get(market.id)
        if bounds is None:
            bounds = self._bounds[market.id] = bounds_of(market)
        return bounds


def _check(errors: list[FieldError], gate: list[FieldError], what: str) -> None:
    if errors:
        raise InvalidInput(detail=f"the {what} is invalid", errors=errors[:MAX_REPORTED_ERRORS])
    if gate:
        raise GateClosed(detail=f"gate closure has passed for this {what}", errors=gate)


# -- requests -----------------------------------------------------------------------------------


def _require_utility(principal: Principal) -> None:
    if principal.role is not Role.UTILITY:
        raise Forbidden(detail="only a utility posts flexibility requests")


def _request_values(
    session: Session, principal: Principal, data: FlexRequestCreate, now: datetime
) -> tuple[Market, dict[str, Any]]:
    point = session.get(CongestionPoint, data.congestion_point_id)
    if point is None:
        raise InvalidInput.on("congestion_point_id", "no such congestion point")
    if point.utility_id != principal.participant_id:
        raise InvalidInput.on("congestion_point_id", "this congestion point is managed by another utility")
    market = MarketCache(session).get(point.market_id)
    bounds = bounds_of(market)
    profile, errors = validate_request(data, bounds, now)
    gate = gate_errors("isps", profile, bounds.clock, now) if profile else []
    _check(errors, gate, "request")
    assert profile is not None  # noqa: S101 - no errors means a profile
    return market, {
        "market_id": market.id,
        "congestion_point_id": point.id,
        "direction": data.direction,
        "period_start": profile.start,
        "period_end": profile.end,
        "quantities_kw": _as_text(profile.quantities_kw),
        "max_price_per_mwh": data.max_price_per_mwh,
        "expires_at": _utc(data.expires_at),
        "submitted_at": now,
    }


def create_request(session: Session, principal: Principal, data: FlexRequestCreate, now: datetime) -> FlexRequestRead:
    _require_utility(principal)
    market, values = _request_values(session, principal, data, now)
    request = FlexRequest(id=uuid.uuid4(), utility_id=principal.participant_id, created_at=now, **values)
    session.add(request)
    session.flush()
    audit.record(
        session, "request.create", "flex_request", request.id, after=audit.snapshot(request), principal=principal
    )
    return request_read(request, market, now)


def _own_request(session: Session, principal: Principal, request_id: uuid.UUID) -> FlexRequest:
    request = session.get(FlexRequest, request_id)
    if request is None or not principal.may_act_for(request.utility_id):
        raise NotFound.of("flex request", request_id)
    return request


def _require_open(order: FlexRequest | FlexOffer, market: Market, now: datetime, what: str) -> None:
    state = state_of(order, now)
    if state is not OrderState.ACTIVE:
        raise GateClosed.on("state", f"the {what} is {state.value} and can no longer change")
    gate = gate_errors("isps", _profile_of(order), clock_of(market), now)
    if gate:
        raise GateClosed(detail=f"gate closure has passed for this {what}", errors=gate)


def _audit_names(order: FlexRequest | FlexOffer) -> tuple[str, str]:
    """(action prefix, object type) of an order in the audit log."""
    return ("offer", "flex_offer") if isinstance(order, FlexOffer) else ("request", "flex_request")


# The SET clause comes from the parameters' column names; a statement built per request (``values()``)
# cost more than the round trip.
_UPDATE_UNCHANGED = {
    model: update(model).where(
        model.id == bindparam("read_id"), model.revision == bindparam("read_revision"), model.revoked_at.is_(None)
    )
    for model in (FlexRequest, FlexOffer)
}


def _write(session: Session, order: FlexRequest | FlexOffer, changes: dict[str, Any]) -> bool:
    """Write ``changes`` to the order's row with one Core UPDATE (no unit-of-work flush), and into the
    loaded object as its committed state; True if written.

    Only if the row is still as it was read, at the same revision and not revoked. Of two requests
    that read the same revision, the one whose UPDATE comes second finds no row (PostgreSQL checks
    the condition again once the first has committed) and gets False, instead of silently
    overwriting the first and logging a ``before`` that no longer was."""
    statement = _UPDATE_UNCHANGED[type(order)]
    result = session.connection().execute(statement, {**changes, "read_id": order.id, "read_revision": order.revision})
    if result.rowcount != 1:
        return False
    for name, value in changes.items():
        set_committed_value(order, name, value)
    return True


def _revised_meanwhile(what: str) -> Conflict:
    return Conflict.on("revision", f"the {what} was revised by another request meanwhile; read it and retry")


def _changed_meanwhile(
    session: Session, order: FlexRequest | FlexOffer, market: Market, now: datetime, what: str
) -> Conflict:
    """The error for a change that lost a race: the order read again, a 409 on its state if it is no
    longer active (revoked, say), else on its revision. (An order revised into another market is
    not checked against the gate of the market it left.)"""
    session.refresh(order)
    if order.market_id == market.id:
        _require_open(order, market, now, what)
    return _revised_meanwhile(what)


def _revise(
    session: Session,
    principal: Principal,
    order: FlexRequest | FlexOffer,
    values: dict[str, Any],
    market: Market,
    now: datetime,
    what: str,
) -> None:
    """Apply a validated revision: the new values, one revision more, and a new time priority. A
    revision that lost a race is refused (409): its values were validated against the order as read."""
    before = audit.snapshot(order)
    if not _write(session, order, {**values, "revision": order.revision + 1}):
        raise _changed_meanwhile(session, order, market, now, what)
    prefix, kind = _audit_names(order)
    audit.record(
        session, f"{prefix}.revise", kind, order.id, before=before, after=audit.snapshot(order), principal=principal
    )


def _revoke(
    session: Session, principal: Principal, order: FlexRequest | FlexOffer, market: Market, now: datetime, what: str
) -> None:
    """Revoke before gate closure; revoking a revoked order again changes nothing (and logs nothing).

    A revocation that lost a race reads the order again once: revoked meanwhile, there is nothing
    left to do; revised meanwhile, it revokes the new revision (the revocation does not depend on
    the values it read)."""
    for attempt in range(2):
        if order.revoked_at is not None:
            return
        _require_open(order, market, now, what)
        before = audit.snapshot(order)
        if _write(session, order, {"revoked_at": now}):
            prefix, kind = _audit_names(order)
            audit.record(
                session,
                f"{prefix}.revoke",
                kind,
                order.id,
                before=before,
                after=audit.snapshot(order),
                principal=principal,
            )
            return
        if attempt == 0:
            session.refresh(order)
            if order.market_id != market.id:  # revised into another market, with another gate
                raise _revised_meanwhile(what)
    raise _changed_meanwhile(session, order, market, now, what)


def revise_request(
    session: Session, principal: Principal, request_id: uuid.UUID, data: FlexRequestCreate, now: datetime
) -> FlexRequestRead:
    request = _own_request(session, principal, request_id)
    _require_utility(principal)
    cache = MarketCache(session)
    current = cache.get(request.market_id)
    _require_open(request, current, now, "request")
    market, values = _request_values(session, principal, data, now)
    _revise(session, principal, request, values, current, now, "request")
    return request_read(request, market, now)


def revoke_request(session: Session, principal: Principal, request_id: uuid.UUID, now: datetime) -> FlexRequestRead:
    request = _own_request(session, principal, request_id)
    market = MarketCache(session).get(request.market_id)
    _revoke(session, principal, request, market, now, "request")
    return request_read(request, market, now)


def get_request(session: Session, principal: Principal, request_id: uuid.UUID, now: datetime) -> FlexRequestRead:
    request = _own_request(session, principal, request_id)
    return request_read(request, MarketCache(session).get(request.market_id), now)


# -- offers -------------------------------------------------------------------------------------


def _require_seller(principal: Principal) -> None:
    if principal.role not in FLEX_SELLERS:
        raise Forbidden(detail="only households, aggregators and data centers offer flexibility")


class _ResourceRef(msgspec.Struct, gc=False):
    """The resource an offer still in JSON names, read without decoding the rest of it."""

    site_id: uuid.UUID | None = None
    portfolio_id: uuid.UUID | None = None


_REF_DECODER = msgspec.json.Decoder(_ResourceRef)
_OFFER_DECODER = msgspec.json.Decoder(FlexOfferCreate, strict=False)


def _resource_refs(offers: Sequence[FlexOfferCreate | msgspec.Raw]) -> Iterator[FlexOfferCreate | _ResourceRef]:
    """Each offer's site and portfolio; an offer whose JSON does not give them as ids names none
    (its decoding reports why)."""
    for offer in offers:
        if not isinstance(offer, msgspec.Raw):
            yield offer
            continue
        try:
            yield _REF_DECODER.decode(offer)
        except msgspec.ValidationError:
            continue


def _decoded(offer: FlexOfferCreate | msgspec.Raw) -> tuple[FlexOfferCreate | None, list[FieldError]]:
    """The offer as a Struct, or why its JSON is not a FlexOffer (lax mode, as a single offer's
    body: an amount may be a JSON number)."""
    if not isinstance(offer, msgspec.Raw):
        return offer, []
    try:
        return _OFFER_DECODER.decode(offer), []
    except msgspec.ValidationError as exc:
        field, reason = error_field(str(exc))
        return None, [FieldError(field, reason)]  # an empty field: the offer as a whole


def _resource_query(
    kind: type[Site] | type[Portfolio], owner: InstrumentedAttribute[uuid.UUID], with_markets: bool
) -> Executable:
    """The congestion point and market of each of the owner's resources among ``ids``; with the
    market rows if asked. Built once: a statement made per request cost more than running it."""
    statement = (
        select(kind.id, kind.congestion_point_id, CongestionPoint.market_id)
        .join(CongestionPoint, CongestionPoint.id == kind.congestion_point_id)
        .where(kind.id.in_(bindparam("ids", expanding=True)), owner == bindparam("owner"))
    )
    if with_markets:
        return statement.add_columns(Market).join(Market, Market.id == CongestionPoint.market_id)
    return statement


_RESOURCE_QUERIES = {
    (kind, with_markets): _resource_query(kind, owner, with_markets)
    for kind, owner in ((Site, Site.owner_id), (Portfolio, Portfolio.aggregator_id))
    for with_markets in (False, True)
}


class Resources:
    """The caller's sites and portfolios among the given ids, with their congestion points' markets:
    one query for the sites and one for the portfolios, each joined to its congestion point. Given a
    :class:`MarketCache`, each query also loads the markets into it (one round trip less for a
    single order; a batch names many sites of few markets and loads those apart)."""

    def __init__(
        self,
        session: Session,
        principal: Principal,
        site_ids: set[uuid.UUID],
        portfolio_ids: set[uuid.UUID],
        markets: MarketCache | None = None,
    ) -> None:
        self.market_of_point: dict[uuid.UUID, uuid.UUID] = {}
        self.sites = self._points(session, Site, principal.participant_id, site_ids, markets)
        self.portfolios = self._points(session, Portfolio, principal.participant_id, portfolio_ids, markets)

    def _points(
        self,
        session: Session,
        kind: type[Site] | type[Portfolio],
        owner: uuid.UUID,
        ids: set[uuid.UUID],
        markets: MarketCache | None,
    ) -> dict[uuid.UUID, uuid.UUID]:
        """The congestion point of each of ``ids`` that ``owner`` holds; their markets noted."""
        points: dict[uuid.UUID, uuid.UUID] = {}
        if not ids:
            return points
        rows = session.execute(_RESOURCE_QUERIES[kind, markets is not None], {"ids": list(ids), "owner": owner})
        for resource_id, point_id, market_id, *market in rows:
            points[resource_id] = point_id
            self.market_of_point[point_id] = market_id
            if markets is not None:
                markets.markets[market_id] = market[0]
        return points

    @classmethod
    def of(
        cls,
        session: Session,
        principal: Principal,
        offers: Iterable[FlexOfferCreate | _ResourceRef],
        markets: MarketCache | None = None,
    ) -> Resources:
        """The resources the offers name (offers or :class:`_ResourceRef` s)."""
        site_ids: set[uuid.UUID] = set()
        portfolio_ids: set[uuid.UUID] = set()
        for offer in offers:
            if offer.site_id is not None:
                site_ids.add(offer.site_id)
            if offer.portfolio_id is not None:
                portfolio_ids.add(offer.portfolio_id)
        return cls(session, principal, site_ids, portfolio_ids, markets)

    def point_of(self, data: FlexOfferCreate) -> tuple[uuid.UUID | None, list[FieldError]]:
        if data.site_id is not None and data.portfolio_id is None:
            point = self.sites.get(data.site_id)
            return point, [] if point else [FieldError("site_id", "not a site of yours")]
        if data.portfolio_id is not None and data.site_id is None:
            point = self.portfolios.get(data.portfolio_id)
            return point, [] if point else [FieldError("portfolio_id", "not a portfolio of yours")]
        return None, []  # the pure validation reports the missing or doubled resource


def _offer_values(
    data: FlexOfferCreate, resources: Resources, markets: MarketCache, now: datetime
) -> tuple[Market | None, dict[str, Any], list[FieldError], list[FieldError]]:
    """Validate one offer; return its market, its column values, its errors and its gate errors."""
    point, errors = resources.point_of(data)
    if point is None:
        if (data.site_id is None) == (data.portfolio_id is None):
            errors.append(FieldError("site_id", "give exactly one of site_id and portfolio_id"))
        return None, {}, errors, []
    market = markets.get(resources.market_of_point[point])
    bounds = markets.bounds(market)
    profile, rebound, offer_errors = validate_offer(data, bounds, now)
    errors += offer_errors
    if errors or profile is None:
        return market, {}, errors, []
    gate = gate_errors("isps", profile, bounds.clock, now)
    if rebound is not None:
        gate += gate_errors("rebound", rebound, bounds.clock, now)
    storage = data.storage
    values: dict[str, Any] = {
        "market_id": market.id,
        "congestion_point_id": point,
        "site_id": data.site_id,
        "portfolio_id": data.portfolio_id,
        "direction": data.direction,
        "period_start": profile.start,
        "period_end": profile.end,
        "quantities_kw": _as_text(profile.quantities_kw),
        "price_per_mwh": data.price_per_mwh,
        "tranches": [[str(t.share), str(t.price_per_mwh)] for t in data.tranches] if data.tranches else None,
        "min_acceptance_fraction": data.min_acceptance_fraction,
        "is_block": data.block,
        "rebound_start": rebound.start if rebound else None,
        "rebound_kw": _as_text(rebound.quantities_kw) if rebound else None,
        "storage_capacity_kwh": storage.capacity_kwh if storage else None,
        "storage_initial_kwh": storage.initial_kwh if storage else None,
        "storage_efficiency": storage.efficiency if storage else None,
        "expires_at": _utc(data.expires_at),
        "submitted_at": now,
    }
    return market, values, [], gate


def create_offer(session: Session, principal: Principal, data: FlexOfferCreate, now: datetime) -> FlexOfferRead:
    _require_seller(principal)
    markets = MarketCache(session)
    market, values, errors, gate = _offer_values(data, Resources.of(session, principal, [data], markets), markets, now)
    _check(errors, gate, "offer")
    assert market is not None  # noqa: S101 - no errors means a market
    offer = FlexOffer(
        id=uuid.uuid4(), seller_id=principal.participant_id, created_at=now, revision=1, revoked_at=None, **values
    )
    # One Core INSERT of every column, not the ORM's unit of work for one new row (the offer is
    # not read back in this request; its reply is built from the values).
    row = audit.column_values(offer)
    session.connection().execute(_INSERT_OFFER, row)
    audit.record(session, "offer.create", "flex_offer", offer.id, after=row, principal=principal)
    return offer_read(offer, market, now)


_INSERT_OFFER = insert(FlexOffer)


class _BatchRefused(Exception):
    """Raised inside a batch's stream to the database to abandon it: a bad offer was found."""


def create_offers(
    session: Session, principal: Principal, offers: Sequence[FlexOfferCreate | msgspec.Raw], now: datetime
) -> list[uuid.UUID]:
    """Store a batch all or nothing. Every bad offer is reported, prefixed ``offers[i].``.

    An offer may still be its JSON text (:class:`msgspec.Raw`, as the API passes a batch): it is
    decoded as its turn comes. Offers are decoded and validated as they stream into the database
    (:func:`bulk_insert_offers`), so PostgreSQL stores one chunk while Python reads the next (two
    cores busy instead of one after the other). The stream runs in a savepoint: at the first bad
    offer nothing more is sent, the rest is still checked so that every error is reported, and the
    stream is then abandoned, which rolls the savepoint back. Nothing of a refused batch is stored,
    offers or events, and the caller's transaction stays usable.
    """
    _require_seller(principal)
    resources = Resources.of(session, principal, _resource_refs(offers))
    markets = MarketCache(session)
    for market_id in set(resources.market_of_point.values()):
        markets.bounds(markets.get(market_id))  # loaded now: no query may run while the batch streams
    ids: list[uuid.UUID] = []
    seller = principal.participant_id
    errors: list[FieldError] = []
    gate: list[FieldError] = []

    def valid_rows() -> Iterator[dict[str, Any]]:
        for i, offer in enumerate(offers):
            data, offer_errors = _decoded(offer)
            offer_gate: list[FieldError] = []
            row: dict[str, Any] = {}
            if data is not None:
                _, row, offer_errors, offer_gate = _offer_values(data, resources, markets, now)
            if offer_errors or offer_gate:
                at = f"offers[{i}]"
                errors.extend(FieldError(f"{at}.{e.field}" if e.field else at, e.reason) for e in offer_errors)
                gate.extend(FieldError(f"{at}.{e.field}", e.reason) for e in offer_gate)
            if errors or gate:
                continue  # the batch is refused: check the rest, store nothing more
            row["id"] = uuid.uuid4()
            row["seller_id"] = seller
            row["created_at"] = now
            row["revision"] = 1
            row["revoked_at"] = None
            ids.append(row["id"])
            yield row
        if errors or gate:
            raise _BatchRefused

    try:
        with session.begin_nested():
            bulk_insert_offers(session, valid_rows(), principal)
    except _BatchRefused:
        pass
    _check(errors, gate, "batch")
    return ids


OFFER_COLUMNS = [c.name for c in FlexOffer.__table__.columns]
_OFFER_COLUMN_SET = frozenset(OFFER_COLUMNS)
BATCH_CHUNK_ROWS = 1_000
BATCH_FIRST_CHUNK_ROWS = 200
"""The first chunk is smaller: PostgreSQL, the slower of the two, starts storing sooner."""
_ROWS_JSON = msgspec.json.Encoder()
_INSERT_OFFERS = sql.SQL(
    "INSERT INTO flex_offer ({columns}) SELECT {columns} FROM json_populate_recordset(NULL::flex_offer, %(rows)s::json)"
).format(columns=sql.SQL(", ").join(map(sql.Identifier, OFFER_COLUMNS)))


def bulk_insert_offers(session: Session, rows: Iterable[dict[str, Any]], principal: Principal) -> None:
    """Insert offers, and an ``offer.create`` event for each, in the session's transaction.

    On PostgreSQL the rows go as JSON arrays of ``BATCH_CHUNK_ROWS`` (the first of
    ``BATCH_FIRST_CHUNK_ROWS``: the server waits less for its first work; msgspec encodes a chunk in C,
    about 2 µs a row; rendering COPY text in Python cost ten times that), each read by the server
    once for the offers (``json_populate_recordset``: every column by name, converted by its type's
    input function) and once for their events. The statements go through a pipeline: the server
    stores one chunk while ``rows`` is still validating the next. Elsewhere: executemany, and the
    events through :func:`audit.record_many`.
    """
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        values = list(rows)
        if values:
            session.execute(insert(FlexOffer), values)
        event = audit.event_row("offer.create", "flex_offer", uuid.UUID(int=0), principal=principal)
        audit.record_many(session, [{**event, "id": uuid.uuid4(), "object_id": r["id"], "after": r} for r in values])
        return
    raw = connection.connection.driver_connection
    if not isinstance(raw, psycopg.Connection):
        raise TypeError(f"the batch insert needs a psycopg connection, not {type(raw).__name__}")
    events_sql, events_params = audit.events_of_json_rows("offer.create", "flex_offer", principal=principal)
    with raw.pipeline(), raw.cursor() as cursor:
        chunk: list[dict[str, Any]] = []
        size = BATCH_FIRST_CHUNK_ROWS
        for row in rows:
            chunk.append(row)
            if len(chunk) == size:
                _send_chunk(cursor, chunk, events_sql, events_params)
                chunk, size = [], BATCH_CHUNK_ROWS
        if chunk:
            _send_chunk(cursor, chunk, events_sql, events_params)


def _send_chunk(
    cursor: psycopg.Cursor[Any], chunk: list[dict[str, Any]], events_sql: str, events_params: dict[str, Any]
) -> None:
    if chunk[0].keys() != _OFFER_COLUMN_SET:  # a missing key would be stored as NULL, silently
        raise ValueError(f"an offer row must hold exactly the columns {sorted(_OFFER_COLUMN_SET)}")
    text = _ROWS_JSON.encode(chunk).decode()
    cursor.execute(_INSERT_OFFERS, {"rows": text})
    cursor.execute(events_sql, {**events_params, "rows": text, "ids": [row["id"] for row in chunk]})


_OFFER_WITH_MARKET = (
    select(FlexOffer, Market).join(Market, Market.id == FlexOffer.market_id).where(FlexOffer.id == bindparam("id"))
)


def _own_offer(session: Session, principal: Principal, offer_id: uuid.UUID, markets: MarketCache) -> FlexOffer:
    """The caller's offer (any offer for the operator), its market loaded into ``markets`` by the
    same query."""
    row = session.execute(_OFFER_WITH_MARKET, {"id": offer_id}).one_or_none()
    if row is None or not principal.may_act_for(row[0].seller_id):
        raise NotFound.of("flex offer", offer_id)
    offer, market = row
    markets.markets[market.id] = market
    return offer


def revise_offer(
    session: Session, principal: Principal, offer_id: uuid.UUID, data: FlexOfferCreate, now: datetime
) -> FlexOfferRead:
    markets = MarketCache(session)
    offer = _own_offer(session, principal, offer_id, markets)
    _require_seller(principal)
    current = markets.get(offer.market_id)
    _require_open(offer, current, now, "offer")
    market, values, errors, gate = _offer_values(data, Resources.of(session, principal, [data]), markets, now)
    _check(errors, gate, "offer")
    assert market is not None  # noqa: S101 - no errors means a market
    _revise(session, principal, offer, values, current, now, "offer")
    return offer_read(offer, market, now)


def revoke_offer(session: Session, principal: Principal, offer_id: uuid.UUID, now: datetime) -> FlexOfferRead:
    markets = MarketCache(session)
    offer = _own_offer(session, principal, offer_id, markets)
    market = markets.get(offer.market_id)
    _revoke(session, principal, offer, market, now, "offer")
    return offer_read(offer, market, now)


def get_offer(session: Session, principal: Principal, offer_id: uuid.UUID, now: datetime) -> FlexOfferRead:
    markets = MarketCache(session)
    offer = _own_offer(session, principal, offer_id, markets)
    return offer_read(offer, markets.get(offer.market_id), now)


# -- listing ------------------------------------------------------------------------------------


def _filtered(
    statement: Select[Any],
    model: type[FlexOffer] | type[FlexRequest],
    now: datetime,
    *,
    market_id: uuid.UUID | None,
    congestion_point_id: uuid.UUID | None,
    direction: Direction | None,
    state: OrderState | None,
    delivery_from: datetime | None,
    delivery_to: datetime | None,
) -> Select[Any]:
    if market_id is not None:
        statement = statement.where(model.market_id == market_id)
    if congestion_point_id is not None:
        statement = statement.where(model.congestion_point_id == congestion_point_id)
    if direction is not None:
        statement = statement.where(model.direction == direction)
    if delivery_from is not None:
        statement = statement.where(model.period_end > delivery_from)
    if delivery_to is not None:
        statement = statement.where(model.period_start < delivery_to)
    if state is OrderState.REVOKED:
        statement = statement.where(model.revoked_at.is_not(None))
    elif state is OrderState.EXPIRED:
        statement = statement.where(model.revoked_at.is_(None), model.expires_at <= now)
    elif state is OrderState.ACTIVE:
        statement = statement.where(model.revoked_at.is_(None), or_(model.expires_at.is_(None), model.expires_at > now))
    return statement.order_by(model.submitted_at, model.id)


def list_offers(
    session: Session, principal: Principal, page: Page, now: datetime, **filters: Any
) -> tuple[list[FlexOfferRead], int]:
    statement = select(FlexOffer)
    if not principal.is_operator:
        statement = statement.where(FlexOffer.seller_id == principal.participant_id)
    rows, total = paginate(session, _filtered(statement, FlexOffer, now, **filters), page)
    markets = MarketCache(session)
    return [offer_read(o, markets.get(o.market_id), now) for o in rows], total


def list_requests(
    session: Session, principal: Principal, page: Page, now: datetime, **filters: Any
) -> tuple[list[FlexRequestRead], int]:
    statement = select(FlexRequest)
    if not principal.is_operator:
        statement = statement.where(FlexRequest.utility_id == principal.participant_id)
    rows, total = paginate(session, _filtered(statement, FlexRequest, now, **filters), page)
    markets = MarketCache(session)
    return [request_read(r, markets.get(r.market_id), now) for r in rows], total
