"""Stateful test of the real ledger on PostgreSQL against a model of it.

Hypothesis drives random sequences of posts (valid batches, batches with an already posted or a
repeated key, transfers with invalid amounts, raw rows the database must refuse), each in its own
transaction, and checks after every step that the stored ledger equals a dict of balances and a
set of posted keys: balances match, the trial balance is 0, the entry count matches, and a refused
post changed nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from market.core.db import unit_of_work
from market.core.errors import InvalidInput
from market.participants.models import Role
from settlement.ledger import service
from settlement.ledger.errors import AlreadyPosted
from settlement.ledger.models import AccountKind, EntryKind, JournalEntry
from settlement.ledger.service import Transfer
from tests import factories
from tests.integration.test_ledger import DAY, settlement_run

PARTICIPANTS = 3
OFFERS = [uuid.UUID(int=i + 1) for i in range(3)]
KINDS = [EntryKind.UTILISATION, EntryKind.PENALTY]
ACCOUNTS = PARTICIPANTS + 1  # the participants' accounts and the operator's fee account

amounts = st.one_of(
    st.integers(1, 10**6).map(Decimal),
    st.integers(1, 10**12).map(lambda n: Decimal(n).scaleb(-6)),
)
# A draw of (run, offer, kind, debit, credit, amount); debit != credit. The key space is small on
# purpose, so batches often repeat a key that is posted already.
transfer_specs = st.tuples(
    st.integers(0, 1),
    st.integers(0, len(OFFERS) - 1),
    st.integers(0, len(KINDS) - 1),
    st.integers(0, ACCOUNTS - 1),
    st.integers(1, ACCOUNTS - 1),
    amounts,
)


def test_the_ledger_behaves_like_its_model(db: Session, session_factory: sessionmaker[Session]) -> None:
    operator = factories.actor(db, Role.OPERATOR)
    market = factories.market(db, operator)
    participant_ids = [factories.actor(db, Role.HOUSEHOLD).id for _ in range(PARTICIPANTS)]
    run_ids = [settlement_run(db, market.id, version=1), settlement_run(db, market.id, version=2)]

    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self._truncate()
            with unit_of_work(session_factory) as session:
                by_participant = service.accounts_for(session, market.id, participant_ids, "EUR")
                fees = service.account_for(session, market.id, None, AccountKind.OPERATOR_FEES, "EUR")
                self.accounts = [by_participant[p] for p in participant_ids] + [fees.id]
            self.balance = dict.fromkeys(self.accounts, Decimal(0))
            self.posted: set[tuple[Any, ...]] = set()

        def teardown(self) -> None:
            self._truncate()

        @staticmethod
        def _truncate() -> None:
            with unit_of_work(session_factory) as session:
                session.execute(text("TRUNCATE journal_entry, ledger_account"))

        def _transfer(self, spec: tuple[int, int, int, int, int, Decimal]) -> Transfer:
            run, offer, kind, debit, shift, amount = spec
            return Transfer(
                run_id=run_ids[run],
                offer_id=OFFERS[offer],
                kind=KINDS[kind],
                debit_account_id=self.accounts[debit],
                credit_account_id=self.accounts[(debit + shift) % ACCOUNTS],
                amount=amount,
                currency="EUR",
                delivery_day=DAY,
            )

        @rule(specs=st.lists(transfer_specs, min_size=1, max_size=5))
        def post_batch(self, specs: list[tuple[int, int, int, int, int, Decimal]]) -> None:
            batch = [self._transfer(spec) for spec in specs]
            keys = [t.key for t in batch]
            refused = len(set(keys)) < len(keys) or any(k in self.posted for k in keys)
            try:
                with unit_of_work(session_factory) as session:
                    assert service.post(session, batch) == len(batch)
            except AlreadyPosted:
                assert refused, "a batch of new keys was refused"
                return
            assert not refused, "a batch with a posted or repeated key was stored"
            for t in batch:
                self.posted.add(t.key)
                self.balance[t.debit_account_id] -= t.amount
                self.balance[t.credit_account_id] += t.amount

        @precondition(lambda self: bool(self.posted))
        @rule(data=st.data())
        def retry_a_posted_transfer(self, data: st.DataObject) -> None:
            """A retried task re-posts a key with whatever amount it computes now: always refused."""
            run, offer, kind, debit, credit = data.draw(st.sampled_from(sorted(self.posted, key=str)))
            again = Transfer(run, offer, kind, debit, credit, data.draw(amounts), "EUR", DAY)
            with pytest.raises(AlreadyPosted), unit_of_work(session_factory) as session:
                service.post(session, [again])

        @rule(spec=transfer_specs, bad=st.sampled_from([Decimal(0), Decimal(-5), Decimal("0.0000001")]))
        def the_code_refuses_a_bad_amount(self, spec: tuple[int, int, int, int, int, Decimal], bad: Decimal) -> None:
            with pytest.raises(InvalidInput):
                self._transfer((*spec[:5], bad))

        @rule(
            spec=transfer_specs,
            fault=st.sampled_from(["zero", "negative", "same_account", "other_currency", "posted_key"]),
        )
        def the_database_refuses_a_raw_row(self, spec: tuple[int, int, int, int, int, Decimal], fault: str) -> None:
            """Bypassing the service, a bad row still cannot get in."""
            t = self._transfer(spec)
            row: dict[str, Any] = {
                "id": uuid.uuid4(),
                "settlement_run_id": t.run_id,
                "offer_id": uuid.uuid4(),
                "kind": t.kind,
                "debit_account_id": t.debit_account_id,
                "credit_account_id": t.credit_account_id,
                "amount": t.amount,
                "currency": "EUR",
                "delivery_day": DAY,
                "memo": None,
                "created_at": datetime.now(UTC),
            }
            if fault == "zero":
                row["amount"] = Decimal(0)
            elif fault == "negative":
                row["amount"] = -t.amount
            elif fault == "same_account":
                row["credit_account_id"] = t.debit_account_id
            elif fault == "other_currency":
                row["currency"] = "USD"
            elif self.posted:
                run, offer, kind, debit, credit = sorted(self.posted, key=str)[0]
                row.update(settlement_run_id=run, offer_id=offer, kind=kind, debit_account_id=debit)
                row["credit_account_id"] = credit
            else:
                return
            with pytest.raises(IntegrityError), unit_of_work(session_factory) as session:
                session.execute(insert(JournalEntry), [row])

        @invariant()
        def balances_match_the_model(self) -> None:
            with session_factory() as session:
                stored = service.account_balances(session, self.accounts)
                assert {a: b.balance for a, b in stored.items()} == self.balance

        @invariant()
        def the_trial_balance_is_zero(self) -> None:
            with session_factory() as session:
                totals = service.trial_balance(session, market.id)
            assert totals == ({"EUR": Decimal(0)} if self.posted else {})

        @invariant()
        def every_posted_key_is_stored_once(self) -> None:
            with session_factory() as session:
                count = session.scalar(select(func.count()).select_from(JournalEntry))
                keys = session.execute(
                    select(
                        JournalEntry.settlement_run_id,
                        JournalEntry.offer_id,
                        JournalEntry.kind,
                        JournalEntry.debit_account_id,
                        JournalEntry.credit_account_id,
                    )
                ).all()
            assert count == len(self.posted)
            assert {tuple(k) for k in keys} == self.posted

    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
