"""Meter files to validated readings, pure: bytes in, Polars frames out (no session, no I/O).

Two steps, both vectorised in Polars:

1. :func:`parse_file` reads CSV, Parquet or JSON into the *parsed* frame (:data:`PARSED_SCHEMA`): one
   row per record, typed where the text allowed it, with the reason next to every value that did not
   parse. Only a file that cannot be read at all (not the format, a column missing, a column of an
   unusable type) raises :class:`~settlement.metering.errors.UnreadableMeterFile`.
2. :func:`validate_readings` checks the parsed rows against the market (its sites, time zone and ISP
   grid) and returns the readings to store (:data:`READINGS_SCHEMA`, one per site and ISP) and the
   issues found (:data:`ISSUE_SCHEMA`).

Policy (USEF: the DSO is the metered data responsible and sends what it has; settlement needs every
good reading as early as possible): a row with an *error* is rejected and listed, every other row is
stored; *warnings* (identical duplicates, gaps) and *info* (clock-change days) are listed and do not
stop a row. A correct reading is never held back by a bad neighbour in the same file; the report says
exactly which rows were refused and why, so the sender can correct and resend just those.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import msgspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from polars.exceptions import PanicException

from market.markets.calendar import EARLIEST, LATEST, MarketClock
from settlement.metering.errors import UnreadableMeterFile
from settlement.metering.models import MeterFileFormat

READING_COLUMNS = ("meter", "isp_start", "import_kwh", "export_kwh")
VALUE_COLUMNS = ("import_kwh", "export_kwh")
KWH = pl.Decimal(20, 6)
"""Energy in frames: exact, 6 decimal places, like the stored ``ExactDecimal(20, 6)``."""
UTC_US = pl.Datetime("us", "UTC")
MAX_WHOLE_DIGITS = 14
"""Digits before the point that ``NUMERIC(20, 6)`` holds."""
MAX_DECIMAL_PLACES = 6
_US_PER_MINUTE = 60_000_000
_MINUTES_PER_DAY = 1_440
_SHOWN_CHARS = 40
"""Raw text quoted in an issue is cut to this length."""

PARSED_SCHEMA = pl.Schema(
    {
        "row": pl.Int64(),
        "meter": pl.String(),
        "isp_start": UTC_US,
        "isp_text": pl.String(),
        "isp_problem": pl.String(),
        "import_kwh": KWH,
        "import_problem": pl.String(),
        "export_kwh": KWH,
        "export_problem": pl.String(),
    }
)
"""``row`` counts records from 1 (the CSV header is not a record). ``isp_problem`` is an
:class:`IssueKind` value (naive or invalid timestamp); ``*_problem`` is why a value did not parse."""

READINGS_SCHEMA = pl.Schema(
    {
        "site_id": pl.String(),
        "isp_start": UTC_US,
        "delivery_day": pl.Date(),
        "import_kwh": KWH,
        "export_kwh": KWH,
    }
)

ISSUE_SCHEMA = pl.Schema(
    {
        "kind": pl.String(),
        "severity": pl.String(),
        "row": pl.Int64(),
        "meter": pl.String(),
        "isp_start": UTC_US,
        "detail": pl.String(),
    }
)


class IssueKind(StrEnum):
    UNKNOWN_METER = "unknown_meter"
    NAIVE_TIMESTAMP = "naive_timestamp"
    INVALID_TIMESTAMP = "invalid_timestamp"
    MISALIGNED_TIMESTAMP = "misaligned_timestamp"
    INVALID_VALUE = "invalid_value"
    NEGATIVE_VALUE = "negative_value"
    IMPLAUSIBLE_VALUE = "implausible_value"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    DUPLICATE = "duplicate"
    GAP = "gap"
    DST_DAY = "dst_day"


class Severity(StrEnum):
    """``error``: the row is rejected. ``warning``: stored, but look at it. ``info``: for the record."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


SEVERITY: dict[IssueKind, Severity] = {
    **dict.fromkeys(IssueKind, Severity.ERROR),
    IssueKind.DUPLICATE: Severity.WARNING,
    IssueKind.GAP: Severity.WARNING,
    IssueKind.DST_DAY: Severity.INFO,
}
_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True, slots=True)
class Limits:
    """A reading above ``max_kwh_per_isp`` in either direction is implausible."""

    max_kwh_per_isp: Decimal

    @classmethod
    def of(cls, clock: MarketClock, max_average_kw: Decimal) -> Limits:
        """energy ceiling (kWh) = average power ceiling (kW) × ISP length (h)."""
        return cls(max_kwh_per_isp=max_average_kw * clock.isp_minutes / 60)


@dataclass(frozen=True, slots=True)
class Validation:
    """The result of :func:`validate_readings`.

    Invariant: ``rows = len(readings) + rejected + duplicates``.
    """

    readings: pl.DataFrame
    """Rows to store (:data:`READINGS_SCHEMA`), unique per (site_id, isp_start), in file order."""
    issues: pl.DataFrame
    """Every issue (:data:`ISSUE_SCHEMA`): errors, then warnings, then info; each by row."""
    rows: int
    rejected: int
    """Rows with an error: not stored."""
    duplicates: int
    """Identical repeats of an earlier row: counted once."""
    missing_isps: int
    """ISPs missing between each meter's first and last reading, over all meters."""


# -- parsing ------------------------------------------------------------------------------------

_READ_ERRORS = (
    pl.exceptions.PolarsError,
    pa.ArrowException,
    ValueError,
    TypeError,
    OverflowError,
    OSError,
    PanicException,
)
"""What the readers raise on a malformed file (Polars may panic on hostile bytes; that too is just
an unreadable file here)."""


def parse_file(content: bytes, file_format: MeterFileFormat) -> pl.DataFrame:
    """Read a meter file into the parsed frame (:data:`PARSED_SCHEMA`).

    CSV: a header with (at least) ``meter,isp_start,import_kwh,export_kwh``; ``,`` ``;`` or tab
    separated. JSON: a list of objects with those keys, or ``{"readings": [...]}``. Parquet: those
    columns; ``isp_start`` a timezone-aware timestamp or ISO 8601 text, the values decimal, integer,
    float or text. Timestamps need an offset (``Z`` or ``±hh:mm``); values are decimals ≥ 0 with at
    most 6 decimal places.
    """
    try:
        if file_format is MeterFileFormat.CSV:
            frame = _read_csv(content)
        elif file_format is MeterFileFormat.PARQUET:
            frame = _read_parquet(content)
        else:
            frame = _read_json(content)
        return _normalise(frame)
    except UnreadableMeterFile:
        raise
    except _READ_ERRORS as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UnreadableMeterFile.on("file", f"not a readable {file_format.value} file: {reason}") from exc


def _read_parquet(content: bytes) -> pl.DataFrame:
    """Parquet through pyarrow's reader: Polars' own reader aborts the whole process on some damaged
    files (an allocation of 2^61 bytes, found by tests/stress/fuzz_inputs.py), which no ``except``
    can catch; pyarrow raises a Python error for them. The Arrow table becomes a frame without copying.

    The upload is copied into a buffer Arrow owns first. Arrow's reader lets go of its input on one
    of its own threads, after ``read_table`` returns; were that input the Python ``bytes``, letting go
    needs the GIL, and if the interpreter is shutting down by then the thread is unwound through a
    C++ destructor and the process aborts ("terminate called without an active exception"; seen in
    CI with Polars loaded, about one exit in ten under load). A buffer Arrow allocated needs no GIL."""
    owned = pa.allocate_buffer(len(content))
    memoryview(owned).cast("B")[:] = content
    table = pq.read_table(pa.BufferReader(owned))
    frame = pl.from_arrow(table)
    if not isinstance(frame, pl.DataFrame):
        raise TypeError("the file holds no table")
    return frame


def _read_csv(content: bytes) -> pl.DataFrame:
    header = content.split(b"\n", 1)[0]
    separator = max((b",", b";", b"\t"), key=header.count).decode()
    return pl.read_csv(io.BytesIO(content), separator=separator, infer_schema=False, encoding="utf8")


def _json_text(value: Any) -> str | None:
    """A JSON value as the text the column parsers read (numbers exactly as sent)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return msgspec.json.encode(value).decode()


_JSON = msgspec.json.Decoder(float_hook=Decimal)
"""Numbers with a fraction become Decimals from their text, so ``0.1`` stays exactly 0.1."""


def _read_json(content: bytes) -> pl.DataFrame:
    try:
        document = _JSON.decode(content)
    except msgspec.DecodeError as exc:
        raise UnreadableMeterFile.on("file", f"not a readable json file: {exc}") from exc
    records = document.get("readings") if isinstance(document, dict) else document
    if not isinstance(records, list):
        raise UnreadableMeterFile.on("file", 'expected a list of readings or {"readings": [...]}')
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise UnreadableMeterFile.on(f"readings[{index}]", "must be an object")
    # JSON is the format for small uploads: building its columns in Python is cheap next to decoding.
    names = {key for record in records for key in record}
    return pl.DataFrame(
        {name: [_json_text(record.get(name)) for record in records] for name in sorted(names)},
        schema=dict.fromkeys(sorted(names), pl.String),
    )


def _normalise(frame: pl.DataFrame) -> pl.DataFrame:
    frame = frame.rename({name: name.strip() for name in frame.columns})
    missing = [name for name in READING_COLUMNS if name not in frame.columns]
    if missing:
        present = ", ".join(repr(n) for n in frame.columns[:20]) or "none"
        raise UnreadableMeterFile.on(
            missing[0], f"column missing (needed: {', '.join(READING_COLUMNS)}; found: {present})"
        )
    # Blank lines (all four columns empty) are not records; rows keep their numbers in the file.
    blank = pl.all_horizontal(pl.col(name).is_null() for name in READING_COLUMNS)
    frame = frame.select(READING_COLUMNS).with_row_index("row", offset=1).filter(~blank)
    return frame.select(
        pl.col("row").cast(pl.Int64),
        _meter(frame.schema["meter"]),
        *_timestamp(frame.schema["isp_start"]),
        *_value("import_kwh", frame.schema["import_kwh"]),
        *_value("export_kwh", frame.schema["export_kwh"]),
    )


def _meter(dtype: pl.DataType) -> pl.Expr:
    if not (dtype == pl.String or dtype.is_integer()):
        raise UnreadableMeterFile.on("meter", f"must hold text or integer meter codes, not {dtype}")
    return pl.col("meter").cast(pl.String).str.strip_chars().alias("meter")


_ISO = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
_OFFSET = r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$"
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%z"


def _in_range(instant: pl.Expr) -> pl.Expr:
    """Null (an invalid timestamp) outside the calendar's range, where no delivery day is defined."""
    return pl.when(instant.is_between(pl.lit(EARLIEST, UTC_US), pl.lit(LATEST, UTC_US), closed="left")).then(instant)


def _timestamp(dtype: pl.DataType) -> list[pl.Expr]:
    """``isp_start`` as UTC, ``isp_text`` as sent, ``isp_problem`` when it has no offset or no sense."""
    column = pl.col("isp_start")
    if isinstance(dtype, pl.Datetime):
        text = column.cast(pl.String)
        if dtype.time_zone is None:
            return [
                pl.lit(None, UTC_US).alias("isp_start"),
                text.alias("isp_text"),
                pl.when(column.is_null())
                .then(pl.lit(IssueKind.INVALID_TIMESTAMP.value))
                .otherwise(pl.lit(IssueKind.NAIVE_TIMESTAMP.value))
                .alias("isp_problem"),
            ]
        instant = _in_range(column.dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
        missing = pl.when(instant.is_null()).then(pl.lit(IssueKind.INVALID_TIMESTAMP.value))
        # No text: issue details show the typed instant (rendering 10M timestamps costs more than parsing).
        return [
            instant.alias("isp_start"),
            pl.lit(None, pl.String).alias("isp_text"),
            missing.otherwise(None).alias("isp_problem"),
        ]
    if dtype != pl.String:
        raise UnreadableMeterFile.on(
            "isp_start", f"must be ISO 8601 text with an offset or a timestamp with a time zone, not {dtype}"
        )
    text = column.str.strip_chars()
    with_offset = text.str.contains(_ISO + _OFFSET)
    naive = text.str.contains(_ISO + "$")
    canonical = (
        text.str.replace(r"^(.{10})[Tt ]", "${1}T")
        .str.replace(r"[Zz]$", "+00:00")
        .str.replace(r"^(.{10}T[0-9]{2}:[0-9]{2})([+-])", "${1}:00${2}")
        .str.replace(r"([+-][0-9]{2})$", "${1}:00")
    )
    instant = _in_range(
        pl.when(with_offset).then(canonical.str.to_datetime(_TIMESTAMP_FORMAT, time_zone="UTC", strict=False))
    )
    problem = (
        pl.when(naive)
        .then(pl.lit(IssueKind.NAIVE_TIMESTAMP.value))
        .when(instant.is_null())
        .then(pl.lit(IssueKind.INVALID_TIMESTAMP.value))
    )
    return [
        instant.dt.cast_time_unit("us").alias("isp_start"),
        text.alias("isp_text"),
        problem.otherwise(None).alias("isp_problem"),
    ]


def _value(name: str, dtype: pl.DataType) -> list[pl.Expr]:
    """``<name>`` as an exact decimal and ``<name>_problem``, why it is not one."""
    column = pl.col(name)
    if (isinstance(dtype, pl.Decimal) and (dtype.scale or 0) <= MAX_DECIMAL_PLACES) or dtype.is_integer():
        value = column.cast(KWH, strict=False)
        problem = (
            pl.when(column.is_null())
            .then(pl.lit(f"{name} is missing"))
            .when(value.is_null())
            .then(pl.format(f"{name} {{}} is too large", column.cast(pl.String)))
        )
        return [value.alias(name), problem.otherwise(None).alias(f"{name.removesuffix('_kwh')}_problem")]
    if not (dtype == pl.String or dtype.is_float() or isinstance(dtype, pl.Decimal)):
        raise UnreadableMeterFile.on(name, f"must hold decimal numbers (or their text), not {dtype}")
    # Floats and wide decimals go through their shortest text, then the exact text rules below.
    text = column.cast(pl.String).str.strip_chars()
    number = text.str.contains(r"^[+-]?[0-9]+(\.[0-9]+)?$")
    parts = text.str.strip_prefix("-").str.strip_prefix("+").str.split_exact(".", 1)
    whole_digits = parts.struct.field("field_0").str.len_chars()
    places = parts.struct.field("field_1").str.strip_chars_end("0").str.len_chars().fill_null(0)
    fits = number & (whole_digits <= MAX_WHOLE_DIGITS) & (places <= MAX_DECIMAL_PLACES)
    value = pl.when(fits).then(text.cast(KWH, strict=False))
    shown = text.str.slice(0, _SHOWN_CHARS)
    problem = (
        pl.when(text.is_null() | (text == ""))
        .then(pl.lit(f"{name} is missing"))
        .when(~number)
        .then(pl.format(f"{name} '{{}}' is not a decimal number", shown))
        .when(places > MAX_DECIMAL_PLACES)
        .then(pl.format(f"{name} {{}} has more than {MAX_DECIMAL_PLACES} decimal places", shown))
        .when(~fits | value.is_null())
        .then(pl.format(f"{name} {{}} is too large", shown))
    )
    return [value.alias(name), problem.otherwise(None).alias(f"{name.removesuffix('_kwh')}_problem")]


# -- validation ---------------------------------------------------------------------------------


def validate_readings(parsed: pl.DataFrame, meters: pl.DataFrame, clock: MarketClock, limits: Limits) -> Validation:
    """Check parsed rows against the market: its meters (``meters``: columns ``meter`` and
    ``site_id``, the sites the uploader may send readings for), its time zone and ISP grid.

    Errors, one per rejected row, the first that applies in this order: unknown meter; timestamp
    without offset; unreadable timestamp; timestamp not on the ISP grid (an ISP starts at local
    midnight of its delivery day + k × ISP length, :meth:`MarketClock.is_aligned`); value missing or
    not a decimal with ≤ 6 places; negative value; value above ``limits.max_kwh_per_isp``; and, among
    the remaining rows, the same (meter, ISP) more than once with different values (all such rows:
    the file does not say which one is right).

    Warnings: the same (meter, ISP) repeated with identical values (stored once); gaps, ISPs
    missing between a meter's first and last well-timed reading in the file (one issue per run of
    missing ISPs). Info: each clock-change day (92 or 100 ISPs of 15 minutes) the readings touch.
    """
    isp_us = clock.isp_minutes * _US_PER_MINUTE
    sites = meters.select(pl.col("meter").cast(pl.String), pl.col("site_id").cast(pl.String)).with_row_index("site")
    frame = _with_days(parsed.join(sites, on="meter", how="left", maintain_order="left"), clock)
    epoch = pl.col("isp_start").dt.epoch("us")
    aligned = ((epoch - pl.col("day_start").dt.epoch("us")) % isp_us) == 0
    ceiling = limits.max_kwh_per_isp
    error = (
        pl.when(pl.col("site_id").is_null())
        .then(pl.lit(IssueKind.UNKNOWN_METER.value))
        .when(pl.col("isp_problem").is_not_null())
        .then(pl.col("isp_problem"))
        .when(~aligned)
        .then(pl.lit(IssueKind.MISALIGNED_TIMESTAMP.value))
        .when(pl.col("import_problem").is_not_null() | pl.col("export_problem").is_not_null())
        .then(pl.lit(IssueKind.INVALID_VALUE.value))
        .when((pl.col("import_kwh") < 0) | (pl.col("export_kwh") < 0))
        .then(pl.lit(IssueKind.NEGATIVE_VALUE.value))
        .when((pl.col("import_kwh") > ceiling) | (pl.col("export_kwh") > ceiling))
        .then(pl.lit(IssueKind.IMPLAUSIBLE_VALUE.value))
    )
    # One Int64 per (site, ISP): site number × 2³² + ISPs since the file's first instant. Duplicates
    # and gaps are then found on sorted integers, far faster than on (string, datetime) pairs.
    base = parsed.get_column("isp_start").min()
    base_us = int(pl.select(pl.lit(base, UTC_US).dt.epoch("us")).item()) if base is not None else 0
    frame = frame.with_columns(error.otherwise(None).alias("error"))
    timed = pl.col("error").is_null() | pl.col("error").is_in(_VALUE_ERRORS)
    key = pl.when(timed).then(pl.col("site").cast(pl.Int64) * _SITE_STRIDE + (epoch - base_us) // isp_us)
    frame = frame.with_columns(key.alias("key"))
    gaps, missing = _gaps(frame, sites, base_us, clock)
    frame, repeats = _mark_duplicates(frame)
    accepted = frame.filter(pl.col("error").is_null())
    rejected = frame.filter(pl.col("error").is_not_null())
    issues = pl.concat(
        [_row_issues(rejected, clock, limits), repeats, gaps, _dst_days(accepted, clock)], how="vertical"
    )
    rank = pl.col("severity").replace_strict({s.value: r for s, r in _RANK.items()}, return_dtype=pl.Int8)
    issues = issues.sort(rank, "row", "kind", "meter", "isp_start", nulls_last=True)
    return Validation(
        readings=accepted.select(READINGS_SCHEMA.names()),
        issues=issues,
        rows=parsed.height,
        rejected=rejected.height,
        duplicates=repeats.height,
        missing_isps=missing,
    )


_SITE_STRIDE = 2**32
_VALUE_ERRORS = [IssueKind.INVALID_VALUE.value, IssueKind.NEGATIVE_VALUE.value, IssueKind.IMPLAUSIBLE_VALUE.value]
"""Rows with these errors still have a known meter and a good ISP: they count for gaps."""
_MAX_DAY_TABLE = 20_000
"""Above this many days between a file's first and last instant, delivery days are found by a time
zone conversion per row instead of a lookup in a table of day starts."""


def _with_days(frame: pl.DataFrame, clock: MarketClock) -> pl.DataFrame:
    """Add ``delivery_day`` (local date) and ``day_start`` (its UTC start) to every timed row.

    Day starts come from the calendar's own rule (:meth:`MarketClock.day_bounds`), one per day in
    the file's span, and each instant finds its day by binary search: a file spans few days, and a
    time zone conversion per row costs more than the rest of the validation.
    """
    instants = frame.get_column("isp_start")
    first, last = instants.min(), instants.max()
    if first is None or last is None:
        return frame.with_columns(pl.lit(None, pl.Date).alias("delivery_day"), pl.lit(None, UTC_US).alias("day_start"))
    first_day, last_day = clock.delivery_day(first), clock.delivery_day(last)  # type: ignore[arg-type]
    span = (last_day - first_day).days + 1
    if span > _MAX_DAY_TABLE:
        local = pl.col("isp_start").dt.convert_time_zone(clock.timezone).dt.date()
        frame = frame.with_columns(local.alias("delivery_day"))
        days = frame.get_column("delivery_day").drop_nulls().unique().sort().to_list()
    else:
        days = [first_day + timedelta(days=i) for i in range(span)]
    table = pl.DataFrame(
        {"delivery_day": days, "day_start": [clock.day_bounds(day)[0] for day in days]},
        schema={"delivery_day": pl.Date(), "day_start": UTC_US},
    )
    if span > _MAX_DAY_TABLE:
        return frame.join(table, on="delivery_day", how="left", maintain_order="left")
    index = (table.get_column("day_start").search_sorted(instants, side="right").cast(pl.Int64) - 1).clip(0)
    found = table.select(pl.all().gather(index))
    return frame.with_columns(
        pl.when(instants.is_not_null()).then(found.get_column("delivery_day")).alias("delivery_day"),
        pl.when(instants.is_not_null()).then(found.get_column("day_start")).alias("day_start"),
    )


def _issue(kind: IssueKind) -> list[pl.Expr]:
    return [pl.lit(kind.value).alias("kind"), pl.lit(SEVERITY[kind].value).alias("severity")]


def _sorted_unique(keys: pl.Series) -> pl.Series:
    ordered = keys if keys.is_sorted() else keys.sort()
    return ordered.filter(ordered.diff().fill_null(1) != 0)


def _mark_duplicates(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Mark conflicting repeats of a (site, ISP) as errors; drop identical repeats after the first
    and return them as warnings."""
    ok = pl.col("error").is_null()
    keys = frame.filter(ok).get_column("key")
    ordered = keys if keys.is_sorted() else keys.sort()
    repeated_keys = ordered.filter(ordered.diff() == 0)
    if repeated_keys.is_empty():
        return frame, pl.DataFrame(schema=ISSUE_SCHEMA)
    repeated = frame.filter(ok & pl.col("key").is_in(repeated_keys.implode()))
    groups = repeated.group_by("key").agg(
        pl.struct(list(VALUE_COLUMNS)).n_unique().alias("variants"), pl.col("row").min().alias("first_row")
    )
    repeated = repeated.join(groups, on="key", how="left", maintain_order="left")
    conflicting = repeated.filter(pl.col("variants") > 1).get_column("row")
    identical = repeated.filter((pl.col("variants") == 1) & (pl.col("row") != pl.col("first_row")))
    frame = frame.filter(~pl.col("row").is_in(identical.get_column("row").implode())).with_columns(
        pl.when(pl.col("row").is_in(conflicting.implode()))
        .then(pl.lit(IssueKind.CONFLICTING_DUPLICATE.value))
        .otherwise(pl.col("error"))
        .alias("error")
    )
    warnings = identical.select(
        *_issue(IssueKind.DUPLICATE),
        "row",
        "meter",
        "isp_start",
        pl.format("repeats row {} with the same values; stored once", pl.col("first_row")).alias("detail"),
    )
    return frame, warnings


def _row_issues(rejected: pl.DataFrame, clock: MarketClock, limits: Limits) -> pl.DataFrame:
    kind = pl.col("error")
    shown = pl.col("isp_text").str.slice(0, _SHOWN_CHARS)
    which = pl.when(pl.col("import_kwh") < 0).then(pl.lit("import_kwh")).otherwise(pl.lit("export_kwh"))
    which_high = (
        pl.when(pl.col("import_kwh") > limits.max_kwh_per_isp)
        .then(pl.lit("import_kwh"))
        .otherwise(pl.lit("export_kwh"))
    )
    amount = pl.when(which == "import_kwh").then(pl.col("import_kwh")).otherwise(pl.col("export_kwh"))
    amount_high = pl.when(which_high == "import_kwh").then(pl.col("import_kwh")).otherwise(pl.col("export_kwh"))
    ceiling = f"{limits.max_kwh_per_isp.normalize():f}"

    def plain(value: pl.Expr) -> pl.Expr:  # 1.500000 -> 1.5
        return value.cast(pl.String).str.strip_chars_end("0").str.strip_chars_end(".")

    detail = (
        pl.when(kind == IssueKind.UNKNOWN_METER)
        .then(
            pl.when(pl.col("meter").is_null() | (pl.col("meter") == ""))
            .then(pl.lit("meter is missing"))
            .otherwise(
                pl.format(
                    "meter '{}' is not a site of this market whose readings the uploader may send",
                    pl.col("meter").str.slice(0, _SHOWN_CHARS),
                )
            )
        )
        .when(kind == IssueKind.NAIVE_TIMESTAMP)
        .then(pl.format("isp_start '{}' has no UTC offset (send e.g. 2026-03-29T00:00:00+01:00)", shown))
        .when(kind == IssueKind.INVALID_TIMESTAMP)
        .then(
            pl.when(shown.is_null() | (shown == ""))
            .then(pl.lit("isp_start is missing"))
            .otherwise(pl.format("isp_start '{}' is not an ISO 8601 timestamp with an offset", shown))
        )
        .when(kind == IssueKind.MISALIGNED_TIMESTAMP)
        .then(
            pl.format(
                f"isp_start {{}} is not the start of a {clock.isp_minutes}-minute ISP in {clock.timezone}",
                pl.col("isp_start").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ"),
            )
        )
        .when(kind == IssueKind.INVALID_VALUE)
        .then(pl.coalesce("import_problem", "export_problem"))
        .when(kind == IssueKind.NEGATIVE_VALUE)
        .then(pl.format("{} {} is negative", which, plain(amount)))
        .when(kind == IssueKind.IMPLAUSIBLE_VALUE)
        .then(
            pl.format(
                f"{{}} {{}} exceeds the plausible {ceiling} kWh per {clock.isp_minutes}-minute ISP",
                which_high,
                plain(amount_high),
            )
        )
        .when(kind == IssueKind.CONFLICTING_DUPLICATE)
        .then(pl.lit("the same meter and ISP appear more than once with different values; all of them are rejected"))
    )
    severity = pl.lit(Severity.ERROR.value)
    return rejected.select(
        kind.alias("kind"), severity.alias("severity"), "row", "meter", "isp_start", detail.alias("detail")
    )


def _gaps(frame: pl.DataFrame, sites: pl.DataFrame, base_us: int, clock: MarketClock) -> tuple[pl.DataFrame, int]:
    """Runs of ISPs missing between each meter's first and last well-timed reading, and their total.

    On the sorted distinct keys, a step of d > 1 within one site is a run of d − 1 missing ISPs.
    """
    isp_us = clock.isp_minutes * _US_PER_MINUTE
    keys = _sorted_unique(frame.get_column("key").drop_nulls())
    steps = pl.DataFrame({"before": keys.shift(1), "after": keys}).filter(
        (pl.col("before") // _SITE_STRIDE == pl.col("after") // _SITE_STRIDE) & (pl.col("after") - pl.col("before") > 1)
    )
    if steps.is_empty():
        return pl.DataFrame(schema=ISSUE_SCHEMA), 0
    count = pl.col("after") - pl.col("before") - 1

    def instant(isp_index: pl.Expr) -> pl.Expr:
        return pl.from_epoch(isp_index * isp_us + base_us, time_unit="us").dt.replace_time_zone("UTC")

    first_missing = instant(pl.col("before") % _SITE_STRIDE + 1)
    next_start = instant(pl.col("after") % _SITE_STRIDE)
    text = "%Y-%m-%dT%H:%M:%SZ"
    meter = sites.get_column("meter").gather((steps.get_column("before") // _SITE_STRIDE).cast(pl.UInt32))
    gaps = steps.with_columns(meter.alias("meter")).select(
        *_issue(IssueKind.GAP),
        pl.lit(None, pl.Int64).alias("row"),
        "meter",
        first_missing.alias("isp_start"),
        pl.format(
            "{} ISP(s) missing, from {} up to {} (exclusive)",
            count,
            first_missing.dt.to_string(text),
            next_start.dt.to_string(text),
        ).alias("detail"),
    )
    return gaps, int(steps.select(count.sum()).item())


def _dst_days(readings: pl.DataFrame, clock: MarketClock) -> pl.DataFrame:
    """An info issue per clock-change delivery day the readings touch (ISP count ≠ 24 h / ISP)."""
    normal = _MINUTES_PER_DAY // clock.isp_minutes
    counts = readings.group_by("delivery_day").len().sort("delivery_day")
    rows: list[dict[str, Any]] = []
    for day, present in counts.iter_rows():
        start, end = clock.day_bounds(day)
        isps = int((end - start) / clock.isp)
        if isps != normal:
            rows.append(
                {
                    "isp_start": start,
                    "detail": f"{day} is a clock-change day in {clock.timezone} with {isps} ISPs (not {normal}); "
                    f"{present} reading(s) fall on it, each ISP identified by its UTC start",
                }
            )
    if not rows:
        return pl.DataFrame(schema=ISSUE_SCHEMA)
    return pl.DataFrame(rows, schema={"isp_start": UTC_US, "detail": pl.String()}).select(
        *_issue(IssueKind.DST_DAY),
        pl.lit(None, pl.Int64).alias("row"),
        pl.lit(None, pl.String).alias("meter"),
        "isp_start",
        "detail",
    )
