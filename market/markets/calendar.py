"""Market time, pure: the ISP grid of a delivery day and gate closure.

All instants are timezone-aware UTC. A delivery day is a calendar day in the market's IANA
time zone, so it has 96 ISPs of 15 minutes, or 92 / 100 on the days clocks change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import TypeVar
from zoneinfo import ZoneInfo

from market.core.errors import InvalidInput
from market.markets.models import GateClosureKind

FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(8999, 12, 31)
"""The delivery days the calendar knows: far beyond any market's past or horizon, and far enough
from ``date.min``/``date.max`` that every bound and gate closure is a datetime in any time zone."""
EARLIEST, LATEST = datetime(1900, 1, 2, tzinfo=UTC), datetime(8999, 12, 30, tzinfo=UTC)
"""Instants in [EARLIEST, LATEST) fall on a known delivery day in every time zone."""


def in_range(instant: datetime) -> bool:
    """True if an aware ``instant`` lies where the ISP grid is defined, [EARLIEST, LATEST)."""
    return EARLIEST <= instant < LATEST


@lru_cache(maxsize=4096)
def _day_bounds(timezone: str, day: date) -> tuple[datetime, datetime]:
    if not FIRST_DAY <= day <= LAST_DAY:
        raise InvalidInput.on("day", f"outside the supported delivery days {FIRST_DAY} to {LAST_DAY}")
    zone = ZoneInfo(timezone)
    start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    return start, end


@lru_cache(maxsize=65_536)
def _local_day(timezone: str, instant: datetime) -> date:
    """The local date of an instant. Cached: a time-zone conversion costs several microseconds, and a
    batch of offers asks for the same few ISP starts thousands of times (equal instants hash equal
    whatever their offset, and have the same local date)."""
    return instant.astimezone(ZoneInfo(timezone)).date()


T = TypeVar("T")

MEMO_LIMIT = 65_536
"""Instants a clock remembers per question before it forgets them all (a client can send any number
of distinct instants; a batch of offers repeats the same few ISP starts thousands of times)."""


def _recalled(memo: dict[datetime, T], instant: datetime, compute: Callable[[datetime], T]) -> T:
    """``compute(instant)``, remembered in ``memo`` for an aware instant with ``fold=0``.

    A naive instant reads as the machine's local time, and one with ``fold=1`` compares equal to
    its ``fold=0`` twin in the same zone though it is another instant: neither is remembered.
    """
    if instant.tzinfo is None or instant.fold:
        return compute(instant)
    known = memo.get(instant)
    if known is None:
        if len(memo) >= MEMO_LIMIT:
            memo.clear()
        known = memo[instant] = compute(instant)
    return known


@dataclass(frozen=True, slots=True)
class MarketClock:
    """The time rules of one market, as plain values.

    The answers for an aware instant (is it on the grid, when does its gate close) are remembered:
    equal instants hash equal whatever their UTC offset, and a time-zone conversion costs several
    microseconds, where a batch of 10,000 offers asks about the same hundred ISP starts.
    """

    timezone: str
    isp_minutes: int
    gate_closure_kind: GateClosureKind
    day_ahead_gate_time: time | None = None
    intraday_lead_minutes: int | None = None
    zone: ZoneInfo = field(init=False, repr=False, compare=False)
    isp: timedelta = field(init=False, repr=False, compare=False)
    _aligned: dict[datetime, bool] = field(init=False, repr=False, compare=False)
    _gates: dict[datetime, datetime] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", ZoneInfo(self.timezone))
        object.__setattr__(self, "isp", timedelta(minutes=self.isp_minutes))
        object.__setattr__(self, "_aligned", {})
        object.__setattr__(self, "_gates", {})

    def day_bounds(self, day: date) -> tuple[datetime, datetime]:
        """UTC start (inclusive) and end (exclusive) of a local delivery day."""
        return _day_bounds(self.timezone, day)

    def isps_of_day(self, day: date) -> list[datetime]:
        """UTC start of every ISP of a local delivery day (92, 96 or 100 for 15-minute ISPs)."""
        start, end = self.day_bounds(day)
        count = int((end - start) / self.isp)
        return [start + i * self.isp for i in range(count)]

    def is_aligned(self, instant: datetime) -> bool:
        """True if ``instant`` starts an ISP of the market's grid.

        The grid is anchored at local midnight of the instant's delivery day, so markets in zones
        with non-whole-hour offsets still align their ISPs to local clock quarters.
        """
        if instant.tzinfo is None:
            return False
        return _recalled(self._aligned, instant, self._on_grid)

    def _on_grid(self, instant: datetime) -> bool:
        if not in_range(instant):
            return False
        start, _ = self.day_bounds(self.delivery_day(instant))
        return (instant.astimezone(UTC) - start) % self.isp == timedelta(0)

    def delivery_day(self, instant: datetime) -> date:
        """The local delivery day an instant falls in."""
        if instant.tzinfo is None:  # a naive instant is read as the machine's local time, never cached
            return instant.astimezone(self.zone).date()
        return _local_day(self.timezone, instant)

    def gate_closure(self, isp_start: datetime) -> datetime:
        """The instant after which orders for the ISP starting at ``isp_start`` are refused.

        day_ahead: the market's gate time on the local day before the delivery day (D-1).
        intraday: ``intraday_lead_minutes`` before the ISP starts.
        """
        if self.gate_closure_kind is GateClosureKind.INTRADAY:
            if self.intraday_lead_minutes is None:
                raise ValueError("an intraday market needs intraday_lead_minutes")
            return isp_start.astimezone(UTC) - timedelta(minutes=self.intraday_lead_minutes)
        return _recalled(self._gates, isp_start, self._day_ahead_gate)

    def _day_ahead_gate(self, isp_start: datetime) -> datetime:
        if self.day_ahead_gate_time is None:
            raise ValueError("a day-ahead market needs day_ahead_gate_time")
        day_before = self.delivery_day(isp_start) - timedelta(days=1)
        return datetime.combine(day_before, self.day_ahead_gate_time, tzinfo=self.zone).astimezone(UTC)
