"""Settlement end to end (in-process tasks, PostgreSQL): delivery → amounts → pass-through → ledger →
statements, with every figure computed by hand (see tests/integration/settlement_world.py).

Terms: penalty 100/MWh beyond a 10% tolerance, operator fee 2/MWh, aggregator fee share 20%.

Data center (ordered 500 kW at 80/MWh, delivered 400 kW, 15 minutes):
  utilisation 80 × 400 × 0.25 / 1000 = 8.00; shortfall 100 kW, 50 kW beyond the band →
  penalty 100 × 50 × 0.25 / 1000 = 1.25; fee 2 × 400 × 0.25 / 1000 = 0.20; net 6.55.
Aggregator portfolio (ordered 300 kW, delivered 180 + 120 = 300 kW):
  utilisation 80 × 300 × 0.25 / 1000 = 6.00; fee 0.15; net 5.85. Pass-through 5.85 × 0.8 = 4.68 by
  delivered energy 45 : 30 kWh → A 2.808, B 1.872 → cents 280 + 187 = 467, the last cent to the
  larger remainder (A) → A 2.81, B 1.87; the aggregator keeps 1.17.
Utility: pays 8.00 + 6.00, receives 1.25 → −12.75. Operator fees 0.35. Σ = 0.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from decimal import Decimal

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from pypdf import PdfReader
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from settlement.delivery.models import DeliveryComputation
from settlement.ledger.models import JournalEntry
from settlement.ledger.service import trial_balance
from settlement.runs.models import SettlementRun
from tests.integration.settlement_world import SettlementWorld, build


def _settle(client: TestClient[Litestar], sw: SettlementWorld, kind: str = "initial") -> dict:  # type: ignore[type-arg]
    response = client.post(
        f"/api/v1/markets/{sw.w.market.id}/settlements",
        headers=sw.w.operator.headers,
        json={"day": sw.day.isoformat(), "kind": kind},
    )
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


def _balance(client: TestClient[Litestar], who: object) -> Decimal:
    actor = who
    response = client.get(f"/api/v1/participants/{actor.id}/ledger/balances", headers=actor.headers)  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text
    body = response.json()
    items = body["items"] if isinstance(body, dict) else body
    return sum((Decimal(b["balance"]) for b in items), Decimal(0))


def test_a_day_settles_to_hand_computed_amounts_and_balances(client: TestClient[Litestar], db: Session) -> None:
    sw = build(client, db)
    w = sw.w
    run = _settle(client, sw)
    assert (run["kind"], run["version"], run["status"]) == ("initial", 1, "done")
    assert Decimal(run["total_utilisation"]) == Decimal("14.00")
    assert Decimal(run["total_penalty"]) == Decimal("1.25")
    assert Decimal(run["total_fee"]) == Decimal("0.35")

    assert _balance(client, w.data_center) == Decimal("6.55")
    assert _balance(client, w.aggregator) == Decimal("1.17")
    assert _balance(client, sw.member_a) == Decimal("2.81")
    assert _balance(client, sw.member_b) == Decimal("1.87")
    assert _balance(client, w.utility) == Decimal("-12.75")
    assert trial_balance(db, w.market.id) == {"EUR": Decimal(0)}

    lines = client.get(f"/api/v1/settlements/{run['id']}/lines", headers=w.data_center.headers).json()["items"]
    assert [
        (x["ordered_kw"], x["delivered_kw"], x["utilisation"], x["penalty"], x["fee"], x["net"]) for x in lines
    ] == [("500", "400", "8", "1.25", "0.2", "6.55")]
    # Someone else's run lines are filtered to their own: a household member has none as seller.
    assert client.get(f"/api/v1/settlements/{run['id']}/lines", headers=sw.member_a.headers).json()["total"] == 0

    # The same initial again is the same run, and posts nothing more.
    entries = db.scalar(select(func.count()).select_from(JournalEntry))
    assert _settle(client, sw)["id"] == run["id"]
    assert db.scalar(select(func.count()).select_from(JournalEntry)) == entries


def test_what_a_run_stored_cannot_be_changed_or_orphaned(client: TestClient[Litestar], db: Session) -> None:
    """Migration 0009: lines are append-only and runs and delivery computations are never deleted, so a
    line can never lose its parent (the per-row foreign keys were replaced by per-statement checks)."""
    sw = build(client, db)
    # Verified on its own first, so the day's computation has delivery_line rows (a run's own has none).
    verified = client.post(
        f"/api/v1/markets/{sw.w.market.id}/deliveries", headers=sw.w.operator.headers, json={"day": sw.day.isoformat()}
    )
    assert verified.status_code == 201, verified.text
    run = _settle(client, sw)
    statements = [
        ("UPDATE settlement_line SET net = 0 WHERE run_id = :id", "settlement_line is append-only"),
        ("DELETE FROM settlement_line WHERE run_id = :id", "settlement_line is append-only"),
        ("DELETE FROM settlement_run WHERE id = :id", "settlement_run rows are never deleted"),
        (
            "UPDATE delivery_line SET delivered_kw = 0 WHERE computation_id = "
            "(SELECT delivery_computation_id FROM settlement_run WHERE id = :id)",
            "delivery_line is append-only",
        ),
        (
            "DELETE FROM delivery_computation WHERE id = "
            "(SELECT delivery_computation_id FROM settlement_run WHERE id = :id)",
            "delivery_computation rows are never deleted",
        ),
    ]
    for sql, message in statements:
        with pytest.raises(DBAPIError, match=message), db.begin_nested():
            db.execute(text(sql), {"id": run["id"]})
    lines = db.scalar(text("SELECT count(*) FROM settlement_line WHERE run_id = :id"), {"id": run["id"]})
    assert lines == 2


def test_a_reconciliation_posts_only_the_differences(client: TestClient[Litestar], db: Session) -> None:
    sw = build(client, db)
    w = sw.w
    initial = _settle(client, sw)
    unchanged = _settle(client, sw, "reconciliation")
    assert unchanged["id"] == initial["id"]  # nothing changed: no new run, nothing posted
    assert db.scalar(select(func.count()).select_from(SettlementRun)) == 1

    # A meter correction: the data center imported 100 kWh, not 150 → actual 400 kW → delivered 600,
    # capped at 500: utilisation 10.00, no penalty, fee 0.25, net 9.75.
    sw.read(db, sw.dc_site, "100")
    before = db.scalar(select(func.count()).select_from(JournalEntry)) or 0
    reconciled = _settle(client, sw, "reconciliation")
    assert (reconciled["kind"], reconciled["version"]) == ("reconciliation", 2)
    assert _balance(client, w.data_center) == Decimal("9.75")
    assert _balance(client, w.utility) == Decimal("-16.00")
    # Only the data center's three differences: +2.00 utilisation, 1.25 penalty back, +0.05 fee.
    posted = db.scalars(select(JournalEntry).where(JournalEntry.settlement_run_id == reconciled["id"])).all()
    assert sorted((e.kind.value, e.amount) for e in posted) == [
        ("operator_fee", Decimal("0.05")),
        ("penalty", Decimal("1.25")),
        ("utilisation", Decimal(2)),
    ]
    assert db.scalar(select(func.count()).select_from(JournalEntry)) == before + 3
    assert trial_balance(db, w.market.id) == {"EUR": Decimal(0)}

    final = _settle(client, sw, "final")
    assert (final["kind"], final["version"], final["entry_count"]) == ("final", 3, 0)
    refused = client.post(
        f"/api/v1/markets/{w.market.id}/settlements",
        headers=w.operator.headers,
        json={"day": sw.day.isoformat(), "kind": "reconciliation"},
    )
    assert refused.status_code == 409
    assert refused.json()["errors"][0]["field"] == "kind"


def test_a_reading_corrected_and_corrected_back_settles_nothing_new(client: TestClient[Litestar], db: Session) -> None:
    """The reconciliation finds the inputs of the last run again: no run, nothing posted, and the day's latest
    delivery computation is the current one again (not the verification made in between)."""
    sw = build(client, db)
    w = sw.w
    initial = _settle(client, sw)
    sw.read(db, sw.dc_site, "100")
    verify = f"/api/v1/markets/{w.market.id}/deliveries"
    between = client.post(verify, headers=w.operator.headers, json={"day": sw.day.isoformat()}).json()
    assert between["version"] == 2
    sw.read(db, sw.dc_site, "150")  # the original value again
    reconciled = _settle(client, sw, "reconciliation")
    assert reconciled["id"] == initial["id"]
    assert db.scalar(select(func.count()).select_from(SettlementRun)) == 1
    versions = client.get(verify, headers=w.operator.headers, params={"day": sw.day.isoformat()}).json()
    assert [(v["version"], v["inputs_hash"] == initial_hash(db, initial)) for v in versions] == [
        (1, True),
        (2, False),
        (3, True),
    ]


def initial_hash(db: Session, run: dict) -> str:  # type: ignore[type-arg]
    computation = db.get(DeliveryComputation, uuid.UUID(run["delivery_computation_id"]))
    assert computation is not None
    return computation.inputs_hash


def test_finance_users_download_their_statements_in_every_format(client: TestClient[Litestar], db: Session) -> None:
    sw = build(client, db)
    w = sw.w
    _settle(client, sw)
    period = {"market_id": str(w.market.id), "period_start": sw.day.isoformat(), "period_end": sw.day.isoformat()}
    issued = client.post(
        f"/api/v1/participants/{w.data_center.id}/statements", headers=w.data_center.headers, json=period
    )
    assert issued.status_code == 201, issued.text
    statement = issued.json()
    assert statement["number"].endswith("-000001")
    assert Decimal(statement["amount_due"]) == Decimal("6.55")
    again = client.post(
        f"/api/v1/participants/{w.data_center.id}/statements", headers=w.data_center.headers, json=period
    )
    assert again.status_code == 200
    assert again.json()["id"] == statement["id"]

    url = f"/api/v1/statements/{statement['id']}/document"
    as_json = client.get(url, headers=w.data_center.headers)
    assert as_json.status_code == 200
    doc = json.loads(as_json.content)
    assert json.dumps(doc).count("6.55") >= 1
    as_csv = client.get(url, params={"format": "csv"}, headers=w.data_center.headers)
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert any("400" in row.values() for row in rows)
    as_pdf = client.get(url, params={"format": "pdf"}, headers=w.data_center.headers)
    assert as_pdf.content.startswith(b"%PDF")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(as_pdf.content)).pages)
    assert statement["number"] in text

    # Finance users see only their own statements.
    assert client.get(url, headers=w.utility.headers).status_code == 404
    assert (
        client.post(
            f"/api/v1/participants/{w.data_center.id}/statements", headers=w.utility.headers, json=period
        ).status_code
        == 404
    )

    # The operator's statement job issues everyone else's; the utility's says what it owes.
    job = client.post(
        f"/api/v1/markets/{w.market.id}/statements",
        headers=w.operator.headers,
        json={"period_start": sw.day.isoformat(), "period_end": sw.day.isoformat()},
    )
    assert job.status_code == 201, job.text
    assert job.json()["issued"] == 4  # utility, aggregator, two households (the data center has its own)
    owed = client.get(f"/api/v1/participants/{w.utility.id}/statements", headers=w.utility.headers).json()["items"]
    assert [Decimal(s["amount_due"]) for s in owed] == [Decimal("-12.75")]
    share = client.get(f"/api/v1/participants/{sw.member_a.id}/statements", headers=sw.member_a.headers).json()["items"]
    assert [Decimal(s["amount_due"]) for s in share] == [Decimal("2.81")]
    numbers = sorted(
        s["number"]
        for who in (w.utility, w.aggregator, sw.member_a, sw.member_b, w.data_center)
        for s in client.get(f"/api/v1/participants/{who.id}/statements", headers=who.headers).json()["items"]
    )
    assert [n[-6:] for n in numbers] == ["000001", "000002", "000003", "000004", "000005"]  # gap-free


def test_an_aggregator_loss_is_not_passed_on_to_its_members(client: TestClient[Litestar], db: Session) -> None:
    """Both members consumed their 200 kW baseline (50 kWh): the portfolio delivered 0 of 300 kW.
    Penalty 100 × (300 − 30) × 0.25 / 1000 = 6.75, no utilisation, no fee: net −6.75 stays with
    the aggregator; the members get nothing and are charged nothing."""
    sw = build(client, db)
    w = sw.w
    sw.read(db, sw.site_a, "50")
    sw.read(db, sw.site_b, "50")
    _settle(client, sw)
    assert _balance(client, w.aggregator) == Decimal("-6.75")
    assert (_balance(client, sw.member_a), _balance(client, sw.member_b)) == (Decimal(0), Decimal(0))
    assert trial_balance(db, w.market.id) == {"EUR": Decimal(0)}


def test_an_issued_statement_keeps_its_figures_and_a_new_run_supersedes_it(
    client: TestClient[Litestar], db: Session
) -> None:
    sw = build(client, db)
    w = sw.w
    _settle(client, sw)
    period = {"market_id": str(w.market.id), "period_start": sw.day.isoformat(), "period_end": sw.day.isoformat()}
    url = f"/api/v1/participants/{w.data_center.id}/statements"
    first = client.post(url, headers=w.data_center.headers, json=period).json()
    sw.read(db, sw.dc_site, "100")
    _settle(client, sw, "reconciliation")
    second = client.post(url, headers=w.data_center.headers, json=period)
    assert second.status_code == 201
    assert (Decimal(first["amount_due"]), Decimal(second.json()["amount_due"])) == (Decimal("6.55"), Decimal("9.75"))
    assert second.json()["supersedes_id"] == first["id"]
    assert second.json()["number"].endswith("-000002")

    def document(statement_id: str) -> dict:  # type: ignore[type-arg]
        response = client.get(f"/api/v1/statements/{statement_id}/document", headers=w.data_center.headers)
        return json.loads(response.content)  # type: ignore[no-any-return]

    old, new = document(first["id"]), document(second.json()["id"])
    assert [line["delivered_kw"] for line in old["lines"]] == ["400"]  # as issued, before the correction
    assert [line["delivered_kw"] for line in new["lines"]] == ["600"]
    assert any("Supersedes" in note for note in new["notes"])
