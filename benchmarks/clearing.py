"""Clearing engine benchmark: ``market.clearing.engine.clear(book)`` on random books, against raw
HiGHS on the same matrices and against a straightforward per-offer cvxpy model.

Books (:mod:`benchmarks.clearing_books`, fixed seed): 200 congestion points (1 root, 14
transformers, 185 feeders, radial relief), upward requests at 30 % of the points per ISP, offers at
random feeders. Sizes:

* ``small``: 10,000 offers of 1-4 ISPs over a 96-ISP day;
* ``medium``: 100,000 offers with a 96-ISP profile each;
* ``large``: 1,000,000 offers with a 96-ISP profile each;
* ``storage``: 5,000 storage offers over 96 ISPs (one linked component).

Per size, in the same run, each measurement in a child process of its own (timeout 20 min, stopped
above 16 GB RSS):

a. ``clear(book)`` wall time, split by wrapping the engine's steps (build_model, solve, prices,
   tie-break, result collection ...), and a cProfile run for the functions behind them;
b. the floor: each component's LP (the engine's own ``build_model`` matrices, built untimed)
   passed to ``highspy.Highs`` and solved once, with row duals; ratio a/b;
c. the per-offer cvxpy model (:func:`benchmarks.clearing_baselines.naive_cvxpy`); ratio a/c.

``medium`` and ``large`` are first probed with fewer offers of the same shape; a measurement whose
fitted estimate exceeds the time or memory budget is not run and its estimate is reported instead.
Results: ``benchmarks/results/clearing_<size>.json`` and ``.md`` (and ``_profile.txt``). Run from the
repository root::

    /work/venv/bin/python -m benchmarks.clearing --size small
    /work/venv/bin/python -m benchmarks.clearing --all
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.clearing_books import N_ISPS, SIZES, Size
from benchmarks.common import REPO_ROOT, RESULTS_DIR, say, write_results

MODULE = "benchmarks.clearing"
TIMEOUT_S = 20 * 60
"""Per child process (one measurement)."""
CVXPY_BUDGET_S = 10 * 60
"""The per-offer cvxpy model runs in full only if estimated below this."""
MEMORY_LIMIT_GB = 16.0
RUN_IF_ESTIMATE_BELOW = 0.75
"""Run a full measurement only if its estimate is below this share of its time budget."""
ENGINE_PROBES = (2_500, 5_000, 10_000)
PROFILE_PROBE = 2_500
PROFILE_FULL_MAX_S = 8 * 60
"""Profile the full book only if clear() took less than this (the profiler roughly doubles it)."""
CVXPY_PROBES = (250, 500, 1_000)
PROBE_BASE = "medium"
"""Probes are the medium/large shape (96-ISP profiles) with fewer offers: one set serves both."""
TARGETS_S = {"medium": 1.5, "large": 15.0, "storage": 60.0}
TARGET_RATIO = 1.3
PACKAGES = ("cvxpy", "highspy", "numpy", "scipy")


# -- child processes ----------------------------------------------------------------------------


@dataclass
class Run:
    """One child process: what it measured, or why it stopped."""

    phase: str
    size: str
    offers: int
    status: str
    wall_s: float
    peak_rss_gb: float
    data: dict[str, Any] = field(default_factory=dict)
    steps_done: list[dict[str, Any]] = field(default_factory=list)
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _rss_gb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    return 0.0


def run_child(
    phase: str, size: str, offers: int | None = None, *, timeout: float | None = None, profile_text: Path | None = None
) -> Run:
    timeout = TIMEOUT_S if timeout is None else timeout
    n = SIZES[size].offers if offers is None else offers
    label = f"{phase} {size} ({n:,} offers)"
    say(f"  {label}: started (timeout {timeout / 60:.0f} min)")
    with tempfile.TemporaryDirectory(prefix="clearing-") as tmp:
        out, log = Path(tmp) / "out.json", Path(tmp) / "log.txt"
        command = [sys.executable, "-m", MODULE, "--phase", phase, "--size", size, "--out", str(out)]
        if offers is not None:
            command += ["--offers", str(offers)]
        if profile_text is not None:
            command += ["--profile-text", str(profile_text)]
        began = time.monotonic()
        peak = 0.0
        status = "ok"
        with log.open("wb") as sink:
            child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO_ROOT)  # noqa: S603
            while child.poll() is None:
                peak = max(peak, _rss_gb(child.pid))
                elapsed = time.monotonic() - began
                if peak > MEMORY_LIMIT_GB or elapsed > timeout:
                    status = (
                        f"stopped: RSS above {MEMORY_LIMIT_GB:.0f} GB"
                        if peak > MEMORY_LIMIT_GB
                        else f"stopped: timeout after {timeout / 60:.0f} min"
                    )
                    child.kill()
                    child.wait()
                    break
                time.sleep(0.2)
        wall = time.monotonic() - began
        text = log.read_text(errors="replace")
        steps = [json.loads(line[3:]) for line in text.splitlines() if line.startswith("@@ ")]
        tail = "\n".join(line for line in text.splitlines()[-15:] if not line.startswith("@@ "))
        data: dict[str, Any] = {}
        if status == "ok":
            if child.returncode == 0 and out.exists():
                data = json.loads(out.read_text())
                peak = max(peak, float(data.get("peak_rss_gb", 0.0)))
            else:
                status = f"error: exit code {child.returncode}"
    say(f"  {label}: {status}, {wall:.1f} s wall, peak RSS {peak:.2f} GB")
    if status != "ok" and tail:
        say("    " + tail.replace("\n", "\n    "))
    return Run(phase, size, n, status, wall, peak, data, steps, tail)


# -- estimates ------------------------------------------------------------------------------------


@dataclass
class Estimate:
    """A quantity at ``target`` offers, fitted on probes: linear ``a + b·n`` and power law ``k·n^p``."""

    target: int
    probes: list[tuple[int, float]]
    linear: float
    power: float
    exponent: float

    @property
    def value(self) -> float:
        """The larger (more cautious) of the two fits."""
        return max(self.linear, self.power)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target_offers": self.target,
            "probes": self.probes,
            "linear_fit": self.linear,
            "power_fit": self.power,
            "power_exponent": self.exponent,
            "estimate": self.value,
        }


def estimate(points: list[tuple[int, float]], target: int) -> Estimate | None:
    usable = [(n, v) for n, v in points if v > 0]
    if len(usable) < 2:  # noqa: PLR2004 - a line needs two points
        return None
    n = np.asarray([p[0] for p in usable], dtype=float)
    v = np.asarray([p[1] for p in usable], dtype=float)
    slope, intercept = np.polyfit(n, v, 1)
    exponent, log_k = np.polyfit(np.log(n), np.log(v), 1)
    return Estimate(
        target,
        usable,
        float(intercept + slope * target),
        float(math.exp(log_k) * target**exponent),
        float(exponent),
    )


# -- one size -----------------------------------------------------------------------------------


@dataclass
class Probes:
    """Runs with fewer offers, shared by medium and large; and medium's pace for large."""

    engine: list[Run] = field(default_factory=list)
    cvxpy: list[Run] = field(default_factory=list)
    medium_partial: dict[str, Any] | None = None


COLLECT_STEP = "result collection (_Tally.collect)"
"""The last step of each component in clear()'s loop."""


def n_components(name: str) -> int:
    """Components clear() solves: one per ISP without linking offers, one for the storage day."""
    return 1 if SIZES[name].storage else N_ISPS


def partial_pace(engine: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    """For a clear() stopped part-way: components finished and the whole loop extrapolated from them."""
    if not engine or engine["status"] == "ok":
        return None
    done = [s for s in engine["steps_done"] if s.get("step") == COLLECT_STEP]
    if not done:
        return None
    at = done[-1]["at"]
    total = n_components(name)
    return {
        "components_done": len(done),
        "components": total,
        "seconds_at_last": at,
        "per_component_s": at / len(done),
        "estimate_s": at / len(done) * total,
    }


def _medium_pace(probes: Probes) -> dict[str, Any] | None:
    """Medium's pace from this run, or from its saved results."""
    if probes.medium_partial is not None:
        return probes.medium_partial
    saved = RESULTS_DIR / "clearing_medium.json"
    if saved.exists():
        runs = json.loads(saved.read_text())["runs"]
        engine = runs.get("engine")
        if engine and engine["status"] == "ok":
            return {"per_component_s": engine["data"]["total_s"] / N_ISPS, "measured": True}
        return partial_pace(engine, "medium")
    return None


def from_medium(probes: Probes, name: str) -> dict[str, Any] | None:
    """Large from medium: the same shape with 10× the offers, so ≥ 10× the time per component."""
    pace = _medium_pace(probes)
    if pace is None:
        return None
    scale = SIZES[name].offers / SIZES["medium"].offers
    return {**pace, "scale": scale, "estimate_s": pace["per_component_s"] * scale * n_components(name)}


def _engine_estimate(probes: list[Run], target: int) -> tuple[Estimate | None, Estimate | None]:
    ok = [r for r in probes if r.ok]
    seconds = estimate([(r.offers, r.data["total_s"]) for r in ok], target)
    memory = estimate([(r.offers, r.peak_rss_gb) for r in ok], target)
    return seconds, memory


def measure(name: str, probes: Probes) -> dict[str, Any]:  # noqa: PLR0912, PLR0915 - one plan per size, read top-down
    size: Size = SIZES[name]
    say(f"{name}: {size.describe()}")
    runs: dict[str, Any] = {"size": name, "description": size.describe(), "plan": []}
    profile_text = RESULTS_DIR / f"clearing_{name}_profile.txt"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)

    def note(text: str) -> None:
        say(f"  {text}")
        runs["plan"].append(text)

    # (a) the engine: in full for small and storage; medium and large only if the probes allow.
    engine: Run | None = None
    if size.profile is None or size.storage:
        engine = run_child("engine", name)
    else:
        if not probes.engine:
            probes.engine = [run_child("engine", PROBE_BASE, n) for n in ENGINE_PROBES]
        seconds, memory = _engine_estimate(probes.engine, size.offers)
        runs["engine_estimate"] = {
            "seconds": seconds.as_dict() if seconds else None,
            "peak_rss_gb": memory.as_dict() if memory else None,
        }
        scaled = from_medium(probes, name) if name != "medium" else None
        runs["engine_estimate_from_medium"] = scaled
        expected = max(seconds.value if seconds else 0.0, scaled["estimate_s"] if scaled else 0.0)
        if seconds is None or memory is None:
            note("engine: probes failed, no estimate")
        elif expected > RUN_IF_ESTIMATE_BELOW * TIMEOUT_S or memory.value > MEMORY_LIMIT_GB:
            note(
                f"engine: not run in full: estimated {expected:,.0f} s ({expected / 60:,.1f} min), "
                f"peak RSS {memory.value:.1f} GB (budget {TIMEOUT_S / 60:.0f} min, {MEMORY_LIMIT_GB:.0f} GB)"
            )
        else:
            engine = run_child("engine", name)
    runs["engine_probes"] = [_run_dict(r) for r in probes.engine] if size.profile is not None else []
    runs["engine"] = _run_dict(engine) if engine else None
    if name == "medium":
        probes.medium_partial = partial_pace(runs["engine"], name)

    # The profile: of the full book if clear() was quick enough, else of a probe.
    if engine is not None and engine.ok and engine.data["total_s"] <= PROFILE_FULL_MAX_S:
        profile = run_child("profile", name, profile_text=profile_text)
    elif size.profile is not None and not size.storage:
        note(f"profile: of the {PROFILE_PROBE:,}-offer probe (the full book is too slow to profile)")
        profile = run_child("profile", PROBE_BASE, PROFILE_PROBE, profile_text=profile_text)
    else:
        note("profile: not run (clear() too slow or failed); see the step breakdown")
        profile = None
    runs["profile"] = _run_dict(profile) if profile else None

    # (b) the floor on the engine's own matrices, and on the same LP built directly from the columns.
    if engine is not None:
        floor = run_child("highs-engine", name)
    else:
        note(
            f"floor on the engine's matrices: run on the {ENGINE_PROBES[-1]:,}-offer probe only "
            "(to check the direct LP)"
        )
        floor = run_child("highs-engine", PROBE_BASE, ENGINE_PROBES[-1])
        runs["floor_direct_probe"] = _run_dict(run_child("highs-direct", PROBE_BASE, ENGINE_PROBES[-1]))
    runs["floor_engine_models"] = _run_dict(floor)
    if size.storage:
        runs["floor_direct"] = None
    else:
        runs["floor_direct"] = _run_dict(run_child("highs-direct", name))

    # (c) the per-offer cvxpy model: small in full, medium if its estimate fits the budget.
    naive: Run | None = None
    if name == "small":
        naive = run_child("cvxpy", name)
    elif name == "medium":
        if not probes.cvxpy:
            probes.cvxpy = [run_child("cvxpy", PROBE_BASE, n, timeout=CVXPY_BUDGET_S) for n in CVXPY_PROBES]
        fit = estimate([(r.offers, r.data["total_s"]) for r in probes.cvxpy if r.ok], size.offers)
        runs["cvxpy_estimate"] = fit.as_dict() if fit else None
        runs["cvxpy_probes"] = [_run_dict(r) for r in probes.cvxpy]
        if fit is not None and fit.value <= RUN_IF_ESTIMATE_BELOW * CVXPY_BUDGET_S:
            naive = run_child("cvxpy", name, timeout=CVXPY_BUDGET_S)
        else:
            est = "no estimate" if fit is None else f"estimated {fit.value:,.0f} s ({fit.value / 3600:,.1f} h)"
            note(f"cvxpy per-offer model: not run in full: {est}, budget {CVXPY_BUDGET_S / 60:.0f} min")
    else:
        note("cvxpy per-offer model: not run (only small and medium)")
    runs["cvxpy"] = _run_dict(naive) if naive else None
    return runs


def _full(run: dict[str, Any] | None, name: str) -> bool:
    """A run of the whole book of size ``name`` (not a probe)."""
    return bool(run) and run["size"] == name and run["offers"] == SIZES[name].offers  # type: ignore[index]


def _run_dict(run: Run | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "phase": run.phase,
        "size": run.size,
        "offers": run.offers,
        "status": run.status,
        "wall_s": run.wall_s,
        "peak_rss_gb": run.peak_rss_gb,
        "data": run.data,
        "steps_done": [] if run.ok else run.steps_done,  # progress lines matter only for an unfinished run
        "log_tail": "" if run.ok else run.log_tail,
    }


# -- figures and report ---------------------------------------------------------------------------


def figures(runs: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers: a, b, c, their ratios, and whether each is measured or estimated."""
    name = runs["size"]
    out: dict[str, Any] = {}
    engine = runs.get("engine")
    if engine and engine["status"] == "ok":
        out["a_s"], out["a_kind"] = engine["data"]["total_s"], "measured"
    elif (pace := partial_pace(engine, name)) is not None:
        out["a_s"] = pace["estimate_s"]
        out["a_kind"] = (
            f"not finished ({engine['status']}): {pace['components_done']} of {pace['components']} components "
            f"done in {pace['seconds_at_last']:,.0f} s, extrapolated (result assembly after the loop not included)"
        )
    elif engine:
        last = max((s["at"] for s in engine["steps_done"]), default=0.0)
        out["a_s"], out["a_kind"] = None, f"{engine['status']} (last step finished at {last:,.0f} s)"
    elif name == "large" and (scaled := runs.get("engine_estimate_from_medium") or from_medium(Probes(), name)):
        out["a_s"] = scaled["estimate_s"]
        out["a_kind"] = (
            f"estimated: medium's {scaled['per_component_s']:,.1f} s per component × {scaled['scale']:.0f} (offers) "
            f"× {N_ISPS} components (probe fit: {_s(runs['engine_estimate']['seconds']['estimate'])})"
            if runs.get("engine_estimate") and runs["engine_estimate"].get("seconds")
            else f"estimated: medium's {scaled['per_component_s']:,.1f} s per component × {scaled['scale']:.0f}"
        )
    elif runs.get("engine_estimate") and runs["engine_estimate"]["seconds"]:
        out["a_s"], out["a_kind"] = runs["engine_estimate"]["seconds"]["estimate"], "estimated from probes"
    floor_runs = [runs.get("floor_engine_models"), runs.get("floor_direct")]
    full = [r for r in floor_runs if r and r["status"] == "ok" and _full(r, name)]
    if full:
        best = full[0]
        out["b_s"] = best["data"]["total_s"]
        out["b_kind"] = "engine's build_model matrices" if best["phase"] == "highs-engine" else "same LP built directly"
    cvx = runs.get("cvxpy")
    if cvx and cvx["status"] == "ok":
        out["c_s"], out["c_kind"] = cvx["data"]["total_s"], "measured"
    elif runs.get("cvxpy_estimate"):
        out["c_s"], out["c_kind"] = runs["cvxpy_estimate"]["estimate"], "estimated from probes"
    a, b, c = out.get("a_s"), out.get("b_s"), out.get("c_s")
    out["a_over_b"] = a / b if a and b else None
    out["a_over_c"] = a / c if a and c else None
    out["target_s"] = TARGETS_S.get(name)
    return out


def environment() -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    try:
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "market/clearing"],  # noqa: S607 - git from PATH
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        dirty = []
    return {
        "engine_uncommitted": [line.strip() for line in dirty if line.strip()],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"cd {shlex.quote(str(REPO_ROOT))} && " + shlex.join([sys.executable, "-m", MODULE, *sys.argv[1:]]),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "git_commit": commit,
        "timeout_s": TIMEOUT_S,
        "memory_limit_gb": MEMORY_LIMIT_GB,
    }


def _s(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 3600:  # noqa: PLR2004
        return f"{value:,.0f} s ({value / 3600:.1f} h)"
    if value >= 100:  # noqa: PLR2004
        return f"{value:,.0f} s"
    return f"{value:.3g} s" if value < 1 else f"{value:.1f} s"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:,.3f}×"


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def markdown(env: dict[str, Any], runs: dict[str, Any], fig: dict[str, Any]) -> list[str]:
    name = runs["size"]
    lines = [f"# Clearing benchmark: {name}", "", f"Book: {runs['description']}.", ""]
    book = None
    for key in ("engine", "floor_direct", "cvxpy", "floor_engine_models"):
        if _full(runs.get(key), name) and runs[key]["data"].get("book"):
            book = runs[key]["data"]["book"]
            break
    if book:
        lines += ["Book contents: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in book.items()), ""]
    lines += [
        f"- date (UTC): {env['date']}",
        f"- command: `{env['command']}`",
        f"- os.cpu_count(): {env['cpu_count']}; {env['platform']}; Python {env['python']}",
        "- " + ", ".join(f"{k} {v}" for k, v in env["packages"].items()),
        f"- git {env['git_commit']}; per-measurement timeout {env['timeout_s'] / 60:.0f} min, "
        f"memory guard {env['memory_limit_gb']:.0f} GB RSS",
        *_fingerprint_lines(env, runs),
        "## Headline",
        "",
        "| measure | time | how | peak RSS |",
        "|---|---:|---|---:|",
    ]
    engine = runs.get("engine")
    lines.append(
        f"| (a) `clear(book)` (build + solve + prices + results) | {_s(fig.get('a_s'))} | {fig.get('a_kind', '-')} | "
        + (f"{engine['peak_rss_gb']:.2f} GB" if engine else _est_mem(runs))
        + " |"
    )
    for key, label in (
        ("floor_engine_models", "engine's build_model matrices"),
        ("floor_direct", "same LP built directly"),
    ):
        run = runs.get(key)
        if not run:
            continue
        if run["status"] != "ok":
            lines.append(f"| (b) raw HiGHS, {label} | - | {run['status']} | {run['peak_rss_gb']:.2f} GB |")
            continue
        d = run["data"]
        scope = "" if _full(run, name) else f" ({run['offers']:,}-offer probe)"
        lines.append(
            f"| (b) raw HiGHS, {label}{scope} | {_s(d['total_s'])} | {d['lps']} LPs: "
            f"passModel {_s(d['pass_model_s'])}, "
            f"run {_s(d['run_s'])}, getSolution {_s(d['get_solution_s'])}; matrices built untimed in "
            f"{_s(d['setup_not_timed_s'])} | {run['peak_rss_gb']:.2f} GB |"
        )
    cvx = runs.get("cvxpy")
    if cvx and cvx["status"] == "ok":
        d = cvx["data"]
        lines.append(
            f"| (c) per-offer cvxpy model, HiGHS | {_s(d['total_s'])} | build {_s(d['build_s'])}, cvxpy compile "
            f"{_s(d['compile_s'])}, solver {_s(d['solver_interface_s'])} | {cvx['peak_rss_gb']:.2f} GB |"
        )
    elif runs.get("cvxpy_estimate"):
        e = runs["cvxpy_estimate"]
        lines.append(
            f"| (c) per-offer cvxpy model, HiGHS | {_s(e['estimate'])} | estimated from "
            + ", ".join(f"{n:,} offers: {_s(v)}" for n, v in e["probes"])
            + f" (power-law exponent {e['power_exponent']:.2f}) | - |"
        )
    lines += [
        f"| a / b | {_x(fig.get('a_over_b'))} | target ≤ {TARGET_RATIO}× | |",
        f"| a / c | {_x(fig.get('a_over_c'))} | | |",
    ]
    if fig.get("target_s"):
        lines.append(
            f"| target for a (issue, 2 cores) | {_s(fig['target_s'])} | "
            f"a / target = {_x(_div(fig.get('a_s'), fig['target_s']))} | |"
        )
    lines.append("")
    lines += _check_lines(runs)
    for text in runs["plan"]:
        lines.append(f"- {text}")
    if runs["plan"]:
        lines.append("")
    lines += _estimate_lines(runs)
    lines += _step_lines(runs)
    lines += _profile_lines(runs)
    lines += SUGGESTIONS
    return lines


def _all_runs(runs: dict[str, Any]) -> list[dict[str, Any]]:
    items = [item for value in runs.values() for item in (value if isinstance(value, list) else [value])]
    return [item for item in items if isinstance(item, dict) and "phase" in item and "data" in item]


def _fingerprint_lines(env: dict[str, Any], runs: dict[str, Any]) -> list[str]:
    """Which engine source was measured (the engine was being edited while this benchmark ran)."""
    seen: dict[str, list[str]] = {}
    for run in _all_runs(runs):
        if run["data"].get("engine_fingerprint"):
            seen.setdefault(run["data"]["engine_fingerprint"], []).append(f"{run['phase']}@{run['offers']:,}")
    dirty = ", ".join(env.get("engine_uncommitted", [])) or "none"
    lines = [f"- uncommitted changes in market/clearing at the start: {dirty} (diff: `{env.get('engine_diff')}`)"]
    if len(seen) == 1:
        lines.append(f"- engine source fingerprint (sha256 of market/clearing/*.py): {next(iter(seen))}, every run")
    elif seen:
        lines.append(
            "- **the engine source changed during this run**; fingerprints: "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in seen.items())
        )
    return [*lines, ""]


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _est_mem(runs: dict[str, Any]) -> str:
    est = runs.get("engine_estimate") or {}
    mem = est.get("peak_rss_gb")
    return f"~{mem['estimate']:.1f} GB (est.)" if mem else "-"


def _check_lines(runs: dict[str, Any]) -> list[str]:
    """Do the engine, the floor and the cvxpy model reach the same optimum?"""
    values = []
    engine = runs.get("engine")
    if engine and engine["status"] == "ok":
        r = engine["data"]["result"]
        values.append(("engine LP welfare (after tie-break)", r["lp_welfare"], engine["size"]))
    for key in ("floor_engine_models", "floor_direct", "floor_direct_probe", "cvxpy"):
        run = runs.get(key)
        if run and run["status"] == "ok":
            values.append((f"{key.replace('_', ' ')} objective", run["data"]["objective"], f"{run['offers']:,} offers"))
    if not values:
        return []
    lines = ["Same optimum? (objective Σ value·kW − Σ price·kW, before the ISP-hours/1000 factor):", ""]
    lines += [f"- {label} ({scope}): {value:,.3f}" for label, value, scope in values]
    lines.append("")
    if engine and engine["status"] == "ok":
        r = engine["data"]["result"]
        lines += [
            f"Engine result: {r['components']} components, {r['degenerate_components']:.0f} with a non-unique dual "
            f"(extreme-dual LPs), {r['awards']:,} awards, rejections {r['rejections']}, welfare {r['welfare']}, "
            f"procured {float(r['procured_kw']):,.1f} of {float(r['requested_kw']):,.1f} kW requested.",
            "",
        ]
    return lines


def _estimate_lines(runs: dict[str, Any]) -> list[str]:
    est = runs.get("engine_estimate")
    if not est or not est["seconds"]:
        return []
    s, m = est["seconds"], est["peak_rss_gb"]
    lines = [
        "## Engine probes (96-ISP profiles, fewer offers) and the extrapolation",
        "",
        "| offers | clear() | peak RSS |",
        "|---:|---:|---:|",
    ]
    lines += [
        f"| {r['offers']:,} | {_s(r['data'].get('total_s')) if r['status'] == 'ok' else r['status']} | "
        f"{r['peak_rss_gb']:.2f} GB |"
        for r in runs["engine_probes"]
    ]
    lines += [
        "",
        f"Fit at {s['target_offers']:,} offers: linear {_s(s['linear_fit'])}, power law {_s(s['power_fit'])} "
        f"(exponent {s['power_exponent']:.2f}); memory linear {m['linear_fit']:.1f} GB. The larger is used.",
        "",
    ]
    return lines


def _step_lines(runs: dict[str, Any]) -> list[str]:
    engine = runs.get("engine")
    source = engine
    if not (engine and engine["status"] == "ok") and runs.get("engine_probes"):
        ok = [r for r in runs["engine_probes"] if r["status"] == "ok"]
        source = ok[-1] if ok else None
    if source is None:
        return []
    lines = []
    if source["status"] != "ok":
        lines += [
            f"## Where the time went before the run was stopped ({source['status']})",
            "",
            "| step | seconds (at) |",
            "|---|---:|",
        ]
        highs = [s for s in source["steps_done"] if "highs_in" in s]
        for s in source["steps_done"]:
            if "step" in s:
                returned = f"; returned {s['returned_len']:,} items" if "returned_len" in s else ""
                lines.append(f"| {s['step']} | {s['s']:.2f} (ended at {s['at']:.0f} s{returned}) |")
            elif "highs_in" in s:
                if s is highs[-1]:
                    lines.append(
                        f"| HiGHS run() calls in {s['highs_in']}, so far | {s['run_s']:.2f} in {s['runs']:,} runs "
                        f"(at {s['at']:.0f} s) |"
                    )
            else:
                lines.append(
                    f"| LP in {s['inner']} (cvxpy compile {s['compile_s']:.1f} s) | {s['s']:.2f} "
                    f"(ended at {s['at']:.0f} s) |"
                )
        last = max((s["at"] for s in source["steps_done"]), default=0.0)
        lines.append(f"| (unfinished when stopped at {source['wall_s']:.0f} s wall, incl. building the book) | |")
        lines.append("")
        lines.append(f"The last step finished {last:,.0f} s into clear(); the next one was still running when stopped.")
        return [*lines, ""]
    d = source["data"]
    total = d["total_s"]
    scope = "" if _full(source, runs["size"]) else f" — {source['offers']:,}-offer probe"
    lines += [
        f"## Where the time goes in clear(){scope} (wrapped engine functions, {total:.1f} s total)",
        "",
        "Three threads share the work (`market.clearing.overlap`): one builds and compiles the components' "
        "models, one solves them, and the caller's thread prices and tallies each solved component and then "
        "makes the awards and hashes; the book's hash runs in a fourth. Steps in different threads overlap, so "
        "their seconds add up to more than the wall time, and 'other' is the wall time minus that sum.",
        "",
        "| step | calls | seconds | share |",
        "|---|---:|---:|---:|",
    ]
    top_sum = 0.0
    for step in d["steps"]:
        indent = "" if step["parent"] == "top" else "&nbsp;&nbsp;&nbsp;↳ "
        if step["parent"] == "top":
            top_sum += step["s"]
        lines.append(f"| {indent}{step['label']} | {step['calls']:,} | {step['s']:.2f} | {_pct(step['s'], total)} |")
    lines += [
        f"| other (sorting, relief matrix, Decimal results; negative where steps overlap) | | {total - top_sum:.2f} | "
        f"{_pct(total - top_sum, total)} |",
        "",
    ]
    lines += [
        "LP solves inside those steps (LPs through cvxpy and direct HiGHS calls; `run()` is the solver alone):",
        "",
        "| step | cvxpy problems | Problem.solve | cvxpy compile | HiGHS run() calls | HiGHS run() | "
        "largest LP (rows × cols, nnz) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for step, lp in d["lp"].items():
        big = d["lp_largest"].get(step, {})
        lines.append(
            f"| {step} | {lp.get('problems', 0):.0f} | {lp.get('problem_solve_s', 0):.2f} | "
            f"{lp.get('cvxpy_compile_s', 0):.2f} | {lp.get('highs_runs', 0):,.0f} | {lp.get('highs_run_s', 0):.2f} | "
            f"{big.get('rows', 0):,} × {big.get('cols', 0):,}, {big.get('nonzeros', 0):,} |"
        )
    highs = sum(lp.get("highs_run_s", 0) for lp in d["lp"].values())
    compile_s = sum(lp.get("cvxpy_compile_s", 0) for lp in d["lp"].values())
    lines += [
        "",
        f"In all: HiGHS `run()` {highs:.2f} s ({_pct(highs, total)} of clear()), cvxpy compilation {compile_s:.2f} s "
        f"({_pct(compile_s, total)}); the rest is Python and numpy in the engine (and cvxpy's own overhead). "
        "Bounds reach HiGHS as column bounds (the cvxpy variable's own bounds); the rows are the relief, storage "
        "and minimum-fraction rows (the tie-break LP has only the columns and rows the optimal face leaves free, "
        "the rows with a positive dual held binding).",
        "",
    ]
    return lines


def _profile_lines(runs: dict[str, Any]) -> list[str]:
    profile = runs.get("profile")
    if not profile or profile["status"] != "ok":
        return []
    d = profile["data"]
    scope = "" if _full(profile, runs["size"]) else f" of the {profile['offers']:,}-offer probe"
    lines = [
        f"## cProfile{scope} ({d['profiled_clear_s']:.1f} s under the profiler; shares of that)",
        "",
        "Engine functions by cumulative time:",
        "",
        "| function | calls | cumulative | share | own time |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| `{r['function']}` | {r['calls']:,} | {r['cumtime_s']:.2f} s | {r['cum_pct']:.1f} % | "
        f"{r['tottime_s']:.2f} s |"
        for r in d["engine_by_cumtime"][:18]
    ]
    lines += [
        "",
        "All functions by own time (where the interpreter actually spends it):",
        "",
        "| function | calls | own time | share |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| `{r['function']}` | {r['calls']:,} | {r['tottime_s']:.2f} s | {r['tot_pct']:.1f} % |"
        for r in d["all_by_tottime"][:15]
    ]
    lines += ["", f"Full listing: `{Path(d['text']).relative_to(REPO_ROOT)}`.", ""]
    return lines


SUGGESTIONS: list[str] = [
    "## What is left, and what would make clear() faster",
    "",
    "Read with the step table and the profile above. Done since the first run of this benchmark (session of "
    "2026-12-07): one columnar book per clearing (no per-offer copies per component), the model and the result "
    "collection as numpy over (order, ISP) entries, HiGHS given bounds as column bounds with presolve off, the "
    "tie-break LP over the columns complementary slackness leaves free, prices from a dual face over the "
    "binding rows only (no SVD), exact integer welfare; since the evening session, the face's equations solved "
    "by elimination and the tie-break LP over the exact optimal face (no dense welfare row).",
    "",
    "1. **cvxpy per component.** Each main LP is a new `cp.Problem` that cvxpy canonicalises and hands to "
    "HiGHS (`solve.solve`); the 'LP solves' table splits its time into cvxpy compilation and HiGHS `run()`. "
    "Solving the same matrices with highspy directly would remove the compilation and the interface's copies "
    "(the floor rows are exactly that), at the price of cvxpy as the formulation layer the issue asks for.",
    "2. **Degenerate prices (done, session of 2026-12-07 evening).** The storage day's dual is degenerate in "
    "thousands of relief rows at once (scarce storage energy couples every ISP through each offer's "
    "state-of-charge row). Two interval LPs per free row over the whole face took about 2 s each (hours in "
    "all). Now the face's equations are solved by sparse elimination, the rest of the face is written over "
    "the few unknowns they leave free, and those split into small independent components with an LP each "
    "(`pricing.Parametrization`, `pricing.ParamFace`).",
    "3. **Decimal results and hashes.** `_awards`, `result_hash` and `book_hash` still make or print one "
    "Python object per (offer, ISP); the hashes must stay byte-identical for stored runs to verify.",
    "4. **Parallel components.** Threads gave about 10 % (HiGHS releases the GIL, the rest of a component is "
    "Python); processes would give up to 2x on 2 cores but cannot be started from a Celery prefork worker.",
    "5. **Against the targets**: the floor rows above are one HiGHS LP per ISP and nothing else. Where the "
    "floor itself is above the target, no wrapper reaches it; the problem has to shrink first, e.g. clear "
    "the radial, one-direction, unlinked ISPs by merit order per congestion point (a sort per ISP) and keep "
    "the LP for linked components.",
    "6. **Follow-up LPs the floor does not count (night session of 2026-12-07).** The floor solves the main "
    "LP only. The rules need up to two more: the tie-break LP over the optimal face and, where optima remain "
    "that only swap ISPs between offers, a second tie-break over those optima (`engine._tie_break`, "
    "`solve.solve_highs_lexicographic`). On the storage day every column of the first tie-break keeps a zero "
    "reduced cost, so the second one runs; without it, 343 of 382 awards of a 600-offer storage day changed "
    "when HiGHS ran the primal instead of the dual simplex. There they take about 1.1 s and 0.9 s of HiGHS, "
    "so the storage day cannot reach 1.3x a floor of its main LP alone. Components of one ISP have no swaps "
    "and skip the second LP.",
    "",
]
"""Static advice shown under every size's figures (the figures themselves come from the run)."""


def engine_snapshot(name: str) -> Path:
    """The engine's uncommitted changes at the start of the run, so the figures can be tied to code."""
    diff = subprocess.run(
        ["git", "diff", "HEAD", "--", "market/clearing"],  # noqa: S607 - git from PATH
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    path = RESULTS_DIR / f"clearing_{name}_engine.diff"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(diff)
    return path


def run_size(name: str, probes: Probes) -> None:
    env = environment()
    env["engine_diff"] = str(engine_snapshot(name).relative_to(REPO_ROOT))
    began = time.monotonic()
    runs = measure(name, probes)
    fig = figures(runs)
    env["benchmark_wall_s"] = time.monotonic() - began
    data = {"environment": env, "figures": fig, "runs": runs}
    json_path, md_path = write_results(f"clearing_{name}", data, markdown(env, runs, fig))
    say(f"{name}: a={_s(fig.get('a_s'))} ({fig.get('a_kind')}), b={_s(fig.get('b_s'))}, c={_s(fig.get('c_s'))}")
    say(f"  wrote {json_path} and {md_path}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--size", choices=sorted(SIZES), help="one size")
    which.add_argument("--all", action="store_true", help="small, storage, medium, large")
    parser.add_argument(
        "--markdown-only", action="store_true", help="rewrite the .md files from the saved .json, measure nothing"
    )
    parser.add_argument(
        "--timeout-min", type=float, help=f"per-measurement timeout in minutes (default {TIMEOUT_S / 60:.0f})"
    )
    parser.add_argument(
        "--memory-limit-gb",
        type=float,
        help=f"stop a measurement above this RSS, skip one estimated above it (default {MEMORY_LIMIT_GB:.0f})",
    )
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--offers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-text", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase is None and args.size is None and not args.all:
        parser.error("give --size or --all")
    if args.phase is not None and (args.size is None or args.out is None):
        parser.error("--phase needs --size and --out")
    return args


def main() -> None:
    args = parse_args()
    if args.phase is not None:
        from benchmarks.clearing_phases import run_phase  # noqa: PLC0415 - only the children need the engine

        run_phase(args.phase, args.size, args.offers, args.out, args.profile_text)
        return
    if args.timeout_min is not None:
        global TIMEOUT_S  # noqa: PLW0603 - one setting for every child of this run
        TIMEOUT_S = args.timeout_min * 60
    if args.memory_limit_gb is not None:
        global MEMORY_LIMIT_GB  # noqa: PLW0603 - one setting for every child of this run
        MEMORY_LIMIT_GB = args.memory_limit_gb
    probes = Probes()
    for name in ("small", "storage", "medium", "large") if args.all else (args.size,):
        if args.markdown_only:
            saved = json.loads((RESULTS_DIR / f"clearing_{name}.json").read_text())
            lines = markdown(saved["environment"], saved["runs"], figures(saved["runs"]))
            (RESULTS_DIR / f"clearing_{name}.md").write_text("\n".join(lines) + "\n")
            continue
        run_size(name, probes)


if __name__ == "__main__":
    main()
