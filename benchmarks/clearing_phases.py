"""The measurements of the clearing benchmark, each run in a child process of its own (see
:mod:`benchmarks.clearing`) so a timeout or the memory guard can stop it without losing the rest.

* ``engine``: ``clear(book)`` once, its steps timed by wrapping the engine's functions (module
  attributes replaced for the run, nothing in ``market/`` is edited). Every LP the engine solves is
  split into cvxpy compilation, HiGHS ``run()`` and the rest of ``Problem.solve``.
* ``profile``: ``clear(book)`` under cProfile (slower than the ``engine`` run; only its shares count).
* ``highs-engine`` / ``highs-direct``: the raw HiGHS floor (:mod:`benchmarks.clearing_baselines`).
* ``cvxpy``: the per-offer cvxpy model.

Each phase writes its figures as JSON; progress lines go to stderr, prefixed ``@@`` when they carry a
finished step (so a run stopped by the timeout still tells how far it got).
"""

from __future__ import annotations

import cProfile
import functools
import gc
import hashlib
import io
import json
import pstats
import resource
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highspy
import numpy as np

from benchmarks.clearing_baselines import highs_on_direct_models, highs_on_engine_models, naive_cvxpy
from benchmarks.clearing_books import SIZES, Columns, Size, columns, order_book
from market.clearing import engine, model, pricing
from market.clearing import solve as solve_module
from market.clearing.book import ClearingResult, OrderBook

_INHERITED = object()
TOP = "top"
"""Steps of clear() that follow one another (their times add up to at most the total)."""

# (owner, attribute, label, parent label or TOP)
STEPS: tuple[tuple[Any, str, str, str], ...] = (
    (engine._Columns, "of", "book to arrays (_Columns.of)", TOP),
    (engine, "isp_components", "decompose (isp_components)", TOP),
    (engine, "build_model", "build_model", TOP),
    (model, "_entries", "_entries (entry arrays)", "build_model"),
    (model, "_activation_map", "_activation_map (blocks, rebound)", "build_model"),
    (model, "add_relief_constraints", "add_relief_constraints", "build_model"),
    (model, "add_storage_constraints", "add_storage_constraints", "build_model"),
    (model, "add_min_fraction_constraints", "add_min_fraction_constraints", "build_model"),
    (engine, "compile_model", "cvxpy compile of the main LP (compile_model)", TOP),
    (solve_module.Compiled, "run", "main LP (Compiled.run)", TOP),
    (engine, "_solve_component", "main LP with binaries (_solve_component -> MILP, LP)", TOP),
    (engine, "row_prices", "prices (row_prices)", TOP),
    (pricing.DualFace, "of", "DualFace.of (face over the binding rows)", "prices (row_prices)"),
    (pricing.Parametrization, "of", "Parametrization.of (elimination of the equations)", "prices (row_prices)"),
    (pricing.ParamFace, "__init__", "ParamFace (bounds and components over θ)", "prices (row_prices)"),
    (engine, "_tie_break", "tie-break LP (_tie_break -> solve)", TOP),
    (engine._Tally, "collect", "result collection (_Tally.collect)", TOP),
    (engine._Tally, "_points", "_Tally._points", "result collection (_Tally.collect)"),
    (engine._Tally, "_flex", "_Tally._flex", "result collection (_Tally.collect)"),
    (engine._Tally, "_offers", "_Tally._offers", "result collection (_Tally.collect)"),
    (engine, "_awards", "awards and rejections (_awards)", TOP),
    (engine, "_request_awards", "request awards (_request_awards)", TOP),
    (engine, "_welfare", "welfare in Decimal (_welfare)", TOP),
    (engine, "book_hash", "input hash (book_hash)", TOP),
    (engine, "result_hash", "result hash (result_hash)", TOP),
)


def progress(message: str, **data: Any) -> None:
    line = f"@@ {json.dumps(data)}" if data else message
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


class Tracker:
    """Wraps the engine's functions and the solvers' entry points for one ``clear()``."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._local = threading.local()
        self._lock = threading.Lock()
        self.lp: dict[str, Counter[str]] = {}
        self.lp_max: dict[str, dict[str, int]] = {}
        self._saved: list[tuple[Any, str, Any]] = []
        self.missing: list[str] = []
        self.start = time.perf_counter()

    @property
    def stack(self) -> list[str]:
        """The steps the calling thread is in (the engine builds, solves and prices in three threads)."""
        stack: list[str] = self._local.__dict__.setdefault("stack", [])
        return stack

    def _wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.stack.append(label)
            began = time.perf_counter()
            returned: Any = None
            try:
                returned = function(*args, **kwargs)
                return returned
            finally:
                elapsed = time.perf_counter() - began
                self.stack.pop()
                with self._lock:
                    self.seconds[label] += elapsed
                    self.calls[label] += 1
                extra = {"returned_len": len(returned)} if isinstance(returned, np.ndarray) else {}
                progress("", step=label, s=round(elapsed, 4), at=round(time.perf_counter() - self.start, 3), **extra)

        return timed

    def _patch(self, owner: Any, attribute: str, replacement: Any) -> None:
        """Replace ``owner.attribute``; an inherited attribute is shadowed, then deleted again."""
        self._saved.append((owner, attribute, vars(owner).get(attribute, _INHERITED)))
        setattr(owner, attribute, replacement)

    def install(self) -> None:
        for owner, attribute, label, _ in STEPS:
            if hasattr(owner, attribute):
                self._patch(owner, attribute, self._wrap(label, getattr(owner, attribute)))
            else:
                self.missing.append(f"{owner.__name__}.{attribute}")
        compiled_run = solve_module.Compiled.run
        highs_run = highspy.Highs.run
        tracker = self

        def lp_counter() -> Counter[str]:
            step = tracker.stack[0] if tracker.stack else "?"
            return tracker.lp.setdefault(step, Counter())

        def counted(compile_model: Callable[..., Any]) -> Callable[..., Any]:
            def compile_(*args: Any, **kwargs: Any) -> Any:
                began = time.perf_counter()
                try:
                    return compile_model(*args, **kwargs)
                finally:
                    with tracker._lock:
                        lp = lp_counter()
                        lp["problems"] += 1
                        lp["cvxpy_compile_s"] += time.perf_counter() - began

            return compile_

        def run_compiled(compiled: solve_module.Compiled) -> Any:
            began = time.perf_counter()
            try:
                return compiled_run(compiled)
            finally:
                with tracker._lock:
                    lp_counter()["problem_solve_s"] += time.perf_counter() - began

        def run(highs: highspy.Highs) -> Any:
            began = time.perf_counter()
            try:
                return highs_run(highs)
            finally:
                step = tracker.stack[0] if tracker.stack else "?"
                with tracker._lock:
                    lp = lp_counter()
                    lp["highs_run_s"] += time.perf_counter() - began
                    lp["highs_runs"] += 1
                if lp["highs_runs"] % 50 == 0:
                    progress(
                        "",
                        highs_in=tracker.stack[-1] if tracker.stack else "?",
                        runs=lp["highs_runs"],
                        run_s=round(lp["highs_run_s"], 2),
                        at=round(time.perf_counter() - tracker.start, 3),
                    )
                biggest = tracker.lp_max.setdefault(step, {"rows": 0, "cols": 0, "nonzeros": 0})  # one writer a step
                biggest["rows"] = max(biggest["rows"], highs.getNumRow())
                biggest["cols"] = max(biggest["cols"], highs.getNumCol())
                biggest["nonzeros"] = max(biggest["nonzeros"], highs.getNumNz())

        self._patch(engine, "compile_model", counted(vars(engine)["compile_model"]))
        self._patch(solve_module, "compile_model", counted(solve_module.compile_model))
        self._patch(solve_module.Compiled, "run", run_compiled)
        self._patch(highspy.Highs, "run", run)

    def uninstall(self) -> None:
        for owner, attribute, original in reversed(self._saved):
            if original is _INHERITED:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, original)
        self._saved.clear()

    def steps(self) -> list[dict[str, Any]]:
        return [
            {"label": label, "parent": parent, "s": self.seconds[label], "calls": self.calls[label]}
            for _, _, label, parent in STEPS
            if self.calls[label]
        ]


def _book(size: Size) -> tuple[Columns, OrderBook, float]:
    began = time.perf_counter()
    cols = columns(size)
    book = order_book(cols)
    return cols, book, time.perf_counter() - began


def _summary(result: ClearingResult) -> dict[str, Any]:
    reasons = Counter(r.reason.value for r in result.rejections)
    return {
        "components": result.components,
        "awards": len(result.awards),
        "rejections": dict(reasons),
        "welfare": str(result.welfare),
        "lp_welfare": result.diagnostics.get("lp_welfare"),
        "degenerate_components": result.diagnostics.get("degenerate_components"),
        "procured_kw": str(sum((p.procured_kw for p in result.points), start=0)),
        "requested_kw": str(sum((p.requested_kw for p in result.points), start=0)),
        "point_results": len(result.points),
    }


def phase_engine(size: Size) -> dict[str, Any]:
    cols, book, book_s = _book(size)
    stats = cols.stats()
    del cols
    gc.collect()
    before = rss_gb()
    progress(f"  book ready in {book_s:.1f} s, RSS {before:.2f} GB; clear() ...")
    tracker = Tracker()
    tracker.install()
    try:
        began = time.perf_counter()
        result = engine.clear(book)
        total = time.perf_counter() - began
    finally:
        tracker.uninstall()
    return {
        "book": stats,
        "book_build_s": book_s,
        "total_s": total,
        "steps": tracker.steps(),
        "lp": {step: dict(c) for step, c in tracker.lp.items()},
        "lp_largest": tracker.lp_max,
        "result": _summary(result),
        "not_instrumented": tracker.missing,
        "rss_before_clear_gb": before,
        "peak_rss_gb": peak_rss_gb(),
    }


def _is_engine_code(filename: str) -> bool:
    return "/market/clearing/" in filename


def phase_profile(size: Size, text_path: Path) -> dict[str, Any]:
    _, book, _ = _book(size)
    gc.collect()
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.runcall(engine.clear, book)
    wall = time.perf_counter() - began
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, function), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(filename).name}:{line}({function})" if filename != "~" else function.strip("<>"),
                "path": filename,
                "calls": calls,
                "tottime_s": tottime,
                "cumtime_s": cumtime,
                "engine": _is_engine_code(filename),
            }
        )
    clear_row = next(r for r in rows if r["engine"] and r["function"].endswith("(clear)"))
    profiled = clear_row["cumtime_s"]
    for row in rows:
        row["cum_pct"] = 100 * row["cumtime_s"] / profiled
        row["tot_pct"] = 100 * row["tottime_s"] / profiled
    engine_rows = sorted((r for r in rows if r["engine"]), key=lambda r: -r["cumtime_s"])[:25]
    self_rows = sorted(rows, key=lambda r: -r["tottime_s"])[:25]
    out = io.StringIO()
    out.write(f"cProfile of clear(book) for {size.name}: {wall:.1f} s wall under the profiler\n\n")
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(70)
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(40)
    text_path.write_text(out.getvalue())
    return {
        "profiled_wall_s": wall,
        "profiled_clear_s": profiled,
        "engine_by_cumtime": engine_rows,
        "all_by_tottime": self_rows,
        "text": str(text_path),
        "peak_rss_gb": peak_rss_gb(),
    }


def phase_highs_engine(size: Size) -> dict[str, Any]:
    _, book, _ = _book(size)
    gc.collect()
    return {**highs_on_engine_models(book).as_dict(), "peak_rss_gb": peak_rss_gb()}


def phase_highs_direct(size: Size) -> dict[str, Any]:
    cols = columns(size)
    gc.collect()
    times = highs_on_direct_models(cols, progress=progress)
    return {**times.as_dict(), "book": cols.stats(), "peak_rss_gb": peak_rss_gb()}


def phase_cvxpy(size: Size) -> dict[str, Any]:
    cols, book, _ = _book(size)
    stats = cols.stats()
    del cols
    gc.collect()
    return {**naive_cvxpy(book), "book": stats, "peak_rss_gb": peak_rss_gb()}


def engine_fingerprint() -> str:
    """A hash of the clearing engine's source as imported (it may have uncommitted changes)."""
    digest = hashlib.sha256()
    for path in sorted(Path(engine.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def run_phase(phase: str, size_name: str, offers: int | None, out: Path, profile_text: Path | None) -> None:
    size = SIZES[size_name] if offers is None else SIZES[size_name].scaled(offers)
    np.seterr(all="ignore")
    fingerprint = engine_fingerprint()
    if phase == "engine":
        data = phase_engine(size)
    elif phase == "profile":
        if profile_text is None:
            raise ValueError("profile needs a text path")
        data = phase_profile(size, profile_text)
    elif phase == "highs-engine":
        data = phase_highs_engine(size)
    elif phase == "highs-direct":
        data = phase_highs_direct(size)
    elif phase == "cvxpy":
        data = phase_cvxpy(size)
    else:
        raise ValueError(f"unknown phase {phase}")
    data["engine_fingerprint"] = fingerprint
    out.write_text(json.dumps(data, default=str))
