"""A hand-built statement shared by the statement tests: an aggregator's, 2 days × 2 ISPs × 2 orders,
plus 3 pass-through lines, with its totals worked out by hand.

Amounts are signed from the aggregator's side (document.py): payments +, penalties and fees −,
shares passed on to member sites −. Payment = price × min(delivered, ordered) × 0.25 h / 1000;
penalty = 300/MWh × shortfall × 0.25 h / 1000; fee = 5/MWh × paid energy. ISPs are 17:00 and 17:15
in Amsterdam (UTC+1 in March), i.e. 16:00Z and 16:15Z.

| day   | ISP    | order   | ordered | delivered | price  | payment  | penalty | avail. | fee      | net       |
|-------|--------|---------|---------|-----------|--------|----------|---------|--------|----------|-----------|
| 03-10 | 16:00Z | offer-A | 40      | 40        | 200    | 2.00     | 0       | 0      | -0.05    | 1.95      |
| 03-10 | 16:00Z | offer-B | 10      | 12        | 150.5  | 0.37625  | 0       | 0      | -0.0125  | 0.36375   |
| 03-10 | 16:15Z | offer-A | 40      | 30        | 200    | 1.50     | -0.75   | 0      | -0.0375  | 0.7125    |
| 03-10 | 16:15Z | offer-B | 10      | -2        | 150.5  | 0        | -0.75   | 0      | 0        | -0.75     |
| 03-11 | 16:00Z | offer-A | 40      | 40        | 200    | 2.00     | 0       | 0.40   | -0.05    | 2.35      |
| 03-11 | 16:00Z | offer-B | 10      | 10        | (none) | 0        | 0       | 0.10   | 0        | 0.10      |
| 03-11 | 16:15Z | offer-A | 40      | 40        | 200    | 2.00     | 0       | 0      | -0.05    | 1.95      |
| 03-11 | 16:15Z | offer-B | 10      | 5         | 150.5  | 0.188125 | -0.375  | 0      | -0.00625 | -0.193125 |

Σ ordered 200 kW → 50 kWh; Σ delivered 175 kW → 43.75 kWh; Σ payment 8.064375; Σ penalty −1.875;
Σ availability 0.50; Σ fee −0.20625; Σ net 6.483125. Pass-through: 20.5 + 10.25 + 25 = 55.75 kWh,
shares −1.20 − 0.60 − 1.50 = −3.30. Amount due = 6.483125 − 3.30 = 3.183125 (the market pays).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from settlement.statements.document import (
    Issuer,
    PassThroughLine,
    StatementDocument,
    StatementLine,
    StatementParty,
)

D = Decimal
DAY1 = date(2025, 3, 10)
DAY2 = date(2025, 3, 11)
ISSUED_AT = datetime(2025, 4, 2, 9, 30, tzinfo=UTC)
NUMBER = "FLEX-AMS-000042"
PARTICIPANT_NAME = "Noord Flex Aggregator"


def isp(day: date, minute: int) -> datetime:
    """The ISP starting at 16:``minute`` UTC on ``day``."""
    return datetime(day.year, day.month, day.day, 16, minute, tzinfo=UTC)


def line(
    day: date,
    minute: int,
    order: str,
    *,
    ordered: str,
    delivered: str,
    price: str | None,
    payment: str = "0",
    penalty: str = "0",
    availability: str = "0",
    fee: str = "0",
    net: str,
    run: tuple[str, int],
    resource: str | None = None,
) -> StatementLine:
    """A seller's line; baseline 100 kW, actual = baseline − delivered (direction up)."""
    shortfall = max(D(0), D(ordered) - max(D(delivered), D(0)))
    return StatementLine(
        delivery_day=day,
        isp_start=isp(day, minute),
        order_ref=order,
        resource=resource or {"offer-A": "SITE-001", "offer-B": "SITE-002"}[order],
        direction="up",
        baseline_kw=D(100),
        ordered_kw=D(ordered),
        actual_kw=D(100) - D(delivered),
        delivered_kw=D(delivered),
        shortfall_kw=shortfall,
        price_per_mwh=None if price is None else D(price),
        payment=D(payment),
        penalty=D(penalty),
        availability=D(availability),
        fee=D(fee),
        net=D(net),
        run_kind=run[0],
        run_version=run[1],
    )


FINAL = ("final", 3)
INITIAL = ("initial", 1)


def sample_lines() -> list[StatementLine]:
    """The 8 lines of the table above, deliberately out of statement order."""
    return [
        line(
            DAY2,
            15,
            "offer-B",
            ordered="10",
            delivered="5",
            price="150.5",
            payment="0.188125",
            penalty="-0.375",
            fee="-0.00625",
            net="-0.193125",
            run=INITIAL,
        ),
        line(
            DAY1,
            0,
            "offer-B",
            ordered="10",
            delivered="12",
            price="150.5",
            payment="0.37625",
            fee="-0.0125",
            net="0.36375",
            run=FINAL,
        ),
        line(
            DAY1,
            0,
            "offer-A",
            ordered="40",
            delivered="40",
            price="200",
            payment="2.00",
            fee="-0.05",
            net="1.95",
            run=FINAL,
        ),
        line(
            DAY1,
            15,
            "offer-A",
            ordered="40",
            delivered="30",
            price="200",
            payment="1.50",
            penalty="-0.75",
            fee="-0.0375",
            net="0.7125",
            run=FINAL,
        ),
        line(DAY1, 15, "offer-B", ordered="10", delivered="-2", price="150.5", penalty="-0.75", net="-0.75", run=FINAL),
        line(
            DAY2,
            0,
            "offer-A",
            ordered="40",
            delivered="40",
            price="200",
            payment="2.00",
            availability="0.40",
            fee="-0.05",
            net="2.35",
            run=INITIAL,
        ),
        line(
            DAY2, 0, "offer-B", ordered="10", delivered="10", price=None, availability="0.10", net="0.10", run=INITIAL
        ),
        line(
            DAY2,
            15,
            "offer-A",
            ordered="40",
            delivered="40",
            price="200",
            payment="2.00",
            fee="-0.05",
            net="1.95",
            run=INITIAL,
        ),
    ]


def sample_pass_through() -> list[PassThroughLine]:
    return [
        PassThroughLine(DAY2, "Noord", "HH-001", D("25"), D("-1.50"), *INITIAL),
        PassThroughLine(DAY1, "Noord", "HH-002", D("10.25"), D("-0.60"), *FINAL),
        PassThroughLine(DAY1, "Noord", "HH-001", D("20.5"), D("-1.20"), *FINAL),
    ]


def sample_document(
    *,
    lines: list[StatementLine] | None = None,
    pass_through: list[PassThroughLine] | None = None,
    name: str = PARTICIPANT_NAME,
    role: str = "aggregator",
    notes: tuple[str, ...] = ("Day 2025-03-11 is provisional (initial run).",),
    period_end: date = DAY2,
) -> StatementDocument:
    return StatementDocument(
        number=NUMBER,
        issuer=Issuer(name="Amsterdam Local Flex Market", code="AMS"),
        participant=StatementParty(id="6b1f0c1e-0000-4000-8000-000000000001", name=name, role=role),
        period_start=DAY1,
        period_end=period_end,
        currency="EUR",
        issued_at=ISSUED_AT,
        lines=sample_lines() if lines is None else lines,
        pass_through_lines=sample_pass_through() if pass_through is None else pass_through,
        notes=notes,
        time_zone="Europe/Amsterdam",
    )
