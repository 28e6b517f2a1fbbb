"""Render a :class:`~settlement.statements.document.StatementDocument` as JSON, CSV or PDF bytes.

Pure functions: a document in, bytes out, no files and no clock (the PDF's creation date is the
document's ``issued_at``), so the same document always gives the same bytes.

* **JSON** (``application/json``): keys sorted, UTF-8, every Decimal as a string written exactly
  (``format(d, "f")``: no exponent, trailing zeros kept), dates ``YYYY-MM-DD``, datetimes ISO 8601
  with offset, ``null`` where a price does not apply, and ``schema_version`` (:data:`SCHEMA_VERSION`).
  :func:`from_json` reads it back into an equal document.
* **CSV** (``text/csv; charset=utf-8``): RFC 4180 via :mod:`csv` (CRLF, minimal quoting), UTF-8
  without BOM. One header row (:func:`csv_header`), units in the column names, money columns named
  with the currency code (``payment_eur``). Rows: one per statement line (``line_type=line``), then
  one per pass-through line (``line_type=pass_through``), then one ``line_type=total`` row. A
  column filled in the total row is the exact sum of that column over the rows above it; the total
  row also carries ``amount_due_<cur>`` (= Σ net + Σ share, positive = the market pays the
  participant). Free text that starts with ``= + - @``, a tab or a carriage return gets a leading
  apostrophe so spreadsheets do not run it as a formula (OWASP "CSV injection"); numbers are
  written by this module and never altered.
* **PDF** (``application/pdf``): fpdf2, A4 landscape, Helvetica (a core font, so text is reduced to
  Latin-1: accents a core font lacks are dropped, ``ő`` → ``o``, anything else → ``?``). Page 1
  has the statement header; later pages repeat a running header and the table's header row. Then
  the pass-through table, the totals block and the notes; a footer with ``Page X of Y`` on every
  page. Amounts are printed exactly (at least 2 places for money), never rounded.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final, NamedTuple, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fpdf import FPDF
from fpdf.fonts import CORE_FONTS_CHARWIDTHS

from market.core.errors import InvalidInput
from settlement.statements.document import (
    Issuer,
    PassThroughLine,
    RunRef,
    StatementDocument,
    StatementLine,
    StatementParty,
    StatementTotals,
)

__all__ = [
    "RENDERERS",
    "SCHEMA_VERSION",
    "Renderer",
    "csv_header",
    "filename",
    "from_json",
    "latin1",
    "renderer",
    "to_csv",
    "to_json",
    "to_pdf",
]

SCHEMA_VERSION: Final = 1
"""Version of the JSON layout (and of the CSV columns); bumped on any incompatible change."""


# -- exact numbers -------------------------------------------------------------------------------


def _plain(value: Decimal) -> str:
    """``value`` written exactly without exponent; negative zero is written ``0``-style."""
    if value.is_zero() and value.is_signed():
        value = value.copy_abs()
    return format(value, "f")


def _opt(value: Decimal | None) -> str | None:
    return None if value is None else _plain(value)


def _decimal(raw: object, name: str) -> Decimal:
    if not isinstance(raw, str):
        raise TypeError(f"{name} must be a decimal string, got {raw!r}")
    return Decimal(raw)


# -- JSON ----------------------------------------------------------------------------------------

_SIGN_CONVENTION = (
    "Amounts are signed from the participant's view: positive is paid to the participant, "
    "negative is charged to the participant. amount_due = sum of net + sum of pass-through share."
)


def _line_json(line: StatementLine) -> dict[str, Any]:
    return {
        "delivery_day": line.delivery_day.isoformat(),
        "isp_start": line.isp_start.isoformat(),
        "isp_minutes": line.isp_minutes,
        "order_ref": line.order_ref,
        "resource": line.resource,
        "direction": line.direction,
        "baseline_kw": _plain(line.baseline_kw),
        "ordered_kw": _plain(line.ordered_kw),
        "actual_kw": _plain(line.actual_kw),
        "delivered_kw": _plain(line.delivered_kw),
        "shortfall_kw": _plain(line.shortfall_kw),
        "ordered_kwh": _plain(line.ordered_kwh),
        "delivered_kwh": _plain(line.delivered_kwh),
        "price_per_mwh": _opt(line.price_per_mwh),
        "payment": _plain(line.payment),
        "penalty": _plain(line.penalty),
        "availability": _plain(line.availability),
        "fee": _plain(line.fee),
        "net": _plain(line.net),
        "run_kind": line.run_kind,
        "run_version": line.run_version,
    }


def _pass_through_json(line: PassThroughLine) -> dict[str, Any]:
    return {
        "delivery_day": line.delivery_day.isoformat(),
        "portfolio": line.portfolio,
        "member_site": line.member_site,
        "delivered_kwh": _plain(line.delivered_kwh),
        "share": _plain(line.share),
        "run_kind": line.run_kind,
        "run_version": line.run_version,
    }


def _totals_json(sums: StatementTotals) -> dict[str, Any]:
    return {
        "line_count": sums.line_count,
        "pass_through_count": sums.pass_through_count,
        "ordered_kwh": _plain(sums.ordered_kwh),
        "delivered_kwh": _plain(sums.delivered_kwh),
        "payment": _plain(sums.payment),
        "penalty": _plain(sums.penalty),
        "availability": _plain(sums.availability),
        "fee": _plain(sums.fee),
        "net": _plain(sums.net),
        "pass_through_delivered_kwh": _plain(sums.pass_through_delivered_kwh),
        "pass_through_share": _plain(sums.pass_through_share),
        "amount_due": _plain(sums.amount_due),
    }


def to_json(doc: StatementDocument) -> bytes:
    """The statement as UTF-8 JSON with sorted keys (see the module docstring for the rules)."""
    balance = doc.balance()
    payload: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "number": doc.number,
        "issuer": {"name": doc.issuer.name, "code": doc.issuer.code},
        "participant": {"id": doc.participant.id, "name": doc.participant.name, "role": doc.participant.role},
        "period_start": doc.period_start.isoformat(),
        "period_end": doc.period_end.isoformat(),
        "currency": doc.currency,
        "issued_at": doc.issued_at.isoformat(),
        "time_zone": doc.time_zone,
        "sign_convention": _SIGN_CONVENTION,
        "runs": [
            {"delivery_day": run.delivery_day.isoformat(), "kind": run.kind, "version": run.version} for run in doc.runs
        ],
        "lines": [_line_json(line) for line in doc.lines],
        "pass_through_lines": [_pass_through_json(line) for line in doc.pass_through_lines],
        "totals": _totals_json(doc.totals),
        "amount_due": _plain(doc.amount_due),
        "balance": {"direction": balance.direction.value, "amount": _plain(balance.amount), "label": balance.label},
        "notes": list(doc.notes),
    }
    return (json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def from_json(data: bytes) -> StatementDocument:
    """Read :func:`to_json` output back (an archived statement, or a round-trip check).

    Derived values (energies, totals, balance) are recomputed and must match what was written,
    so a tampered or truncated file is refused (``ValueError``, ``TypeError`` or ``KeyError``).
    """
    raw = json.loads(data)
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"unsupported statement schema_version {raw.get('schema_version')!r}")
    lines = [
        StatementLine(
            delivery_day=date.fromisoformat(item["delivery_day"]),
            isp_start=datetime.fromisoformat(item["isp_start"]),
            order_ref=item["order_ref"],
            resource=item["resource"],
            direction=item["direction"],
            baseline_kw=_decimal(item["baseline_kw"], "baseline_kw"),
            ordered_kw=_decimal(item["ordered_kw"], "ordered_kw"),
            actual_kw=_decimal(item["actual_kw"], "actual_kw"),
            delivered_kw=_decimal(item["delivered_kw"], "delivered_kw"),
            shortfall_kw=_decimal(item["shortfall_kw"], "shortfall_kw"),
            price_per_mwh=None if item["price_per_mwh"] is None else _decimal(item["price_per_mwh"], "price_per_mwh"),
            payment=_decimal(item["payment"], "payment"),
            penalty=_decimal(item["penalty"], "penalty"),
            availability=_decimal(item["availability"], "availability"),
            fee=_decimal(item["fee"], "fee"),
            net=_decimal(item["net"], "net"),
            run_kind=item["run_kind"],
            run_version=int(item["run_version"]),
            isp_minutes=int(item["isp_minutes"]),
        )
        for item in raw["lines"]
    ]
    pass_through = [
        PassThroughLine(
            delivery_day=date.fromisoformat(item["delivery_day"]),
            portfolio=item["portfolio"],
            member_site=item["member_site"],
            delivered_kwh=_decimal(item["delivered_kwh"], "delivered_kwh"),
            share=_decimal(item["share"], "share"),
            run_kind=item["run_kind"],
            run_version=int(item["run_version"]),
        )
        for item in raw["pass_through_lines"]
    ]
    doc = StatementDocument(
        number=raw["number"],
        issuer=Issuer(name=raw["issuer"]["name"], code=raw["issuer"]["code"]),
        participant=StatementParty(
            id=raw["participant"]["id"], name=raw["participant"]["name"], role=raw["participant"]["role"]
        ),
        period_start=date.fromisoformat(raw["period_start"]),
        period_end=date.fromisoformat(raw["period_end"]),
        currency=raw["currency"],
        issued_at=datetime.fromisoformat(raw["issued_at"]),
        lines=lines,
        pass_through_lines=pass_through,
        runs=[
            RunRef(date.fromisoformat(item["delivery_day"]), item["kind"], int(item["version"])) for item in raw["runs"]
        ],
        notes=list(raw["notes"]),
        time_zone=raw["time_zone"],
    )
    if _totals_json(doc.totals) != raw["totals"] or [_line_json(line) for line in doc.lines] != raw["lines"]:
        raise ValueError("statement totals or derived line values do not match its lines")
    return doc


# -- CSV -----------------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    """Free text made safe for spreadsheets: a leading formula character gets an apostrophe."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_header(currency: str) -> list[str]:
    """The CSV columns; money columns carry the lower-case currency code (``payment_eur``)."""
    cur = currency.lower()
    return [
        "line_type",
        "statement_number",
        "delivery_day",
        "isp_start",
        "isp_minutes",
        "order_ref",
        "resource",
        "member_site",
        "direction",
        "baseline_kw",
        "ordered_kw",
        "actual_kw",
        "delivered_kw",
        "shortfall_kw",
        "ordered_kwh",
        "delivered_kwh",
        f"price_{cur}_per_mwh",
        f"payment_{cur}",
        f"penalty_{cur}",
        f"availability_{cur}",
        f"fee_{cur}",
        f"net_{cur}",
        "member_delivered_kwh",
        f"share_{cur}",
        f"amount_due_{cur}",
        "run_kind",
        "run_version",
    ]


def _csv_rows(doc: StatementDocument) -> Iterator[list[str]]:
    number = _cell(doc.number)
    for line in doc.lines:
        yield [
            "line",
            number,
            line.delivery_day.isoformat(),
            line.isp_start.isoformat(),
            str(line.isp_minutes),
            _cell(line.order_ref),
            _cell(line.resource),
            "",
            _cell(line.direction),
            _plain(line.baseline_kw),
            _plain(line.ordered_kw),
            _plain(line.actual_kw),
            _plain(line.delivered_kw),
            _plain(line.shortfall_kw),
            _plain(line.ordered_kwh),
            _plain(line.delivered_kwh),
            "" if line.price_per_mwh is None else _plain(line.price_per_mwh),
            _plain(line.payment),
            _plain(line.penalty),
            _plain(line.availability),
            _plain(line.fee),
            _plain(line.net),
            "",
            "",
            "",
            _cell(line.run_kind),
            str(line.run_version),
        ]
    for item in doc.pass_through_lines:
        yield [
            "pass_through",
            number,
            item.delivery_day.isoformat(),
            "",
            "",
            "",
            _cell(item.portfolio),
            _cell(item.member_site),
            *[""] * 14,
            _plain(item.delivered_kwh),
            _plain(item.share),
            "",
            _cell(item.run_kind),
            str(item.run_version),
        ]
    sums = doc.totals
    yield [
        "total",
        number,
        *[""] * 12,
        _plain(sums.ordered_kwh),
        _plain(sums.delivered_kwh),
        "",
        _plain(sums.payment),
        _plain(sums.penalty),
        _plain(sums.availability),
        _plain(sums.fee),
        _plain(sums.net),
        _plain(sums.pass_through_delivered_kwh),
        _plain(sums.pass_through_share),
        _plain(sums.amount_due),
        "",
        "",
    ]


def to_csv(doc: StatementDocument) -> bytes:
    """The statement as RFC 4180 CSV in UTF-8 (see the module docstring for the rows and columns)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(csv_header(doc.currency))
    writer.writerows(_csv_rows(doc))
    return buffer.getvalue().encode()


# -- PDF -----------------------------------------------------------------------------------------

_PAGES_ALIAS: Final = "{nb}"
"""Placeholder fpdf2 replaces with the page count. fpdf2 substitutes it only in text written with
``cell``/``multi_cell`` (the footer), not with ``text`` (all document text), so a name containing
it is printed as is."""


def latin1(text: str) -> str:
    """``text`` reduced to printable Latin-1 for the PDF core fonts.

    Latin-1 characters stay; others lose their accents where they have a Latin-1 base (NFKD,
    ``ő`` → ``o``, ``ﬁ`` → ``fi``) and become ``?`` otherwise (an emoji); control characters
    become spaces.
    """
    if text.isascii() and text.isprintable():
        return text
    out: list[str] = []
    for char in text:
        if ord(char) < 256:  # noqa: PLR2004  (the Latin-1 range)
            out.append(char if char.isprintable() else " ")
            continue
        base = "".join(
            part
            for part in unicodedata.normalize("NFKD", char)
            if ord(part) < 256 and part.isprintable() and not unicodedata.combining(part)  # noqa: PLR2004
        )
        out.append(base or "?")
    return "".join(out)


def _trimmed(value: Decimal, min_places: int) -> str:
    """Exact, without superfluous trailing zeros, but with at least ``min_places`` places."""
    text = _plain(value)
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(min_places, "0")
    return f"{whole}.{fraction}" if fraction else whole


def _money(value: Decimal) -> str:
    return _trimmed(value, 2)


def _power(value: Decimal) -> str:
    return _trimmed(value, 0)


def _grouped(value: Decimal, min_places: int) -> str:
    """Like :func:`_trimmed`, with thousands separators (for the totals block)."""
    text = _trimmed(value, min_places)
    sign = "-" if text.startswith("-") else ""
    whole, dot, fraction = text.lstrip("-").partition(".")
    return f"{sign}{int(whole):,}{dot}{fraction}"


_PT_PER_MM: Final = 72 / 25.4
_WIDTHS = {False: CORE_FONTS_CHARWIDTHS["helvetica"], True: CORE_FONTS_CHARWIDTHS["helveticaB"]}
_FONT: Final = "Helvetica"

PAGE_WIDTH_MM: Final = 297.0
MARGIN_MM: Final = 10.0
CONTENT_WIDTH_MM: Final = PAGE_WIDTH_MM - 2 * MARGIN_MM
TABLE_BOTTOM_MM: Final = 193.0
"""Rows end above this line; the footer sits below it."""
FOOTER_Y_MM: Final = 199.0
FIRST_PAGE_CONTENT_Y_MM: Final = 44.0
"""Where the first section starts on page 1, below the statement header."""
CONTENT_Y_MM: Final = 17.0
"""Where content starts on later pages, below the running header."""
SECTION_TITLE_MM: Final = 6.0
HEADER_ROW_MM: Final = 7.0
ROW_MM: Final = 4.0
GAP_MM: Final = 4.0
BODY_PT: Final = 6.5
MIN_PT: Final = 4.5
"""Numbers too wide for their column are shrunk down to this size (never cut)."""
INFO_PT: Final = 8.0
INFO_ROW_MM: Final = 4.5
TOTALS_ROW_MM: Final = 4.5


def _width_mm(text: str, size_pt: float, *, bold: bool = False) -> float:
    """Width of Latin-1 ``text`` in Helvetica, from the core font metrics (1/1000 em), in mm.

    Computed here rather than with ``FPDF.get_string_width``, which is ~10× slower per call.
    """
    widths = _WIDTHS[bold]
    return sum(widths[char] for char in text) * size_pt / 1000 / _PT_PER_MM


def _truncate(text: str, width_mm: float, size_pt: float, *, bold: bool = False) -> str:
    """The longest prefix of ``text`` that fits ``width_mm`` with ``...`` appended."""
    limit = width_mm - _width_mm("...", size_pt, bold=bold)
    out = text
    while out and _width_mm(out, size_pt, bold=bold) > limit:
        out = out[:-1]
    return out + "..."


@dataclass(frozen=True, slots=True)
class _Column:
    title: str
    unit: str
    width: float
    numeric: bool
    """Numbers align right and shrink to fit; text aligns left and is cut with ``...``."""


_PAD_MM: Final = 0.8
_TEXT_PAD_MM: Final = 1.6
"""Text starts further in, so it never runs into a right-aligned number in the column before."""


class _StatementPdf(FPDF):
    """FPDF with the statement's running header and the ``Page X of Y`` footer."""

    def __init__(self, doc: StatementDocument) -> None:
        super().__init__(orientation="L", unit="mm", format="A4")
        self.doc = doc
        self.number = latin1(doc.number)
        self.issuer = latin1(f"{doc.issuer.name} ({doc.issuer.code})")
        self.participant = latin1(doc.participant.name)
        self.period = f"{doc.period_start.isoformat()} to {doc.period_end.isoformat()}"

    def header(self) -> None:
        if self.page_no() == 1:
            _first_page_header(self, self.doc)
            self.set_y(FIRST_PAGE_CONTENT_Y_MM)
            return
        self.set_font(_FONT, "", 7)
        self.set_text_color(90)
        running = f"Statement {self.number} - {self.participant} - {self.period} - {self.doc.currency}"
        self.text(MARGIN_MM, MARGIN_MM + 3, _fit_text(running, CONTENT_WIDTH_MM, 7))
        self.set_draw_color(180)
        self.line(MARGIN_MM, MARGIN_MM + 5, PAGE_WIDTH_MM - MARGIN_MM, MARGIN_MM + 5)
        self.set_text_color(0)
        self.set_y(CONTENT_Y_MM)

    def footer(self) -> None:
        self.set_font(_FONT, "", 7)
        self.set_text_color(90)
        self.set_draw_color(180)
        self.line(MARGIN_MM, FOOTER_Y_MM - 2, PAGE_WIDTH_MM - MARGIN_MM, FOOTER_Y_MM - 2)
        self.text(MARGIN_MM, FOOTER_Y_MM + 2, _fit_text(f"{self.issuer} - statement {self.number}", 180, 7))
        self.set_xy(PAGE_WIDTH_MM - MARGIN_MM - 60, FOOTER_Y_MM - 1)
        self.cell(60, 4, f"Page {self.page_no()} of {_PAGES_ALIAS}", align="R")
        self.set_text_color(0)


def _fit_text(text: str, width_mm: float, size_pt: float, *, bold: bool = False) -> str:
    return text if _width_mm(text, size_pt, bold=bold) <= width_mm else _truncate(text, width_mm, size_pt, bold=bold)


def _day_ranges(days: Sequence[date]) -> str:
    """``2025-01-01..2025-01-03, 2025-01-05``: consecutive days collapsed into ranges."""
    parts: list[str] = []
    start = prev = days[0]
    for day in [*days[1:], None]:
        if day is not None and day - prev == timedelta(days=1):
            prev = day
            continue
        parts.append(start.isoformat() if start == prev else f"{start.isoformat()}..{prev.isoformat()}")
        if day is not None:
            start = prev = day
    return ", ".join(parts)


def _runs_summary(runs: Sequence[RunRef]) -> str:
    """Each run kind and version with the days it covers, e.g. ``final v3: 2025-01-01..2025-01-15``."""
    if not runs:
        return "none"
    grouped: dict[tuple[str, int], list[date]] = {}
    for run in runs:
        grouped.setdefault((run.kind, run.version), []).append(run.delivery_day)
    return "; ".join(
        f"{latin1(kind)} v{version}: {_day_ranges(sorted(days))}" for (kind, version), days in sorted(grouped.items())
    )


def _first_page_header(pdf: FPDF, doc: StatementDocument) -> None:
    pdf.set_text_color(0)
    pdf.set_font(_FONT, "B", 13)
    pdf.text(MARGIN_MM, MARGIN_MM + 5, "Flexibility settlement statement")
    number = latin1(doc.number)
    pdf.text(PAGE_WIDTH_MM - MARGIN_MM - _width_mm(number, 13, bold=True), MARGIN_MM + 5, number)
    half = CONTENT_WIDTH_MM / 2
    label_mm = 24.0
    zone = latin1(doc.time_zone)
    left = [
        ("Issuer", f"{doc.issuer.name} ({doc.issuer.code})"),
        ("Participant", doc.participant.name),
        ("Participant id", f"{doc.participant.id} ({doc.participant.role})"),
        ("Statement no.", doc.number),
    ]
    right = [
        ("Period", f"{doc.period_start.isoformat()} to {doc.period_end.isoformat()} (inclusive)"),
        ("Currency", doc.currency),
        ("Issued at", doc.issued_at.isoformat(timespec="seconds")),
        ("Runs", _runs_summary(doc.runs)),
    ]
    for column, rows in ((0, left), (1, right)):
        x = MARGIN_MM + column * half
        for row, (label, value) in enumerate(rows):
            y = 18 + row * INFO_ROW_MM + 3
            pdf.set_font(_FONT, "B", INFO_PT)
            pdf.text(x, y, label)
            pdf.set_font(_FONT, "", INFO_PT)
            pdf.text(x + label_mm, y, _fit_text(latin1(value), half - label_mm - 4, INFO_PT))
    pdf.set_font(_FONT, "I", 7)
    pdf.set_text_color(70)
    note = (
        "Amounts are from the participant's point of view: positive is paid to the participant, negative is "
        f"charged to it. ISP start is local time ({zone}) with its UTC offset; kW is the average over the ISP."
    )
    pdf.text(MARGIN_MM, 18 + 4 * INFO_ROW_MM + 3, _fit_text(note, CONTENT_WIDTH_MM, 7))
    pdf.set_text_color(0)
    pdf.set_draw_color(120)
    pdf.line(MARGIN_MM, FIRST_PAGE_CONTENT_Y_MM - 2, PAGE_WIDTH_MM - MARGIN_MM, FIRST_PAGE_CONTENT_Y_MM - 2)


def _line_columns(currency: str) -> list[_Column]:
    cur = latin1(currency)
    return [
        _Column("Day", "", 16, numeric=False),
        _Column("ISP start", "local", 15, numeric=False),
        _Column("Order", "", 28, numeric=False),
        _Column("Resource", "", 28, numeric=False),
        _Column("Dir.", "", 8, numeric=False),
        _Column("Baseline", "kW", 14, numeric=True),
        _Column("Ordered", "kW", 14, numeric=True),
        _Column("Actual", "kW", 14, numeric=True),
        _Column("Delivered", "kW", 14, numeric=True),
        _Column("Shortfall", "kW", 14, numeric=True),
        _Column("Price", f"{cur}/MWh", 15, numeric=True),
        _Column("Payment", cur, 16, numeric=True),
        _Column("Penalty", cur, 16, numeric=True),
        _Column("Availability", cur, 15, numeric=True),
        _Column("Fee", cur, 14, numeric=True),
        _Column("Net", cur, 17, numeric=True),
        _Column("Run", "", 19, numeric=False),
    ]


def _pass_through_columns(currency: str) -> list[_Column]:
    cur = latin1(currency)
    return [
        _Column("Day", "", 20, numeric=False),
        _Column("Portfolio", "", 70, numeric=False),
        _Column("Member site", "", 70, numeric=False),
        _Column("Delivered", "kWh", 30, numeric=True),
        _Column("Share", cur, 30, numeric=True),
        _Column("Run", "", 30, numeric=False),
    ]


def _local_isp(start: datetime, zone: ZoneInfo) -> str:
    """``14:15+01``: local wall time and UTC offset (the offset tells the two 02:15s of an autumn
    clock change apart)."""
    local = start.astimezone(zone)
    offset = local.utcoffset() or timedelta()
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    suffix = f"{sign}{hours:02d}" if not rest else f"{sign}{hours:02d}:{rest:02d}"
    return f"{local:%H:%M}{suffix}"


def _line_cells(doc: StatementDocument, zone: ZoneInfo) -> Iterator[list[str]]:
    for line in doc.lines:
        yield [
            line.delivery_day.isoformat(),
            _local_isp(line.isp_start, zone),
            latin1(line.order_ref),
            latin1(line.resource),
            latin1(line.direction),
            _power(line.baseline_kw),
            _power(line.ordered_kw),
            _power(line.actual_kw),
            _power(line.delivered_kw),
            _power(line.shortfall_kw),
            "" if line.price_per_mwh is None else _money(line.price_per_mwh),
            _money(line.payment),
            _money(line.penalty),
            _money(line.availability),
            _money(line.fee),
            _money(line.net),
            latin1(f"{line.run_kind} v{line.run_version}"),
        ]


def _pass_through_cells(doc: StatementDocument) -> Iterator[list[str]]:
    for item in doc.pass_through_lines:
        yield [
            item.delivery_day.isoformat(),
            latin1(item.portfolio),
            latin1(item.member_site),
            _power(item.delivered_kwh),
            _money(item.share),
            latin1(f"{item.run_kind} v{item.run_version}"),
        ]


class _Table:
    """A table drawn with ``FPDF.text`` (about 7× faster than ``cell``) that breaks pages itself,
    repeating its header row on every page it spans."""

    def __init__(self, pdf: FPDF, columns: Sequence[_Column]) -> None:
        self.pdf = pdf
        self.columns = columns
        xs: list[float] = []
        x = MARGIN_MM
        for column in columns:
            xs.append(x)
            x += column.width
        self.xs = xs
        self.width = x - MARGIN_MM

    def header_row(self, y: float) -> float:
        pdf = self.pdf
        pdf.set_fill_color(225)
        pdf.rect(MARGIN_MM, y, self.width, HEADER_ROW_MM, style="F")
        for x, column in zip(self.xs, self.columns, strict=True):
            for text, bold, baseline in ((column.title, True, 3.0), (column.unit, False, 6.0)):
                if not text:
                    continue
                pdf.set_font(_FONT, "B" if bold else "", BODY_PT)
                shown = _fit_text(text, column.width - 2 * _PAD_MM, BODY_PT, bold=bold)
                left = (
                    x + column.width - _PAD_MM - _width_mm(shown, BODY_PT, bold=bold)
                    if column.numeric
                    else x + _TEXT_PAD_MM
                )
                pdf.text(left, y + baseline, shown)
        pdf.set_font(_FONT, "", BODY_PT)
        return y + HEADER_ROW_MM

    def row(self, y: float, cells: Sequence[str], *, shade: bool, bold: bool = False) -> None:
        pdf = self.pdf
        if shade:
            pdf.set_fill_color(244)
            pdf.rect(MARGIN_MM, y, self.width, ROW_MM, style="F")
        baseline = y + ROW_MM - 1.1
        style = "B" if bold else ""
        for x, column, text in zip(self.xs, self.columns, cells, strict=True):
            if not text:
                continue
            room = column.width - _PAD_MM - (_PAD_MM if column.numeric else _TEXT_PAD_MM)
            width = _width_mm(text, BODY_PT, bold=bold)
            if width <= room:
                left = x + column.width - _PAD_MM - width if column.numeric else x + _TEXT_PAD_MM
                pdf.text(left, baseline, text)
            elif column.numeric:
                # A number is never cut: shrink it (down to MIN_PT), right-aligned.
                size = max(MIN_PT, BODY_PT * room / width)
                pdf.set_font(_FONT, style, size)
                pdf.text(x + column.width - _PAD_MM - _width_mm(text, size, bold=bold), baseline, text)
                pdf.set_font(_FONT, style, BODY_PT)
            else:
                pdf.text(x + _TEXT_PAD_MM, baseline, _truncate(text, room, BODY_PT, bold=bold))

    def draw(self, title: str, rows: Iterable[Sequence[str]], empty: str) -> None:
        """Section title, header row and rows from the current y; a new page (with the header row
        again) whenever the next row would cross :data:`TABLE_BOTTOM_MM`."""
        pdf = self.pdf
        if pdf.get_y() + SECTION_TITLE_MM + HEADER_ROW_MM + ROW_MM > TABLE_BOTTOM_MM:
            pdf.add_page()
        y = _section_title(pdf, title)
        y = self.header_row(y)
        pdf.set_font(_FONT, "", BODY_PT)
        count = 0
        for cells in rows:
            if y + ROW_MM > TABLE_BOTTOM_MM:
                pdf.add_page()
                y = self.header_row(pdf.get_y())
            self.row(y, cells, shade=count % 2 == 1)
            y += ROW_MM
            count += 1
        if not count:
            pdf.set_font(_FONT, "I", BODY_PT)
            pdf.text(MARGIN_MM + _PAD_MM, y + ROW_MM - 1.1, empty)
            y += ROW_MM
        pdf.set_y(y + GAP_MM)


def _section_title(pdf: FPDF, title: str) -> float:
    y = pdf.get_y()
    pdf.set_font(_FONT, "B", 9)
    pdf.text(MARGIN_MM, y + 4, title)
    return y + SECTION_TITLE_MM


def _totals_rows(doc: StatementDocument) -> list[tuple[str, str]]:
    sums = doc.totals
    cur = latin1(doc.currency)
    return [
        ("Statement lines", f"{sums.line_count:,}"),
        ("Ordered energy", f"{_grouped(sums.ordered_kwh, 0)} kWh"),
        ("Delivered energy", f"{_grouped(sums.delivered_kwh, 0)} kWh"),
        ("Utilisation payments", f"{_grouped(sums.payment, 2)} {cur}"),
        ("Penalties", f"{_grouped(sums.penalty, 2)} {cur}"),
        ("Availability payments", f"{_grouped(sums.availability, 2)} {cur}"),
        ("Operator fees", f"{_grouped(sums.fee, 2)} {cur}"),
        ("Net of lines", f"{_grouped(sums.net, 2)} {cur}"),
        ("Pass-through lines", f"{sums.pass_through_count:,}"),
        ("Pass-through delivered energy", f"{_grouped(sums.pass_through_delivered_kwh, 0)} kWh"),
        ("Pass-through shares", f"{_grouped(sums.pass_through_share, 2)} {cur}"),
    ]


TOTALS_BLOCK_MM: Final = SECTION_TITLE_MM + 12 * TOTALS_ROW_MM + 2
"""Title, 11 total rows and the balance row: kept together on one page."""


def _totals_block(pdf: FPDF, doc: StatementDocument) -> None:
    if pdf.get_y() + TOTALS_BLOCK_MM > TABLE_BOTTOM_MM:
        pdf.add_page()
    y = _section_title(pdf, "Totals")
    label_x, value_right = MARGIN_MM, MARGIN_MM + 120
    pdf.set_font(_FONT, "", 8)
    for label, value in _totals_rows(doc):
        pdf.text(label_x, y + 3.2, label)
        pdf.text(value_right - _width_mm(value, 8), y + 3.2, value)
        y += TOTALS_ROW_MM
    pdf.set_draw_color(0)
    pdf.line(label_x, y + 0.5, value_right, y + 0.5)
    balance = doc.balance()
    value = f"{_grouped(balance.amount, 2)} {latin1(doc.currency)}"
    pdf.set_font(_FONT, "B", 9)
    pdf.text(label_x, y + 4.5, balance.label)
    pdf.text(value_right - _width_mm(value, 9, bold=True), y + 4.5, value)
    pdf.set_y(y + TOTALS_ROW_MM + 2 + GAP_MM)


def _notes(pdf: FPDF, doc: StatementDocument) -> None:
    if not doc.notes:
        return
    if pdf.get_y() + SECTION_TITLE_MM + TOTALS_ROW_MM > TABLE_BOTTOM_MM:
        pdf.add_page()
    y = _section_title(pdf, "Notes")
    pdf.set_font(_FONT, "", 8)
    for note in doc.notes:
        # output="LINES" returns the wrapped lines (fpdf2 types the return as a union of all modes).
        wrapped = cast(
            "list[str]",
            pdf.multi_cell(CONTENT_WIDTH_MM, TOTALS_ROW_MM, latin1(note), dry_run=True, output="LINES"),
        )
        for text in wrapped:
            if y + TOTALS_ROW_MM > TABLE_BOTTOM_MM:
                pdf.add_page()
                pdf.set_font(_FONT, "", 8)
                y = pdf.get_y()
            pdf.text(MARGIN_MM, y + 3.2, text)
            y += TOTALS_ROW_MM
        y += 1
    pdf.set_y(y)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def to_pdf(doc: StatementDocument) -> bytes:
    """The statement as an A4 landscape PDF (see the module docstring); same document, same bytes."""
    zone = _zone(doc.time_zone)
    pdf = _StatementPdf(doc)
    pdf.set_auto_page_break(auto=False)
    pdf.set_margins(MARGIN_MM, MARGIN_MM, MARGIN_MM)
    pdf.set_creation_date(doc.issued_at.astimezone(UTC))
    pdf.set_title(latin1(f"Statement {doc.number}"))
    pdf.set_author(latin1(doc.issuer.name))
    pdf.set_subject(latin1(f"{doc.participant.name}, {doc.period_start.isoformat()} to {doc.period_end.isoformat()}"))
    pdf.set_creator("flexmarket")
    pdf.alias_nb_pages(_PAGES_ALIAS)
    pdf.add_page()
    _Table(pdf, _line_columns(doc.currency)).draw("Lines", _line_cells(doc, zone), "No statement lines.")
    if doc.pass_through_lines:
        _Table(pdf, _pass_through_columns(doc.currency)).draw(
            "Aggregator pass-through", _pass_through_cells(doc), "No pass-through lines."
        )
    _totals_block(pdf, doc)
    _notes(pdf, doc)
    return bytes(pdf.output())


# -- registry ------------------------------------------------------------------------------------


class Renderer(NamedTuple):
    media_type: str
    render: Callable[[StatementDocument], bytes]


RENDERERS: Mapping[str, Renderer] = MappingProxyType(
    {
        "json": Renderer("application/json", to_json),
        "csv": Renderer("text/csv; charset=utf-8", to_csv),
        "pdf": Renderer("application/pdf", to_pdf),
    }
)
"""Format name → (media type, render function)."""


def renderer(fmt: str) -> Renderer:
    """The renderer for ``fmt``, or :class:`InvalidInput` on field ``format``."""
    try:
        return RENDERERS[fmt]
    except KeyError:
        raise InvalidInput.on("format", f"must be one of {', '.join(RENDERERS)}") from None


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def filename(doc: StatementDocument, fmt: str) -> str:
    """``statement-FLEX-AMS-000042.pdf``: a download name (Content-Disposition) safe on every OS."""
    renderer(fmt)
    safe = _UNSAFE_FILENAME.sub("_", unicodedata.normalize("NFKD", doc.number)).strip("._") or "statement"
    return f"statement-{safe}.{fmt}"
