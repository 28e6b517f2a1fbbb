"""The statement document: what one participant is paid or owes for one period, as plain data.

A statement (MARKET.md, *Settlement*) is per participant per period: one line per order and ISP
(baseline, ordered, actual, delivered, shortfall, price, payment, penalty, net) with the settlement
run that produced it, the pass-through lines of an aggregator's portfolio, totals and a sequential
number per issuer. The service builds a :class:`StatementDocument` from the ledger and the runs;
:mod:`settlement.statements.render` turns it into JSON, CSV and PDF. Nothing here does I/O.

**Sign convention.** Every money amount on a statement is signed from the point of view of the
participant the statement is addressed to: positive is a credit (the market pays the participant),
negative is a debit (the participant pays the market). So for a seller a utilisation ``payment`` is
positive and a ``penalty`` or operator ``fee`` is negative; for a utility the ``payment`` for the
flexibility it bought is negative. Each line's ``net`` is ``payment + penalty + availability + fee``
(checked). Pass-through shares follow the same rule: a household's share is positive (it is paid to
the household); on the aggregator's own statement the shares it passed on to its member sites are
negative (they are deducted from what the aggregator receives, since the market pays the members).

``amount_due = Σ net + Σ pass-through share``. Renderers show it as an *amount due to the
participant* when positive and as a positive *amount owed by the participant* when negative
(:meth:`StatementTotals.balance`), so a utility reads what it owes without a minus sign.

Energy (kWh) is power (kW, average over the ISP) × ISP length in hours, MARKET.md *Time*.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, Rounded
from enum import StrEnum

__all__ = [
    "ENERGY_PLACES",
    "Balance",
    "BalanceDirection",
    "Issuer",
    "PassThroughLine",
    "RunRef",
    "StatementDocument",
    "StatementLine",
    "StatementParty",
    "StatementTotals",
    "energy_kwh",
    "format_statement_number",
    "line_sort_key",
    "pass_through_sort_key",
    "totals",
]

_EXACT = Context(prec=200, traps=[Inexact, Rounded, Overflow, InvalidOperation])
"""Sums and products on statements never round: any rounding raises instead of passing silently."""

_WIDE = Context(prec=60)
ENERGY_PLACES = 6
"""Places an energy value is rounded to when kW × minutes / 60 does not terminate (e.g. 5-minute
ISPs); the same places as stored amounts (``ExactDecimal(20, 6)``). 15-, 30- and 60-minute ISPs
are always exact."""
_ENERGY_QUANTUM = Decimal(1).scaleb(-ENERGY_PLACES)
_MINUTES_PER_HOUR = 60
_ZERO = Decimal(0)
_CURRENCY = re.compile(r"[A-Z]{3}")


def _add(values: Iterable[Decimal]) -> Decimal:
    """Σ values, exactly (raises :class:`decimal.Inexact` rather than rounding)."""
    total = _ZERO
    for value in values:
        total = _EXACT.add(total, value)
    return total


def energy_kwh(power_kw: Decimal, isp_minutes: int) -> Decimal:
    """Energy of an ISP: ``power_kw × isp_minutes / 60`` (kW × h = kWh).

    Exact whenever the quotient terminates (always for 15-, 30- and 60-minute ISPs); otherwise
    rounded half-even to :data:`ENERGY_PLACES` places.
    """
    product = _EXACT.multiply(power_kw, Decimal(isp_minutes))
    quotient = _WIDE.divide(product, Decimal(_MINUTES_PER_HOUR))
    if _EXACT.multiply(quotient, Decimal(_MINUTES_PER_HOUR)) == product:
        return quotient
    return quotient.quantize(_ENERGY_QUANTUM, context=_WIDE)


def _check_amount(owner: str, name: str, value: object) -> None:
    # A float that slips in would make sums and JSON inexact; refuse it at the door.
    if not isinstance(value, Decimal):
        raise TypeError(f"{owner}.{name} must be a Decimal, not {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"{owner}.{name} must be finite, got {value}")


def _check_day(owner: str, name: str, value: object) -> None:
    # datetime is a subclass of date; a statement day must be a plain calendar day.
    if not isinstance(value, date) or isinstance(value, datetime):
        raise TypeError(f"{owner}.{name} must be a date, not {type(value).__name__}")


def _utc(owner: str, name: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{owner}.{name} must be timezone-aware (times are stored in UTC)")
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class RunRef:
    """One settlement run a statement covers: the delivery day, its kind and version."""

    delivery_day: date
    kind: str
    """``initial``, ``reconciliation`` or ``final``."""
    version: int

    def __post_init__(self) -> None:
        _check_day("RunRef", "delivery_day", self.delivery_day)

    @property
    def label(self) -> str:
        """``final v3``: kind and version as people read them."""
        return f"{self.kind} v{self.version}"


@dataclass(frozen=True, slots=True)
class Issuer:
    """Who issues the statement: the market (operator), and the code its statement numbers carry."""

    name: str
    code: str


@dataclass(frozen=True, slots=True)
class StatementParty:
    """The participant the statement is addressed to."""

    id: str
    name: str
    role: str
    """``household``, ``aggregator``, ``data_center`` or ``utility`` (MARKET.md *Actors and roles*)."""


_LINE_AMOUNTS = (
    "baseline_kw",
    "ordered_kw",
    "actual_kw",
    "delivered_kw",
    "shortfall_kw",
    "payment",
    "penalty",
    "availability",
    "fee",
    "net",
)


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One order (or portfolio share) in one ISP, as settled by one run.

    Powers are average kW over the ISP; ``delivered_kw = direction sign × (baseline − actual)``
    (MARKET.md *Metering and delivery verification*). Money is in the statement's currency and
    signed from the participant's view (see the module docstring); ``net = payment + penalty +
    availability + fee`` is checked on construction.
    """

    delivery_day: date
    isp_start: datetime
    """Start of the ISP, UTC (an aware datetime in another zone is converted)."""
    order_ref: str
    """The offer (or request) id, or ``"portfolio share"``."""
    resource: str
    """Site meter code or portfolio name."""
    direction: str
    """``up`` or ``down``."""
    baseline_kw: Decimal
    ordered_kw: Decimal
    actual_kw: Decimal
    delivered_kw: Decimal
    shortfall_kw: Decimal
    price_per_mwh: Decimal | None
    """None where no price applies (e.g. an availability-only line)."""
    payment: Decimal
    penalty: Decimal
    availability: Decimal
    fee: Decimal
    net: Decimal
    run_kind: str
    run_version: int
    isp_minutes: int = 15
    """ISP length (MARKET.md: market-wide, 15 minutes by default)."""

    def __post_init__(self) -> None:
        _check_day("StatementLine", "delivery_day", self.delivery_day)
        object.__setattr__(self, "isp_start", _utc("StatementLine", "isp_start", self.isp_start))
        for name in _LINE_AMOUNTS:
            _check_amount("StatementLine", name, getattr(self, name))
        if self.price_per_mwh is not None:
            _check_amount("StatementLine", "price_per_mwh", self.price_per_mwh)
        if not 0 < self.isp_minutes <= _MINUTES_PER_HOUR:
            raise ValueError(f"StatementLine.isp_minutes must be within 1..60, got {self.isp_minutes}")
        components = _add((self.payment, self.penalty, self.availability, self.fee))
        if components != self.net:
            raise ValueError(
                f"StatementLine.net must equal payment + penalty + availability + fee = {components}, got {self.net}"
            )

    @property
    def ordered_kwh(self) -> Decimal:
        """Ordered energy: ``ordered_kw × isp_minutes / 60``."""
        return energy_kwh(self.ordered_kw, self.isp_minutes)

    @property
    def delivered_kwh(self) -> Decimal:
        """Delivered energy (signed; over-delivery included): ``delivered_kw × isp_minutes / 60``."""
        return energy_kwh(self.delivered_kw, self.isp_minutes)

    @property
    def run(self) -> RunRef:
        return RunRef(self.delivery_day, self.run_kind, self.run_version)


@dataclass(frozen=True, slots=True)
class PassThroughLine:
    """One member site's share of an aggregator portfolio's revenue on one delivery day.

    MARKET.md *Aggregator pass-through*: revenue is allocated to member sites in proportion to
    their delivered energy, less the aggregator's fee share. ``share`` is signed from the
    statement participant's view: positive on the household's statement, negative on the
    aggregator's.
    """

    delivery_day: date
    portfolio: str
    """The aggregator's portfolio name (the aggregator's own name where it has one portfolio)."""
    member_site: str
    """The member site's meter code."""
    delivered_kwh: Decimal
    share: Decimal
    run_kind: str
    run_version: int

    def __post_init__(self) -> None:
        _check_day("PassThroughLine", "delivery_day", self.delivery_day)
        _check_amount("PassThroughLine", "delivered_kwh", self.delivered_kwh)
        _check_amount("PassThroughLine", "share", self.share)

    @property
    def run(self) -> RunRef:
        return RunRef(self.delivery_day, self.run_kind, self.run_version)


class BalanceDirection(StrEnum):
    """Who pays whom the statement's balance."""

    MARKET_PAYS_PARTICIPANT = "market_pays_participant"
    PARTICIPANT_PAYS_MARKET = "participant_pays_market"
    SETTLED = "settled"
    """Nothing to pay either way."""


@dataclass(frozen=True, slots=True)
class Balance:
    """The balance as people read it: a direction and a non-negative amount."""

    direction: BalanceDirection
    amount: Decimal

    @property
    def label(self) -> str:
        """``Amount due to you`` / ``Amount you owe`` / ``Nothing due``."""
        return {
            BalanceDirection.MARKET_PAYS_PARTICIPANT: "Amount due to you",
            BalanceDirection.PARTICIPANT_PAYS_MARKET: "Amount you owe",
            BalanceDirection.SETTLED: "Nothing due",
        }[self.direction]


@dataclass(frozen=True, slots=True)
class StatementTotals:
    """Exact sums over a statement's lines and pass-through lines (see :func:`totals`)."""

    line_count: int
    pass_through_count: int
    ordered_kwh: Decimal
    delivered_kwh: Decimal
    payment: Decimal
    penalty: Decimal
    availability: Decimal
    fee: Decimal
    net: Decimal
    pass_through_delivered_kwh: Decimal
    pass_through_share: Decimal

    @property
    def amount_due(self) -> Decimal:
        """``Σ net + Σ pass-through share``; positive = the market pays the participant."""
        return _EXACT.add(self.net, self.pass_through_share)

    def balance(self) -> Balance:
        """The amount due as a direction and a non-negative amount (a utility's debt reads positive)."""
        due = self.amount_due
        if due > 0:
            return Balance(BalanceDirection.MARKET_PAYS_PARTICIPANT, due)
        if due < 0:
            return Balance(BalanceDirection.PARTICIPANT_PAYS_MARKET, -due)
        return Balance(BalanceDirection.SETTLED, _ZERO)


def totals(lines: Sequence[StatementLine], pass_through: Sequence[PassThroughLine]) -> StatementTotals:
    """Exact column sums: Σ ordered/delivered kWh (per line kW × ISP hours), Σ payment, Σ penalty,
    Σ availability, Σ fee, Σ net over ``lines``, and Σ delivered kWh, Σ share over ``pass_through``.

    Sums are exact Decimal additions (any rounding raises); the energy of each line is
    :func:`energy_kwh`, so the total equals the sum of the per-line energies a CSV shows.
    """
    return StatementTotals(
        line_count=len(lines),
        pass_through_count=len(pass_through),
        ordered_kwh=_add(line.ordered_kwh for line in lines),
        delivered_kwh=_add(line.delivered_kwh for line in lines),
        payment=_add(line.payment for line in lines),
        penalty=_add(line.penalty for line in lines),
        availability=_add(line.availability for line in lines),
        fee=_add(line.fee for line in lines),
        net=_add(line.net for line in lines),
        pass_through_delivered_kwh=_add(line.delivered_kwh for line in pass_through),
        pass_through_share=_add(line.share for line in pass_through),
    )


def line_sort_key(line: StatementLine) -> tuple[date, datetime, str, str, str, int]:
    """Statement order: day, ISP start, order ref; then resource, direction and run version so
    that the order is total and the same document always renders the same bytes."""
    return (line.delivery_day, line.isp_start, line.order_ref, line.resource, line.direction, line.run_version)


def pass_through_sort_key(line: PassThroughLine) -> tuple[date, str, str, int]:
    """Pass-through order: day, portfolio, member site, run version."""
    return (line.delivery_day, line.portfolio, line.member_site, line.run_version)


def _run_sort_key(run: RunRef) -> tuple[date, int, str]:
    return (run.delivery_day, run.version, run.kind)


_NUMBER_CODE = re.compile(r"[^A-Z0-9]+")


def format_statement_number(issuer_code: str, sequence: int, *, prefix: str = "FLEX", width: int = 6) -> str:
    """``FLEX-AMS-000042``: prefix, the issuer's code (upper case, runs of other characters as
    ``-``) and the issuer's sequence number, zero-padded to ``width`` digits (longer numbers keep
    all their digits). The sequence itself is allocated per issuer by the service."""
    if sequence < 1:
        raise ValueError(f"statement sequence must be positive, got {sequence}")
    code = _NUMBER_CODE.sub("-", unicodedata.normalize("NFKD", issuer_code).upper()).strip("-")
    if not code:
        raise ValueError(f"issuer code {issuer_code!r} has no letters or digits")
    return f"{prefix}-{code}-{sequence:0{width}d}"


@dataclass(frozen=True, slots=True)
class StatementDocument:
    """A participant's statement for one period, ready to render.

    On construction the lines are sorted (:func:`line_sort_key`, :func:`pass_through_sort_key`)
    and stored as tuples, ``runs`` becomes the sorted union of the runs given and those the lines
    name, and ``totals`` is computed by :func:`totals` — so a document can never disagree with
    itself. Every line must fall within ``period_start..period_end`` (inclusive).
    """

    number: str
    issuer: Issuer
    participant: StatementParty
    period_start: date
    period_end: date
    """Inclusive."""
    currency: str
    """ISO 4217 code, e.g. ``EUR``."""
    issued_at: datetime
    """Aware; also the PDF's creation date, so the same document renders the same bytes."""
    lines: Sequence[StatementLine] = ()
    pass_through_lines: Sequence[PassThroughLine] = ()
    runs: Sequence[RunRef] = ()
    notes: Sequence[str] = ()
    time_zone: str = "UTC"
    """The market's IANA time zone; the PDF shows ISP starts in local time with their offset."""
    totals: StatementTotals = field(init=False)

    def __post_init__(self) -> None:
        _check_day("StatementDocument", "period_start", self.period_start)
        _check_day("StatementDocument", "period_end", self.period_end)
        if self.period_end < self.period_start:
            raise ValueError(f"period_end {self.period_end} is before period_start {self.period_start}")
        if not _CURRENCY.fullmatch(self.currency):
            raise ValueError(f"currency must be an ISO 4217 code such as EUR, got {self.currency!r}")
        if self.issued_at.tzinfo is None or self.issued_at.utcoffset() is None:
            raise ValueError("issued_at must be timezone-aware")
        lines = tuple(sorted(self.lines, key=line_sort_key))
        pass_through = tuple(sorted(self.pass_through_lines, key=pass_through_sort_key))
        for kind, rows in (("line", lines), ("pass-through line", pass_through)):
            outside = [row.delivery_day for row in rows if not self.period_start <= row.delivery_day <= self.period_end]
            if outside:
                raise ValueError(f"{kind} on {outside[0]} is outside the period {self.period_start}..{self.period_end}")
        runs = {*self.runs, *(line.run for line in lines), *(line.run for line in pass_through)}
        object.__setattr__(self, "lines", lines)
        object.__setattr__(self, "pass_through_lines", pass_through)
        object.__setattr__(self, "runs", tuple(sorted(runs, key=_run_sort_key)))
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "totals", totals(lines, pass_through))

    @property
    def amount_due(self) -> Decimal:
        """Signed balance: positive = the market pays the participant (see the module docstring)."""
        return self.totals.amount_due

    def balance(self) -> Balance:
        """The balance as a direction and a non-negative amount."""
        return self.totals.balance()
