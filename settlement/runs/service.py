"""Settlement runs: delivery → amounts → pass-through → ledger differences, in one transaction.

Rules (MARKET.md, Settlement; the issue):

* Runs are versioned per (market, delivery day): version 1 is ``initial`` (due D+1), then any number
  of ``reconciliation`` runs (after meter corrections), and at most one ``final``, after which the
  day is closed.
* A run computes every line from scratch (delivery, amounts, shares), stores them under its own id,
  and posts to the ledger only the difference between what should have moved in total and what
  earlier runs already posted. A reconciliation whose inputs did not change makes no run at all.
* One run per (market, day) at a time: a PostgreSQL advisory lock serialises them, the unique
  (market, day, version) key and the partial unique index on running runs back it up, and the
  ledger's unique posting key makes a duplicated posting impossible.
* Everything a run writes commits together, so a crash leaves nothing half-written and the retried
  task starts over.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from market.auth.principal import Principal
from market.clearing.models import ClearingRun, RunStatus
from market.core import audit
from market.core.bulk import MICRO, copy_in, from_micro, is_postgres
from market.core.errors import Conflict, InvalidInput, NotFound
from market.core.queries import Page, paginate
from market.markets.models import Market
from market.markets.service import clock_of, get_market
from settlement.bulk import BinaryType, copy_binary
from settlement.delivery.models import MemberDelivery
from settlement.delivery.service import Delivery, compute_delivery, member_rows, record_computation, store_delivery
from settlement.ledger.models import AccountKind, EntryKind
from settlement.ledger.service import Transfer, account_for, accounts_for, post, posted_totals
from settlement.metering.models import ResettlementMark
from settlement.metering.service import consume_marks
from settlement.runs.allocation import pass_through
from settlement.runs.amounts import frame_amounts
from settlement.runs.models import (
    MarketSettlementTerms,
    PassThroughShare,
    RunKind,
    SettlementLine,
    SettlementRun,
    SettlementStatus,
)
from settlement.runs.money import minor_units
from settlement.runs.posting import Flow, FlowKey, differences, net_by_key
from settlement.runs.terms import SettlementTerms

# -- terms --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarketTerms:
    terms: SettlementTerms
    holiday_country: str | None
    initial_after_hours: int
    final_after_days: int


def terms_of(session: Session, market: Market) -> MarketTerms:
    """The market's terms, or the defaults (utilisation only, in the market's currency)."""
    record = session.get(MarketSettlementTerms, market.id)
    if record is None:
        return MarketTerms(SettlementTerms(currency=market.currency), None, 24, 30)
    return MarketTerms(
        SettlementTerms.from_dict(record.terms),
        record.holiday_country,
        record.initial_after_hours,
        record.final_after_days,
    )


def set_terms(
    session: Session,
    principal: Principal,
    market_id: uuid.UUID,
    terms: SettlementTerms,
    holiday_country: str | None,
    initial_after_hours: int,
    final_after_days: int,
) -> MarketTerms:
    """Replace a market's terms (operator). Runs snapshot the terms they used, so history is unchanged."""
    principal.require_operator()
    market = get_market(session, market_id)
    if terms.currency != market.currency:
        raise InvalidInput.on("currency", f"must be the market's currency {market.currency}")
    record = session.get(MarketSettlementTerms, market.id) or MarketSettlementTerms(market_id=market.id)
    record.terms = terms.to_dict()
    record.holiday_country = holiday_country
    record.initial_after_hours = initial_after_hours
    record.final_after_days = final_after_days
    session.add(record)
    session.flush()
    return terms_of(session, market)


# -- runs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SettleOutcome:
    run: SettlementRun
    created: bool
    """False when an existing run answered (a repeated initial, or a reconciliation with no changes)."""


def settlement_lock_key(market_id: uuid.UUID, day: date) -> int:
    """The PostgreSQL advisory-lock key of one (market, day): 64 bits of a hash of both."""
    digest = hashlib.sha256(f"settle:{market_id}:{day.isoformat()}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _lock(session: Session, market_id: uuid.UUID, day: date) -> None:
    """Serialise runs of one (market, day) until the transaction ends (PostgreSQL advisory lock).
    SQLite allows one writer at a time anyway."""
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": settlement_lock_key(market_id, day)})


def runs_of_day(session: Session, market_id: uuid.UUID, day: date) -> list[SettlementRun]:
    statement = (
        select(SettlementRun)
        .where(SettlementRun.market_id == market_id, SettlementRun.delivery_day == day)
        .order_by(SettlementRun.version)
    )
    return list(session.scalars(statement))


def day_has_ended(market: Market, day: date, now: datetime) -> bool:
    return now >= clock_of(market).day_bounds(day)[1]


def require_settleable(session: Session, market: Market, day: date, kind: RunKind, now: datetime) -> ClearingRun:
    """Refuse, with the reason, a run that may not happen now; return the day's clearing run.
    The API calls this before enqueueing, so the operator sees the error at once."""
    if not day_has_ended(market, day, now):
        raise Conflict.on("day", f"delivery day {day} has not ended yet; it can be settled from D+1")
    clearing = session.scalar(
        select(ClearingRun).where(ClearingRun.market_id == market.id, ClearingRun.delivery_day == day)
    )
    if clearing is None or clearing.status is not RunStatus.DONE:
        raise Conflict.on("day", f"delivery day {day} has not been cleared; there is nothing to settle")
    runs = runs_of_day(session, market.id, day)
    if any(r.kind is RunKind.FINAL for r in runs):
        raise Conflict.on("kind", f"delivery day {day} is settled final; no run may follow")
    if kind is not RunKind.INITIAL and not runs:
        raise Conflict.on("kind", f"delivery day {day} has no initial run yet; settle it initial first")
    return clearing


def _inputs_hash(delivery: Delivery, clearing: ClearingRun, terms: SettlementTerms) -> str:
    canonical = json.dumps(
        {"delivery": delivery.content_hash, "clearing": clearing.result_hash, "terms": terms.to_dict()},
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def settle_day(
    session: Session, market_id: uuid.UUID, day: date, kind: RunKind, now: datetime, triggered_by: str
) -> SettleOutcome:
    """Settle one delivery day (idempotent: a repeated initial returns the first run, a repeated
    final the final run; a reconciliation with unchanged inputs returns the latest run and posts
    nothing)."""
    market = get_market(session, market_id)
    _lock(session, market_id, day)
    runs = runs_of_day(session, market_id, day)
    if kind is RunKind.INITIAL and runs:
        return SettleOutcome(runs[0], created=False)
    if kind is RunKind.FINAL and runs and runs[-1].kind is RunKind.FINAL:
        return SettleOutcome(runs[-1], created=False)  # a redelivered final task: the day is closed already
    clearing = require_settleable(session, market, day, kind, now)
    terms = terms_of(session, market).terms
    delivery = compute_delivery(session, market, day, clearing)
    inputs_hash = _inputs_hash(delivery, clearing, terms)
    if kind is RunKind.RECONCILIATION and runs and runs[-1].inputs_hash == inputs_hash:
        # Nothing to settle again. If a verification stored other content since (readings corrected,
        # then corrected back), the day's latest computation becomes this one again, on its own.
        store_delivery(session, market, day, delivery, now, embedded=False)
        consume_marks(session, market_id, day, runs[-1].id)
        return SettleOutcome(runs[-1], created=False)
    # Embedded: the run's settlement lines below carry every award's delivery, so it is written once.
    computation, new_computation = record_computation(session, market, day, delivery, now, embedded=True)

    run = SettlementRun(
        id=uuid.uuid4(),
        market_id=market_id,
        delivery_day=day,
        kind=kind,
        version=len(runs) + 1,
        status=SettlementStatus.RUNNING,
        clearing_run_id=clearing.id,
        delivery_computation_id=computation.id,
        terms=terms.to_dict(),
        currency=terms.currency,
        inputs_hash=inputs_hash,
        triggered_by=triggered_by[:64],
        created_at=now,
    )
    session.add(run)
    session.flush()

    # The COPYs run in a worker thread, in order, on the session's connection, while this thread computes
    # what comes next (PostgreSQL parses and indexes the rows meanwhile); the session is left alone until
    # they are done (queue.wait()).
    with _CopyQueue(session) as queue:
        if new_computation:
            queue.copy(copy_in, MemberDelivery.__tablename__, member_rows(delivery, computation))
        lines = _settle_lines(market, delivery, terms)
        shares = _pass_through(market, run, delivery, lines, terms)
        queue.wait()
        ledger = _ledger_state(session, market, run, lines, shares, terms)
        line_count = queue.copy(copy_binary, SettlementLine.__tablename__, _line_rows(run, lines), LINE_TYPES)
        queue.copy(copy_in, PassThroughShare.__tablename__, shares, micro_columns=("delivered_kwh", "share"))
        transfers = _transfers(run, lines, shares, terms, ledger)
        queue.wait()
    run.line_count = line_count.result()
    run.entry_count = post(session, transfers)
    totals = lines.select(
        pl.col("utilisation").sum(), pl.col("penalty").sum(), pl.col("availability").sum(), pl.col("fee").sum()
    ).row(0)
    run.total_utilisation, run.total_penalty, run.total_availability, run.total_fee = (
        from_micro(int(v or 0)) for v in totals
    )
    run.status = SettlementStatus.DONE
    run.finished_at = now
    consume_marks(session, market_id, day, run.id)
    session.flush()
    # The run as committed (done, with its totals), in the same transaction.
    audit.record(session, "settlement.run", "settlement_run", run.id, after=audit.snapshot(run), actor=triggered_by)
    return SettleOutcome(run, created=True)


def _settle_lines(market: Market, delivery: Delivery, terms: SettlementTerms) -> pl.DataFrame:
    """Every award line of the day with its delivery and amounts (money as Int64 millionths)."""
    amounts = frame_amounts(delivery.settle.with_columns(isp_minutes=pl.lit(market.isp_minutes, pl.Int64)), terms)
    to_micro = 10 ** (6 - minor_units(terms.currency))
    return amounts.select(
        "offer_id",
        "isp_start",
        "seller_id",
        "utility_id",
        "portfolio_id",
        "ordered_kw",
        "baseline_kw",
        "actual_kw",
        "status",
        "method",
        "method_version",
        "delivered_kw",
        "shortfall_kw",
        "price_per_mwh",
        utilisation=pl.col("utilisation_minor") * to_micro,
        penalty=pl.col("penalty_minor") * to_micro,
        availability=pl.col("availability_minor") * to_micro,
        fee=pl.col("operator_fee_minor") * to_micro,
        net=pl.col("seller_net_minor") * to_micro,
    ).sort("seller_id", "offer_id", "isp_start")  # the primary key's order: COPY appends to its index


LINE_TYPES: dict[str, BinaryType] = {
    "run_id": "uuid", "seller_id": "uuid", "offer_id": "uuid", "isp_start": "timestamptz", "utility_id": "uuid",
    "ordered_kw": "int8", "baseline_kw": "int8", "actual_kw": "int8", "status": "text", "method": "text",
    "method_version": "int4", "delivered_kw": "int8", "shortfall_kw": "int8", "price_per_mwh": "int8",
    "utilisation": "int8", "penalty": "int8", "availability": "int8", "fee": "int8", "net": "int8",
}  # fmt: skip
"""settlement_line's columns as PostgreSQL stores them (kW, prices and amounts as BIGINT millionths,
ScaledDecimal; the Int64 columns as they are): the run's lines go in COPY's binary format."""


def _line_rows(run: SettlementRun, lines: pl.DataFrame) -> pl.DataFrame:
    return lines.drop("portfolio_id").with_columns(run_id=pl.lit(str(run.id)))


def _pass_through(
    market: Market, run: SettlementRun, delivery: Delivery, lines: pl.DataFrame, terms: SettlementTerms
) -> pl.DataFrame:
    """Shares of each portfolio offer's net revenue for its member sites' owners, by delivered energy.

    Weights are each member's delivered energy over the day (kWh, only ISPs where it delivered,
    i.e. Σ max(delivered kW, 0) × ISP hours); :func:`settlement.runs.allocation.pass_through` keeps
    the aggregator's fee share and allocates the rest to the cent. Sites the aggregator owns itself
    take part in the weights, and their share simply stays with the aggregator (no transfer).
    Only revenue is passed through: an offer whose net is zero or negative (penalties above its
    payment) leaves the loss with the aggregator, which took the delivery risk in the market;
    members are never charged for it.
    """
    schema = {
        "run_id": pl.String,
        "offer_id": pl.String,
        "site_id": pl.String,
        "aggregator_id": pl.String,
        "member_id": pl.String,
        "delivered_kwh": pl.Int64,
        "share": pl.Int64,
    }
    portfolio_nets = (
        lines.filter(pl.col("portfolio_id").is_not_null())
        .group_by("offer_id", "seller_id")
        .agg(pl.col("net").sum())
        .sort("offer_id")
    )
    if portfolio_nets.is_empty():
        return pl.DataFrame(schema=schema)
    hours_num, hours_den = market.isp_minutes, 60
    members = delivery.members
    weights = (
        members.group_by("offer_id", "site_id", "owner_id")
        .agg((pl.col("delivered_kw").clip(lower_bound=0).sum() * hours_num // hours_den).alias("delivered_kwh"))
        .sort("offer_id", "site_id")
    )
    rows: list[dict[str, object]] = []
    by_offer = {key[0]: group for key, group in weights.group_by("offer_id")}
    for offer_id, aggregator_id, net in portfolio_nets.iter_rows():
        group = by_offer.get(offer_id)
        if group is None or net <= 0:
            continue
        owners = dict(zip(group["site_id"], group["owner_id"], strict=True))
        kwh = {site: from_micro(v) for site, v in zip(group["site_id"], group["delivered_kwh"], strict=True)}
        result = pass_through(from_micro(int(net)), kwh, terms.aggregator_fee_share, terms.currency)
        for site, share in result.members.items():
            rows.append(
                {
                    "run_id": str(run.id),
                    "offer_id": offer_id,
                    "site_id": site,
                    "aggregator_id": aggregator_id,
                    "member_id": owners[site],
                    "delivered_kwh": int(kwh[site] * MICRO),
                    "share": int(share * MICRO),
                }
            )
    return pl.DataFrame(rows, schema=schema)


class _CopyQueue:
    """COPYs into the session's connection, run in order by one worker thread (PostgreSQL), so the caller
    computes while the server takes the rows; on SQLite each runs at once. Between :meth:`copy` and
    :meth:`wait` the caller must not use the session. Leaving the block waits for every COPY; the first
    one that failed raises (a failure inside the block waits for them too, then propagates)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="settle-copy") if is_postgres(session) else None
        self._pending: list[Future[int]] = []

    def __enter__(self) -> _CopyQueue:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if self._pool is None:
            return
        self._pool.shutdown(wait=True)
        if kind is None:
            self.wait()

    def copy(
        self, writer: Callable[..., int], table: str, frame: pl.DataFrame, *args: Any, **kwargs: Any
    ) -> Future[int]:
        """``writer(session, table, frame, *args, **kwargs)`` (:func:`copy_in`, :func:`copy_binary`), queued;
        the future gives its row count."""
        if self._pool is None:
            done: Future[int] = Future()
            done.set_result(writer(self._session, table, frame, *args, **kwargs))
            return done
        future = self._pool.submit(writer, self._session, table, frame, *args, **kwargs)
        self._pending.append(future)
        return future

    def wait(self) -> None:
        """Until every queued COPY is done (the session is the caller's again); raises the first failure."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()


@dataclass(frozen=True, slots=True)
class _LedgerState:
    accounts: dict[uuid.UUID, uuid.UUID]
    operator: uuid.UUID
    posted: dict[FlowKey, Decimal]


def _ledger_state(
    session: Session,
    market: Market,
    run: SettlementRun,
    lines: pl.DataFrame,
    shares: pl.DataFrame,
    terms: SettlementTerms,
) -> _LedgerState:
    """What :func:`_transfers` reads from the database: the accounts of everyone the run pays or charges
    (created if missing), the operator's fee account, and what earlier runs of the day posted."""
    participants = (
        set(lines["seller_id"].unique()) | set(lines["utility_id"].unique()) | set(shares["member_id"].unique())
    )
    accounts = accounts_for(session, market.id, [uuid.UUID(p) for p in participants], terms.currency)
    operator = account_for(session, market.id, None, AccountKind.OPERATOR_FEES, terms.currency).id
    posted: dict[FlowKey, Decimal] = {
        (k.offer_id, EntryKind(k.kind).value, k.account_a, k.account_b): v
        for k, v in posted_totals(session, market.id, run.delivery_day).items()
    }
    return _LedgerState(accounts, operator, posted)


def _transfers(
    run: SettlementRun, lines: pl.DataFrame, shares: pl.DataFrame, terms: SettlementTerms, ledger: _LedgerState
) -> list[Transfer]:
    """What should have moved in total minus what earlier runs posted, per (order, kind, pair). Pure."""
    per_offer = lines.group_by("offer_id", "seller_id", "utility_id").agg(
        pl.col("utilisation").sum(), pl.col("availability").sum(), pl.col("penalty").sum(), pl.col("fee").sum()
    )
    accounts, operator = ledger.accounts, ledger.operator
    flows: list[Flow] = []
    for offer, seller, utility, utilisation, availability, penalty, fee in per_offer.iter_rows():
        offer_id = uuid.UUID(offer)
        seller_account, utility_account = accounts[uuid.UUID(seller)], accounts[uuid.UUID(utility)]
        flows += [
            Flow(offer_id, EntryKind.UTILISATION.value, utility_account, seller_account, from_micro(utilisation)),
            Flow(offer_id, EntryKind.AVAILABILITY.value, utility_account, seller_account, from_micro(availability)),
            Flow(offer_id, EntryKind.PENALTY.value, seller_account, utility_account, from_micro(penalty)),
            Flow(offer_id, EntryKind.OPERATOR_FEE.value, seller_account, operator, from_micro(fee)),
        ]
    for offer, aggregator, member, share in shares.select(
        "offer_id", "aggregator_id", "member_id", "share"
    ).iter_rows():
        if member == aggregator:
            continue
        flows.append(
            Flow(
                uuid.UUID(offer),
                EntryKind.PASS_THROUGH.value,
                accounts[uuid.UUID(aggregator)],
                accounts[uuid.UUID(member)],
                from_micro(share),
            )
        )
    return [
        Transfer(
            run_id=run.id,
            offer_id=d.offer_id,
            kind=EntryKind(d.kind),
            debit_account_id=d.debit_account,
            credit_account_id=d.credit_account,
            amount=d.amount,
            currency=terms.currency,
            delivery_day=run.delivery_day,
        )
        for d in differences(net_by_key(flows), ledger.posted)
    ]


# -- scheduling ---------------------------------------------------------------------------------


def _marked_days(session: Session) -> list[tuple[uuid.UUID, date]]:
    """(market, day) pairs with meter corrections no run has taken up yet."""
    rows = session.execute(
        select(ResettlementMark.market_id, ResettlementMark.delivery_day)
        .where(ResettlementMark.settled_by_run_id.is_(None))
        .distinct()
    ).all()
    return [(market_id, day) for market_id, day in rows]


@dataclass(frozen=True, slots=True)
class DueRun:
    market_id: uuid.UUID
    day: date
    kind: RunKind


def due_runs(session: Session, now: datetime, lookback_days: int = 40) -> list[DueRun]:
    """What the scheduler should run now, decided from the database (never from long ETAs):

    * ``initial``: the day was cleared, has no run, and ``initial_after_hours`` have passed since it ended;
    * ``reconciliation``: meter corrections marked the day and its last run is not final;
    * ``final``: ``final_after_days`` have passed since the day and it has no final run.
    """
    due: list[DueRun] = []
    since = (now - timedelta(days=lookback_days)).date()
    cleared = session.execute(
        select(ClearingRun.market_id, ClearingRun.delivery_day).where(
            ClearingRun.delivery_day >= since, ClearingRun.status == RunStatus.DONE
        )
    ).all()
    marked = set(_marked_days(session))
    for market_id, day in cleared:
        market = session.get(Market, market_id)
        if market is None:
            continue
        schedule = terms_of(session, market)
        end = clock_of(market).day_bounds(day)[1]
        runs = runs_of_day(session, market_id, day)
        if any(r.kind is RunKind.FINAL for r in runs):
            continue
        if not runs:
            if now >= end + timedelta(hours=schedule.initial_after_hours):
                due.append(DueRun(market_id, day, RunKind.INITIAL))
        elif now >= end + timedelta(days=schedule.final_after_days):
            due.append(DueRun(market_id, day, RunKind.FINAL))
        elif (market_id, day) in marked:
            due.append(DueRun(market_id, day, RunKind.RECONCILIATION))
    return due


# -- reading ------------------------------------------------------------------------------------


def get_run(session: Session, principal: Principal, run_id: uuid.UUID) -> SettlementRun:
    """A run's header and totals: market-wide figures, for the operator."""
    principal.require_operator()
    run = session.get(SettlementRun, run_id)
    if run is None:
        raise NotFound.of("settlement run", run_id)
    return run


def list_runs(
    session: Session, principal: Principal, market_id: uuid.UUID, day: date | None, page: Page
) -> tuple[list[SettlementRun], int]:
    principal.require_operator()
    statement = select(SettlementRun).where(SettlementRun.market_id == market_id)
    if day is not None:
        statement = statement.where(SettlementRun.delivery_day == day)
    return paginate(session, statement.order_by(SettlementRun.delivery_day, SettlementRun.version), page)


def lines_of(session: Session, principal: Principal, run_id: uuid.UUID, page: Page) -> tuple[list[SettlementLine], int]:
    """A run's lines: the operator sees all, a seller its own, a utility what it pays for."""
    run = session.get(SettlementRun, run_id)
    if run is None:
        raise NotFound.of("settlement run", run_id)
    statement = select(SettlementLine).where(SettlementLine.run_id == run_id)
    if not principal.is_operator:
        mine = principal.participant_id
        statement = statement.where((SettlementLine.seller_id == mine) | (SettlementLine.utility_id == mine))
    order = (SettlementLine.seller_id, SettlementLine.offer_id, SettlementLine.isp_start)  # the primary key's
    return paginate(session, statement.order_by(*order), page)
