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
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import polars as pl
from sqlalchemy import select
from sqlalchemy.orm import Session

from market.auth.principal import Principal
from market.core.bulk import from_micro, read_frame
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
from settlement.statements.render import from_json, to_json

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
_LINE_MICRO = tuple(name for name, kind in _LINE_SCHEMA.items() if kind == pl.Int64 and name != "run_version")

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

    @property
    def runs_key(self) -> str:
        canonical = json.dumps([[r.delivery_day.isoformat(), r.kind, r.version] for r in self.runs])
        return hashlib.sha256(canonical.encode()).hexdigest()

    def participants(self) -> list[str]:
        ids = (
            set(self.lines["seller_id"])
            | set(self.lines["utility_id"])
            | set(self.shares["aggregator_id"])
            | set(self.shares["member_id"])
        )
        return sorted(ids)


def check_period(start: date, end: date) -> None:
    if end < start:
        raise InvalidInput.on("period_end", "must not be before period_start")
    if (end - start).days >= MAX_PERIOD_DAYS:
        raise InvalidInput.on("period_end", f"a statement covers at most {MAX_PERIOD_DAYS} days")


def load_period(
    session: Session, market: Market, start: date, end: date, participant_id: uuid.UUID | None = None
) -> PeriodData:
    """The lines and pass-through shares of the latest run of every settled day in the period."""
    check_period(start, end)
    params: dict[str, object] = {"market": market.id, "start": start, "end": end}
    who_lines = who_shares = ""
    if participant_id is not None:
        params["participant"] = participant_id
        who_lines = "AND (sl.seller_id = :participant OR sl.utility_id = :participant)"
        who_shares = "AND (ps.aggregator_id = :participant OR ps.member_id = :participant)"
    lines = read_frame(
        session,
        f"""
        SELECT sl.seller_id, sl.utility_id, sl.offer_id, sl.isp_start, r.delivery_day, r.kind, r.version,
               dl.direction, COALESCE(s.meter_code, p.name), dl.baseline_kw, dl.actual_kw, sl.ordered_kw,
               sl.delivered_kw, sl.shortfall_kw, sl.price_per_mwh, sl.utilisation, sl.penalty, sl.availability, sl.fee
        FROM settlement_line sl
        JOIN settlement_run r ON r.id = sl.run_id
        JOIN delivery_line dl ON dl.computation_id = r.delivery_computation_id
             AND dl.offer_id = sl.offer_id AND dl.isp_start = sl.isp_start
        JOIN flex_offer o ON o.id = sl.offer_id
        LEFT JOIN site s ON s.id = o.site_id
        LEFT JOIN portfolio p ON p.id = o.portfolio_id
        WHERE sl.run_id IN ({_LATEST_RUNS}) {who_lines}
        """,  # noqa: S608 - only fixed SQL fragments are interpolated; values are bound
        params,
        _LINE_SCHEMA,
        micro_columns=_LINE_MICRO,
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
        WHERE ps.run_id IN ({_LATEST_RUNS}) {who_shares}
        """,  # noqa: S608 - as above
        params,
        _SHARE_SCHEMA,
        micro_columns=("delivered_kwh", "share"),
    )
    run_rows = read_frame(
        session,
        f"SELECT r.delivery_day, r.kind, r.version FROM settlement_run r WHERE r.id IN ({_LATEST_RUNS})",  # noqa: S608
        params,
        {"delivery_day": pl.Date, "kind": pl.String, "version": pl.Int64},
    )
    runs = [RunRef(day, kind, version) for day, kind, version in run_rows.sort("delivery_day").iter_rows()]
    return PeriodData(market, start, end, lines, shares, runs)


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


def _next_number(session: Session, market: Market) -> tuple[int, str]:
    counter = session.scalar(
        select(StatementSequence).where(StatementSequence.market_id == market.id).with_for_update()
    )
    if counter is None:
        counter = StatementSequence(market_id=market.id, last_number=0)
        session.add(counter)
        session.flush()
        counter = session.scalar(
            select(StatementSequence).where(StatementSequence.market_id == market.id).with_for_update()
        )
        assert counter is not None  # noqa: S101 - just inserted in this transaction
    counter.last_number += 1
    session.flush()
    return counter.last_number, format_statement_number(market.code.upper(), counter.last_number)


def _latest(
    session: Session, market_id: uuid.UUID, participant_id: uuid.UUID, start: date, end: date
) -> Statement | None:
    return session.scalar(
        select(Statement)
        .where(
            Statement.market_id == market_id,
            Statement.participant_id == participant_id,
            Statement.period_start == start,
            Statement.period_end == end,
        )
        .order_by(Statement.sequence.desc())
        .limit(1)
    )


def issue_from(
    session: Session, data: PeriodData, participant: Participant, issued_by: str, now: datetime
) -> tuple[Statement, bool]:
    """Issue the participant's statement from loaded period data; returns (statement, created)."""
    market = data.market
    previous = _latest(session, market.id, participant.id, data.start, data.end)
    if previous is not None and previous.runs_key == data.runs_key:
        return previous, False
    sequence, number = _next_number(session, market)
    notes = [f"Supersedes statement {previous.number}."] if previous is not None else []
    document = build_document(data, participant, number, now, notes)
    statement = Statement(
        id=uuid.uuid4(),
        market_id=market.id,
        participant_id=participant.id,
        sequence=sequence,
        number=number,
        period_start=data.start,
        period_end=data.end,
        runs_key=data.runs_key,
        runs=[{"day": r.delivery_day.isoformat(), "kind": r.kind, "version": r.version} for r in document.runs],
        line_count=len(document.lines) + len(document.pass_through_lines),
        amount_due=document.amount_due,
        currency=market.currency,
        document=to_json(document),
        supersedes_id=previous.id if previous is not None else None,
        issued_by=issued_by[:64],
        issued_at=now,
    )
    session.add(statement)
    session.flush()
    return statement, True


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
    """Issue one participant's statement (its own finance user, or the operator)."""
    participant = _participant_visible(session, principal, participant_id)
    market = get_market(session, market_id)
    data = load_period(session, market, start, end, participant.id)
    return issue_from(session, data, participant, f"participant:{principal.participant_id}", now)


def issue_all(session: Session, market_id: uuid.UUID, start: date, end: date, issued_by: str, now: datetime) -> int:
    """Issue the statement of every participant with lines or shares in the period (the statement
    job). The period is loaded once. Returns the number of statements newly issued."""
    market = get_market(session, market_id)
    data = load_period(session, market, start, end)
    ids = [uuid.UUID(p) for p in data.participants()]
    participants = {p.id: p for p in session.scalars(select(Participant).where(Participant.id.in_(ids)))}
    created = 0
    by_id: dict[str, PeriodData] = {}
    lines_by = {key[0]: frame for key, frame in data.lines.group_by("seller_id")}
    lines_by_utility = {key[0]: frame for key, frame in data.lines.group_by("utility_id")}
    shares_by = {key[0]: frame for key, frame in data.shares.group_by("aggregator_id")}
    shares_by_member = {key[0]: frame for key, frame in data.shares.group_by("member_id")}
    for pid in data.participants():
        empty_lines, empty_shares = data.lines.clear(), data.shares.clear()
        lines = pl.concat([lines_by.get(pid, empty_lines), lines_by_utility.get(pid, empty_lines)]).unique(
            subset=["offer_id", "isp_start"], keep="first", maintain_order=True
        )
        shares = pl.concat([shares_by.get(pid, empty_shares), shares_by_member.get(pid, empty_shares)])
        by_id[pid] = PeriodData(market, start, end, lines, shares, data.runs)
    for pid, own in by_id.items():
        participant = participants.get(uuid.UUID(pid))
        if participant is None:
            continue
        _, was_created = issue_from(session, own, participant, issued_by, now)
        created += was_created
    return created


def get_statement(session: Session, principal: Principal, statement_id: uuid.UUID) -> Statement:
    statement = session.get(Statement, statement_id)
    if statement is None or not principal.may_act_for(statement.participant_id):
        raise NotFound.of("statement", statement_id)
    return statement


def document_of(statement: Statement) -> StatementDocument:
    return from_json(statement.document)


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


def local_zone(market: Market) -> ZoneInfo:
    return ZoneInfo(market.timezone)
