"""Column generation against HiGHS on the full per-ISP LPs of a clearing book (issue 4's next step).

The clearing benchmark (``benchmarks.clearing``) finds raw HiGHS itself far above the issue's time
targets: the medium book's 96 LPs (one per ISP, about 60 rows by 110,000 columns) take tens of
seconds in HiGHS alone. Such an LP has few rows and very many columns, of which the optimum uses a
fraction: the textbook case for column generation. This script measures, in the same run and on
the same matrices (``benchmarks.clearing_baselines.direct_models``, the engine's LP for a book
without linking offers, ``max c·v, G v ≤ h, lb ≤ v ≤ ub``):

(a) HiGHS on the full LP, with the engine's options (:func:`benchmarks.clearing_baselines._highs`):
    the floor the clearing benchmark reports;
(b) column generation: a restricted LP of every request column and, per row, the ``--k`` cheapest
    offer columns that relieve it, solved by HiGHS's simplex; then the reduced costs
    ``c − Gᵀ·row_dual`` of all columns, priced with numpy; the ``--batch`` most improving columns
    added to the restricted LP (HiGHS keeps its basis: a warm start); until no column improves.
    Every column left out then has a non-positive reduced cost at the restricted optimum's duals,
    so that optimum, with the left-out columns at zero, is optimal for the full LP.

Checked per ISP: both optimal, and the objectives equal to 1e-9 relative. Timed: (a) passModel and
run; (b) everything from the full matrix to the last solve, pricing included.

Not measured here, and what the engine would still need: its exact prices (computed over the full
model's dual face, given the primal optimum, so unchanged), all-or-nothing offers (the MILP would
need branch-and-price), ISPs linked by blocks, rebound or storage, and going around cvxpy for the
main LP. Run from the repository root::

    .venv/bin/python -m benchmarks.column_generation [--size medium] [--k 5] [--batch 5000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import highspy
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from benchmarks.clearing_baselines import _highs, _highs_lp, direct_models
from benchmarks.clearing_books import N_ISPS, SIZES, columns
from benchmarks.common import DEFAULT_ADMIN_URL, environment, environment_markdown, say, write_results

MODULE = "benchmarks.column_generation"
FloatArray = npt.NDArray[np.float64]
REL_TOLERANCE = 1e-9
REDUCED_COST_TOLERANCE = 1e-7


@dataclass(frozen=True)
class IspLp:
    """One ISP's LP; its last ``requests`` columns are the requests' (``y``), the rest offers' (``x``)."""

    isp: int
    c: FloatArray
    lb: FloatArray
    ub: FloatArray
    G: sp.csr_matrix
    h: FloatArray
    requests: int
    root_request: bool
    """A request at the root point, which every offer relieves: the hardest case."""


@dataclass(frozen=True)
class Solved:
    seconds: float
    objective: float
    status: str


@dataclass(frozen=True)
class Generated(Solved):
    rounds: int
    start_columns: int
    final_columns: int
    pricing_seconds: float


def isp_lps(size: str) -> Iterator[IspLp]:
    cols = columns(SIZES[size])
    requests = np.bincount(cols.request_isp, minlength=N_ISPS)
    root = np.zeros(N_ISPS, dtype=bool)
    root[cols.request_isp[cols.request_point == 0]] = True
    offered = np.zeros(N_ISPS, dtype=bool)
    offered[cols.entries()[1]] = True
    # direct_models yields in ISP order and skips the ISPs without offers or without requests.
    live = [t for t in range(N_ISPS) if requests[t] and offered[t]]
    for t, (c, lb, ub, G, h) in zip(live, direct_models(cols), strict=True):
        yield IspLp(t, c, lb, ub, G, h, int(requests[t]), bool(root[t]))


def full_lp(lp: IspLp) -> Solved:
    """(a) HiGHS on the whole LP, with the engine's options."""
    start = time.perf_counter()
    highs = _highs(*lp.G.shape)
    highs.passModel(_highs_lp(lp.c, lp.lb, lp.ub, lp.G, lp.h, np.zeros(len(lp.c), dtype=bool)))
    highs.run()
    seconds = time.perf_counter() - start
    status = highs.modelStatusToString(highs.getModelStatus())
    return Solved(seconds, float(highs.getInfo().objective_function_value), status)


def _start_columns(lp: IspLp, by_column: sp.csc_matrix, k: int) -> npt.NDArray[np.bool_]:
    """Every request column and, per row, the ``k`` cheapest offer columns that relieve it and cost
    less than the row's most valuable request."""
    m, n = lp.G.shape
    n_x = n - lp.requests
    chosen = np.zeros(n, dtype=bool)
    chosen[n_x:] = True
    y_rows = by_column.indices[by_column.indptr[n_x:-1]]  # each request column has one entry
    value = np.full(m, -np.inf)
    np.maximum.at(value, y_rows, lp.c[n_x:])
    price = -lp.c
    offers = lp.G[:, :n_x].tocsr()
    for row in range(m):
        span = slice(offers.indptr[row], offers.indptr[row + 1])
        js, g = offers.indices[span], offers.data[span]
        js = js[(g < 0) & (price[js] < value[row])]
        chosen[js[np.argsort(price[js], kind="stable")[:k]]] = True
    return chosen


def column_generation(lp: IspLp, k: int, batch: int) -> Generated:
    """(b) The restricted LP grown by pricing until no column improves it (see the module's text)."""
    start = time.perf_counter()
    m, _ = lp.G.shape
    by_column = lp.G.tocsc()
    chosen = _start_columns(lp, by_column, k)
    first = np.flatnonzero(chosen)
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("presolve", "off")
    highs.setOptionValue("solver", "simplex")
    restricted = highspy.HighsLp()
    restricted.num_col_, restricted.num_row_ = len(first), m
    restricted.sense_ = highspy.ObjSense.kMaximize
    restricted.col_cost_, restricted.col_lower_, restricted.col_upper_ = lp.c[first], lp.lb[first], lp.ub[first]
    restricted.row_lower_, restricted.row_upper_ = np.full(m, -highspy.kHighsInf), lp.h
    sub = by_column[:, first]
    restricted.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    restricted.a_matrix_.num_col_, restricted.a_matrix_.num_row_ = len(first), m
    restricted.a_matrix_.start_ = sub.indptr.astype(np.int32)
    restricted.a_matrix_.index_ = sub.indices.astype(np.int32)
    restricted.a_matrix_.value_ = sub.data
    highs.passModel(restricted)
    rounds, pricing = 0, 0.0
    threshold = REDUCED_COST_TOLERANCE * (1 + np.abs(lp.c))
    movable = lp.ub > lp.lb
    while True:
        rounds += 1
        highs.run()
        priced = time.perf_counter()
        row_dual = np.asarray(highs.getSolution().row_dual)
        reduced = lp.c - by_column.T @ row_dual  # HiGHS: column dual = c − Aᵀ·row dual
        improving = np.flatnonzero(~chosen & movable & (reduced > threshold))
        if len(improving) > batch:
            improving = improving[np.argpartition(-reduced[improving], batch)[:batch]]
        pricing += time.perf_counter() - priced
        if len(improving) == 0:
            break
        improving.sort()
        new = by_column[:, improving]
        highs.addCols(
            len(improving),
            lp.c[improving],
            lp.lb[improving],
            lp.ub[improving],
            new.nnz,
            new.indptr[:-1].astype(np.int32),
            new.indices.astype(np.int32),
            new.data,
        )
        chosen[improving] = True
    seconds = time.perf_counter() - start
    status = highs.modelStatusToString(highs.getModelStatus())
    objective = float(highs.getInfo().objective_function_value)
    return Generated(seconds, objective, status, rounds, len(first), int(chosen.sum()), pricing)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("small", "medium", "large"), default="medium")
    parser.add_argument("--k", type=int, default=5, help="cheapest offer columns per row to start from")
    parser.add_argument("--batch", type=int, default=5_000, help="most improving columns added per round")
    parser.add_argument("--isps", type=int, default=N_ISPS, help="measure the first N ISPs only")
    return parser.parse_args()


def _group(records: list[dict[str, Any]]) -> dict[str, Any]:
    if not records:
        return {"isps": 0}
    full = sum(r["full"]["seconds"] for r in records)
    generated = sum(r["generated"]["seconds"] for r in records)
    return {
        "isps": len(records),
        "full_s": round(full, 3),
        "generated_s": round(generated, 3),
        "ratio": round(full / generated, 2) if generated else None,
        "rounds": [min(r["generated"]["rounds"] for r in records), max(r["generated"]["rounds"] for r in records)],
        "final_columns": [
            min(r["generated"]["final_columns"] for r in records),
            max(r["generated"]["final_columns"] for r in records),
        ],
    }


def main() -> None:
    args = parse_args()
    env = environment(DEFAULT_ADMIN_URL, MODULE)
    say(f"building the {args.size} book and its per-ISP LPs")
    records: list[dict[str, Any]] = []
    for lp in isp_lps(args.size):
        if len(records) >= args.isps:
            break
        full = full_lp(lp)
        generated = column_generation(lp, args.k, args.batch)
        gap = abs(generated.objective - full.objective) / max(1.0, abs(full.objective))
        if full.status != "Optimal" or generated.status != "Optimal" or gap > REL_TOLERANCE:
            raise AssertionError(f"ISP {lp.isp}: full {full}, generated {generated}, relative gap {gap:.1e}")
        records.append(
            {
                "isp": lp.isp,
                "rows": lp.G.shape[0],
                "columns": lp.G.shape[1],
                "root_request": lp.root_request,
                "full": asdict(full),
                "generated": asdict(generated),
                "relative_gap": gap,
            }
        )
        say(f"  ISP {lp.isp}: full {full.seconds:.3f} s, generated {generated.seconds:.3f} s, gap {gap:.1e}")
    groups = {
        "all": _group(records),
        "with a root request": _group([r for r in records if r["root_request"]]),
        "without": _group([r for r in records if not r["root_request"]]),
    }
    report = {"environment": env, "args": vars(args), "groups": groups, "isps": records}
    write_results("column_generation", report, markdown(report))
    say(f"all: {groups['all']}")


def markdown(report: dict[str, Any]) -> list[str]:
    args, groups, records = report["args"], report["groups"], report["isps"]
    shape = f"{records[0]['rows']} rows × {records[0]['columns']:,} columns" if records else "no LP"
    lines = [
        "# Column generation against HiGHS on the full per-ISP clearing LPs",
        "",
        *environment_markdown(report["environment"]),
        f"- book: `{args['size']}` (benchmarks.clearing_books), its LP per ISP without linking offers "
        f"(benchmarks.clearing_baselines.direct_models; the first ISP: {shape})",
        f"- (a) HiGHS on the full LP with the engine's options; (b) column generation: start from every request and "
        f"the {args['k']} cheapest relieving offers per row, add the {args['batch']:,} most improving columns a "
        "round (reduced costs priced with numpy), HiGHS simplex warm-started, until none improves",
        f"- every ISP: both optimal, objectives equal within {REL_TOLERANCE:g} relative (largest gap "
        f"{max((r['relative_gap'] for r in records), default=0.0):.1e})",
        "",
        "| ISPs | count | (a) full LP s | (b) column generation s | a / b | rounds | columns at the end |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name, g in groups.items():
        if g["isps"]:
            lines.append(
                f"| {name} | {g['isps']} | {g['full_s']} | {g['generated_s']} | {g['ratio']}× | "
                f"{g['rounds'][0]}–{g['rounds'][1]} | {g['final_columns'][0]:,}–{g['final_columns'][1]:,} |"
            )
    lines += [
        "",
        "An ISP with a request at the root point, which every offer relieves, ends with more columns (about "
        "the offers awarded) and takes more rounds. Pricing time is in (b); see the JSON for every ISP.",
        "",
        "Not in this measurement: the engine's exact prices (computed over the full model's dual face from "
        "the primal optimum, so unchanged by how the optimum was found), all-or-nothing offers (branch-and-"
        "price), linked ISPs, and going around cvxpy for the main LP.",
    ]
    return lines


if __name__ == "__main__":
    main()
