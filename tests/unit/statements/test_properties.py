"""Properties of statements built from random lines: the CSV total row is the exact sum of the rows
above it, JSON round-trips every Decimal digit for digit, and totals do not depend on line order."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.statements.document import (
    Issuer,
    PassThroughLine,
    StatementDocument,
    StatementLine,
    StatementParty,
    totals,
)
from settlement.statements.render import from_json, latin1, to_csv, to_json, to_pdf
from tests.unit.statements.test_render import assert_total_row_is_the_sum

PROPERTIES = settings(max_examples=40, deadline=None, derandomize=True)
START = date(2025, 10, 25)  # spans the autumn clock change in Amsterdam
DAYS = 3

amounts = st.decimals(
    min_value=Decimal(-(10**6)), max_value=Decimal(10**6), places=6, allow_nan=False, allow_infinity=False
)
short_amounts = st.decimals(min_value=Decimal(-1000), max_value=Decimal(1000), places=2)
free_text = st.text(st.characters(codec="utf-8"), max_size=12)
runs = st.sampled_from([("initial", 1), ("reconciliation", 2), ("final", 3)])


@st.composite
def statement_lines(draw: st.DrawFn) -> StatementLine:
    day = START + timedelta(days=draw(st.integers(0, DAYS - 1)))
    minutes = draw(st.sampled_from([15, 15, 30, 60, 5]))
    slot = draw(st.integers(0, 24 * 60 // minutes - 1))
    parts = [draw(st.one_of(amounts, short_amounts)) for _ in range(4)]
    kind, version = draw(runs)
    return StatementLine(
        delivery_day=day,
        isp_start=datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=minutes * slot),
        order_ref=draw(free_text),
        resource=draw(free_text),
        direction=draw(st.sampled_from(["up", "down"])),
        baseline_kw=draw(amounts),
        ordered_kw=draw(amounts),
        actual_kw=draw(amounts),
        delivered_kw=draw(amounts),
        shortfall_kw=draw(amounts),
        price_per_mwh=draw(st.none() | amounts),
        payment=parts[0],
        penalty=parts[1],
        availability=parts[2],
        fee=parts[3],
        net=sum(parts, Decimal(0)),
        run_kind=kind,
        run_version=version,
        isp_minutes=minutes,
    )


@st.composite
def pass_through_lines(draw: st.DrawFn) -> PassThroughLine:
    kind, version = draw(runs)
    return PassThroughLine(
        delivery_day=START + timedelta(days=draw(st.integers(0, DAYS - 1))),
        portfolio=draw(free_text),
        member_site=draw(free_text),
        delivered_kwh=draw(amounts),
        share=draw(st.one_of(amounts, short_amounts)),
        run_kind=kind,
        run_version=version,
    )


@st.composite
def documents(draw: st.DrawFn) -> StatementDocument:
    return StatementDocument(
        number=f"FLEX-AMS-{draw(st.integers(1, 999_999)):06d}",
        issuer=Issuer(name=draw(free_text), code="AMS"),
        participant=StatementParty(
            id="p-1", name=draw(free_text), role=draw(st.sampled_from(["aggregator", "utility"]))
        ),
        period_start=START,
        period_end=START + timedelta(days=DAYS - 1),
        currency=draw(st.sampled_from(["EUR", "GBP"])),
        issued_at=datetime(2025, 11, 1, 8, tzinfo=UTC),
        lines=draw(st.lists(statement_lines(), max_size=12)),
        pass_through_lines=draw(st.lists(pass_through_lines(), max_size=5)),
        notes=draw(st.lists(free_text, max_size=2)),
        time_zone="Europe/Amsterdam",
    )


@PROPERTIES
@given(documents())
def test_csv_total_row_is_the_exact_sum_of_the_rows(doc: StatementDocument) -> None:
    text = to_csv(doc).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == len(doc.lines) + len(doc.pass_through_lines) + 1
    cur = doc.currency.lower()
    renamed = [{key.replace(f"_{cur}", "_eur"): value for key, value in row.items()} for row in rows]
    assert_total_row_is_the_sum(renamed)
    for row, item in zip(rows, doc.lines, strict=False):
        assert Decimal(row[f"net_{cur}"]) == item.net
        assert Decimal(row["delivered_kw"]) == item.delivered_kw
        assert "E" not in row[f"payment_{cur}"]
        assert row["resource"] == (
            f"'{item.resource}" if item.resource[:1] in ("=", "+", "-", "@", "\t", "\r") else item.resource
        )


@PROPERTIES
@given(documents())
def test_json_round_trips_exactly(doc: StatementDocument) -> None:
    data = to_json(doc)
    back = from_json(data)
    assert back == doc
    assert to_json(back) == data
    raw = json.loads(data)
    for item, written in zip(doc.lines, raw["lines"], strict=True):
        for name in ("payment", "penalty", "availability", "fee", "net", "ordered_kw", "delivered_kw"):
            value = getattr(item, name)
            assert Decimal(written[name]) == value
            # the same digits and exponent, not merely the same value
            assert Decimal(written[name]).as_tuple()[1:] == value.as_tuple()[1:]


@PROPERTIES
@given(st.lists(statement_lines(), max_size=15), st.lists(pass_through_lines(), max_size=5), st.randoms())
def test_totals_do_not_depend_on_line_order(
    lines: list[StatementLine], pass_through: list[PassThroughLine], rnd: random.Random
) -> None:
    shuffled = list(lines)
    rnd.shuffle(shuffled)
    assert totals(shuffled, pass_through[::-1]) == totals(lines, pass_through)


@PROPERTIES
@given(st.text())
def test_latin1_output_is_always_printable_latin1(text: str) -> None:
    reduced = latin1(text)
    reduced.encode("latin-1")
    assert reduced.isprintable()


@settings(max_examples=10, deadline=None, derandomize=True)
@given(documents())
def test_any_document_renders_as_pdf(doc: StatementDocument) -> None:
    data = to_pdf(doc)
    assert data.startswith(b"%PDF-")
    assert to_pdf(doc) == data
