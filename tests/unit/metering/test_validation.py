"""Parsing and validating meter files, pure (no database): hand-computed frames, every issue kind,
clock-change days in Europe/Amsterdam, and fuzzing that only ever yields the domain error."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from market.markets.calendar import MarketClock
from market.markets.models import GateClosureKind
from settlement.metering.errors import UnreadableMeterFile
from settlement.metering.models import MeterFileFormat
from settlement.metering.validation import (
    ISSUE_SCHEMA,
    PARSED_SCHEMA,
    READINGS_SCHEMA,
    IssueKind,
    Limits,
    parse_file,
    validate_readings,
)

CLOCK = MarketClock("Europe/Amsterdam", 15, GateClosureKind.DAY_AHEAD, time(12))
LIMITS = Limits.of(CLOCK, Decimal(10_000))  # 2,500 kWh per 15-minute ISP
METERS = pl.DataFrame({"meter": ["EAN-A", "EAN-B"], "site_id": ["site-a", "site-b"]})
MIDNIGHT = datetime(2026, 5, 31, 22, tzinfo=UTC)  # 2026-06-01 00:00 CEST


def isp(k: int) -> datetime:
    return MIDNIGHT + timedelta(minutes=15 * k)


def csv(*rows: str) -> bytes:
    return ("meter,isp_start,import_kwh,export_kwh\n" + "\n".join(rows) + "\n").encode()


def validate(content: bytes, file_format: MeterFileFormat = MeterFileFormat.CSV):  # type: ignore[no-untyped-def]
    return validate_readings(parse_file(content, file_format), METERS, CLOCK, LIMITS)


def readings(*rows: tuple[str, datetime, date, str, str]) -> pl.DataFrame:
    return pl.DataFrame(
        [(s, t, d, Decimal(i), Decimal(e)) for s, t, d, i, e in rows], schema=READINGS_SCHEMA, orient="row"
    )


def issues(*rows: tuple[str, str, int | None, str | None, datetime | None, str]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=ISSUE_SCHEMA, orient="row")


def test_limits_scale_with_the_isp_length() -> None:
    assert LIMITS.max_kwh_per_isp == Decimal(2500)
    hourly = MarketClock("Europe/Amsterdam", 60, GateClosureKind.DAY_AHEAD, time(12))
    assert Limits.of(hourly, Decimal(10_000)).max_kwh_per_isp == Decimal(10_000)


# -- parsing ------------------------------------------------------------------------------------


def test_csv_is_parsed_to_exact_typed_columns() -> None:
    parsed = parse_file(
        b"meter;isp_start;import_kwh;export_kwh;comment\n"
        b" EAN-A ;2026-06-01T00:00:00+02:00;1.5;0;x\n"
        b"EAN-A;2026-05-31 22:15Z;0.000001;2.50;\n"
        b"EAN-A;2026-06-01T00:30:00;abc;1.1234567\n",
        MeterFileFormat.CSV,
    )
    expected = pl.DataFrame(
        [
            (1, "EAN-A", isp(0), "2026-06-01T00:00:00+02:00", None, Decimal("1.5"), None, Decimal(0), None),
            (2, "EAN-A", isp(1), "2026-05-31 22:15Z", None, Decimal("0.000001"), None, Decimal("2.5"), None),
            (
                3,
                "EAN-A",
                None,
                "2026-06-01T00:30:00",
                "naive_timestamp",
                None,
                "import_kwh 'abc' is not a decimal number",
                None,
                "export_kwh 1.1234567 has more than 6 decimal places",
            ),
        ],
        schema=PARSED_SCHEMA,
        orient="row",
    )
    assert_frame_equal(parsed, expected)


def test_json_numbers_are_read_exactly_and_both_layouts_work() -> None:
    records = [{"meter": "EAN-A", "isp_start": "2026-05-31T22:00:00Z", "import_kwh": 0.1, "export_kwh": 1e-6}]
    for document in (records, {"readings": records}):
        parsed = parse_file(json.dumps(document).encode(), MeterFileFormat.JSON)
        assert parsed.get_column("import_kwh").to_list() == [Decimal("0.1")]
        assert parsed.get_column("export_kwh").to_list() == [Decimal("0.000001")]
        assert parsed.get_column("isp_start").to_list() == [isp(0)]


def test_parquet_with_a_timezone_aware_timestamp_and_decimals() -> None:
    frame = pl.DataFrame(
        {
            "meter": [1234567, 1234568],  # EAN codes as integers are fine
            "isp_start": [isp(0), isp(1)],
            "import_kwh": [Decimal("1.125"), Decimal("0.5")],
            "export_kwh": [0.25, None],
        },
        schema={
            "meter": pl.Int64,
            "isp_start": pl.Datetime("ms", "Europe/Amsterdam"),
            "import_kwh": pl.Decimal(18, 3),
            "export_kwh": pl.Float64,
        },
    )
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    parsed = parse_file(buffer.getvalue(), MeterFileFormat.PARQUET)
    expected = pl.DataFrame(
        [
            (1, "1234567", isp(0), None, None, Decimal("1.125"), None, Decimal("0.25"), None),
            (2, "1234568", isp(1), None, None, Decimal("0.5"), None, None, "export_kwh is missing"),
        ],
        schema=PARSED_SCHEMA,
        orient="row",
    )
    assert_frame_equal(parsed, expected)


def test_naive_parquet_timestamps_are_reported_not_guessed() -> None:
    buffer = io.BytesIO()
    pl.DataFrame(
        {"meter": ["EAN-A"], "isp_start": [datetime(2026, 6, 1)], "import_kwh": ["1"], "export_kwh": ["0"]}  # noqa: DTZ001
    ).write_parquet(buffer)
    parsed = parse_file(buffer.getvalue(), MeterFileFormat.PARQUET)
    assert parsed.get_column("isp_problem").to_list() == ["naive_timestamp"]
    assert parsed.get_column("isp_start").to_list() == [None]


@pytest.mark.parametrize(
    ("content", "file_format", "field", "reason"),
    [
        (b"meter,isp_start,import_kwh\nA,2026-06-01T00:00Z,1\n", MeterFileFormat.CSV, "export_kwh", "column missing"),
        (b"", MeterFileFormat.CSV, "file", "not a readable csv file"),
        (b"not parquet", MeterFileFormat.PARQUET, "file", "not a readable parquet file"),
        (b"[1, 2]", MeterFileFormat.JSON, "readings[0]", "must be an object"),
        (b'{"rows": []}', MeterFileFormat.JSON, "file", "expected a list"),
        (b"{", MeterFileFormat.JSON, "file", "not a readable json file"),
    ],
)
def test_an_unreadable_file_names_the_reason(
    content: bytes, file_format: MeterFileFormat, field: str, reason: str
) -> None:
    with pytest.raises(UnreadableMeterFile) as caught:
        parse_file(content, file_format)
    assert caught.value.errors[0].field == field
    assert reason in caught.value.errors[0].reason


def test_a_parquet_column_of_an_unusable_type_is_named() -> None:
    buffer = io.BytesIO()
    pl.DataFrame(
        {"meter": ["A"], "isp_start": [date(2026, 6, 1)], "import_kwh": ["1"], "export_kwh": ["0"]}
    ).write_parquet(buffer)
    with pytest.raises(UnreadableMeterFile) as caught:
        parse_file(buffer.getvalue(), MeterFileFormat.PARQUET)
    assert caught.value.errors[0].field == "isp_start"


# -- validation ---------------------------------------------------------------------------------


def test_a_clean_file_is_stored_whole() -> None:
    result = validate(csv("EAN-A,2026-06-01T00:00:00+02:00,1,0", "EAN-B,2026-05-31T22:00:00Z,0,2.5"))
    assert_frame_equal(
        result.readings,
        readings(
            ("site-a", isp(0), date(2026, 6, 1), "1", "0"),
            ("site-b", isp(0), date(2026, 6, 1), "0", "2.5"),
        ),
    )
    assert_frame_equal(result.issues, pl.DataFrame(schema=ISSUE_SCHEMA))
    assert (result.rows, result.rejected, result.duplicates, result.missing_isps) == (2, 0, 0, 0)


def test_every_row_error_is_classified_and_only_good_rows_stored() -> None:
    result = validate(
        csv(
            "EAN-A,2026-06-01T00:00:00+02:00,1,0",  # 1 good
            "EAN-X,2026-06-01T00:00:00+02:00,1,0",  # 2 unknown meter
            "EAN-A,2026-06-01T00:15:00,1,0",  # 3 no offset
            "EAN-A,2026-13-01T00:15:00Z,1,0",  # 4 no such month
            "EAN-A,2026-06-01T00:20:00+02:00,1,0",  # 5 off the grid
            "EAN-A,2026-06-01T00:30:00+02:00,1e3,0",  # 6 not a plain decimal
            "EAN-A,2026-06-01T00:45:00+02:00,0,-0.5",  # 7 negative export
            "EAN-A,2026-06-01T01:00:00+02:00,2500.000001,0",  # 8 above 2,500 kWh per ISP
            "EAN-B,2026-06-01T00:00:00+02:00,1,0",  # 9 and 10: the same ISP, two values
            "EAN-B,2026-06-01T00:00:00+02:00,2,0",
            "EAN-A,2026-06-01T01:15:00+02:00,2500,0",  # 11 good: at the ceiling
        )
    )
    assert_frame_equal(
        result.readings,
        readings(
            ("site-a", isp(0), date(2026, 6, 1), "1", "0"),
            ("site-a", isp(5), date(2026, 6, 1), "2500", "0"),
        ),
    )
    error = "error"
    assert_frame_equal(
        result.issues,
        issues(
            (
                "unknown_meter",
                error,
                2,
                "EAN-X",
                isp(0),
                "meter 'EAN-X' is not a site of this market whose readings the uploader may send",
            ),
            (
                "naive_timestamp",
                error,
                3,
                "EAN-A",
                None,
                "isp_start '2026-06-01T00:15:00' has no UTC offset (send e.g. 2026-03-29T00:00:00+01:00)",
            ),
            (
                "invalid_timestamp",
                error,
                4,
                "EAN-A",
                None,
                "isp_start '2026-13-01T00:15:00Z' is not an ISO 8601 timestamp with an offset",
            ),
            (
                "misaligned_timestamp",
                error,
                5,
                "EAN-A",
                isp(0) + timedelta(minutes=20),
                "isp_start 2026-05-31T22:20:00Z is not the start of a 15-minute ISP in Europe/Amsterdam",
            ),
            ("invalid_value", error, 6, "EAN-A", isp(2), "import_kwh '1e3' is not a decimal number"),
            ("negative_value", error, 7, "EAN-A", isp(3), "export_kwh -0.5 is negative"),
            (
                "implausible_value",
                error,
                8,
                "EAN-A",
                isp(4),
                "import_kwh 2500.000001 exceeds the plausible 2500 kWh per 15-minute ISP",
            ),
            (
                "conflicting_duplicate",
                error,
                9,
                "EAN-B",
                isp(0),
                "the same meter and ISP appear more than once with different values; all of them are rejected",
            ),
            (
                "conflicting_duplicate",
                error,
                10,
                "EAN-B",
                isp(0),
                "the same meter and ISP appear more than once with different values; all of them are rejected",
            ),
            (
                "gap",
                "warning",
                None,
                "EAN-A",
                isp(1),
                "1 ISP(s) missing, from 2026-05-31T22:15:00Z up to 2026-05-31T22:30:00Z (exclusive)",
            ),
        ),
    )
    assert (result.rows, result.rejected, result.duplicates) == (11, 9, 0)
    # ISPs 0, 2, 3, 4 and 5 of EAN-A are well timed (value errors still count as read): ISP 1 is missing,
    # but it appears in the file only with a bad timestamp (row 3), so it is a gap.
    assert result.missing_isps == 1


def test_identical_repeats_are_stored_once_and_gaps_listed_as_runs() -> None:
    result = validate(
        csv(
            "EAN-A,2026-05-31T22:00:00Z,1,0",
            "EAN-A,2026-05-31T22:00:00Z,1.0,0.000",  # the same values written differently
            "EAN-A,2026-05-31T22:45:00Z,1,0",  # ISPs 1 and 2 missing
            "EAN-A,2026-05-31T23:00:00Z,1,0",
            "EAN-A,2026-06-01T00:00:00Z,1,0",  # ISPs 5..7 missing
        )
    )
    assert result.readings.height == 4
    assert_frame_equal(
        result.issues,
        issues(
            ("duplicate", "warning", 2, "EAN-A", isp(0), "repeats row 1 with the same values; stored once"),
            (
                "gap",
                "warning",
                None,
                "EAN-A",
                isp(1),
                "2 ISP(s) missing, from 2026-05-31T22:15:00Z up to 2026-05-31T22:45:00Z (exclusive)",
            ),
            (
                "gap",
                "warning",
                None,
                "EAN-A",
                isp(5),
                "3 ISP(s) missing, from 2026-05-31T23:15:00Z up to 2026-06-01T00:00:00Z (exclusive)",
            ),
        ),
    )
    assert (result.rows, result.rejected, result.duplicates, result.missing_isps) == (5, 0, 1, 5)


def _full_day(day: date) -> bytes:
    zone = CLOCK.zone
    rows = [f"EAN-A,{start.astimezone(zone).isoformat()},0.25,0" for start in CLOCK.isps_of_day(day)]
    return csv(*rows)


@pytest.mark.parametrize(("day", "isps"), [(date(2026, 3, 29), 92), (date(2026, 10, 25), 100), (date(2026, 6, 1), 96)])
def test_clock_change_days_have_92_or_100_isps_and_are_reported(day: date, isps: int) -> None:
    result = validate(_full_day(day))
    assert result.readings.height == isps
    assert result.readings.get_column("delivery_day").unique().to_list() == [day]
    assert result.readings.get_column("isp_start").n_unique() == isps
    kinds = result.issues.get_column("kind").to_list()
    if isps == 96:
        assert kinds == []
        return
    assert kinds == [IssueKind.DST_DAY]
    info = result.issues.row(0, named=True)
    assert info["severity"] == "info"
    assert info["isp_start"] == CLOCK.day_bounds(day)[0]
    assert f"with {isps} ISPs (not 96)" in info["detail"]


def test_the_repeated_october_hour_is_told_apart_by_its_offset() -> None:
    # 02:00 local happens twice on 2026-10-25: first at +02:00 (00:00Z), then at +01:00 (01:00Z).
    result = validate(csv("EAN-A,2026-10-25T02:00:00+02:00,1,0", "EAN-A,2026-10-25T02:00:00+01:00,2,0"))
    assert result.readings.get_column("isp_start").to_list() == [
        datetime(2026, 10, 25, 0, tzinfo=UTC),
        datetime(2026, 10, 25, 1, tzinfo=UTC),
    ]
    assert result.missing_isps == 3  # 00:15Z .. 00:45Z


def test_a_half_hour_zone_aligns_to_its_own_quarter_hours() -> None:
    clock = MarketClock("Asia/Kolkata", 15, GateClosureKind.DAY_AHEAD, time(12))
    parsed = parse_file(
        csv("EAN-A,2026-06-01T00:15:00+05:30,1,0", "EAN-A,2026-05-31T18:50:00Z,1,0"), MeterFileFormat.CSV
    )
    result = validate_readings(parsed, METERS, clock, LIMITS)
    assert result.readings.height == 1
    assert result.issues.get_column("kind").to_list() == ["misaligned_timestamp"]


# -- fuzzing ------------------------------------------------------------------------------------

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(content=st.binary(max_size=400), file_format=st.sampled_from(list(MeterFileFormat)))
def test_random_bytes_give_a_frame_or_the_domain_error(content: bytes, file_format: MeterFileFormat) -> None:
    try:
        parsed = parse_file(content, file_format)
    except UnreadableMeterFile:
        return
    assert parsed.schema == PARSED_SCHEMA


_cell = st.one_of(
    st.text(alphabet='0123456789-+.:TZ ,;"eE', max_size=30),
    st.sampled_from(["EAN-A", "EAN-B", "2026-06-01T00:00:00+02:00", "2026-05-31T22:15Z", "1.5", "-0", ""]),
)


@FUZZ
@given(rows=st.lists(st.lists(_cell, min_size=0, max_size=5), max_size=12))
def test_csv_like_text_never_crashes_and_every_row_is_accounted_for(rows: list[list[str]]) -> None:
    content = csv(*[",".join(row) for row in rows])
    try:
        parsed = parse_file(content, MeterFileFormat.CSV)
    except UnreadableMeterFile:
        return
    result = validate_readings(parsed, METERS, CLOCK, LIMITS)
    assert result.rows == result.readings.height + result.rejected + result.duplicates
    assert result.readings.schema == READINGS_SCHEMA
    assert result.issues.schema == ISSUE_SCHEMA
    assert result.readings.select(pl.struct("site_id", "isp_start").is_unique().all()).item()
    assert (result.readings.get_column("import_kwh") >= 0).all()


@FUZZ
@given(
    keys=st.lists(st.tuples(st.sampled_from(["EAN-A", "EAN-B"]), st.integers(0, 20), st.integers(0, 3)), max_size=40)
)
def test_duplicates_and_gaps_match_a_direct_count(keys: list[tuple[str, int, int]]) -> None:
    """Against a plain-Python count: each (meter, ISP) is stored once if all its values agree and
    rejected otherwise; missing ISPs = span − distinct ISPs per meter."""
    content = csv(*[f"{m},{isp(k).isoformat()},{v},0" for m, k, v in keys])
    result = validate(content)
    by_key: dict[tuple[str, int], set[int]] = {}
    for m, k, v in keys:
        by_key.setdefault((m, k), set()).add(v)
    stored = {key for key, values in by_key.items() if len(values) == 1}
    assert result.readings.height == len(stored)
    assert result.rejected == sum(1 for m, k, _ in keys if len(by_key[(m, k)]) > 1)
    expected_missing = 0
    for meter in ("EAN-A", "EAN-B"):
        isps = {k for m, k in by_key if m == meter}
        if isps:
            expected_missing += max(isps) - min(isps) + 1 - len(isps)
    assert result.missing_isps == expected_missing
