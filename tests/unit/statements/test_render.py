"""JSON, CSV and PDF renderings of the hand-built statement (tests/unit/statements/sample.py)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from pypdf import PdfReader

from market.core.errors import InvalidInput
from settlement.statements.document import PassThroughLine, StatementLine
from settlement.statements.render import (
    RENDERERS,
    SCHEMA_VERSION,
    csv_header,
    filename,
    from_json,
    latin1,
    renderer,
    to_csv,
    to_json,
    to_pdf,
)
from tests.unit.statements.sample import DAY1, FINAL, NUMBER, PARTICIPANT_NAME, isp, line, sample_document

D = Decimal


# -- JSON ----------------------------------------------------------------------------------------


def test_json_writes_decimals_as_exact_strings() -> None:
    raw = json.loads(to_json(sample_document()))
    assert raw["schema_version"] == SCHEMA_VERSION == 1
    assert raw["number"] == NUMBER
    assert raw["participant"]["name"] == PARTICIPANT_NAME
    assert raw["currency"] == "EUR"
    assert raw["issued_at"] == "2025-04-02T09:30:00+00:00"
    first = raw["lines"][0]
    assert first["isp_start"] == "2025-03-10T16:00:00+00:00"
    assert first["delivery_day"] == "2025-03-10"
    # Trailing zeros are kept: the value is written exactly as given.
    assert (first["order_ref"], first["payment"], first["fee"], first["net"]) == ("offer-A", "2.00", "-0.05", "1.95")
    assert first["ordered_kwh"] == "10"
    availability_only = raw["lines"][5]
    assert availability_only["order_ref"] == "offer-B"
    assert availability_only["price_per_mwh"] is None
    assert raw["totals"] == {
        "line_count": 8,
        "pass_through_count": 3,
        "ordered_kwh": "50.0",
        "delivered_kwh": "43.75",
        "payment": "8.064375",
        "penalty": "-1.875",
        "availability": "0.50",
        "fee": "-0.20625",
        "net": "6.483125",
        "pass_through_delivered_kwh": "55.75",
        "pass_through_share": "-3.30",
        "amount_due": "3.183125",
    }
    assert raw["amount_due"] == "3.183125"
    assert raw["balance"] == {
        "direction": "market_pays_participant",
        "amount": "3.183125",
        "label": "Amount due to you",
    }
    assert raw["runs"] == [
        {"delivery_day": "2025-03-10", "kind": "final", "version": 3},
        {"delivery_day": "2025-03-11", "kind": "initial", "version": 1},
    ]


def test_json_keys_are_sorted_and_output_is_stable() -> None:
    data = to_json(sample_document())
    assert (
        data == json.dumps(json.loads(data), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    )
    assert to_json(sample_document()) == data


def test_json_round_trips_to_the_same_decimals() -> None:
    doc = sample_document()
    raw = json.loads(to_json(doc))
    for item, written in zip(doc.lines, raw["lines"], strict=True):
        assert D(written["net"]) == item.net
        assert written["payment"] == str(item.payment)  # same digits and exponent, not only the same value
    back = from_json(to_json(doc))
    assert back == doc
    assert [str(item.payment) for item in back.lines] == [str(item.payment) for item in doc.lines]
    assert to_json(back) == to_json(doc)


def test_json_keeps_unicode_and_never_uses_exponents() -> None:
    big = line(DAY1, 0, "offer-A", ordered="1E+3", delivered="1E+3", price="1E-7", payment="0.0000001", net="1E-7",
               run=FINAL)  # fmt: skip
    doc = sample_document(lines=[big], pass_through=[], name="Kőbánya Energia 🚀")
    text = to_json(doc).decode()
    assert "Kőbánya Energia 🚀" in text
    raw = json.loads(text)["lines"][0]
    assert (raw["ordered_kw"], raw["price_per_mwh"], raw["net"]) == ("1000", "0.0000001", "0.0000001")
    assert from_json(to_json(doc)) == doc


def test_from_json_refuses_tampered_totals_and_unknown_versions() -> None:
    raw = json.loads(to_json(sample_document()))
    raw["totals"]["net"] = "7"
    with pytest.raises(ValueError, match="do not match"):
        from_json(json.dumps(raw).encode())
    raw["schema_version"] = 99
    with pytest.raises(ValueError, match="schema_version 99"):
        from_json(json.dumps(raw).encode())


# -- CSV -----------------------------------------------------------------------------------------


def _csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def test_csv_header_has_units_and_the_currency() -> None:
    data = to_csv(sample_document())
    header = data.decode().split("\r\n", 1)[0].split(",")
    assert header == csv_header("EUR")
    assert header == [
        "line_type", "statement_number", "delivery_day", "isp_start", "isp_minutes", "order_ref", "resource",
        "member_site", "direction", "baseline_kw", "ordered_kw", "actual_kw", "delivered_kw", "shortfall_kw",
        "ordered_kwh", "delivered_kwh", "price_eur_per_mwh", "payment_eur", "penalty_eur", "availability_eur",
        "fee_eur", "net_eur", "member_delivered_kwh", "share_eur", "amount_due_eur", "run_kind", "run_version",
    ]  # fmt: skip


def test_csv_rows_and_values_are_exact() -> None:
    data = to_csv(sample_document())
    assert data.endswith(b"\r\n")
    assert b"\r\n" in data
    rows = _csv(data)
    assert [row["line_type"] for row in rows] == ["line"] * 8 + ["pass_through"] * 3 + ["total"]
    short = rows[2]  # day 1, 16:15Z, offer-A: 10 kW short
    assert (short["delivery_day"], short["isp_start"], short["order_ref"]) == (
        "2025-03-10", "2025-03-10T16:15:00+00:00", "offer-A",
    )  # fmt: skip
    assert short["statement_number"] == NUMBER
    assert (short["ordered_kw"], short["delivered_kw"], short["shortfall_kw"]) == ("40", "30", "10")
    assert (short["ordered_kwh"], short["delivered_kwh"]) == ("10", "7.5")
    assert (short["price_eur_per_mwh"], short["payment_eur"], short["penalty_eur"]) == ("200", "1.50", "-0.75")
    assert (short["fee_eur"], short["net_eur"], short["run_kind"], short["run_version"]) == (
        "-0.0375", "0.7125", "final", "3",
    )  # fmt: skip
    assert short["share_eur"] == short["member_site"] == ""
    assert rows[5]["price_eur_per_mwh"] == ""  # availability-only line: no price
    member = rows[8]
    assert (member["resource"], member["member_site"], member["member_delivered_kwh"], member["share_eur"]) == (
        "Noord", "HH-001", "20.5", "-1.20",
    )  # fmt: skip
    assert member["payment_eur"] == member["net_eur"] == ""
    total = rows[-1]
    assert (total["ordered_kwh"], total["delivered_kwh"], total["payment_eur"], total["penalty_eur"]) == (
        "50.0", "43.75", "8.064375", "-1.875",
    )  # fmt: skip
    assert (total["availability_eur"], total["fee_eur"], total["net_eur"]) == ("0.50", "-0.20625", "6.483125")
    assert (total["member_delivered_kwh"], total["share_eur"], total["amount_due_eur"]) == (
        "55.75", "-3.30", "3.183125",
    )  # fmt: skip


SUMMED = (
    "ordered_kwh", "delivered_kwh", "payment_eur", "penalty_eur", "availability_eur", "fee_eur", "net_eur",
    "member_delivered_kwh", "share_eur",
)  # fmt: skip


def assert_total_row_is_the_sum(rows: list[dict[str, str]]) -> None:
    """Each column filled in the total row is the exact sum of that column over the other rows."""
    *body, total = rows
    assert total["line_type"] == "total"
    for column in SUMMED:
        assert D(total[column]) == sum((D(row[column]) for row in body if row[column]), D(0)), column
    assert D(total["amount_due_eur"]) == D(total["net_eur"]) + D(total["share_eur"])


def test_csv_total_row_is_the_sum_of_the_rows() -> None:
    assert_total_row_is_the_sum(_csv(to_csv(sample_document())))


def test_csv_negative_numbers_stay_numbers() -> None:
    rows = _csv(to_csv(sample_document()))
    assert rows[3]["delivered_kw"] == "-2"
    assert rows[3]["penalty_eur"] == "-0.75"
    assert rows[-1]["share_eur"] == "-3.30"
    assert all(not value.startswith("'") for row in rows for key, value in row.items() if key.endswith(("_kw", "_eur")))


def test_csv_guards_free_text_against_formula_injection() -> None:
    evil = dataclasses.replace(
        line(DAY1, 0, "offer-A", ordered="40", delivered="40", price="200", payment="2", net="2", run=FINAL),
        order_ref='=HYPERLINK("http://x")',
        resource="@SUM(A1:A9)",
        direction="-up",
        run_kind="+final",
    )
    member = PassThroughLine(DAY1, "\tportfolio", "=cmd|' /C calc'!A0", D("-1"), D("-2.5"), "final", 3)
    rows = _csv(to_csv(sample_document(lines=[evil], pass_through=[member])))
    first, passed, total = rows
    assert first["order_ref"] == '\'=HYPERLINK("http://x")'
    assert first["resource"] == "'@SUM(A1:A9)"
    assert first["direction"] == "'-up"
    assert first["run_kind"] == "'+final"
    assert passed["resource"] == "'\tportfolio"
    assert passed["member_site"] == "'=cmd|' /C calc'!A0"
    # numbers are not free text: negative values are written as they are
    assert (passed["member_delivered_kwh"], passed["share_eur"]) == ("-1", "-2.5")
    assert total["amount_due_eur"] == "-0.5"


def test_csv_keeps_unicode_names() -> None:
    odd = dataclasses.replace(sample_document().lines[0], resource='Kőbánya 🚀, "north"\nfeeder')
    rows = _csv(to_csv(sample_document(lines=[odd], pass_through=[])))
    assert rows[0]["resource"] == 'Kőbánya 🚀, "north"\nfeeder'


# -- PDF -----------------------------------------------------------------------------------------


def _pages(data: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]


def test_pdf_has_the_header_lines_and_totals() -> None:
    pages = _pages(to_pdf(sample_document()))
    # Lines to y = 93 mm, pass-through to 122, totals to 184: the notes go on page 2.
    assert len(pages) == 2
    text = "\n".join(pages)
    assert NUMBER in text
    assert PARTICIPANT_NAME in text
    assert "2025-03-10 to 2025-03-11" in text
    assert "final v3: 2025-03-10; initial v1: 2025-03-11" in text
    assert "17:00+01" in text  # 16:00Z shown in Amsterdam time
    assert "Net of lines 6.483125 EUR" in text
    assert "Pass-through shares -3.30 EUR" in text
    assert "Amount due to you 3.183125 EUR" in text
    assert "HH-002" in text
    assert "Day 2025-03-11 is provisional" in text
    assert "Page 1 of 2" in pages[0]
    assert "Day 2025-03-11 is provisional" in pages[1]


def test_pdf_shows_a_utility_debt_as_an_amount_owed() -> None:
    bought = line(DAY1, 0, "offer-A", ordered="1000", delivered="1000", price="250", payment="-62.50", net="-62.50",
                  run=FINAL)  # fmt: skip
    text = _pages(to_pdf(sample_document(lines=[bought] * 1, pass_through=[], role="utility")))[0]
    assert "Amount you owe 62.50 EUR" in text


def _long_document(count: int) -> list[StatementLine]:
    base = line(DAY1, 0, "offer-A", ordered="40", delivered="40", price="200", payment="2.00", net="2.00", run=FINAL)
    return [
        dataclasses.replace(base, order_ref=f"L{i:04d}", isp_start=isp(DAY1, 0) + timedelta(minutes=15 * (i % 32)))
        for i in range(count)
    ]


def test_a_long_pdf_paginates_with_the_header_row_on_every_page() -> None:
    """Page 1 holds 34 rows (y from 57 to 193 mm at 4 mm), later pages 42 (from 24 mm), so
    500 lines = 34 + 11 × 42 + 4 take 13 pages, and the totals fit below the last 4 rows."""
    pages = _pages(to_pdf(sample_document(lines=_long_document(500), pass_through=[], notes=())))
    assert len(pages) == 13
    per_page = [sum(f"L{i:04d} " in text for i in range(500)) for text in pages]
    assert per_page == [34] + [42] * 11 + [4]
    for number, text in enumerate(pages, start=1):
        assert "Baseline" in text
        assert f"Page {number} of 13" in text
    assert NUMBER in pages[5]  # running header
    assert "Amount due to you 1,000.00 EUR" in pages[-1]


def test_same_document_gives_the_same_pdf_bytes() -> None:
    assert to_pdf(sample_document()) == to_pdf(sample_document())


def test_non_latin1_names_are_replaced_not_fatal() -> None:
    name = "Kőbánya Energia 🚀 ﬁx"
    odd = dataclasses.replace(sample_document().lines[0], resource="Łódź ≥ 5")
    pages = _pages(to_pdf(sample_document(lines=[odd], name=name)))
    assert "Kobánya Energia ? fix" in pages[0]
    assert "?ódz ? 5" in pages[0]  # Ł has no Latin-1 base letter; ź does


def test_latin1_keeps_latin1_and_reduces_the_rest() -> None:
    assert latin1("Müller & Søn") == "Müller & Søn"
    assert latin1("Kőbánya") == "Kobánya"
    assert latin1("a\tb\nc") == "a b c"
    assert latin1("€ 🚀") == "? ?"


# -- registry ------------------------------------------------------------------------------------


def test_renderers_and_filenames() -> None:
    doc = sample_document()
    assert {fmt: r.media_type for fmt, r in RENDERERS.items()} == {
        "json": "application/json",
        "csv": "text/csv; charset=utf-8",
        "pdf": "application/pdf",
    }
    media_type, render = RENDERERS["csv"]
    assert media_type.startswith("text/csv")
    assert render(doc) == to_csv(doc)
    assert renderer("pdf").render(doc).startswith(b"%PDF-")
    assert filename(doc, "pdf") == "statement-FLEX-AMS-000042.pdf"
    assert filename(dataclasses.replace(doc, number="../FLEX/AMS 1"), "csv") == "statement-FLEX_AMS_1.csv"
    with pytest.raises(InvalidInput) as caught:
        filename(doc, "xlsx")
    assert caught.value.errors[0].field == "format"
