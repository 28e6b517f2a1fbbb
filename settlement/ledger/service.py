"""The ledger service: accounts, posting transfers exactly once, balances and the trial balance.

Conventions (MARKET.md, Ledger):

- A :class:`Transfer` moves ``amount`` (> 0) from its debit account (the payer) to its credit
  account (the payee). Debit and credit leg are one row with one amount, so each entry balances
  to zero per currency by construction; the database refuses a leg whose account has another
  currency (composite foreign keys) and refuses amount <= 0 and debit = credit (CHECKs).
- An account's balance is credits − debits: positive means the market owes the participant,
  negative that the participant owes the market. Σ over all accounts of a currency is 0.
- Posting key: (run, offer, kind, debit account, credit account) is unique. A retried or
  duplicated task posting the same run's transfers again gets :class:`AlreadyPosted` and stores
  nothing; a re-run (reconciliation, final) posts only differences under its own run id.

Services only flush; the caller's unit of work commits or rolls back.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple

import psycopg
from sqlalchemy import Select, func, insert, or_, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from market.auth.principal import Principal
from market.core.amounts import decimal_places
from market.core.db import utcnow
from market.core.errors import FieldError, InvalidInput, NotFound
from market.core.queries import Page, paginate
from market.participants.service import get_participant
from settlement.ledger.errors import AlreadyPosted
from settlement.ledger.models import (
    POSTING_KEY_CONSTRAINT,
    AccountKind,
    EntryKind,
    JournalEntry,
    LedgerAccount,
    account_code,
)
from settlement.runs.models import SettlementRun

AMOUNT_PLACES = 6
MAX_AMOUNT = Decimal(10) ** 14
"""ExactDecimal(20, 6) holds 14 integer digits."""
COPY_THRESHOLD = 500
"""From this many transfers on, PostgreSQL gets them through COPY; fewer go as one multi-row INSERT."""
_CURRENCY = re.compile(r"^[A-Z]{3}$")


# -- transfers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transfer:
    """``amount`` from ``debit_account_id`` (payer) to ``credit_account_id`` (payee), for one offer.

    Refused on construction (:class:`InvalidInput`): amount <= 0, more than 6 decimal places,
    beyond ExactDecimal's range, debit = credit, a currency that is not 3 capital letters. That
    both accounts hold ``currency`` is checked by :func:`post` (and by the database).
    """

    run_id: uuid.UUID
    offer_id: uuid.UUID
    kind: EntryKind
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: Decimal
    currency: str
    delivery_day: date
    memo: str | None = None

    def __post_init__(self) -> None:
        errors = transfer_errors(self)
        if errors:
            raise InvalidInput(detail="; ".join(f"{e.field}: {e.reason}" for e in errors), errors=errors)

    @property
    def key(self) -> tuple[uuid.UUID, uuid.UUID, EntryKind, uuid.UUID, uuid.UUID]:
        """The posting key: unique in the database."""
        return (self.run_id, self.offer_id, self.kind, self.debit_account_id, self.credit_account_id)

    def describe_key(self) -> str:
        return (
            f"run {self.run_id}, offer {self.offer_id}, {self.kind.value}, "
            f"{self.debit_account_id} -> {self.credit_account_id}"
        )


def transfer_errors(transfer: Transfer) -> list[FieldError]:
    """What is wrong with a transfer by itself (the checks mirror the database's)."""
    errors: list[FieldError] = []
    amount = transfer.amount
    if not isinstance(amount, Decimal) or not amount.is_finite():
        errors.append(FieldError("amount", "must be a finite Decimal"))
    elif amount <= 0:
        errors.append(FieldError("amount", "must be greater than zero (post a negative difference the other way)"))
    elif amount >= MAX_AMOUNT:
        errors.append(FieldError("amount", f"must be below {MAX_AMOUNT}"))
    elif decimal_places(amount) > AMOUNT_PLACES:
        errors.append(FieldError("amount", f"must have at most {AMOUNT_PLACES} decimal places"))
    if transfer.debit_account_id == transfer.credit_account_id:
        errors.append(FieldError("credit_account_id", "must differ from the debit account"))
    if not _CURRENCY.match(transfer.currency):
        errors.append(FieldError("currency", "must be an ISO 4217 code of 3 capital letters"))
    if not isinstance(transfer.kind, EntryKind):
        errors.append(FieldError("kind", "must be an EntryKind"))
    return errors


# -- accounts ----------------------------------------------------------------------------------


_ACCOUNTS_BY_CODE = text("SELECT code, id FROM ledger_account WHERE code = ANY(CAST(:codes AS text[]))")
_CREATE_ACCOUNTS = text(
    """
    INSERT INTO ledger_account (id, participant_id, market_id, kind, currency, code, created_at)
    SELECT a.id, a.participant_id, :market, :kind, :currency, a.code, :now
    FROM unnest(CAST(:ids AS uuid[]), CAST(:participants AS uuid[]), CAST(:codes AS text[]))
         WITH ORDINALITY AS a(id, participant_id, code, n)
    ORDER BY a.n
    ON CONFLICT DO NOTHING
    """
)
"""PostgreSQL: every missing account of a run in one statement (arrays), in the given order."""


def _insert(session: Session) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing`` on PostgreSQL and SQLite."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _check_account_args(participant_id: uuid.UUID | None, kind: AccountKind, currency: str) -> None:
    if not _CURRENCY.match(currency):
        raise InvalidInput.on("currency", "must be an ISO 4217 code of 3 capital letters")
    if (participant_id is None) != (kind is AccountKind.OPERATOR_FEES):
        raise InvalidInput.on("participant_id", "a participant account needs a participant; the fee account has none")


def account_for(
    session: Session, market_id: uuid.UUID, participant_id: uuid.UUID | None, kind: AccountKind, currency: str
) -> LedgerAccount:
    """Get or create the account, safe under concurrency: INSERT ... ON CONFLICT DO NOTHING, then
    SELECT (a concurrent creator's row is visible to the SELECT once it commits)."""
    _check_account_args(participant_id, kind, currency)
    code = account_code(market_id, participant_id, kind, currency)
    existing = session.scalars(select(LedgerAccount).where(LedgerAccount.code == code)).one_or_none()
    if existing is not None:
        return existing
    session.execute(
        _insert(session)(LedgerAccount)
        .values(
            id=uuid.uuid4(),
            participant_id=participant_id,
            market_id=market_id,
            kind=kind,
            currency=currency,
            code=code,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing()
    )
    return session.scalars(select(LedgerAccount).where(LedgerAccount.code == code)).one()


def accounts_for(
    session: Session, market_id: uuid.UUID, participant_ids: Iterable[uuid.UUID], currency: str
) -> dict[uuid.UUID, uuid.UUID]:
    """Participant account ids of many participants in one market and currency (created if missing):
    one SELECT of the existing accounts, one INSERT ... ON CONFLICT DO NOTHING of the missing, and
    one SELECT of those (some may have been created concurrently)."""
    if not _CURRENCY.match(currency):
        raise InvalidInput.on("currency", "must be an ISO 4217 code of 3 capital letters")
    wanted = set(participant_ids)
    if not wanted:
        return {}
    codes = {account_code(market_id, p, AccountKind.PARTICIPANT, currency): p for p in wanted}
    postgres = session.get_bind().dialect.name == "postgresql"

    def read(selected: Iterable[str]) -> dict[uuid.UUID, uuid.UUID]:
        if postgres:  # one array parameter instead of thousands of bound values
            rows = session.execute(_ACCOUNTS_BY_CODE, {"codes": list(selected)}).all()
        else:
            rows = session.execute(
                select(LedgerAccount.code, LedgerAccount.id).where(LedgerAccount.code.in_(list(selected)))
            ).all()
        return {codes[code]: account_id for code, account_id in rows}

    found = read(codes)
    missing = sorted(code for code, participant in codes.items() if participant not in found)
    # One order for every writer (by code): no deadlock between concurrent runs creating accounts.
    if missing and postgres:
        session.execute(
            _CREATE_ACCOUNTS,
            {
                "ids": [uuid.uuid4() for _ in missing],
                "participants": [codes[code] for code in missing],
                "codes": missing,
                "market": market_id,
                "kind": AccountKind.PARTICIPANT.value,
                "currency": currency,
                "now": utcnow(),
            },
        )
    elif missing:
        now = utcnow()
        session.execute(
            _insert(session)(LedgerAccount).on_conflict_do_nothing(),
            [
                {
                    "id": uuid.uuid4(),
                    "participant_id": codes[code],
                    "market_id": market_id,
                    "kind": AccountKind.PARTICIPANT,
                    "currency": currency,
                    "code": code,
                    "created_at": now,
                }
                for code in missing
            ],
        )
    if missing:
        found.update(read(missing))
    return found


# -- posting -----------------------------------------------------------------------------------

ENTRY_COLUMNS = (
    "id",
    "settlement_run_id",
    "offer_id",
    "kind",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "currency",
    "delivery_day",
    "memo",
    "created_at",
)


def post(session: Session, transfers: Sequence[Transfer]) -> int:
    """Store ``transfers`` as journal entries, all or none, and return how many were stored.

    Checked first: no posting key twice in the batch, every account exists, holds the transfer's
    currency and belongs to the run's market, and the run exists and settles the transfer's day.
    A posting key that is stored already raises :class:`AlreadyPosted` naming the key; the batch
    runs inside a savepoint, so then nothing of it is stored and the caller's transaction stays
    usable. Rows go in posting-key order, so concurrent posters lock keys in one order.
    """
    if not transfers:
        return 0
    seen: set[tuple[Any, ...]] = set()
    for transfer in transfers:
        if transfer.key in seen:
            raise AlreadyPosted.of_key(transfer.describe_key() + " (twice in one batch)")
        seen.add(transfer.key)
    _check_against_stored(session, transfers)
    ordered = sorted(transfers, key=lambda t: tuple(str(part) for part in t.key))
    now = utcnow()
    rows = [
        {
            "id": uuid.uuid4(),
            "settlement_run_id": t.run_id,
            "offer_id": t.offer_id,
            "kind": t.kind,
            "debit_account_id": t.debit_account_id,
            "credit_account_id": t.credit_account_id,
            "amount": t.amount,
            "currency": t.currency,
            "delivery_day": t.delivery_day,
            "memo": t.memo,
            "created_at": now,
        }
        for t in ordered
    ]
    postgres = session.get_bind().dialect.name == "postgresql"
    try:
        with session.begin_nested():
            if postgres and len(rows) >= COPY_THRESHOLD:
                _copy_entries(session, rows)
            else:
                session.execute(insert(JournalEntry), rows)
    except (IntegrityError, psycopg.errors.UniqueViolation) as exc:
        if not _is_posting_key_violation(exc):
            raise
        raise _already_posted(session, exc, ordered) from exc
    return len(rows)


def _check_against_stored(session: Session, transfers: Sequence[Transfer]) -> None:
    """Accounts and runs exist and agree with each transfer (the code mirror of the foreign keys)."""
    account_ids = {t.debit_account_id for t in transfers} | {t.credit_account_id for t in transfers}
    accounts = {
        row.id: row
        for row in session.execute(
            select(LedgerAccount.id, LedgerAccount.currency, LedgerAccount.market_id).where(
                LedgerAccount.id.in_(account_ids)
            )
        )
    }
    run_ids = {t.run_id for t in transfers}
    runs = {
        row.id: row
        for row in session.execute(
            select(SettlementRun.id, SettlementRun.market_id, SettlementRun.delivery_day).where(
                SettlementRun.id.in_(run_ids)
            )
        )
    }
    for index, t in enumerate(transfers):
        run = runs.get(t.run_id)
        if run is None:
            raise NotFound.of("settlement run", t.run_id)
        if t.delivery_day != run.delivery_day:
            raise InvalidInput.on(f"transfers[{index}].delivery_day", f"the run settles {run.delivery_day}")
        for side, account_id in (("debit_account_id", t.debit_account_id), ("credit_account_id", t.credit_account_id)):
            account = accounts.get(account_id)
            if account is None:
                raise InvalidInput.on(f"transfers[{index}].{side}", f"no ledger account {account_id}")
            if account.currency != t.currency:
                raise InvalidInput.on(
                    f"transfers[{index}].currency", f"{t.currency} differs from the account's {account.currency}"
                )
            if account.market_id != run.market_id:
                raise InvalidInput.on(
                    f"transfers[{index}].{side}", "the account belongs to another market than the run"
                )


def _copy_text(value: object) -> str:
    """A value in PostgreSQL's COPY text format (``\\N`` is NULL; backslash, tab and newlines escaped)."""
    if value is None:
        return "\\N"
    text = value.value if isinstance(value, EntryKind) else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_entries(session: Session, rows: Sequence[Mapping[str, object]]) -> None:
    raw = session.connection().connection.driver_connection
    if not isinstance(raw, psycopg.Connection):
        raise TypeError(f"COPY needs a psycopg connection, not {type(raw).__name__}")
    lines = "".join("\t".join(_copy_text(row[c]) for c in ENTRY_COLUMNS) + "\n" for row in rows)
    with raw.cursor() as cursor, cursor.copy(f"COPY journal_entry ({', '.join(ENTRY_COLUMNS)}) FROM STDIN") as copy:
        copy.write(lines)


def _is_posting_key_violation(exc: Exception) -> bool:
    orig = exc.orig if isinstance(exc, IntegrityError) else exc
    if isinstance(orig, psycopg.errors.UniqueViolation):
        return orig.diag.constraint_name == POSTING_KEY_CONSTRAINT
    # SQLite names the columns: "UNIQUE constraint failed: journal_entry.settlement_run_id, ..."
    return "UNIQUE constraint failed: journal_entry.settlement_run_id" in str(orig)


def _already_posted(session: Session, exc: Exception, transfers: Sequence[Transfer]) -> AlreadyPosted:
    """The error naming the stored key: PostgreSQL's detail has it; otherwise look it up."""
    orig = exc.orig if isinstance(exc, IntegrityError) else exc
    if isinstance(orig, psycopg.Error) and orig.diag.message_detail:
        return AlreadyPosted.of_key(orig.diag.message_detail)
    keys = [t.key for t in transfers]
    stored = {
        tuple(row)
        for row in session.execute(
            select(
                JournalEntry.settlement_run_id,
                JournalEntry.offer_id,
                JournalEntry.kind,
                JournalEntry.debit_account_id,
                JournalEntry.credit_account_id,
            ).where(
                tuple_(
                    JournalEntry.settlement_run_id,
                    JournalEntry.offer_id,
                    JournalEntry.kind,
                    JournalEntry.debit_account_id,
                    JournalEntry.credit_account_id,
                ).in_(keys)
            )
        )
    }
    first = next((t for t in transfers if t.key in stored), None)
    return AlreadyPosted.of_key(first.describe_key() if first else "a transfer of this batch")


# -- what was posted ---------------------------------------------------------------------------


class PostingPair(NamedTuple):
    """Key of :func:`posted_totals`: ``account_a < account_b`` (UUID order), whatever the direction."""

    offer_id: uuid.UUID
    kind: EntryKind
    account_a: uuid.UUID
    account_b: uuid.UUID


def posted_totals(session: Session, market_id: uuid.UUID, delivery_day: date) -> dict[PostingPair, Decimal]:
    """The net amount posted so far for the market's delivery day, over all its runs.

    Key: (offer, kind, a, b) with the two accounts ordered so that ``a < b``. Value: Σ amounts
    paid a -> b (debit a, credit b) − Σ amounts paid b -> a; a negative value means money net
    flowed from b to a. One SQL GROUP BY; the pair is folded in Python. Read one direction with
    :func:`net_paid`; :func:`adjustment` turns a target into the transfer of the difference.
    """
    rows = session.execute(
        select(
            JournalEntry.offer_id,
            JournalEntry.kind,
            JournalEntry.debit_account_id,
            JournalEntry.credit_account_id,
            func.sum(JournalEntry.amount),
        )
        .join(SettlementRun, SettlementRun.id == JournalEntry.settlement_run_id)
        .where(SettlementRun.market_id == market_id, JournalEntry.delivery_day == delivery_day)
        .group_by(
            JournalEntry.offer_id, JournalEntry.kind, JournalEntry.debit_account_id, JournalEntry.credit_account_id
        )
    )
    totals: dict[PostingPair, Decimal] = defaultdict(Decimal)
    for offer_id, kind, payer, payee, amount in rows:
        if payer < payee:
            totals[PostingPair(offer_id, kind, payer, payee)] += amount
        else:
            totals[PostingPair(offer_id, kind, payee, payer)] -= amount
    return dict(totals)


def net_paid(
    totals: Mapping[PostingPair, Decimal], offer_id: uuid.UUID, kind: EntryKind, payer: uuid.UUID, payee: uuid.UUID
) -> Decimal:
    """Net amount ``payer`` has paid ``payee`` for (offer, kind) according to :func:`posted_totals`."""
    if payer < payee:
        return totals.get(PostingPair(offer_id, kind, payer, payee), Decimal(0))
    return -totals.get(PostingPair(offer_id, kind, payee, payer), Decimal(0))


def adjustment(
    totals: Mapping[PostingPair, Decimal],
    *,
    run_id: uuid.UUID,
    offer_id: uuid.UUID,
    kind: EntryKind,
    payer: uuid.UUID,
    payee: uuid.UUID,
    target: Decimal,
    currency: str,
    delivery_day: date,
    memo: str | None = None,
) -> Transfer | None:
    """The transfer that brings the net amount ``payer`` paid ``payee`` to ``target``:
    difference = target − posted; none when 0, payer -> payee when positive, payee -> payer
    (amount = −difference) when negative. MARKET.md: a re-run posts the difference as new entries."""
    difference = target - net_paid(totals, offer_id, kind, payer, payee)
    if difference == 0:
        return None
    debit, credit = (payer, payee) if difference > 0 else (payee, payer)
    return Transfer(run_id, offer_id, kind, debit, credit, abs(difference), currency, delivery_day, memo)


# -- balances ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's totals; ``balance`` = credits − debits (> 0: the market owes the participant)."""

    account_id: uuid.UUID
    code: str
    market_id: uuid.UUID
    participant_id: uuid.UUID | None
    kind: AccountKind
    currency: str
    debits: Decimal
    credits: Decimal

    @property
    def balance(self) -> Decimal:
        return self.credits - self.debits


def _leg_totals(session: Session, accounts: Select[uuid.UUID]) -> dict[uuid.UUID, tuple[Decimal, Decimal]]:
    """(Σ debits, Σ credits) per account among ``accounts`` (a SELECT of account ids): two GROUP BYs."""
    totals: dict[uuid.UUID, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for side, column in enumerate((JournalEntry.debit_account_id, JournalEntry.credit_account_id)):
        statement = (
            select(column, func.sum(JournalEntry.amount)).where(column.in_(accounts.scalar_subquery())).group_by(column)
        )
        for account_id, amount in session.execute(statement):
            totals[account_id][side] += amount
    return {account_id: (legs[0], legs[1]) for account_id, legs in totals.items()}


def balances(session: Session, participant_id: uuid.UUID, currency: str | None = None) -> list[Balance]:
    """Every account of the participant (optionally of one currency) with its debits, credits and balance."""
    statement = select(LedgerAccount.id).where(LedgerAccount.participant_id == participant_id)
    if currency is not None:
        statement = statement.where(LedgerAccount.currency == currency)
    return sorted(account_balances(session, list(session.scalars(statement))).values(), key=lambda b: b.code)


def account_balances(session: Session, account_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, Balance]:
    """Debits, credits and balance of each of the given accounts (unknown ids are left out)."""
    if not account_ids:
        return {}
    accounts = list(session.scalars(select(LedgerAccount).where(LedgerAccount.id.in_(account_ids))))
    totals = _leg_totals(session, select(LedgerAccount.id).where(LedgerAccount.id.in_(account_ids)))
    zero = (Decimal(0), Decimal(0))
    return {
        a.id: Balance(a.id, a.code, a.market_id, a.participant_id, a.kind, a.currency, *totals.get(a.id, zero))
        for a in accounts
    }


def trial_balance(session: Session, market_id: uuid.UUID | None = None) -> dict[str, Decimal]:
    """Σ over all accounts (of one market, or of all) of credits − debits, per currency.

    Must be 0 for every currency: each entry credits and debits the same amount in the same
    currency. Computed from the legs as stored (Σ credit legs − Σ debit legs, grouped by the
    leg's account currency), so a leg booked to a wrong account or market would show.
    """
    result: dict[str, Decimal] = {}
    for sign, column in ((-1, JournalEntry.debit_account_id), (1, JournalEntry.credit_account_id)):
        statement = (
            select(LedgerAccount.currency, func.sum(JournalEntry.amount))
            .join(LedgerAccount, LedgerAccount.id == column)
            .group_by(LedgerAccount.currency)
        )
        if market_id is not None:
            statement = statement.where(LedgerAccount.market_id == market_id)
        for currency, amount in session.execute(statement):
            result[currency] = result.get(currency, Decimal(0)) + sign * amount
    return result


# -- listing -----------------------------------------------------------------------------------


def list_entries(
    session: Session,
    page: Page,
    *,
    participant_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
    day_from: date | None = None,
    day_to: date | None = None,
    run_id: uuid.UUID | None = None,
    kind: EntryKind | None = None,
) -> tuple[list[JournalEntry], int]:
    """Entries touching the participant's accounts and/or one account, by delivery day (inclusive
    range), run and kind; oldest first."""
    statement = select(JournalEntry)
    if participant_id is not None:
        own = select(LedgerAccount.id).where(LedgerAccount.participant_id == participant_id).scalar_subquery()
        statement = statement.where(
            or_(JournalEntry.debit_account_id.in_(own), JournalEntry.credit_account_id.in_(own))
        )
    if account_id is not None:
        statement = statement.where(
            or_(JournalEntry.debit_account_id == account_id, JournalEntry.credit_account_id == account_id)
        )
    if day_from is not None:
        statement = statement.where(JournalEntry.delivery_day >= day_from)
    if day_to is not None:
        statement = statement.where(JournalEntry.delivery_day <= day_to)
    if run_id is not None:
        statement = statement.where(JournalEntry.settlement_run_id == run_id)
    if kind is not None:
        statement = statement.where(JournalEntry.kind == kind)
    return paginate(
        session, statement.order_by(JournalEntry.delivery_day, JournalEntry.created_at, JournalEntry.id), page
    )


# -- what a caller may see ---------------------------------------------------------------------


def participant_balances(
    session: Session, principal: Principal, participant_id: uuid.UUID, currency: str | None = None
) -> list[Balance]:
    """The participant's balances; another participant's are 'not found' (the operator reads all)."""
    get_participant(session, principal, participant_id)
    return balances(session, participant_id, currency)


def participant_entries(
    session: Session,
    principal: Principal,
    participant_id: uuid.UUID,
    page: Page,
    *,
    day_from: date | None = None,
    day_to: date | None = None,
    run_id: uuid.UUID | None = None,
    kind: EntryKind | None = None,
) -> tuple[list[tuple[JournalEntry, Decimal]], int]:
    """The participant's entries with the amount signed from its side: + credited to it, − debited."""
    get_participant(session, principal, participant_id)
    if day_from is not None and day_to is not None and day_from > day_to:
        raise InvalidInput.on("from", "must not be after 'to'")
    rows, total = list_entries(
        session, page, participant_id=participant_id, day_from=day_from, day_to=day_to, run_id=run_id, kind=kind
    )
    own = set(session.scalars(select(LedgerAccount.id).where(LedgerAccount.participant_id == participant_id)))
    return [(e, e.amount if e.credit_account_id in own else -e.amount) for e in rows], total
