"""Market time, pure: the ISP grid of a delivery day and gate closure.

All instants are timezone-aware UTC. A delivery day is a calendar day in the market's IANA
time zone, so it has 96 ISPs of 15 minutes, or 92 / 100 on the days clocks change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from market.markets.models import GateClosureKind


@dataclass(frozen=True, slots=True)
class MarketClock:
    """The time rules of one market, as plain values."""

    timezone: str
    isp_minutes: int
    gate_closure_kind: GateClosureKind
    day_ahead_gate_time: time | None = None
    intraday_lead_minutes: int | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def isp(self) -> timedelta:
        return timedelta(minutes=self.isp_minutes)

    def day_bounds(self, day: date) -> tuple[datetime, datetime]:
        """UTC start (inclusive) and end (exclusive) of a local delivery day."""
        start = datetime.combine(day, time(0), tzinfo=self.zone).astimezone(UTC)
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.zone).astimezone(UTC)
        return start, end

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
        day = self.delivery_day(instant)
        start, _ = self.day_bounds(day)
        offset = instant.astimezone(UTC) - start
        return offset % self.isp == timedelta(0)

    def delivery_day(self, instant: datetime) -> date:
        """The local delivery day an instant falls in."""
        return instant.astimezone(self.zone).date()

    def gate_closure(self, isp_start: datetime) -> datetime:
        """The instant after which orders for the ISP starting at ``isp_start`` are refused.

        day_ahead: the market's gate time on the local day before the delivery day (D-1).
        intraday: ``intraday_lead_minutes`` before the ISP starts.
        """
        if self.gate_closure_kind is GateClosureKind.INTRADAY:
            if self.intraday_lead_minutes is None:
                raise ValueError("an intraday market needs intraday_lead_minutes")
            return isp_start.astimezone(UTC) - timedelta(minutes=self.intraday_lead_minutes)
        if self.day_ahead_gate_time is None:
            raise ValueError("a day-ahead market needs day_ahead_gate_time")
        day_before = self.delivery_day(isp_start) - timedelta(days=1)
        return datetime.combine(day_before, self.day_ahead_gate_time, tzinfo=self.zone).astimezone(UTC)
