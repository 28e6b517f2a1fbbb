"""Issuing statements: per participant and period, from the latest settlement run of each day.

A statement shows one line per order and ISP with the baseline, ordered, actual and delivered kW of
the run's delivery computation and the run's amounts, signed from the participant's side (see
:mod:`settlement.statements.document`): a seller is paid utilisation and availability and pays
penalties and the operator fee; a utility pays for the flexibility it bought and receives the
penalties. An aggregator's statement lists the shares it passed on to member sites, a household's
the shares it received.

Numbers are ``FLEX-<MARKET CODE>-000001`` onwards per market (the issuer), taken from a counter row
locked in the issuing transaction, so they are sequential and gap-free. Issuing the same period
again with the same runs returns the statement already issued; after new runs it issues a new one
that supersedes the old.

An issued statement stores its number, issue time, totals and the ids of the settlement runs it
covers. Runs never change once stored (a correction makes a new run), so the document is rebuilt
from exactly those runs on every download and always shows the figures it was issued with, while a
utility's statement of a month of awards never has to be stored as one huge blob. Issuing works
on aggregates (Polars group-bys over the period's lines), so the statement job for thousands of
participants builds no documents at all.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import polars as pl
from sqlalchemy import select
from sqlalchemy.orm import Session

from market.auth.principal import Principal
from market.core.bulk import from_micro, is_postgres, read_frame
from market.core.errors import InvalidInput, NotFound
from market.core.queries import Page, paginate
from market.markets.models import Market
from market.markets.service import get_market
from market.participants.models import Participant, Role
from settlement.statements.document import (
    Issuer,
    PassThroughLine,
    RunRef,
    StatementDocument,
    StatementLine,
    StatementParty,
    format_statement_number,
)
from settlement.statements.models import Statement, StatementSequence

MAX_PERIOD_DAYS = 366

_LATEST_RUNS = """
    SELECT r.id FROM settlement_run r
    WHERE r.market_id = :market AND r.delivery_day BETWEEN :start AND :end AND r.status = 'done'
      AND r.version = (SELECT MAX(r2.version) FROM settlement_run r2
                       WHERE r2.market_id = r.market_id AND r2.delivery_day = r.delivery_day AND r2.status = 'done')
"""

_LINE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "seller_id": pl.String,
    "utility_id": pl.String,
    "offer_id": pl.String,
    "isp_start": pl.Datetime("us", "UTC"),
    "delivery_day": pl.Date,
    "run_kind": pl.String,
    "run_version": pl.Int64,
    "direction": pl.String,
    "resource": pl.String,
    "baseline_kw": pl.Int64,
    "actual_kw": pl.Int64,
    "ordered_kw": pl.Int64,
    "delivered_kw": pl.Int64,
    "shortfall_kw": pl.Int64,
    "price_per_mwh": pl.Int64,
    "utilisation": pl.Int64,
    "penalty": pl.Int64,
    "availability": pl.Int64,
    "fee": pl.Int64,
}
# Every kW, price and amount of a line comes from settlement_line, stored as BIGINT millionths
# (ScaledDecimal): read as the integers they are, with no decimal text to parse.

_SHARE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "aggregator_id": pl.String,
    "member_id": pl.String,
    "delivery_day": pl.Date,
    "run_kind": pl.String,
    "run_version": pl.Int64,
    "portfolio": pl.String,
    "member_site": pl.String,
    "delivered_kwh": pl.Int64,
    "share": pl.Int64,
}


@dataclass(frozen=True)
class PeriodData:
    """Everything settled in one market and period, loaded once (all participants, or one)."""

    market: Market
    start: date
    end: date
    lines: pl.DataFrame
    shares: pl.DataFrame
    runs: list[RunRef]
    run_ids: list[uuid.UUID]

    @property
    def runs_key(self) -> str:
        canonical = json.dumps([[r.delivery_day.isoformat(), r.kind, r.version] for r in self.runs])
        return hashlib.sha256(canonical.encode()).hexdigest()


def due_per_participant(data: PeriodData) -> pl.DataFrame:
    """Per participant: ``amount_due`` (Int64 millionths, signed as on the statement: + the market
    pays) and ``line_count`` (lines + pass-through lines), the figures
    :class:`~settlement.statements.document.StatementDocument` computes from the same rows."""
    lines = data.lines
    seller_net = pl.col("utilisation") + pl.col("availability") - pl.col("penalty") - pl.col("fee")
    as_seller = lines.group_by(participant="seller_id").agg(due=seller_net.sum(), count=pl.len())
    as_utility = lines.group_by(participant="utility_id").agg(
        due=(pl.col("penalty") - pl.col("utilisation") - pl.col("availability")).sum(), count=pl.len()
    )
    passed = data.shares.filter(pl.col("aggregator_id") != pl.col("member_id"))
    received = passed.group_by(participant="member_id").agg(due=pl.col("share").sum(), count=pl.len())
    paid_on = passed.group_by(participant="aggregator_id").agg(due=-pl.col("share").sum(), count=pl.len())
    schema = {"participant": pl.String, "due": pl.Int64, "count": pl.UInt32}
    parts = [frame.cast(schema) for frame in (as_seller, as_utility, received, paid_on)]  # type: ignore[arg-type]
    return (
        pl.concat(parts)
        .group_by("participant")
        .agg(amount_due=pl.col("due").sum(), line_count=pl.col("count").sum())
        .sort("participant")
    )


def check_period(start: date, end: date) -> None:
    if end < start:
        raise InvalidInput.on("period_end", "must not be before period_start")
    if (end - start).days >= MAX_PERIOD_DAYS:
        raise InvalidInput.on("period_end", f"a statement covers at most {MAX_PERIOD_DAYS} days")


def _runs_filter(session: Session, run_ids: Sequence[uuid.UUID] | None) -> tuple[str, object]:
    """SQL selecting the run ids to read: the latest done run of each day in the period, or the given
    ones (a list bound as one text parameter, split by the database)."""
    if run_ids is None:
        return _LATEST_RUNS, None
    if is_postgres(session):
        return "SELECT unnest(string_to_array(:runs, ','))::uuid", ",".join(str(r) for r in run_ids)
    return "SELECT value FROM json_each(:runs)", json.dumps([r.hex for r in run_ids])


def load_period(
    session: Session,
    market: Market,
    start: date,
    end: date,
    participant: Participant | None = None,
    run_ids: Sequence[uuid.UUID] | None = None,
) -> PeriodData:
    """The lines and pass-through shares of the latest run of every settled day in the period (or
    of the runs named), for everyone or one participant. A utility's lines are those it pays for,
    anyone else's those it sold (one indexed column each, never an OR of both)."""
    check_period(start, end)
    runs_sql, runs_param = _runs_filter(session, run_ids)
    params: dict[str, object] = {"market": market.id, "start": start, "end": end, "runs": runs_param}
    who_lines = who_shares = ""
    if participant is not None:
        params["participant"] = participant.id
        side = "utility_id" if participant.role is Role.UTILITY else "seller_id"
        who_lines = f"AND sl.{side} = :participant"
        who_shares = "AND (ps.aggregator_id = :participant OR ps.member_id = :participant)"
    lines = read_frame(
        session,
        f"""
        SELECT sl.seller_id, sl.utility_id, sl.offer_id, sl.isp_start, r.delivery_day, r.kind, r.version,
               o.direction, COALESCE(s.meter_code, p.name), sl.baseline_kw, sl.actual_kw, sl.ordered_kw,
               sl.delivered_kw, sl.shortfall_kw, sl.price_per_mwh, sl.utilisation, sl.penalty, sl.availability, sl.fee
        FROM settlement_line sl
        JOIN settlement_run r ON r.id = sl.run_id
        JOIN flex_offer o ON o.id = sl.offer_id
        LEFT JOIN site s ON s.id = o.site_id
        LEFT JOIN portfolio p ON p.id = o.portfolio_id
        WHERE sl.run_id IN ({runs_sql}) {who_lines}
        """,  # noqa: S608 - only fixed SQL fragments are interpolated; values are bound
        params,
        _LINE_SCHEMA,
    )
    shares = read_frame(
        session,
        f"""
        SELECT ps.aggregator_id, ps.member_id, r.delivery_day, r.kind, r.version, p.name, s.meter_code,
               ps.delivered_kwh, ps.share
        FROM pass_through_share ps
        JOIN settlement_run r ON r.id = ps.run_id
        JOIN site s ON s.id = ps.site_id
        LEFT JOIN portfolio p ON p.id = s.portfolio_id
        WHERE ps.run_id IN ({runs_sql}) {who_shares}
        """,  # noqa: S608 - as above
        params,
        _SHARE_SCHEMA,
        micro_columns=("delivered_kwh", "share"),
    )
    run_rows = read_frame(
        session,
        f"SELECT r.id, r.delivery_day, r.kind, r.version FROM settlement_run r WHERE r.id IN ({runs_sql})",  # noqa: S608
        params,
        {"id": pl.String, "delivery_day": pl.Date, "kind": pl.String, "version": pl.Int64},
    ).sort("delivery_day")
    runs = [RunRef(day, kind, version) for day, kind, version in run_rows.drop("id").iter_rows()]
    return PeriodData(market, start, end, lines, shares, runs, [uuid.UUID(r) for r in run_rows["id"]])


def _micro(value: int | None) -> Decimal:
    return from_micro(int(value)) if value is not None else Decimal(0)


def _statement_lines(data: PeriodData, participant: str) -> Iterator[StatementLine]:
    """The participant's lines, signed from its side: as seller (+payment, −penalty, −fee) and as
    utility (−payment, +penalty, −availability)."""
    rows = data.lines.filter((pl.col("seller_id") == participant) | (pl.col("utility_id") == participant))
    minutes = data.market.isp_minutes
    for row in rows.iter_rows(named=True):
        sign = 1 if row["seller_id"] == participant else -1
        utilisation, penalty = _micro(row["utilisation"]), _micro(row["penalty"])
        availability, fee = _micro(row["availability"]), _micro(row["fee"])
        payment, penalty_signed, availability_signed = sign * utilisation, -sign * penalty, sign * availability
        fee_signed = -fee if sign == 1 else Decimal(0)
        yield StatementLine(
            delivery_day=row["delivery_day"],
            isp_start=row["isp_start"],
            order_ref=row["offer_id"],
            resource=row["resource"] or "",
            direction=row["direction"],
            baseline_kw=_micro(row["baseline_kw"]),
            ordered_kw=_micro(row["ordered_kw"]),
            actual_kw=_micro(row["actual_kw"]),
            delivered_kw=_micro(row["delivered_kw"]),
            shortfall_kw=_micro(row["shortfall_kw"]),
            price_per_mwh=_micro(row["price_per_mwh"]),
            payment=payment,
            penalty=penalty_signed,
            availability=availability_signed,
            fee=fee_signed,
            net=payment + penalty_signed + availability_signed + fee_signed,
            run_kind=row["run_kind"],
            run_version=row["run_version"],
            isp_minutes=minutes,
        )


def _pass_through_lines(data: PeriodData, participant: str) -> Iterator[PassThroughLine]:
    """Shares a household received (+) and an aggregator passed on (−). A site the aggregator owns
    itself received nothing: its share stayed in the aggregator's net."""
    rows = data.shares.filter(
        (pl.col("aggregator_id") != pl.col("member_id"))
        & ((pl.col("aggregator_id") == participant) | (pl.col("member_id") == participant))
    )
    for row in rows.iter_rows(named=True):
        share = _micro(row["share"])
        yield PassThroughLine(
            delivery_day=row["delivery_day"],
            portfolio=row["portfolio"] or "",
            member_site=row["member_site"],
            delivered_kwh=_micro(row["delivered_kwh"]),
            share=share if row["member_id"] == participant else -share,
            run_kind=row["run_kind"],
            run_version=row["run_version"],
        )


def build_document(
    data: PeriodData, participant: Participant, number: str, issued_at: datetime, notes: Sequence[str] = ()
) -> StatementDocument:
    pid = str(participant.id)
    market = data.market
    role_note = {
        Role.UTILITY: "Amounts you pay for flexibility procured, less penalties for under-delivery.",
        Role.HOUSEHOLD: "Pass-through lines are your share of your aggregator's revenue.",
        Role.AGGREGATOR: "Pass-through lines are the shares paid on to your member sites.",
    }.get(participant.role)
    return StatementDocument(
        number=number,
        issuer=Issuer(name=market.name, code=market.code),
        participant=StatementParty(id=pid, name=participant.name, role=participant.role.value),
        period_start=data.start,
        period_end=data.end,
        currency=market.currency,
        issued_at=issued_at,
        lines=list(_statement_lines(data, pid)),
        pass_through_lines=list(_pass_through_lines(data, pid)),
        runs=list(data.runs),
        notes=[*notes, *([role_note] if role_note else [])],
        time_zone=market.timezone,
    )


def _take_numbers(session: Session, market: Market, count: int) -> int:
    """Reserve ``count`` consecutive numbers of the market; returns the first. The counter row is locked
    until the transaction ends, so numbers are gap-free and never given twice."""
    select_counter = select(StatementSequence).where(StatementSequence.market_id == market.id).with_for_update()
    counter = session.scalar(select_counter)
    if counter is None:
        session.add(StatementSequence(market_id=market.id, last_number=0))
        session.flush()
        counter = session.scalar(select_counter)
        assert counter is not None  # noqa: S101 - just inserted in this transaction
    first = counter.last_number + 1
    counter.last_number += count
    session.flush()
    return first


def _latest_issued(
    session: Session, market_id: uuid.UUID, start: date, end: date, participant_ids: Sequence[uuid.UUID] | None = None
) -> dict[uuid.UUID, Statement]:
    """The latest statement of each participant for exactly this market and period."""
    statement = select(Statement).where(
        Statement.market_id == market_id, Statement.period_start == start, Statement.period_end == end
    )
    if participant_ids is not None:
        statement = statement.where(Statement.participant_id.in_(participant_ids))
    latest: dict[uuid.UUID, Statement] = {}
    for row in session.scalars(statement.order_by(Statement.sequence)):
        latest[row.participant_id] = row
    return latest


def _issue_many(
    session: Session, data: PeriodData, issued_by: str, now: datetime, only: uuid.UUID | None
) -> list[tuple[Statement, bool]]:
    """Issue the statement of every participant in ``data`` (or only ``only``) whose latest statement
    for the period does not cover the same runs; the others keep theirs. Returns (statement, created)."""
    market = data.market
    dues = due_per_participant(data)
    if only is not None:
        dues = dues.filter(pl.col("participant") == str(only))
    ids = [uuid.UUID(p) for p in dues["participant"]]
    previous = _latest_issued(session, market.id, data.start, data.end, ids if only is not None else None)
    key = data.runs_key
    runs = [
        {"id": str(run_id), "day": ref.delivery_day.isoformat(), "kind": ref.kind, "version": ref.version}
        for run_id, ref in zip(data.run_ids, data.runs, strict=True)
    ]
    fresh = [
        (pid, due, count)
        for pid, due, count in zip(ids, dues["amount_due"], dues["line_count"], strict=True)
        if pid not in previous or previous[pid].runs_key != key
    ]
    out = [(previous[pid], False) for pid in ids if pid in previous and previous[pid].runs_key == key]
    if not fresh:
        return out
    first = _take_numbers(session, market, len(fresh))
    for offset, (pid, due, count) in enumerate(fresh):
        sequence = first + offset
        before = previous.get(pid)
        statement = Statement(
            id=uuid.uuid4(),
            market_id=market.id,
            participant_id=pid,
            sequence=sequence,
            number=format_statement_number(market.code.upper(), sequence),
            period_start=data.start,
            period_end=data.end,
            runs_key=key,
            runs=runs,
            line_count=int(count),
            amount_due=from_micro(int(due)),
            currency=market.currency,
            supersedes_id=before.id if before is not None else None,
            issued_by=issued_by[:64],
            issued_at=now,
        )
        session.add(statement)
        out.append((statement, True))
    session.flush()
    return out


def _participant_visible(session: Session, principal: Principal, participant_id: uuid.UUID) -> Participant:
    participant = session.get(Participant, participant_id)
    if participant is None or not principal.may_act_for(participant_id):
        raise NotFound.of("participant", participant_id)
    return participant


def issue(
    session: Session,
    principal: Principal,
    market_id: uuid.UUID,
    participant_id: uuid.UUID,
    start: date,
    end: date,
    now: datetime,
) -> tuple[Statement, bool]:
    """Issue one participant's statement (its own finance user, or the operator); returns
    (statement, created). A participant with nothing settled in the period is refused (404)."""
    participant = _participant_visible(session, principal, participant_id)
    market = get_market(session, market_id)
    data = load_period(session, market, start, end, participant)
    issued = _issue_many(session, data, f"participant:{principal.participant_id}", now, participant.id)
    if not issued:
        raise NotFound(detail=f"nothing of participant {participant_id} is settled in {start}..{end}")
    return issued[0]


def issue_all(session: Session, market_id: uuid.UUID, start: date, end: date, issued_by: str, now: datetime) -> int:
    """Issue the statement of every participant with lines or shares in the period (the statement
    job). The period is loaded once. Returns the number of statements newly issued."""
    market = get_market(session, market_id)
    data = load_period(session, market, start, end)
    return sum(created for _, created in _issue_many(session, data, issued_by, now, None))


def document_of(session: Session, statement: Statement) -> StatementDocument:
    """The statement's document, rebuilt from the runs it was issued on (which never change)."""
    market = get_market(session, statement.market_id)
    participant = session.get(Participant, statement.participant_id)
    if participant is None:
        raise NotFound.of("participant", statement.participant_id)
    run_ids = [uuid.UUID(r["id"]) for r in statement.runs]
    data = load_period(session, market, statement.period_start, statement.period_end, participant, run_ids=run_ids)
    notes: list[str] = []
    if statement.supersedes_id is not None:
        superseded = session.get(Statement, statement.supersedes_id)
        if superseded is not None:
            notes.append(f"Supersedes statement {superseded.number}.")
    return build_document(data, participant, statement.number, statement.issued_at, notes)


def get_statement(session: Session, principal: Principal, statement_id: uuid.UUID) -> Statement:
    statement = session.get(Statement, statement_id)
    if statement is None or not principal.may_act_for(statement.participant_id):
        raise NotFound.of("statement", statement_id)
    return statement


def list_statements(
    session: Session, principal: Principal, participant_id: uuid.UUID, page: Page
) -> tuple[list[Statement], int]:
    _participant_visible(session, principal, participant_id)
    statement = (
        select(Statement)
        .where(Statement.participant_id == participant_id)
        .order_by(Statement.period_start.desc(), Statement.sequence.desc())
    )
    return paginate(session, statement, page)
