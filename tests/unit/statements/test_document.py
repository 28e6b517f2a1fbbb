"""The statement document: exact totals, ordering, sign convention and the checks on construction."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from settlement.statements.document import (
    BalanceDirection,
    PassThroughLine,
    RunRef,
    energy_kwh,
    format_statement_number,
    totals,
)
from tests.unit.statements.sample import (
    DAY1,
    DAY2,
    FINAL,
    INITIAL,
    line,
    sample_document,
    sample_lines,
    sample_pass_through,
)

D = Decimal


def test_totals_match_the_hand_computed_table() -> None:
    sums = totals(sample_lines(), sample_pass_through())
    assert (sums.line_count, sums.pass_through_count) == (8, 3)
    assert sums.ordered_kwh == D("50")
    assert sums.delivered_kwh == D("43.75")
    assert sums.payment == D("8.064375")
    assert sums.penalty == D("-1.875")
    assert sums.availability == D("0.50")
    assert sums.fee == D("-0.20625")
    assert sums.net == D("6.483125")
    assert sums.pass_through_delivered_kwh == D("55.75")
    assert sums.pass_through_share == D("-3.30")
    assert sums.amount_due == D("3.183125")


def test_document_computes_its_totals_and_balance() -> None:
    doc = sample_document()
    assert doc.totals == totals(sample_lines(), sample_pass_through())
    assert doc.amount_due == D("3.183125")
    balance = doc.balance()
    assert balance.direction is BalanceDirection.MARKET_PAYS_PARTICIPANT
    assert balance.amount == D("3.183125")
    assert balance.label == "Amount due to you"


def test_a_utility_reads_what_it_owes_as_a_positive_amount() -> None:
    bought = line(
        DAY1, 0, "offer-A", ordered="40", delivered="30", price="200", payment="-1.50", penalty="0.75", net="-0.75",
        run=FINAL,
    )  # fmt: skip
    doc = sample_document(lines=[bought], pass_through=[], role="utility")
    assert doc.amount_due == D("-0.75")
    balance = doc.balance()
    assert balance.direction is BalanceDirection.PARTICIPANT_PAYS_MARKET
    assert balance.amount == D("0.75")
    assert balance.label == "Amount you owe"


def test_an_empty_statement_is_settled() -> None:
    doc = sample_document(lines=[], pass_through=[])
    assert doc.totals.net == 0
    assert doc.balance().direction is BalanceDirection.SETTLED
    assert doc.balance().amount == 0


def test_lines_are_sorted_by_day_isp_and_order() -> None:
    doc = sample_document()
    keys = [(item.delivery_day, item.isp_start.minute, item.order_ref) for item in doc.lines]
    assert keys == [
        (DAY1, 0, "offer-A"),
        (DAY1, 0, "offer-B"),
        (DAY1, 15, "offer-A"),
        (DAY1, 15, "offer-B"),
        (DAY2, 0, "offer-A"),
        (DAY2, 0, "offer-B"),
        (DAY2, 15, "offer-A"),
        (DAY2, 15, "offer-B"),
    ]
    assert [(p.delivery_day, p.member_site) for p in doc.pass_through_lines] == [
        (DAY1, "HH-001"),
        (DAY1, "HH-002"),
        (DAY2, "HH-001"),
    ]
    assert isinstance(doc.lines, tuple)
    assert sample_document(lines=list(reversed(sample_lines()))) == doc


def test_runs_are_the_union_of_given_and_named_runs() -> None:
    extra = RunRef(DAY2, "reconciliation", 2)
    doc = dataclasses.replace(sample_document(), runs=[extra])
    assert doc.runs == (RunRef(DAY1, *FINAL), RunRef(DAY2, *INITIAL), extra)
    assert RunRef(DAY1, *FINAL).label == "final v3"


def test_energy_is_power_times_isp_hours() -> None:
    assert energy_kwh(D("40"), 15) == D("10")
    assert energy_kwh(D("-2"), 15) == D("-0.5")
    assert energy_kwh(D("10.5"), 30) == D("5.25")
    assert energy_kwh(D("7"), 60) == D("7")
    # 5-minute ISPs: 1/12 h does not terminate, so energy is rounded half-even to 6 places.
    assert energy_kwh(D("1"), 5) == D("0.083333")
    assert energy_kwh(D("12"), 5) == D("1")


def test_isp_start_is_normalised_to_utc() -> None:
    amsterdam_winter = timezone(timedelta(hours=1))
    item = dataclasses.replace(sample_lines()[0], isp_start=datetime(2025, 3, 11, 17, 15, tzinfo=amsterdam_winter))
    assert item.isp_start == datetime(2025, 3, 11, 16, 15, tzinfo=UTC)
    assert item.isp_start.tzinfo is UTC


def test_a_naive_isp_start_is_refused() -> None:
    with pytest.raises(ValueError, match="isp_start must be timezone-aware"):
        dataclasses.replace(sample_lines()[0], isp_start=datetime(2025, 3, 11, 16, 15))  # noqa: DTZ001


def test_a_float_amount_is_refused() -> None:
    with pytest.raises(TypeError, match=r"StatementLine\.payment must be a Decimal, not float"):
        dataclasses.replace(sample_lines()[0], payment=0.1, net=0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"PassThroughLine\.share must be a Decimal"):
        PassThroughLine(DAY1, "Noord", "HH-001", D(1), 1.5, "final", 1)  # type: ignore[arg-type]


def test_a_non_finite_amount_is_refused() -> None:
    with pytest.raises(ValueError, match="ordered_kw must be finite"):
        dataclasses.replace(sample_lines()[0], ordered_kw=D("NaN"))


def test_net_must_be_the_sum_of_its_parts() -> None:
    with pytest.raises(ValueError, match=r"net must equal payment \+ penalty \+ availability \+ fee = -0.193125"):
        dataclasses.replace(sample_lines()[0], net=D("0.188125"))


def test_lines_outside_the_period_are_refused() -> None:
    with pytest.raises(ValueError, match=r"line on 2025-03-11 is outside the period 2025-03-10\.\.2025-03-10"):
        sample_document(period_end=DAY1)


def test_document_checks_period_currency_and_issue_time() -> None:
    doc = sample_document()
    with pytest.raises(ValueError, match="period_end 2025-03-09 is before period_start"):
        dataclasses.replace(doc, period_end=date(2025, 3, 9), lines=[], pass_through_lines=[])
    with pytest.raises(ValueError, match="ISO 4217"):
        dataclasses.replace(doc, currency="euro")
    with pytest.raises(ValueError, match="issued_at must be timezone-aware"):
        dataclasses.replace(doc, issued_at=datetime(2025, 4, 2, 9, 30))  # noqa: DTZ001
    with pytest.raises(TypeError, match="delivery_day must be a date"):
        dataclasses.replace(sample_lines()[0], delivery_day=datetime(2025, 3, 11, tzinfo=UTC))


def test_statement_numbers_are_sequential_per_issuer_code() -> None:
    assert format_statement_number("AMS", 42) == "FLEX-AMS-000042"
    assert format_statement_number("nl-ams 2", 1) == "FLEX-NL-AMS-2-000001"
    assert format_statement_number("AMS", 1234567) == "FLEX-AMS-1234567"
    with pytest.raises(ValueError, match="must be positive"):
        format_statement_number("AMS", 0)
    with pytest.raises(ValueError, match="no letters or digits"):
        format_statement_number("--", 1)
