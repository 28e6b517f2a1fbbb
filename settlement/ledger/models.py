"""Tables of settlement.ledger: accounts and journal entries (TigerBeetle-style transfers).

A :class:`JournalEntry` is one balanced transfer: ``amount`` leaves the debit account and reaches the
credit account, both in the entry's currency. Debit and credit legs are the same row and the same
amount, so every entry balances to zero per currency by construction; the composite foreign keys
``(account_id, currency) -> ledger_account(id, currency)`` make the database refuse a leg in
another currency. Both tables are append-only: triggers (migration 0006) refuse UPDATE and DELETE.
MARKET.md, Ledger: "double-entry and append-only ... each payment is posted exactly once, enforced
by unique keys in the database".
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    CheckConstraint,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from market.core.db import Base, ExactDecimal, IdMixin, str_enum, utcnow


class AccountKind(StrEnum):
    """``participant``: what the market owes the participant (credit balance) or is owed by it
    (debit balance). ``operator_fees``: the market operator's fee income (no participant)."""

    PARTICIPANT = "participant"
    OPERATOR_FEES = "operator_fees"


class EntryKind(StrEnum):
    """What a transfer pays for (MARKET.md, Settlement).

    Money flows: ``utilisation`` and ``availability`` utility -> seller, ``penalty`` seller ->
    utility, ``operator_fee`` seller -> operator fees, ``pass_through`` aggregator -> member. A
    negative adjustment of a later run is a transfer the opposite way (amounts are always > 0).
    """

    UTILISATION = "utilisation"
    AVAILABILITY = "availability"
    PENALTY = "penalty"
    OPERATOR_FEE = "operator_fee"
    PASS_THROUGH = "pass_through"  # noqa: S105 - an entry kind, not a password


POSTING_KEY = ("settlement_run_id", "offer_id", "kind", "debit_account_id", "credit_account_id")
"""A run posts each (order, kind, direction of money) at most once; a re-run posts under its own run id."""
POSTING_KEY_CONSTRAINT = "uq_journal_entry_posting_key"


class LedgerAccount(IdMixin, Base):
    """One account per (market, participant, kind, currency); market-level accounts have no participant."""

    __tablename__ = "ledger_account"
    __table_args__ = (
        UniqueConstraint("market_id", "participant_id", "kind", "currency"),
        # The target of the entries' composite foreign keys: a leg must be in its account's currency.
        UniqueConstraint("id", "currency"),
        # ``code`` encodes the same tuple, so it is also unique where participant_id is NULL
        # (NULLs are distinct in the unique constraint above).
        CheckConstraint("(participant_id IS NULL) = (kind = 'operator_fees')", name="participant_iff_not_fees"),
        CheckConstraint("length(currency) = 3", name="currency_code"),
    )

    participant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("participant.id", ondelete="RESTRICT"), index=True
    )
    market_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("market.id", ondelete="RESTRICT"))
    kind: Mapped[AccountKind] = mapped_column(str_enum(AccountKind, "ledger_account_kind"))
    currency: Mapped[str] = mapped_column(String(3))
    code: Mapped[str] = mapped_column(String(100), unique=True)
    """``P:<participant>:<market>:<currency>`` or ``F:<market>:<currency>`` (see :func:`account_code`)."""
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


def account_code(market_id: uuid.UUID, participant_id: uuid.UUID | None, kind: AccountKind, currency: str) -> str:
    """The account's unique human-readable code; deterministic, so a get-or-create can conflict on it."""
    if kind is AccountKind.OPERATOR_FEES:
        return f"F:{market_id}:{currency}"
    return f"P:{participant_id}:{market_id}:{currency}"


class JournalEntry(IdMixin, Base):
    """One balanced transfer of ``amount`` from the debit account to the credit account."""

    __tablename__ = "journal_entry"
    __table_args__ = (
        ForeignKeyConstraint(
            ["debit_account_id", "currency"], ["ledger_account.id", "ledger_account.currency"], ondelete="RESTRICT"
        ),
        ForeignKeyConstraint(
            ["credit_account_id", "currency"], ["ledger_account.id", "ledger_account.currency"], ondelete="RESTRICT"
        ),
        UniqueConstraint(*POSTING_KEY, name=POSTING_KEY_CONSTRAINT),
        # ExactDecimal is integer millionths on SQLite, so only a comparison with 0 is portable.
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("debit_account_id <> credit_account_id", name="two_accounts"),
        Index("ix_journal_entry_debit", "debit_account_id", "delivery_day"),
        Index("ix_journal_entry_credit", "credit_account_id", "delivery_day"),
    )

    settlement_run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("settlement_run.id", ondelete="RESTRICT"))
    offer_id: Mapped[uuid.UUID]
    """The order (FlexOffer) the money is for; indexed through the posting key."""
    kind: Mapped[EntryKind] = mapped_column(str_enum(EntryKind, "journal_entry_kind"))
    debit_account_id: Mapped[uuid.UUID]
    credit_account_id: Mapped[uuid.UUID]
    amount: Mapped[Decimal] = mapped_column(ExactDecimal(20, 6))
    currency: Mapped[str] = mapped_column(String(3))
    delivery_day: Mapped[date] = mapped_column(Date())
    memo: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
