"""API schemas of settlement.ledger (read-only: entries are written only by settlement runs)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from market.core.schema import CamelStruct


class BalanceRead(CamelStruct):
    """One ledger account: ``balance`` = credits − debits; > 0: the market owes the participant, < 0: it owes."""

    account_id: uuid.UUID
    code: str
    market_id: uuid.UUID
    kind: str
    currency: str
    debits: Decimal
    credits: Decimal
    balance: Decimal


class EntryRead(CamelStruct):
    """A journal entry (one balanced transfer from the debit to the credit account).

    ``signed_amount`` is seen from the participant whose ledger is read: + credited to it, − debited.
    """

    id: uuid.UUID
    run_id: uuid.UUID
    offer_id: uuid.UUID
    kind: str
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: Decimal
    signed_amount: Decimal
    currency: str
    delivery_day: date
    memo: str | None
    created_at: datetime


class TrialBalanceRead(CamelStruct):
    """Σ over the market's accounts of credits − debits per currency; ``balanced`` when all are 0."""

    market_id: uuid.UUID
    totals: dict[str, Decimal]
    balanced: bool
