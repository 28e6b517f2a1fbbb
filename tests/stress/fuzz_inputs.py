"""On-demand fuzzing of the two untrusted-input edges (issue 7): meter files and offers.

    python -m tests.stress.fuzz_inputs --seconds 120            # Hypothesis, every target
    python -m tests.stress.fuzz_inputs --seconds 60 --atheris   # then libFuzzer (atheris), if installed

Targets, each asserted to end in a clean result or a domain error (:class:`market.core.errors.MarketError`)
and never in anything else:

* ``meter-csv``, ``meter-json``, ``meter-parquet``, ``meter-bytes``: :func:`parse_file` then
  :func:`validate_readings` on CSV-ish text, JSON-ish documents, Parquet files (valid, then with
  flipped bytes) and raw bytes in every format;
* ``offer``, ``request``: the JSON body decoded into :class:`FlexOfferCreate` / :class:`FlexRequestCreate`
  as the API does (msgspec; its ``ValidationError``/``DecodeError`` are the edge's 400/422) and then
  :func:`validate_offer` / :func:`validate_request`, which must return field errors, never raise.

The in-suite fuzz tests (``tests/unit/metering/test_validation.py``, ``tests/integration/test_orders_fuzz.py``)
run a bounded number of examples on every CI run; this script runs for as long as asked, with a new
seed each round, and writes every crashing input to ``--out`` (one file each) with the traceback.
It exits 1 when it found a crash.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time as clock
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import msgspec
import polars as pl
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from market.core.errors import MarketError
from market.markets.calendar import MarketClock
from market.markets.models import GateClosureKind
from market.orders.schemas import FlexOfferCreate, FlexRequestCreate
from market.orders.validation import Bounds, validate_offer, validate_request
from settlement.metering.models import MeterFileFormat
from settlement.metering.validation import Limits, parse_file, validate_readings

CLOCK = MarketClock("Europe/Amsterdam", 15, GateClosureKind.DAY_AHEAD, time(12))
LIMITS = Limits.of(CLOCK, Decimal(10_000))
METERS = pl.DataFrame({"meter": ["EAN-A", "EAN-B"], "site_id": ["site-a", "site-b"]})
BOUNDS = Bounds(CLOCK, Decimal(0), Decimal(5000), Decimal(10_000))
NOW = datetime(2026, 3, 20, 9, tzinfo=UTC)
# 2026-03-29 is a clock-change day in Europe/Amsterdam (92 ISPs): the hardest day to align to.
DAY_START = datetime(2026, 3, 28, 23, tzinfo=UTC)
EDGE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError)
"""What the API's body decoding raises; the HTTP edge turns these into 400/422 with the field."""
PROGRESS, LAST_INPUT = "progress.json", "last-input.bin"


# -- targets: each returns the outcome's name, or raises on a crash ------------------------------


def meter_target(content: bytes, file_format: MeterFileFormat) -> str:
    try:
        parsed = parse_file(content, file_format)
        result = validate_readings(parsed, METERS, CLOCK, LIMITS)
    except MarketError as exc:
        return f"refused:{type(exc).__name__}"
    # The validation's own invariant, so a wrong count is a crash too.
    assert result.rows == result.readings.height + result.rejected + result.duplicates, "row accounting"
    return "accepted" if result.readings.height else "no-readings"


def order_target(body: bytes, kind: type[FlexOfferCreate] | type[FlexRequestCreate]) -> str:
    try:
        data = msgspec.json.decode(body, type=kind)
    except EDGE_ERRORS:
        return "refused:decode"
    try:
        if isinstance(data, FlexOfferCreate):
            errors = validate_offer(data, BOUNDS, NOW)[2]
        else:
            errors = validate_request(data, BOUNDS, NOW)[1]
    except MarketError as exc:
        return f"refused:{type(exc).__name__}"
    for error in errors:
        assert error.field, f"an error must name its field: {error!r}"
        assert error.reason, f"an error must say why: {error!r}"
    return "refused:fields" if errors else "accepted"


# -- strategies -----------------------------------------------------------------------------------

METER_NAMES = st.sampled_from(["EAN-A", "EAN-B", "EAN-X", "", " EAN-A", "ean-a", "EAN-A\x00", "é", "1e5"])
NUMBERS = st.one_of(
    st.decimals(min_value=Decimal(-10), max_value=Decimal(5000), places=3).map(str),
    st.sampled_from(["0", "-0", "1e400", "NaN", "inf", "-1", "2500.0000001", "", " 3", "3,5", "0x10", "١٢"]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats().map(repr),
)


def instants() -> st.SearchStrategy[str]:
    on_grid = st.integers(min_value=-100, max_value=200).map(lambda k: DAY_START + timedelta(minutes=15 * k))
    any_second = st.integers(min_value=-(10**6), max_value=10**6).map(lambda s: DAY_START + timedelta(seconds=s))
    return st.one_of(
        on_grid.map(lambda d: d.isoformat()),
        on_grid.map(lambda d: d.astimezone(CLOCK.zone).isoformat()),
        any_second.map(lambda d: d.isoformat()),
        on_grid.map(lambda d: d.replace(tzinfo=None).isoformat()),
        st.sampled_from(["2026-02-30T00:00:00Z", "", "yesterday", "9999-12-31T23:45:00+14:00", "0001-01-01T00:00Z"]),
        st.text(max_size=30),
    )


ROWS = st.lists(st.tuples(METER_NAMES, instants(), NUMBERS, NUMBERS), max_size=40)


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    separator = draw(st.sampled_from([",", ";", "\t", "|"]))
    header = draw(
        st.one_of(
            st.just(["meter", "isp_start", "import_kwh", "export_kwh"]),
            st.permutations(["meter", "isp_start", "import_kwh", "export_kwh", "extra"]),
            st.lists(st.sampled_from(["meter", "isp_start", "import_kwh", "export_kwh", "", "METER"]), max_size=6),
        )
    )
    lines = [separator.join(header)]
    for row in draw(ROWS):
        cells = [*row, *draw(st.lists(st.text(max_size=5), max_size=2))][: len(header) + draw(st.integers(-1, 1))]
        lines.append(separator.join(cells))
    if draw(st.booleans()):
        lines.append(draw(st.text(max_size=40)))
    return "\n".join(lines).encode(draw(st.sampled_from(["utf-8", "utf-16", "latin-1"])), errors="replace")


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)


@st.composite
def json_files(draw: st.DrawFn) -> bytes:
    def cell() -> Any:
        return draw(st.one_of(NUMBERS, JSON_VALUES))

    rows = [
        {"meter": m, "isp_start": t, "import_kwh": draw(st.one_of(st.just(i), JSON_VALUES)), "export_kwh": e}
        for m, t, i, e in draw(ROWS)
    ]
    for row in rows:
        if draw(st.booleans()):
            row[draw(st.sampled_from(list(row)))] = cell()
    document: Any = draw(st.sampled_from(["list", "wrapped", "other"]))
    if document == "list":
        return json.dumps(rows).encode()
    if document == "wrapped":
        return json.dumps({"readings": rows}).encode()
    return json.dumps(draw(JSON_VALUES)).encode()


@st.composite
def parquet_files(draw: st.DrawFn) -> bytes:
    rows = draw(ROWS)
    frame = pl.DataFrame(
        {
            "meter": [r[0] for r in rows],
            "isp_start": [r[1] for r in rows],
            "import_kwh": [r[2] for r in rows],
            "export_kwh": [r[3] for r in rows],
        },
        schema={"meter": pl.String, "isp_start": pl.String, "import_kwh": pl.String, "export_kwh": pl.String},
    )
    typed = draw(st.booleans())
    if typed:  # the column types a real exporter writes, where the text converts
        frame = frame.with_columns(
            pl.col("isp_start").str.to_datetime(strict=False, time_zone="UTC"),
            pl.col("import_kwh").cast(pl.Float64, strict=False),
            pl.col("export_kwh").cast(pl.Decimal(20, 6), strict=False),
        )
    if draw(st.booleans()):
        frame = frame.drop(draw(st.sampled_from(frame.columns)))
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    content = bytearray(buffer.getvalue())
    for _ in range(draw(st.integers(0, 4))):  # flipped bytes: a damaged upload
        if content:
            content[draw(st.integers(0, len(content) - 1))] = draw(st.integers(0, 255))
    return bytes(content)


GOOD_AMOUNTS = st.decimals(min_value=Decimal("0.001"), max_value=Decimal(12_000), places=3).map(str)
AMOUNTS = st.one_of(
    GOOD_AMOUNTS,  # listed three times: most amounts parse, so validation (not decoding) is exercised
    GOOD_AMOUNTS,
    GOOD_AMOUNTS,
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["0", "-1", "1e9", "1.0000001", "abc", "", "5e-7", "1E+400", "-0", "0.1234567"]),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.none(),
)


def isp_lists() -> st.SearchStrategy[Any]:
    item = st.fixed_dictionaries({"start": instants(), "quantity_kw": AMOUNTS})
    return st.one_of(st.lists(item, max_size=8), JSON_VALUES)


@st.composite
def offer_bodies(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {
        "direction": draw(st.sampled_from(["up", "down", "up", "down", "UP", "", None])),
        "isps": draw(isp_lists()),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "site_id": st.one_of(st.uuids().map(str), st.text(max_size=10)),
        "portfolio_id": st.uuids().map(str),
        "price_per_mwh": AMOUNTS,
        "tranches": st.lists(st.fixed_dictionaries({"share": AMOUNTS, "price_per_mwh": AMOUNTS}), max_size=4),
        "min_acceptance_fraction": AMOUNTS,
        "block": st.one_of(st.booleans(), JSON_VALUES),
        "rebound": isp_lists(),
        "storage": st.fixed_dictionaries(
            {"capacity_kwh": AMOUNTS, "initial_kwh": AMOUNTS}, optional={"efficiency": AMOUNTS}
        ),
        "expires_at": instants(),
    }
    if draw(st.integers(0, 9)) == 0:  # an unknown field now and then: refused at decoding
        optional[draw(st.text(max_size=6))] = JSON_VALUES
    for name in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=4)):
        body[name] = draw(optional[name])
    return json.dumps(body).encode()


@st.composite
def request_bodies(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {
        "congestion_point_id": str(draw(st.uuids())),
        "direction": draw(st.sampled_from(["up", "down", "sideways"])),
        "max_price_per_mwh": draw(AMOUNTS),
        "isps": draw(isp_lists()),
    }
    if draw(st.booleans()):
        body["expires_at"] = draw(instants())
    return json.dumps(body).encode()


@dataclass(frozen=True)
class Target:
    name: str
    inputs: st.SearchStrategy[bytes]
    run: Callable[[bytes], str]


def _every_format(content: bytes) -> str:
    return "|".join(meter_target(content, fmt) for fmt in MeterFileFormat)


TARGETS = [
    Target("meter-csv", csv_files(), lambda b: meter_target(b, MeterFileFormat.CSV)),
    Target("meter-json", json_files(), lambda b: meter_target(b, MeterFileFormat.JSON)),
    Target("meter-parquet", parquet_files(), lambda b: meter_target(b, MeterFileFormat.PARQUET)),
    Target("meter-bytes", st.binary(max_size=2000), _every_format),
    Target("offer", offer_bodies(), lambda b: order_target(b, FlexOfferCreate)),
    Target("request", request_bodies(), lambda b: order_target(b, FlexRequestCreate)),
]


# -- driver ---------------------------------------------------------------------------------------


@dataclass
class Tally:
    tried: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)

    def merge(self, other: dict[str, Any]) -> None:
        self.tried.update(other["tried"])
        self.outcomes.update(other["outcomes"])
        self.crashes += other["crashes"]

    def as_dict(self) -> dict[str, Any]:
        return {"tried": dict(self.tried), "outcomes": dict(self.outcomes), "crashes": self.crashes}


def _record_crash(out: Path, target: str, content: bytes, tally: Tally, why: str) -> None:
    path = out / f"crash-{target}-{uuid4().hex[:8]}.bin"
    path.write_bytes(content)
    path.with_suffix(".txt").write_text(why)
    tally.crashes.append(str(path))


def _check(target: Target, content: bytes, tally: Tally, out: Path) -> None:
    tally.tried[target.name] += 1
    # A native reader can abort the process (no exception to catch): the input it died on is kept.
    (out / LAST_INPUT).write_bytes(target.name.encode() + b"\n" + content)
    try:
        outcome = target.run(content)
    except Exception:  # noqa: BLE001 - anything but a domain error is the crash being hunted
        _record_crash(out, target.name, content, tally, traceback.format_exc())
        outcome = "CRASH"
    tally.outcomes[f"{target.name} {outcome.split('|')[0]}"] += 1


def _round(target: Target, round_no: int, examples: int, deadline: float, tally: Tally, out: Path) -> None:
    @seed(round_no)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(content=target.inputs)
    def fuzz(content: bytes) -> None:
        if clock.monotonic() < deadline:
            _check(target, content, tally, out)

    fuzz()


def run_hypothesis(seconds: float, out: Path, first_round: int = 0, examples_per_round: int = 200) -> Tally:
    """Round-robin over the targets, a fresh seed per round, until ``seconds`` have passed; the tally
    so far is written to ``out/PROGRESS`` after every round, so an abort loses at most one round's counts."""
    out.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    deadline = clock.monotonic() + seconds
    round_no = first_round
    while clock.monotonic() < deadline:
        for target in TARGETS:
            if clock.monotonic() >= deadline:
                break
            _round(target, round_no, examples_per_round, deadline, tally, out)
            (out / PROGRESS).write_text(json.dumps(tally.as_dict()))
        round_no += 1
    return tally


def supervise(seconds: float, out: Path) -> Tally:
    """Run the Hypothesis rounds in a child process, and again with new seeds after each abort.

    Polars reads Parquet in native code, which aborts the process on some damaged files (an
    allocation of 2⁶¹ bytes fails); no ``except`` can catch that, so the child is the unit that dies.
    """
    out.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    deadline = clock.monotonic() + seconds
    restarts = 0
    while (remaining := deadline - clock.monotonic()) > 1:
        (out / PROGRESS).unlink(missing_ok=True)
        (out / LAST_INPUT).unlink(missing_ok=True)
        command = [sys.executable, "-m", "tests.stress.fuzz_inputs", "--child", f"--seconds={remaining:.1f}"]
        command += [f"--out={out}", f"--first-round={restarts * 100_000}"]
        with (out / "native-stderr.log").open("ab") as native_noise:  # Polars prints its panics' backtraces
            done = subprocess.run(command, stderr=native_noise, check=False)  # noqa: S603 - our own module
        if (out / PROGRESS).exists():
            tally.merge(json.loads((out / PROGRESS).read_text()))
        if done.returncode == 0:
            break
        restarts += 1
        if (out / LAST_INPUT).exists():
            name, _, content = (out / LAST_INPUT).read_bytes().partition(b"\n")
            why = f"the process died (exit {done.returncode}) on this input; see native-stderr.log"
            _record_crash(out, name.decode(), content, tally, why)
    return tally


def run_atheris(seconds: int, out: Path) -> None:  # pragma: no cover - needs atheris, exits the process
    """libFuzzer's coverage-guided mutation over the same targets; the first byte picks the target."""
    import atheris  # noqa: PLC0415 - optional: only installed where it builds

    tally = Tally()
    out.mkdir(parents=True, exist_ok=True)

    def one_input(data: bytes) -> None:
        if not data:
            return
        target = TARGETS[data[0] % len(TARGETS)]
        _check(target, data[1:], tally, out)
        if tally.crashes:
            print(f"crash in {target.name}: {tally.crashes[-1]}")  # noqa: T201 - a command-line tool
            raise SystemExit(1)

    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", "-rss_limit_mb=4096"], one_input)
    atheris.Fuzz()


def report(tally: Tally, seconds: float) -> str:
    lines = [f"fuzzed for {seconds:.0f} s: {sum(tally.tried.values())} inputs"]
    for target in TARGETS:
        prefix = f"{target.name} "
        outcomes = ", ".join(
            f"{o[len(prefix) :]}={n}" for o, n in sorted(tally.outcomes.items()) if o.startswith(prefix)
        )
        lines.append(f"  {target.name:14} {tally.tried[target.name]:7d}  {outcomes}")
    lines.append(f"crashes: {len(tally.crashes)}" + "".join(f"\n  {p}" for p in tally.crashes))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120, help="time budget for the Hypothesis rounds")
    parser.add_argument("--out", type=Path, default=Path("fuzz-crashes"), help="where crashing inputs are written")
    parser.add_argument("--atheris", action="store_true", help="then run atheris for --seconds too, if installed")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first-round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_hypothesis(args.seconds, args.out, args.first_round)
        return 0
    started = clock.monotonic()
    tally = supervise(args.seconds, args.out)
    print(report(tally, clock.monotonic() - started))  # noqa: T201 - a command-line tool
    if tally.crashes:
        return 1
    if args.atheris:
        run_atheris(int(args.seconds), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
