"""Settlement amounts for a whole day: ``frame_amounts`` on ~1M lines (10k awards × 96 ISPs).

Measures, in one run on the same frame:

* ``frame_amounts`` with every term on (penalty, 5% band, sliding scale, availability, operator
  fee: the slowest path) and with utilisation only;
* a trivial Polars pass over the same frame (one Int128 multiply and a sum, and the same in Int64)
  as the reference the ratios are taken against, so the figures transfer between machines;
* the Decimal/Fraction reference ``line_amounts`` on a 10k-line sample, per line, which is also
  checked to give exactly the frame's amounts.

Lines are random but realistic: 90% household awards (0.5–20 kW), 9% portfolios (20–2000 kW), 1%
data centres (1–20 MW); prices 10–600 EUR/MWh with 3 decimals; delivery around 95% of the order
(normal, sd 20%, clipped to [−30%, 150%]) with 3% non-delivery. Run from the repository root::

    .venv/bin/python -m benchmarks.settlement_amounts
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import polars as pl

from benchmarks.common import say, write_results
from settlement.runs.amounts import MONEY_COLUMNS, SettlementLine, frame_amounts, line_amounts
from settlement.runs.money import from_minor
from settlement.runs.terms import SettlementTerms

NAME = "settlement_amounts"
ALL_TERMS = SettlementTerms(
    penalty_price_per_mwh=Decimal(300),
    tolerance=Decimal("0.05"),
    sliding_scale=True,
    availability_price_per_mw_h=Decimal(5),
    operator_fee_per_mwh=Decimal("1.5"),
)
PLAIN_TERMS = SettlementTerms()
HOUSEHOLD_SHARE, PORTFOLIO_SHARE, NON_DELIVERY_SHARE = 0.90, 0.09, 0.03


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--awards", type=int, default=10_000)
    parser.add_argument("--isps", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions of each measurement")
    parser.add_argument("--reference-lines", type=int, default=10_000, help="lines through line_amounts")
    parser.add_argument("--seed", type=int, default=20_260_301)
    return parser.parse_args()


def make_lines(awards: int, isps: int, seed: int) -> pl.DataFrame:
    """awards × isps lines in frame units (Int64 millionths), 15-minute ISPs."""
    rng = np.random.default_rng(seed)
    kind = rng.random(awards)
    ordered_kw = np.where(
        kind < HOUSEHOLD_SHARE,
        rng.uniform(0.5, 20, awards),
        np.where(
            kind < HOUSEHOLD_SHARE + PORTFOLIO_SHARE, rng.uniform(20, 2_000, awards), rng.uniform(1_000, 20_000, awards)
        ),
    )
    price = rng.uniform(10, 600, awards)
    n = awards * isps
    # The award's kW varies a little per ISP (a profile), its price does not.
    ordered = np.repeat(ordered_kw, isps) * rng.uniform(0.8, 1.0, n)
    ratio = np.clip(rng.normal(0.95, 0.2, n), -0.3, 1.5)
    ratio[rng.random(n) < NON_DELIVERY_SHARE] = 0.0
    ordered_micro = np.maximum(np.round(ordered * 1_000).astype(np.int64) * 1_000, 1_000)  # 3 decimals
    delivered_micro = np.round(ordered_micro * ratio).astype(np.int64)
    return pl.DataFrame(
        {
            "award": np.repeat(np.arange(awards, dtype=np.int64), isps),
            "isp": np.tile(np.arange(isps, dtype=np.int64), awards),
            "ordered_kw": ordered_micro,
            "delivered_kw": delivered_micro,
            "price_per_mwh": np.repeat(np.round(price * 1_000).astype(np.int64) * 1_000, isps),
            "isp_minutes": np.full(n, 15, dtype=np.int64),
        }
    )


def timed(action: Callable[[], object], repeats: int) -> dict[str, float]:
    """Wall seconds of ``repeats`` runs after one warm-up: best, median."""
    action()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - start)
    return {"best_s": min(seconds), "median_s": statistics.median(seconds), "runs": float(repeats)}


def reference_check(frame: pl.DataFrame, terms: SettlementTerms, count: int, seed: int) -> dict[str, Any]:
    """line_amounts on a random sample of rows: time per line, and equality with frame_amounts."""
    sample = frame.sample(n=min(count, frame.height), seed=seed)
    lines = [
        SettlementLine(
            Decimal(row["ordered_kw"]).scaleb(-6),
            Decimal(row["delivered_kw"]).scaleb(-6),
            Decimal(row["price_per_mwh"]).scaleb(-6),
            row["isp_minutes"],
        )
        for row in sample.iter_rows(named=True)
    ]
    start = time.perf_counter()
    results = [line_amounts(line, terms) for line in lines]
    seconds = time.perf_counter() - start
    fast = frame_amounts(sample, terms)
    mismatches = 0
    for expected, row in zip(results, fast.select(MONEY_COLUMNS).iter_rows(), strict=True):
        got = tuple(from_minor(v, terms.currency) for v in row)
        want = (
            expected.utilisation,
            expected.availability,
            expected.penalty,
            expected.operator_fee,
            expected.seller_net,
            expected.utility_cost,
        )
        mismatches += got != want
    return {
        "lines": len(lines),
        "seconds": seconds,
        "us_per_line": seconds / len(lines) * 1e6,
        "mismatches": mismatches,
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    args = parse_args()
    say(f"building {args.awards} awards × {args.isps} ISPs ...")
    frame = make_lines(args.awards, args.isps, args.seed)
    n = frame.height
    load_before = load()

    def trivial_128() -> object:
        return frame.select((pl.col("price_per_mwh").cast(pl.Int128) * pl.col("delivered_kw")).sum())

    def trivial_64() -> object:
        return frame.select((pl.col("price_per_mwh") * pl.col("isp_minutes")).sum())

    say("timing ...")
    measured = {
        "trivial_int64_multiply_sum": timed(trivial_64, args.repeats),
        "trivial_int128_multiply_sum": timed(trivial_128, args.repeats),
        "frame_amounts_all_terms": timed(lambda: frame_amounts(frame, ALL_TERMS), args.repeats),
        "frame_amounts_utilisation_only": timed(lambda: frame_amounts(frame, PLAIN_TERMS), args.repeats),
    }
    say("line_amounts reference ...")
    reference = reference_check(frame, ALL_TERMS, args.reference_lines, args.seed)
    load_after = load()

    base = measured["trivial_int128_multiply_sum"]["best_s"]
    for figures in measured.values():
        figures["lines_per_s"] = n / figures["best_s"]
        figures["ratio_to_trivial_int128"] = figures["best_s"] / base
    frame_best = measured["frame_amounts_all_terms"]["best_s"]
    reference["extrapolated_1m_lines_s"] = reference["us_per_line"]
    reference["frame_speedup_per_line"] = reference["us_per_line"] / (frame_best / n * 1e6)
    totals = frame_amounts(frame, ALL_TERMS).select(pl.col(c).sum() for c in MONEY_COLUMNS).row(0, named=True)

    data: dict[str, Any] = {
        "lines": n,
        "awards": args.awards,
        "isps": args.isps,
        "seed": args.seed,
        "terms_all": ALL_TERMS.to_dict(),
        "measured": measured,
        "line_amounts_reference": reference,
        "totals_minor_all_terms": totals,
        "environment": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(),
            "polars_threads": pl.thread_pool_size(),
            "polars": pl.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "command": ".venv/bin/python -m benchmarks.settlement_amounts",
        },
    }
    rows = [
        f"| {name} | {f['best_s'] * 1000:.1f} | {f['median_s'] * 1000:.1f} | {f['lines_per_s'] / 1e6:.2f} | "
        f"{f['ratio_to_trivial_int128']:.1f} |"
        for name, f in measured.items()
    ]
    env = data["environment"]
    markdown = [
        "# Settlement amounts: frame_amounts on a day of lines",
        "",
        f"{n:,} lines ({args.awards:,} awards × {args.isps} ISPs of 15 min), best and median of {args.repeats} runs.",
        "",
        "| measurement | best ms | median ms | M lines/s (best) | × trivial Int128 pass |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Decimal/Fraction reference `line_amounts` (all terms) on {reference['lines']:,} sampled lines: "
        f"{reference['seconds']:.2f} s, {reference['us_per_line']:.1f} µs per line (≈ {reference['us_per_line']:.0f} s "
        f"per million lines), {reference['frame_speedup_per_line']:.0f}× the frame's per-line cost; "
        f"mismatches against `frame_amounts`: {reference['mismatches']}.",
        "",
        f"Totals with all terms (EUR cents): {totals}.",
        "",
        "## Environment",
        "",
        f"- date (UTC): {env['date']}; command: `{env['command']}`",
        f"- os.cpu_count(): {env['cpu_count']}; Polars threads: {env['polars_threads']}; Polars {env['polars']}; "
        f"Python {env['python']}; {env['platform']}",
        f"- load average (1, 5, 15 min) before: {load_before}, after: {load_after}. The machine is shared with "
        "other agents, so absolute times are noisy; the ratios to the trivial pass, measured in the same run, "
        "are the figures to compare.",
    ]
    json_path, md_path = write_results(NAME, data, markdown)
    say("\n".join(markdown))
    say(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
