"""The ledger on PostgreSQL: transfers post once, balances by hand, the database refuses what the
code refuses (append-only, amount > 0, two accounts, one currency, one posting key), batches are
all-or-nothing, concurrent posters store one set, and only the owner (or the operator) reads it."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from market.auth.principal import Scope
from market.clearing.models import ClearingRun, RunStatus
from market.core.db import make_engine, make_session_factory
from market.core.errors import Conflict, InvalidInput
from market.core.migrate import upgrade
from market.markets.models import Market
from market.participants.models import Role
from settlement.ledger import service
from settlement.ledger.errors import AlreadyPosted
from settlement.ledger.models import AccountKind, EntryKind, JournalEntry, LedgerAccount
from settlement.ledger.service import Transfer
from settlement.runs.models import RunKind, SettlementRun, SettlementStatus
from tests import factories
from tests.factories import Actor

DAY = date(2026, 3, 2)


def settlement_run(
    session: Session, market_id: uuid.UUID, day: date = DAY, version: int = 1, currency: str = "EUR"
) -> uuid.UUID:
    """A minimal clearing run and settlement run to post against (committed)."""
    clearing_id = session.scalar(
        select(ClearingRun.id).where(ClearingRun.market_id == market_id, ClearingRun.delivery_day == day)
    )
    if clearing_id is None:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        clearing = ClearingRun(
            market_id=market_id,
            delivery_day=day,
            horizon_start=start,
            horizon_end=start + timedelta(days=1),
            gate_closure_at=start - timedelta(hours=12),
            status=RunStatus.DONE,
            pricing_rule="pay_as_clear",
            solver="highs",
            input_hash="0" * 64,
            result_hash="0" * 64,
            welfare=Decimal(0),
            offer_count=0,
            request_count=0,
            award_count=0,
            book={},
            triggered_by="test",
            duration_ms=0,
        )
        session.add(clearing)
        session.flush()
        clearing_id = clearing.id
    run = SettlementRun(
        market_id=market_id,
        delivery_day=day,
        kind=RunKind.INITIAL if version == 1 else RunKind.RECONCILIATION,
        version=version,
        status=SettlementStatus.DONE,
        clearing_run_id=clearing_id,
        terms={},
        currency=currency,
        inputs_hash="0" * 64,
        triggered_by="test",
    )
    session.add(run)
    session.commit()
    return run.id


@dataclass
class Books:
    operator: Actor
    utility: Actor
    seller: Actor
    market: Market
    run_id: uuid.UUID
    utility_account: uuid.UUID
    seller_account: uuid.UUID
    fees_account: uuid.UUID

    def transfer(self, amount: str, kind: EntryKind = EntryKind.UTILISATION, **overrides: Any) -> Transfer:
        fields: dict[str, Any] = {
            "run_id": self.run_id,
            "offer_id": uuid.uuid4(),
            "kind": kind,
            "debit_account_id": self.utility_account,
            "credit_account_id": self.seller_account,
            "amount": Decimal(amount),
            "currency": "EUR",
            "delivery_day": DAY,
        }
        fields.update(overrides)
        return Transfer(**fields)


@pytest.fixture
def books(db: Session) -> Books:
    operator = factories.actor(db, Role.OPERATOR)
    utility = factories.actor(db, Role.UTILITY)
    seller = factories.actor(db, Role.HOUSEHOLD)
    market = factories.market(db, operator)
    run_id = settlement_run(db, market.id)
    ids = service.accounts_for(db, market.id, [utility.id, seller.id], "EUR")
    fees = service.account_for(db, market.id, None, AccountKind.OPERATOR_FEES, "EUR")
    db.commit()
    return Books(operator, utility, seller, market, run_id, ids[utility.id], ids[seller.id], fees.id)


def _entry_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(JournalEntry)) or 0


# -- posting and balances -----------------------------------------------------------------------


def test_transfers_post_and_balances_and_trial_balance_are_right_by_hand(db: Session, books: Books) -> None:
    offer = uuid.uuid4()
    posted = service.post(
        db,
        [
            books.transfer("100.5", offer_id=offer),
            books.transfer(
                "10",
                EntryKind.PENALTY,
                offer_id=offer,
                debit_account_id=books.seller_account,
                credit_account_id=books.utility_account,
            ),
            books.transfer(
                "1.25",
                EntryKind.OPERATOR_FEE,
                offer_id=offer,
                debit_account_id=books.seller_account,
                credit_account_id=books.fees_account,
                memo="0.5 EUR/MWh on 2.5 MWh",
            ),
        ],
    )
    db.commit()
    assert posted == 3

    seller = {b.kind: b for b in service.balances(db, books.seller.id)}[AccountKind.PARTICIPANT]
    assert (seller.debits, seller.credits, seller.balance) == (Decimal("11.25"), Decimal("100.5"), Decimal("89.25"))
    [utility] = service.balances(db, books.utility.id)
    assert (utility.debits, utility.credits, utility.balance) == (Decimal("100.5"), Decimal(10), Decimal("-90.5"))
    assert utility.code == f"P:{books.utility.id}:{books.market.id}:EUR"
    assert service.balances(db, books.utility.id, currency="USD") == []
    # 89.25 − 90.5 + 1.25 (fees) = 0
    assert service.trial_balance(db, books.market.id) == {"EUR": Decimal(0)}
    assert service.trial_balance(db) == {"EUR": Decimal(0)}
    fee = db.scalars(select(JournalEntry).where(JournalEntry.kind == EntryKind.OPERATOR_FEE)).one()
    assert (fee.amount, fee.memo, fee.delivery_day) == (Decimal("1.25"), "0.5 EUR/MWh on 2.5 MWh", DAY)


def test_accounts_are_got_or_created_once(db: Session, books: Books) -> None:
    again = service.accounts_for(db, books.market.id, [books.utility.id, books.seller.id], "EUR")
    assert again == {books.utility.id: books.utility_account, books.seller.id: books.seller_account}
    fees = service.account_for(db, books.market.id, None, AccountKind.OPERATOR_FEES, "EUR")
    assert fees.id == books.fees_account
    assert fees.code == f"F:{books.market.id}:EUR"
    single = service.account_for(db, books.market.id, books.seller.id, AccountKind.PARTICIPANT, "EUR")
    assert single.id == books.seller_account
    assert db.scalar(select(func.count()).select_from(LedgerAccount)) == 3
    with pytest.raises(InvalidInput, match="participant_id"):
        service.account_for(db, books.market.id, None, AccountKind.PARTICIPANT, "EUR")
    with pytest.raises(InvalidInput, match="currency"):
        service.accounts_for(db, books.market.id, [books.seller.id], "eur")


def test_posted_totals_net_each_pair_and_adjustments_post_only_the_difference(db: Session, books: Books) -> None:
    offer = uuid.uuid4()
    service.post(db, [books.transfer("100", offer_id=offer)])
    db.commit()
    totals = service.posted_totals(db, books.market.id, DAY)
    a, b = sorted([books.utility_account, books.seller_account])
    sign = 1 if books.utility_account == a else -1
    assert totals == {service.PostingPair(offer, EntryKind.UTILISATION, a, b): sign * Decimal(100)}
    paid = service.net_paid(totals, offer, EntryKind.UTILISATION, books.utility_account, books.seller_account)
    assert paid == Decimal(100)
    assert service.net_paid(totals, offer, EntryKind.UTILISATION, books.seller_account, books.utility_account) == -100

    # Reconciliation: the utilisation is 80 now, so the seller pays 20 back under the new run's id.
    rerun = settlement_run(db, books.market.id, version=2)
    fields = {
        "run_id": rerun,
        "offer_id": offer,
        "kind": EntryKind.UTILISATION,
        "payer": books.utility_account,
        "payee": books.seller_account,
        "currency": "EUR",
        "delivery_day": DAY,
    }
    back = service.adjustment(totals, target=Decimal(80), **fields)  # type: ignore[arg-type]
    assert back is not None
    assert (back.debit_account_id, back.credit_account_id, back.amount) == (
        books.seller_account,
        books.utility_account,
        Decimal(20),
    )
    service.post(db, [back])
    db.commit()
    totals = service.posted_totals(db, books.market.id, DAY)
    assert service.net_paid(totals, offer, EntryKind.UTILISATION, books.utility_account, books.seller_account) == 80
    assert service.adjustment(totals, target=Decimal(80), **fields) is None  # type: ignore[arg-type]
    assert service.posted_totals(db, books.market.id, DAY + timedelta(days=1)) == {}
    [seller] = service.balances(db, books.seller.id)
    assert seller.balance == Decimal(80)


# -- the database refuses -----------------------------------------------------------------------


APPEND_ONLY_BREACHES = [
    "UPDATE journal_entry SET amount = amount + 1",
    "DELETE FROM journal_entry",
    "UPDATE ledger_account SET currency = 'USD'",
    "DELETE FROM ledger_account",
]


def test_the_database_refuses_to_change_or_delete_entries_and_accounts(db: Session, books: Books) -> None:
    service.post(db, [books.transfer("5")])
    db.commit()
    for statement in APPEND_ONLY_BREACHES:
        with pytest.raises(DBAPIError, match="append-only"):
            db.execute(text(statement))
        db.rollback()
    assert _entry_count(db) == 1
    assert db.scalar(select(func.count()).select_from(LedgerAccount)) == 3
    assert db.scalars(select(JournalEntry.amount)).one() == Decimal(5)


def _raw_entry_for(run_id: uuid.UUID, debit: uuid.UUID, credit: uuid.UUID) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "settlement_run_id": run_id,
        "offer_id": uuid.uuid4(),
        "kind": EntryKind.UTILISATION,
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": Decimal(1),
        "currency": "EUR",
        "delivery_day": DAY,
        "memo": None,
        "created_at": datetime.now(UTC),
    }


def _raw_entry(books: Books, **overrides: Any) -> dict[str, Any]:
    return {**_raw_entry_for(books.run_id, books.utility_account, books.seller_account), **overrides}


RAW_BREACHES: list[tuple[dict[str, Any], str]] = [
    ({"amount": Decimal(0)}, "ck_journal_entry_amount_positive"),
    ({"amount": Decimal("-3")}, "ck_journal_entry_amount_positive"),
    ({"debit": "credit"}, "ck_journal_entry_two_accounts"),
    ({"currency": "USD"}, "fk_journal_entry_"),
    ({"debit_account_id": uuid.uuid4()}, "fk_journal_entry_debit_account_id_ledger_account"),
    ({"settlement_run_id": uuid.uuid4()}, "fk_journal_entry_settlement_run_id_settlement_run"),
    ({"duplicate": True}, "uq_journal_entry_posting_key"),
]


def test_the_database_refuses_what_the_code_refuses(db: Session, books: Books) -> None:
    """Raw INSERTs, bypassing :class:`Transfer` and :func:`post`: the constraints hold on their own."""
    for case, constraint in RAW_BREACHES:
        overrides = dict(case)
        if overrides.pop("debit", None):
            overrides["debit_account_id"] = books.seller_account
        duplicate = overrides.pop("duplicate", False)
        row = _raw_entry(books, **overrides)
        if duplicate:
            db.execute(insert(JournalEntry), [_raw_entry(books, offer_id=row["offer_id"])])
        with pytest.raises(IntegrityError, match=constraint):
            db.execute(insert(JournalEntry), [row])
        db.rollback()
    assert _entry_count(db) == 0


def test_a_usd_account_does_not_make_a_usd_leg_on_a_eur_account_valid(db: Session, books: Books) -> None:
    """The composite key: the leg's currency must be its own account's, not just any account's."""
    service.account_for(db, books.market.id, books.seller.id, AccountKind.PARTICIPANT, "USD")
    with pytest.raises(IntegrityError, match="fk_journal_entry_"):
        db.execute(insert(JournalEntry), [_raw_entry(books, currency="USD")])
    db.rollback()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"amount": Decimal(0)}, "amount"),
        ({"amount": Decimal("-1")}, "amount"),
        ({"amount": Decimal("0.0000001")}, "amount"),
        ({"amount": Decimal("1e14")}, "amount"),
        ({"amount": Decimal("NaN")}, "amount"),
        ({"credit_account_id": "debit"}, "credit_account_id"),
        ({"currency": "eur"}, "currency"),
    ],
)
def test_the_code_refuses_bad_transfers(overrides: dict[str, Any], field: str) -> None:
    account = uuid.uuid4()
    fields: dict[str, Any] = {
        "run_id": uuid.uuid4(),
        "offer_id": uuid.uuid4(),
        "kind": EntryKind.UTILISATION,
        "debit_account_id": account,
        "credit_account_id": uuid.uuid4(),
        "amount": Decimal(1),
        "currency": "EUR",
        "delivery_day": DAY,
    }
    fields.update(overrides)
    if fields["credit_account_id"] == "debit":
        fields["credit_account_id"] = account
    with pytest.raises(InvalidInput) as error:
        Transfer(**fields)
    assert [e.field for e in error.value.errors] == [field]


def test_post_refuses_a_currency_or_market_or_day_that_does_not_match(db: Session, books: Books) -> None:
    usd = service.account_for(db, books.market.id, books.seller.id, AccountKind.PARTICIPANT, "USD")
    with pytest.raises(InvalidInput, match="differs from the account's EUR"):
        service.post(db, [books.transfer("1", currency="USD", credit_account_id=usd.id)])
    other_market = factories.market(db, books.operator)
    elsewhere = service.account_for(db, other_market.id, books.seller.id, AccountKind.PARTICIPANT, "EUR")
    with pytest.raises(InvalidInput, match="another market"):
        service.post(db, [books.transfer("1", credit_account_id=elsewhere.id)])
    with pytest.raises(InvalidInput, match="the run settles"):
        service.post(db, [books.transfer("1", delivery_day=DAY + timedelta(days=1))])
    with pytest.raises(InvalidInput, match="no ledger account"):
        service.post(db, [books.transfer("1", credit_account_id=uuid.uuid4())])
    assert _entry_count(db) == 0


# -- exactly once --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [4, service.COPY_THRESHOLD + 100], ids=["insert", "copy"])
def test_a_batch_with_one_already_posted_key_stores_nothing(db: Session, books: Books, size: int) -> None:
    first = books.transfer("7.000001", memo="tab\there, newline\nthere, back\\slash")
    assert service.post(db, [first]) == 1
    db.commit()
    batch = [books.transfer(f"{i + 1}.5") for i in range(size - 1)]
    batch.insert(size // 2, first)
    with pytest.raises(AlreadyPosted, match="already posted") as error:
        service.post(db, batch)
    assert str(first.offer_id) in str(error.value)
    assert isinstance(error.value, Conflict)
    # The savepoint rolled the batch back; the session is still usable and holds only the first.
    assert _entry_count(db) == 1
    db.commit()
    assert _entry_count(db) == 1
    # Without the duplicate the same batch goes in whole, through the same path, memo intact.
    batch.remove(first)
    assert service.post(db, batch) == size - 1
    db.commit()
    assert _entry_count(db) == size
    stored = db.scalars(select(JournalEntry).where(JournalEntry.offer_id == first.offer_id)).one()
    assert (stored.memo, stored.amount) == (first.memo, Decimal("7.000001"))
    assert service.trial_balance(db, books.market.id) == {"EUR": Decimal(0)}
    [seller] = service.balances(db, books.seller.id)
    assert seller.credits == Decimal("7.000001") + sum((Decimal(f"{i + 1}.5") for i in range(size - 1)), Decimal(0))


def test_a_key_twice_in_one_batch_is_refused_before_the_database(db: Session, books: Books) -> None:
    transfer = books.transfer("3")
    with pytest.raises(AlreadyPosted, match="twice in one batch"):
        service.post(db, [transfer, books.transfer("4"), transfer])
    assert _entry_count(db) == 0


def test_the_same_offer_may_be_paid_both_ways_and_again_by_a_later_run(db: Session, books: Books) -> None:
    """The key includes the direction and the run: a penalty back and a re-run's difference are new keys."""
    offer = uuid.uuid4()
    rerun = settlement_run(db, books.market.id, version=2)
    service.post(
        db,
        [
            books.transfer("10", offer_id=offer),
            books.transfer(
                "2", offer_id=offer, debit_account_id=books.seller_account, credit_account_id=books.utility_account
            ),
            books.transfer("1", offer_id=offer, run_id=rerun),
        ],
    )
    db.commit()
    assert _entry_count(db) == 3
    [seller] = service.balances(db, books.seller.id)
    assert seller.balance == Decimal(9)


def test_concurrent_posters_store_exactly_one_set(
    db: Session, books: Books, session_factory: sessionmaker[Session]
) -> None:
    transfers = [books.transfer(f"{i + 1}") for i in range(5)]
    workers = 10
    barrier = threading.Barrier(workers)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(index: int) -> None:
        # Each worker sends the keys in its own order; post sorts them, so no deadlock.
        mine = transfers[index % 5 :] + transfers[: index % 5]
        with session_factory() as session:
            barrier.wait()
            try:
                service.post(session, mine)
                session.commit()
                outcome = "posted"
            except AlreadyPosted:
                session.rollback()
                outcome = "conflict"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["conflict"] * (workers - 1) + ["posted"]
    assert _entry_count(db) == 5
    [seller] = service.balances(db, books.seller.id)
    assert seller.credits == Decimal(15)


def test_concurrent_get_or_create_makes_one_account(
    db: Session, books: Books, session_factory: sessionmaker[Session]
) -> None:
    newcomer = factories.actor(db, Role.AGGREGATOR)
    workers = 8
    barrier = threading.Barrier(workers)
    ids: list[uuid.UUID] = []
    lock = threading.Lock()

    def attempt(index: int) -> None:
        with session_factory() as session:
            barrier.wait()
            if index % 2:
                account_id = service.accounts_for(session, books.market.id, [newcomer.id], "EUR")[newcomer.id]
            else:
                account_id = service.account_for(
                    session, books.market.id, newcomer.id, AccountKind.PARTICIPANT, "EUR"
                ).id
            session.commit()
        with lock:
            ids.append(account_id)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(ids) == workers
    assert len(set(ids)) == 1
    assert db.scalar(select(func.count()).select_from(LedgerAccount).where(LedgerAccount.participant_id == newcomer.id))


# -- the API ---------------------------------------------------------------------------------------


def _post_sample(db: Session, books: Books) -> uuid.UUID:
    offer = uuid.uuid4()
    service.post(
        db,
        [
            books.transfer("100", offer_id=offer),
            books.transfer(
                "4",
                EntryKind.OPERATOR_FEE,
                offer_id=offer,
                debit_account_id=books.seller_account,
                credit_account_id=books.fees_account,
            ),
        ],
    )
    db.commit()
    return offer


def test_a_participant_reads_its_own_balances_and_entries(
    client: TestClient[Litestar], db: Session, books: Books
) -> None:
    offer = _post_sample(db, books)
    response = client.get(f"/api/v1/participants/{books.seller.id}/ledger/balances", headers=books.seller.headers)
    assert response.status_code == 200, response.text
    [balance] = response.json()
    assert balance["account_id"] == str(books.seller_account)
    assert (balance["debits"], balance["credits"], balance["balance"]) == ("4", "100", "96")

    url = f"/api/v1/participants/{books.seller.id}/ledger/entries"
    response = client.get(url, headers=books.seller.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 2
    signed = {item["kind"]: item["signed_amount"] for item in body["items"]}
    assert signed == {"utilisation": "100", "operator_fee": "-4"}
    assert {item["offer_id"] for item in body["items"]} == {str(offer)}

    fees_only = client.get(url, params={"kind": "operator_fee"}, headers=books.seller.headers).json()
    assert [i["amount"] for i in fees_only["items"]] == ["4"]
    by_run = client.get(url, params={"run_id": str(books.run_id)}, headers=books.seller.headers).json()
    assert by_run["total"] == 2
    in_range = client.get(url, params={"from": DAY.isoformat(), "to": DAY.isoformat()}, headers=books.seller.headers)
    assert in_range.json()["total"] == 2
    later = client.get(url, params={"from": (DAY + timedelta(days=1)).isoformat()}, headers=books.seller.headers)
    assert later.json()["total"] == 0
    paged = client.get(url, params={"limit": 1, "offset": 1}, headers=books.seller.headers).json()
    assert (len(paged["items"]), paged["total"]) == (1, 2)
    backwards = client.get(
        url, params={"from": DAY.isoformat(), "to": (DAY - timedelta(days=1)).isoformat()}, headers=books.seller.headers
    )
    assert backwards.status_code == 422
    assert backwards.json()["errors"][0]["field"] == "from"

    utility = client.get(
        f"/api/v1/participants/{books.utility.id}/ledger/entries", headers=books.utility.headers
    ).json()
    assert [i["signed_amount"] for i in utility["items"]] == ["-100"]


def test_nobody_reads_another_participants_ledger_but_the_operator(
    client: TestClient[Litestar], db: Session, books: Books
) -> None:
    _post_sample(db, books)
    seller_urls = [
        f"/api/v1/participants/{books.seller.id}/ledger/balances",
        f"/api/v1/participants/{books.seller.id}/ledger/entries",
    ]
    for url in seller_urls:
        foreign = client.get(url, headers=books.utility.headers)
        assert foreign.status_code == 404, url
        assert "100" not in foreign.text
        assert client.get(url, headers=books.operator.headers).status_code == 200

    no_finance = factories.actor(db, Role.HOUSEHOLD, scopes=[Scope.TRADE])
    own = client.get(f"/api/v1/participants/{no_finance.id}/ledger/balances", headers=no_finance.headers)
    assert own.status_code == 403
    assert client.get(seller_urls[0]).status_code == 401

    trial = f"/api/v1/markets/{books.market.id}/ledger/trial-balance"
    assert client.get(trial, headers=books.seller.headers).status_code == 403
    response = client.get(trial, headers=books.operator.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"market_id": str(books.market.id), "totals": {"EUR": "0"}, "balanced": True}
    assert (
        client.get(f"/api/v1/markets/{uuid.uuid4()}/ledger/trial-balance", headers=books.operator.headers).status_code
        == 404
    )
    operator_view = client.get(seller_urls[0], headers=books.operator.headers).json()
    assert operator_view[0]["balance"] == "96"
    unknown = client.get(f"/api/v1/participants/{uuid.uuid4()}/ledger/balances", headers=books.operator.headers)
    assert unknown.status_code == 404


def test_the_embedded_sqlite_ledger_behaves_the_same(tmp_path: Path) -> None:
    """The embedded default runs the same code: triggers, constraints, conflict naming, balances."""
    url = f"sqlite:///{tmp_path / 'flex.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            operator = factories.actor(session, Role.OPERATOR)
            utility = factories.actor(session, Role.UTILITY)
            seller = factories.actor(session, Role.HOUSEHOLD)
            market = factories.market(session, operator)
            run_id = settlement_run(session, market.id)
            ids = service.accounts_for(session, market.id, [utility.id, seller.id], "EUR")
            assert service.accounts_for(session, market.id, [utility.id, seller.id], "EUR") == ids
            fees = service.account_for(session, market.id, None, AccountKind.OPERATOR_FEES, "EUR")
            assert service.account_for(session, market.id, None, AccountKind.OPERATOR_FEES, "EUR").id == fees.id
            offer = uuid.uuid4()
            pay = Transfer(
                run_id, offer, EntryKind.UTILISATION, ids[utility.id], ids[seller.id], Decimal("12.345678"), "EUR", DAY
            )
            fee = Transfer(run_id, offer, EntryKind.OPERATOR_FEE, ids[seller.id], fees.id, Decimal("0.5"), "EUR", DAY)
            assert service.post(session, [pay, fee]) == 2
            session.commit()

            again = Transfer(
                run_id, offer, EntryKind.UTILISATION, ids[utility.id], ids[seller.id], Decimal(1), "EUR", DAY
            )
            other = Transfer(
                run_id, uuid.uuid4(), EntryKind.UTILISATION, ids[utility.id], ids[seller.id], Decimal(1), "EUR", DAY
            )
            with pytest.raises(AlreadyPosted, match=str(offer)):
                service.post(session, [other, again])
            assert _entry_count(session) == 2
            [balance] = service.balances(session, seller.id)
            assert (balance.debits, balance.credits, balance.balance) == (
                Decimal("0.5"),
                Decimal("12.345678"),
                Decimal("11.845678"),
            )
            assert service.trial_balance(session, market.id) == {"EUR": Decimal(0)}
            totals = service.posted_totals(session, market.id, DAY)
            assert service.net_paid(totals, offer, EntryKind.UTILISATION, ids[utility.id], ids[seller.id]) == Decimal(
                "12.345678"
            )
            session.commit()
            for statement in APPEND_ONLY_BREACHES:
                with pytest.raises(DBAPIError, match="append-only"):
                    session.execute(text(statement))
                session.rollback()
            for case, _ in RAW_BREACHES[:4]:
                overrides = dict(case)
                if overrides.pop("debit", None):
                    overrides["credit_account_id"] = ids[utility.id]
                row = {**_raw_entry_for(run_id, ids[utility.id], ids[seller.id]), **overrides}
                with pytest.raises(IntegrityError):
                    session.execute(insert(JournalEntry), [row])
                session.rollback()
            assert _entry_count(session) == 2
    finally:
        engine.dispose()
