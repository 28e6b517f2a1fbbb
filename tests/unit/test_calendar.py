"""MarketClock: the ISP grid of a delivery day, alignment and gate closure (pure, no database)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.markets import calendar
from market.markets.calendar import MarketClock
from market.markets.models import GateClosureKind

AMS = "Europe/Amsterdam"
KOLKATA = "Asia/Kolkata"


def clock(
    tz: str = AMS,
    isp_minutes: int = 15,
    kind: GateClosureKind = GateClosureKind.DAY_AHEAD,
    gate: time | None = time(12, 0),
    lead: int | None = None,
) -> MarketClock:
    return MarketClock(
        timezone=tz,
        isp_minutes=isp_minutes,
        gate_closure_kind=kind,
        day_ahead_gate_time=gate,
        intraday_lead_minutes=lead,
    )


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- ISPs of a delivery day ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "isp_minutes", "expected"),
    [
        (date(2026, 6, 1), 15, 96),
        (date(2026, 1, 15), 15, 96),
        (date(2026, 3, 29), 15, 92),  # spring forward: 23-hour day
        (date(2026, 10, 25), 15, 100),  # fall back: 25-hour day
        (date(2026, 6, 1), 60, 24),
        (date(2026, 3, 29), 60, 23),
        (date(2026, 10, 25), 60, 25),
    ],
)
def test_isp_count_per_delivery_day(day, isp_minutes, expected):
    assert len(clock(isp_minutes=isp_minutes).isps_of_day(day)) == expected


def test_first_isp_is_local_midnight_in_utc_summer():
    isps = clock().isps_of_day(date(2026, 6, 1))
    assert isps[0] == utc(2026, 5, 31, 22, 0)  # CEST = UTC+2
    assert isps[1] == utc(2026, 5, 31, 22, 15)
    assert isps[-1] == utc(2026, 6, 1, 21, 45)
    assert all(i.utcoffset() == timedelta(0) for i in isps)


def test_first_isp_is_local_midnight_in_utc_winter():
    isps = clock().isps_of_day(date(2026, 1, 15))
    assert isps[0] == utc(2026, 1, 14, 23, 0)  # CET = UTC+1
    assert isps[-1] == utc(2026, 1, 15, 22, 45)


def test_dst_days_bounds():
    c = clock()
    spring = c.isps_of_day(date(2026, 3, 29))
    assert spring[0] == utc(2026, 3, 28, 23, 0)  # midnight CET
    assert spring[-1] == utc(2026, 3, 29, 21, 45)  # 23:45 CEST
    autumn = c.isps_of_day(date(2026, 10, 25))
    assert autumn[0] == utc(2026, 10, 24, 22, 0)  # midnight CEST
    assert autumn[-1] == utc(2026, 10, 25, 22, 45)  # 23:45 CET


def test_day_bounds():
    assert clock().day_bounds(date(2026, 6, 1)) == (utc(2026, 5, 31, 22), utc(2026, 6, 1, 22))
    assert clock().day_bounds(date(2026, 3, 29)) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))


def test_kolkata_day_starts_at_1830_utc():
    isps = clock(tz=KOLKATA).isps_of_day(date(2026, 6, 1))
    assert len(isps) == 96
    assert isps[0] == utc(2026, 5, 31, 18, 30)  # IST = UTC+05:30


# --- alignment --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("isp_minutes", "instant", "expected"),
    [
        (15, utc(2026, 5, 31, 22, 0), True),
        (15, utc(2026, 6, 1, 10, 45), True),
        (15, utc(2026, 6, 1, 10, 50), False),
        (15, utc(2026, 6, 1, 10, 45, 1), False),
        (15, datetime(2026, 6, 1, 10, 45, 0, 1, tzinfo=UTC), False),
        (60, utc(2026, 6, 1, 10, 0), True),
        (60, utc(2026, 6, 1, 10, 15), False),
        (5, utc(2026, 6, 1, 10, 5), True),
        (5, utc(2026, 6, 1, 10, 55), True),
        (5, utc(2026, 6, 1, 10, 7), False),
        (5, utc(2026, 6, 1, 10, 5, 30), False),
    ],
)
def test_is_aligned_utc(isp_minutes, instant, expected):
    assert clock(isp_minutes=isp_minutes).is_aligned(instant) is expected


def test_naive_datetime_is_not_aligned():
    assert clock().is_aligned(datetime(2026, 6, 1, 10, 0)) is False  # noqa: DTZ001


def test_non_utc_offset_instant():
    plus2 = timezone(timedelta(hours=2))
    assert clock().is_aligned(datetime(2026, 6, 1, 12, 30, tzinfo=plus2)) is True
    assert clock().is_aligned(datetime(2026, 6, 1, 12, 31, tzinfo=plus2)) is False
    # +05:45 (Nepal): 12:30+05:45 == 06:45Z, on the Amsterdam 15-minute grid
    plus545 = timezone(timedelta(hours=5, minutes=45))
    assert clock().is_aligned(datetime(2026, 6, 1, 12, 30, tzinfo=plus545)) is True
    # 12:00+05:45 == 06:15Z, aligned for 15-minute ISPs, not for 60-minute ISPs
    assert clock(isp_minutes=60).is_aligned(datetime(2026, 6, 1, 12, 0, tzinfo=plus545)) is False
    # 13:45+05:45 == 08:00Z
    assert clock(isp_minutes=60).is_aligned(datetime(2026, 6, 1, 13, 45, tzinfo=plus545)) is True


def test_zoneinfo_instant_is_aligned():
    local = datetime(2026, 6, 1, 0, 0, tzinfo=ZoneInfo(AMS))
    assert clock(isp_minutes=60).is_aligned(local) is True


@pytest.mark.parametrize(
    ("isp_minutes", "instant", "expected"),
    [
        (15, utc(2026, 5, 31, 18, 30), True),  # 00:00 IST
        (60, utc(2026, 5, 31, 18, 30), True),
        (15, utc(2026, 5, 31, 18, 0), True),  # 23:30 IST on the 15-minute grid
        (15, utc(2026, 5, 31, 18, 45), True),  # 00:15 IST
        (15, utc(2026, 5, 31, 18, 5), False),
        (60, utc(2026, 5, 31, 18, 0), False),  # 23:30 IST is not an hour boundary
        (60, utc(2026, 5, 31, 19, 30), True),  # 01:00 IST
        (60, utc(2026, 5, 31, 19, 0), False),  # 00:30 IST
        (30, utc(2026, 5, 31, 19, 0), True),
    ],
)
def test_is_aligned_half_hour_zone(isp_minutes, instant, expected):
    assert clock(tz=KOLKATA, isp_minutes=isp_minutes).is_aligned(instant) is expected


def test_dst_day_alignment_amsterdam():
    c = clock(isp_minutes=60)
    # 2026-10-25: 02:00-03:00 local happens twice; both UTC hours start an ISP
    assert c.is_aligned(utc(2026, 10, 25, 0, 0))
    assert c.is_aligned(utc(2026, 10, 25, 1, 0))
    assert not c.is_aligned(utc(2026, 10, 25, 1, 30))


# --- delivery day -----------------------------------------------------------------------------


def test_delivery_day():
    c = clock()
    assert c.delivery_day(utc(2026, 5, 31, 22, 0)) == date(2026, 6, 1)
    assert c.delivery_day(utc(2026, 5, 31, 21, 45)) == date(2026, 5, 31)
    assert c.delivery_day(utc(2026, 10, 25, 22, 45)) == date(2026, 10, 25)
    assert c.delivery_day(utc(2026, 10, 25, 23, 0)) == date(2026, 10, 26)


# --- gate closure -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("isp_start", "expected"),
    [
        # delivery day 2026-03-29 (DST day); D-1 = 03-28 is still CET: 12:00 local == 11:00Z
        (utc(2026, 3, 28, 23, 0), utc(2026, 3, 28, 11, 0)),
        (utc(2026, 3, 29, 21, 45), utc(2026, 3, 28, 11, 0)),
        # delivery day 2026-03-30; D-1 = 03-29 after the change, CEST: 12:00 local == 10:00Z
        (utc(2026, 3, 29, 22, 0), utc(2026, 3, 29, 10, 0)),
        (utc(2026, 3, 30, 8, 0), utc(2026, 3, 29, 10, 0)),
        # autumn: delivery 2026-10-26, D-1 = 10-25 in CET
        (utc(2026, 10, 25, 23, 0), utc(2026, 10, 25, 11, 0)),
        # delivery 2026-10-25, D-1 = 10-24 in CEST
        (utc(2026, 10, 25, 22, 45), utc(2026, 10, 24, 10, 0)),
        (utc(2026, 6, 1, 10, 0), utc(2026, 5, 31, 10, 0)),
    ],
)
def test_day_ahead_gate_closure(isp_start, expected):
    gate = clock().gate_closure(isp_start)
    assert gate == expected
    assert gate.utcoffset() == timedelta(0)


def test_day_ahead_gate_closure_accepts_local_instant():
    isp = datetime(2026, 3, 30, 0, 0, tzinfo=ZoneInfo(AMS))
    assert clock().gate_closure(isp) == utc(2026, 3, 29, 10, 0)


def test_day_ahead_gate_closure_other_gate_time():
    c = clock(gate=time(9, 30))
    assert c.gate_closure(utc(2026, 6, 1, 10, 0)) == utc(2026, 5, 31, 7, 30)


@pytest.mark.parametrize(
    ("lead", "isp_start", "expected"),
    [
        (60, utc(2026, 6, 1, 10, 0), utc(2026, 6, 1, 9, 0)),
        (15, utc(2026, 6, 1, 0, 0), utc(2026, 5, 31, 23, 45)),
        (0, utc(2026, 6, 1, 10, 0), utc(2026, 6, 1, 10, 0)),
        # across the spring DST change: pure UTC arithmetic, 90 minutes is 90 minutes
        (90, utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 0, 0)),
    ],
)
def test_intraday_gate_closure(lead, isp_start, expected):
    c = clock(kind=GateClosureKind.INTRADAY, gate=None, lead=lead)
    gate = c.gate_closure(isp_start)
    assert gate == expected
    assert gate.utcoffset() == timedelta(0)


def test_intraday_gate_closure_with_offset_instant():
    c = clock(kind=GateClosureKind.INTRADAY, gate=None, lead=30)
    isp = datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert c.gate_closure(isp) == utc(2026, 6, 1, 9, 30)


def test_day_ahead_without_gate_time_raises():
    c = clock(kind=GateClosureKind.DAY_AHEAD, gate=None, lead=60)
    with pytest.raises(ValueError, match="day_ahead_gate_time"):
        c.gate_closure(utc(2026, 6, 1, 10, 0))


def test_intraday_without_lead_raises():
    c = clock(kind=GateClosureKind.INTRADAY, gate=time(12, 0), lead=None)
    with pytest.raises(ValueError, match="intraday_lead_minutes"):
        c.gate_closure(utc(2026, 6, 1, 10, 0))


# --- property ---------------------------------------------------------------------------------


@given(
    day=st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)),
    isp_minutes=st.sampled_from((5, 10, 15, 30, 60)),
)
def test_isps_of_day_property(day, isp_minutes):
    c = clock(isp_minutes=isp_minutes)
    isp = timedelta(minutes=isp_minutes)
    isps = c.isps_of_day(day)
    start, end = c.day_bounds(day)
    zone = ZoneInfo(AMS)

    # day bounds are local midnights of this day and the next
    assert start.astimezone(zone).replace(tzinfo=None) == datetime.combine(day, time(0))
    assert end.astimezone(zone).replace(tzinfo=None) == datetime.combine(day + timedelta(days=1), time(0))
    assert end - start in {timedelta(hours=23), timedelta(hours=24), timedelta(hours=25)}

    assert isps[0] == start
    assert isps[-1] + isp == end
    assert len(isps) * isp == end - start
    for a, b in itertools.pairwise(isps):
        assert b - a == isp
    for i in isps:
        assert i.utcoffset() == timedelta(0)
        assert c.is_aligned(i)
        assert c.delivery_day(i) == day


@given(
    day=st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)),
    minutes=st.lists(st.integers(min_value=-3000, max_value=3000), min_size=1, max_size=8),
    zone=st.sampled_from(["Europe/Amsterdam", "Asia/Kolkata", "America/St_Johns", "UTC"]),
    kind=st.sampled_from([GateClosureKind.DAY_AHEAD, GateClosureKind.INTRADAY]),
)
def test_remembered_answers_agree_with_fresh_ones(
    day: date, minutes: list[int], zone: str, kind: GateClosureKind
) -> None:
    """One clock asked about the same instants again, written with other UTC offsets (the memo's
    hits), answers as a new clock does for each question (no memo)."""

    def new_clock() -> MarketClock:
        return MarketClock(
            timezone=zone,
            isp_minutes=15,
            gate_closure_kind=kind,
            day_ahead_gate_time=time(12),
            intraday_lead_minutes=30,
        )

    clock = new_clock()
    base = datetime.combine(day, time(0), tzinfo=ZoneInfo(zone))
    instants = [base + timedelta(minutes=m) for m in minutes]
    forms = [UTC, ZoneInfo(zone), timezone(timedelta(hours=5, minutes=45))]
    for form in forms:
        for instant in instants:
            written = instant.astimezone(form)
            assert clock.is_aligned(written) is new_clock().is_aligned(written)
            assert clock.gate_closure(written) == new_clock().gate_closure(written)


def test_the_memo_forgets_at_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calendar, "MEMO_LIMIT", 3)
    clock = MarketClock("Europe/Amsterdam", 15, GateClosureKind.DAY_AHEAD, time(12))
    start = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    for k in range(10):
        instant = start + timedelta(minutes=5 * k)
        assert clock.is_aligned(instant) is (k % 3 == 0)
        assert clock.gate_closure(instant) == datetime(2026, 5, 31, 10, 0, tzinfo=UTC)  # 12:00 CEST
        assert len(clock._aligned) <= 3
        assert len(clock._gates) <= 3


def test_both_sides_of_a_half_hour_fall_back_keep_their_own_answer() -> None:
    """Lord Howe Island falls back 30 minutes (02:00 +11:00 -> 01:30 +10:30): 01:30 happens twice,
    1.5 h and 2 h after local midnight. With hourly ISPs only the second is on the grid. The two
    compare equal in their zone, so neither may take the other's remembered answer."""
    zone = ZoneInfo("Australia/Lord_Howe")
    first = datetime(2026, 4, 5, 1, 30, tzinfo=zone, fold=0)
    second = first.replace(fold=1)
    assert (first.utcoffset(), second.utcoffset()) == (timedelta(hours=11), timedelta(hours=10, minutes=30))
    for order in ((first, second), (second, first)):
        c = clock(tz="Australia/Lord_Howe", isp_minutes=60)
        answers = {instant.fold: c.is_aligned(instant) for instant in order}
        assert answers == {0: False, 1: True}
