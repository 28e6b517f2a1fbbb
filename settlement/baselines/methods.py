"""Baseline methods: a pure, versioned registry (no I/O). Readings and targets in, baselines per ISP out.

Conventions shared by every method
==================================

Frames (Polars):

* ``readings``: ``resource`` (UInt32, a dense id the caller maps from site/portfolio ids), ``day`` (Date, the local
  delivery day in the market's time zone), ``slot`` (UInt16, the local time-of-day slot), ``kw`` (Float64, net
  consumption = mean (import − export) kW over the ISP). At most one row per (resource, day, slot).
* ``events``: ``resource``, ``day`` (the event day), ``first_slot``, ``last_slot``: the event window, i.e. the slots
  with awards (one window per resource and day; if the awards have holes, pass the covering span).

**Slots are local wall-clock time-of-day slots**, ``slot = (local minutes since midnight) // ISP minutes``
(0..95 for 15-minute ISPs) on *every* day, so slot ``s`` means the same time of day on the event day and on its
like-days. Clock-change days follow from that rule:

* the 92-ISP day (clock forward) has no readings for the skipped hour's slots (8..11 in Europe at 02:00); as a
  like-day it is therefore ineligible for an event whose window (or adjustment window) covers them, and eligible
  otherwise;
* on the 100-ISP day (clock back) the repeated hour's two ISPs share their slot numbers; the caller folds them into
  one reading per slot, the mean kW of the two ISPs (the hour's energy over its doubled duration). A baseline
  computed for such a slot applies to both ISPs with that local time.

**Missing data.** A like-day is eligible only if it has a reading in every slot of the event window and, when the
method adjusts, of the adjustment window. If fewer eligible like-days than the method needs are found within
``max_lookback_days``, the resource/day's baseline is null (the caller reports "insufficient history"). Windows read
on the event day itself (adjustment window, meter-before/after windows) average the readings that are present
(a gap shrinks the window; slots before 0 do not exist, so a window is clipped at midnight); a window that is
non-empty after clipping but has no reading at all makes the baseline null; a window that is empty after clipping
(e.g. an adjustment window before an event starting at 00:00) means no adjustment.

**Day types.** A day is *weekend-like* if it is a Saturday, a Sunday, or in ``holidays`` (the caller takes them from
the ``holidays`` package for the market's country); else it is a weekday. An event's like-days have its day type.

**Event days** (of each resource) never serve as like-days: every (resource, day) in ``events`` plus the optional
``excluded_days`` frame.

**Ties** when ranking like-days by their event-window mean are broken by recency (the more recent day ranks first), so
results never depend on row order.

Implementation: vectorised over all resources at once (no Python loop over resources or days). The readings are
scanned once, in chunks on a thread pool, and only the rows each event needs (its resource, its adjustment + event
slots, its lookback days) are scattered into a dense float64 array ``cube[event, k, j]`` (day = event day − k,
slot = lo + j; NaN = no reading). Completeness, window means, recency, ranking and slot-wise means are array
operations on that cube and on an (event × day) summary. A resource with several events in one call (several event
days, or :func:`baseline_accuracy`'s test days) is computed in layers (its 1st event, its 2nd, ...), each layer one
scan; the cost grows with the number of events per resource, not with the number of resources.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from market.core.errors import FieldError, InvalidInput

RESOURCE_DTYPE: Final = pl.UInt32
SLOT_DTYPE: Final = pl.UInt16

_SATURDAY: Final = 6
"""ISO weekday number (Monday = 1)."""


class BaselineMethod(StrEnum):
    """The registered baseline methods (MARKET.md, Baselines)."""

    NOMINATED = "nominated"
    HIGH_X_OF_Y = "high_x_of_y"
    MIDDLE_X_OF_Y = "middle_x_of_y"
    Y_DAY_AVERAGE = "y_day_average"
    METER_BEFORE_AFTER = "meter_before_after"


@dataclass(frozen=True, slots=True)
class BaselineParams:
    """Parameters of every method (each method reads the ones it needs). Windows are counted in slots (ISPs).

    * ``x``, ``y``: take ``x`` of the ``y`` most recent eligible like-days (weekday events);
      ``weekend_x``, ``weekend_y``: the same for weekend/holiday events (``None``: use ``x``, ``y``).
    * ``max_lookback_days``: like-days are searched in the calendar days [event day − max_lookback_days, event day).
    * ``adjust``: apply the method's same-day adjustment (additive for X-of-Y, multiplicative for Y-day average).
    * ``adjustment_window`` slots ending ``adjustment_gap`` slots before ``first_slot``: slots
      [first − gap − window, first − gap − 1]; ``adjustment_cap``: the cap as a fraction (0.2 = ±20%).
    * ``before_slots``, ``after_slots``, ``use_after``: the meter-before/after windows.
    """

    x: int = 4
    y: int = 5
    weekend_x: int | None = None
    weekend_y: int | None = None
    max_lookback_days: int = 45
    adjust: bool = True
    adjustment_window: int = 12
    adjustment_gap: int = 4
    adjustment_cap: float = 0.2
    before_slots: int = 1
    after_slots: int = 1
    use_after: bool = False

    @property
    def x_weekend(self) -> int:
        return self.x if self.weekend_x is None else self.weekend_x

    @property
    def y_weekend(self) -> int:
        return self.y if self.weekend_y is None else self.weekend_y

    @classmethod
    def defaults(cls, method: BaselineMethod, isp_minutes: int = 15) -> BaselineParams:
        """Each method's defaults, with windows converted from hours to slots of ``isp_minutes``.

        * high X of Y: PJM Economic Load Response CBL: weekdays High 4 of 5, weekends/holidays High 2 of 3,
          45-day lookback, symmetric additive adjustment over the 3 hours ending 1 hour before the event,
          capped at ±20% (PG&E's CBL uses 10 of 10 and a 40% cap: pass ``x=y=10, adjustment_cap=0.4``).
        * middle X of Y: ERCOT ERS "middle 8 of 10" like-days, no adjustment by default (ERCOT's default
          baseline is unadjusted; ``adjust=True`` adds the same additive adjustment as high X of Y).
        * Y-day average: MISO 10 like-days, multiplicative adjustment over the same 3-hour window, capped to
          [0.8, 1.2].
        * meter before/after: 1 slot before (and, with ``use_after``, 1 slot after) the event window.
        * nominated: no parameters.
        """
        per_hour = 60 // isp_minutes
        window, gap = 3 * per_hour, per_hour
        match method:
            case BaselineMethod.HIGH_X_OF_Y:
                return cls(
                    x=4, y=5, weekend_x=2, weekend_y=3, adjust=True, adjustment_window=window, adjustment_gap=gap
                )
            case BaselineMethod.MIDDLE_X_OF_Y:
                return cls(x=8, y=10, adjust=False, adjustment_window=window, adjustment_gap=gap)
            case BaselineMethod.Y_DAY_AVERAGE:
                return cls(x=10, y=10, adjust=True, adjustment_window=window, adjustment_gap=gap)
            case BaselineMethod.METER_BEFORE_AFTER:
                return cls(before_slots=1, after_slots=1, use_after=False, adjust=False)
            case BaselineMethod.NOMINATED:
                return cls(adjust=False)


def _like_day_errors(method: BaselineMethod, params: BaselineParams) -> list[FieldError]:
    errors: list[FieldError] = []
    pairs = (("x", "y", params.x, params.y), ("weekend_x", "weekend_y", params.x_weekend, params.y_weekend))
    for x_name, y_name, x, y in pairs:
        if y < 1:
            errors.append(FieldError(y_name, "must be at least 1"))
        if method is BaselineMethod.Y_DAY_AVERAGE:
            continue  # x is unused
        if x < 1:
            errors.append(FieldError(x_name, "must be at least 1"))
        elif x > y:
            errors.append(FieldError(x_name, f"must not exceed {y_name} ({x} > {y})"))
        elif method is BaselineMethod.MIDDLE_X_OF_Y and (y - x) % 2:
            errors.append(FieldError(x_name, f"{y_name} − {x_name} must be even to drop as many high as low days"))
    if params.max_lookback_days < max(params.y, params.y_weekend):
        errors.append(FieldError("max_lookback_days", "must be at least y (and weekend_y) days"))
    return errors


def _adjustment_errors(method: BaselineMethod, params: BaselineParams) -> list[FieldError]:
    if not params.adjust:
        return []
    errors: list[FieldError] = []
    if params.adjustment_window < 1:
        errors.append(FieldError("adjustment_window", "must be at least 1 slot"))
    if params.adjustment_gap < 0:
        errors.append(FieldError("adjustment_gap", "must not be negative"))
    if not math.isfinite(params.adjustment_cap):
        errors.append(FieldError("adjustment_cap", "must be a finite number"))
    elif params.adjustment_cap < 0:
        errors.append(FieldError("adjustment_cap", "must not be negative"))
    elif method is BaselineMethod.Y_DAY_AVERAGE and params.adjustment_cap > 1:
        errors.append(FieldError("adjustment_cap", "must not exceed 1 (the ratio's floor is 1 − cap)"))
    return errors


def validate_params(method: BaselineMethod, params: BaselineParams) -> list[FieldError]:
    """Every reason ``params`` are unusable for ``method`` (empty when fine), each naming its field."""
    if method in {BaselineMethod.HIGH_X_OF_Y, BaselineMethod.MIDDLE_X_OF_Y, BaselineMethod.Y_DAY_AVERAGE}:
        return _like_day_errors(method, params) + _adjustment_errors(method, params)
    errors: list[FieldError] = []
    if method is BaselineMethod.METER_BEFORE_AFTER:
        if params.before_slots < 1:
            errors.append(FieldError("before_slots", "must be at least 1 slot"))
        if params.use_after and params.after_slots < 1:
            errors.append(FieldError("after_slots", "must be at least 1 slot"))
    return errors


@dataclass(frozen=True, slots=True)
class BaselineInputs:
    """What a method's compute function gets (already normalised by :func:`compute_baselines`).

    ``readings``: ``resource``, ``day``, ``slot``, ``kw`` (materialised). ``targets``: ``tid`` (UInt32, 0..n−1 in row
    order), ``resource`` (each at most once), ``day``, ``first_slot``, ``last_slot`` (Int32). ``excluded``:
    (resource, day) pairs that are never like-days.
    """

    readings: pl.DataFrame
    targets: pl.DataFrame
    excluded: pl.DataFrame
    holidays: frozenset[date]
    nominations: pl.DataFrame | None


ComputeFn = Callable[[BaselineParams, BaselineInputs], pl.DataFrame]
"""Returns ``tid``, ``slot`` (Int32), ``baseline_kw``, ``actual_kw`` for every slot of each target's event window."""


@dataclass(frozen=True, slots=True)
class BaselineMethodSpec:
    """A registry entry. The caller stores ``method`` and ``version`` with every delivery row; a change to a
    formula gets a new version so past settlements can be traced to the formula they used."""

    method: BaselineMethod
    version: int
    doc: str
    compute: ComputeFn


# -- the cube: each target's readings on a dense grid --------------------------------------------------------------

_EPOCH: Final = date(1970, 1, 1)
_CHUNK_ROWS: Final = 1 << 16
"""Rows per chunk when cutting the readings: small enough for the temporaries to stay in cache."""
_FAR: Final = -(1 << 30)
"""``lo`` of a resource without a target: every slot − lo is then far outside any window."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class _Targets:
    """Per-target arrays (length n, index = ``tid``). Windows are closed slot ranges; ``lo`` is the first slot read."""

    resource: IntArray
    event_day: IntArray
    first: IntArray
    last: IntArray
    lo: IntArray

    @classmethod
    def of(cls, targets: pl.DataFrame, lo: IntArray) -> _Targets:
        return cls(
            resource=targets["resource"].to_numpy().astype(np.int64),
            event_day=targets["day"].to_physical().to_numpy().astype(np.int64),
            first=targets["first_slot"].to_numpy().astype(np.int64),
            last=targets["last_slot"].to_numpy().astype(np.int64),
            lo=lo,
        )

    def mask(self, start: IntArray, stop: IntArray, width: int) -> BoolArray:
        """(n, width): column j (slot lo + j) lies in [start, stop] of its row."""
        pos = np.arange(width, dtype=np.int64)[None, :] + self.lo[:, None]
        return (pos >= start[:, None]) & (pos <= stop[:, None])


def _cube(readings: pl.DataFrame, targets: _Targets, width: int, depth: int) -> FloatArray:
    """kW of each target's resource on a dense grid (n, depth, width), NaN where there is no reading.

    ``cube[t, k, j]`` = the reading of day ``event_day[t] − k`` (k = 0 is the event day) at slot ``lo[t] + j``.
    The readings are scanned once, in chunks, by a thread pool (numpy releases the GIL). Each resource has at most
    one target here (see :func:`_run`). Raises :class:`InvalidInput` on duplicate readings inside the cube.
    """
    n = len(targets.lo)
    cube = np.empty(n * depth * width)
    if n == 0 or readings.height == 0:
        cube.fill(np.nan)
        return cube.reshape(n, depth, width)
    size = max(int(readings["resource"].max()), int(targets.resource.max())) + 1  # type: ignore[arg-type]
    lo_of = np.full(size, _FAR, dtype=np.int32)
    lo_of[targets.resource] = targets.lo
    day_of = np.zeros(size, dtype=np.int32)
    day_of[targets.resource] = targets.event_day
    row_of = np.zeros(size, dtype=np.int64)
    row_of[targets.resource] = np.arange(n, dtype=np.int64)

    def blank(start: int) -> None:
        cube[start : start + _CHUNK_ROWS] = np.nan

    def cut(chunk: pl.DataFrame) -> int:
        resource = chunk["resource"].to_numpy()
        rel = chunk["slot"].to_numpy().astype(np.int32)
        rel -= lo_of[resource]
        # The slot test first: it drops most rows, so the later gathers see few.
        keep = np.flatnonzero(rel.view(np.uint32) < width)  # a negative rel wraps to a huge unsigned value
        resource = resource[keep]
        k = day_of[resource]
        k -= chunk["day"].to_physical().to_numpy()[keep]
        ok = k.view(np.uint32) < depth
        index = row_of[resource]
        index *= depth
        index += k
        index *= width
        index += rel[keep]
        kw = chunk["kw"].to_numpy()[keep][ok]
        cube[index[ok]] = kw
        return int(np.count_nonzero(~np.isnan(kw)))

    with ThreadPoolExecutor(max_workers=max(1, pl.thread_pool_size())) as pool:
        # First touch of a large fresh array is page-fault bound: spread it over the threads too.
        list(pool.map(blank, range(0, cube.size, _CHUNK_ROWS)))
        written = sum(pool.map(cut, readings.iter_slices(_CHUNK_ROWS)))
    if np.count_nonzero(~np.isnan(cube)) != written:
        raise InvalidInput.on("readings", "more than one reading for a (resource, day, slot)")
    return cube.reshape(n, depth, width)


def _depth(readings: pl.DataFrame, targets: _Targets, lookback: int) -> int:
    """Days the cube needs: the lookback, cut to the oldest day in the readings."""
    if readings.height == 0 or len(targets.event_day) == 0:
        return 1
    oldest = int(readings["day"].to_physical().min())  # type: ignore[arg-type]
    return max(1, min(lookback, int(targets.event_day.max()) - oldest) + 1)


def _window_mean(values: FloatArray, mask: BoolArray) -> tuple[FloatArray, IntArray]:
    """Mean of the non-NaN values of each row within ``mask`` (NaN if none), and how many there were."""
    present = mask & ~np.isnan(values)
    count = present.sum(axis=1)
    total = np.where(present, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count, count


def _result(targets: _Targets, baseline: FloatArray, actual: FloatArray) -> pl.DataFrame:
    """``tid``, ``slot``, ``baseline_kw``, ``actual_kw`` for every event-window slot (NaN → null)."""
    width = baseline.shape[1]
    rows, cols = np.nonzero(targets.mask(targets.first, targets.last, width))
    return pl.DataFrame(
        {
            "tid": rows.astype(np.uint32),
            "slot": (targets.lo[rows] + cols).astype(np.int32),
            "baseline_kw": pl.Series(baseline[rows, cols], dtype=pl.Float64, nan_to_null=True),
            "actual_kw": pl.Series(actual[rows, cols], dtype=pl.Float64, nan_to_null=True),
        }
    )


# -- like-day methods -----------------------------------------------------------------------------------------------


Selector = Callable[[IntArray, IntArray, IntArray], BoolArray]
"""(rank by event-window mean, highest first, 0-based (n, D); x (n, 1); y (n, 1)) → keep this like-day?"""


def _day_types(targets: _Targets, depth: int, holidays: frozenset[date]) -> BoolArray:
    """(n, depth): is day ``event_day − k`` weekend-like (Saturday, Sunday or a holiday)?"""
    days = targets.event_day[:, None] - np.arange(depth, dtype=np.int64)[None, :]
    weekend = (days + 3) % 7 >= _SATURDAY - 1  # 1970-01-01 was a Thursday: (days + 3) % 7 is 0 on Mondays
    if holidays:
        weekend |= np.isin(days, np.array([(d - _EPOCH).days for d in holidays], dtype=np.int64))
    return weekend


def _excluded(targets: _Targets, excluded: pl.DataFrame, depth: int) -> BoolArray:
    """(n, depth): is day ``event_day − k`` an event day of the target's resource?"""
    out = np.zeros((len(targets.lo), depth), dtype=np.bool_)
    pairs = (
        pl.DataFrame({"resource": targets.resource, "tid": np.arange(len(targets.lo)), "event": targets.event_day})
        .join(
            excluded.select(pl.col("resource").cast(pl.Int64), pl.col("day").to_physical().cast(pl.Int64)),
            on="resource",
        )
        .select("tid", (pl.col("event") - pl.col("day")).alias("k"))
        .filter(pl.col("k").is_between(0, depth - 1))
    )
    out[pairs["tid"].to_numpy(), pairs["k"].to_numpy()] = True
    return out


def _like_day_baselines(
    params: BaselineParams,
    inputs: BaselineInputs,
    *,
    select: Selector,
    adjustment: str | None,
) -> pl.DataFrame:
    """The shared engine of the like-day methods.

    1. Cut the readings to each target's lookback days and its slots [adjustment window start, last_slot].
    2. Per (target, day): complete in the event window (and the adjustment window)? Mean kW in the event window.
    3. Eligible like-days: before the event day, within the lookback, the event's day type, not an event day,
       complete. Keep the ``y`` most recent (``y`` by day type); a target with fewer has a null baseline.
    4. Rank those by event-window mean (highest first, ties: more recent first) and keep what ``select`` says.
    5. Baseline per slot = mean kW over the kept days; then the same-day ``adjustment`` ("additive",
       "multiplicative" or None).
    """
    frame = inputs.targets
    adjusting = adjustment is not None and params.adjust
    window = params.adjustment_window if adjusting else 0
    gap = params.adjustment_gap if adjusting else 0
    first = frame["first_slot"].to_numpy().astype(np.int64)
    pre_hi = first - gap - 1
    pre_lo = np.maximum(first - gap - window, 0)
    targets = _Targets.of(frame, lo=np.minimum(pre_lo, first))
    width = int((targets.last - targets.lo).max()) + 1 if len(first) else 1
    depth = _depth(inputs.readings, targets, params.max_lookback_days)
    cube = _cube(inputs.readings, targets, width, depth)
    actual = cube[:, 0, :].copy()

    event = targets.mask(targets.first, targets.last, width)
    pre = targets.mask(pre_lo, pre_hi, width)
    present = ~np.isnan(cube)
    complete = (present | ~event[:, None, :]).all(axis=2) & (present | ~pre[:, None, :]).all(axis=2)
    np.copyto(cube, 0.0, where=~present)
    del present
    event_mean = np.einsum("tdl,tl->td", cube, event.astype(np.float64)) / event.sum(axis=1)[:, None]

    weekend = _day_types(targets, depth, inputs.holidays)
    event_weekend = weekend[:, :1]
    x = np.where(event_weekend, params.x_weekend, params.x)
    y = np.where(event_weekend, params.y_weekend, params.y)
    k = np.arange(depth)[None, :]
    eligible = complete & (weekend == event_weekend) & (k >= 1) & ~_excluded(targets, inputs.excluded, depth)
    recency = np.cumsum(eligible, axis=1)
    kept = eligible & (recency <= y)
    enough = recency[:, -1] >= y[:, 0]
    # Stable sort on −mean over days in recency order: ties keep the more recent day first.
    order = np.argsort(np.where(kept, -event_mean, np.inf), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(depth), order.shape), axis=1)
    chosen = kept & select(rank, x, y)
    count = chosen.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        baseline = np.einsum("tdl,td->tl", cube, chosen.astype(np.float64)) / count[:, None]
    baseline[~enough] = np.nan
    if adjusting:
        baseline = _adjust(baseline, actual, pre, adjustment, params.adjustment_cap)
    return _result(targets, baseline, actual)


def _adjust(baseline: FloatArray, actual: FloatArray, pre: BoolArray, kind: str | None, cap: float) -> FloatArray:
    """Apply the same-day adjustment over the adjustment window's slots that have a reading on the event day.

    a = mean actual kW, b = mean baseline kW over those slots (the like-days are complete there).
    additive: baseline' = baseline + clip(a − b, −cap·|b|, +cap·|b|);
    multiplicative: baseline' = baseline × clip(a / b, 1 − cap, 1 + cap), and ratio 1 when b ≤ 0 (undefined).
    Window empty after clipping at midnight: unchanged. Window with no reading: NaN.
    """
    a, count = _window_mean(actual, pre)
    b, _ = _window_mean(np.where(~np.isnan(actual), baseline, np.nan), pre)
    if kind == "additive":
        room = cap * np.abs(b)
        change = np.clip(a - b, -room, room)
        adjusted = baseline + change[:, None]
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(b > 0, np.clip(a / b, 1 - cap, 1 + cap), np.where(count > 0, 1.0, np.nan))
        adjusted = baseline * ratio[:, None]
    has_window = np.asarray(pre.any(axis=1), dtype=np.bool_)
    return np.where(has_window[:, None], adjusted, baseline)


def _high_x_of_y(params: BaselineParams, inputs: BaselineInputs) -> pl.DataFrame:
    """High X of Y (PJM Economic Load Response CBL "High 4 of 5"; PG&E CBL "10 of 10" with x = y), version 1.

    D = the y most recent eligible like-days (see the module docstring) in [event day − max_lookback_days, event day);
    null if fewer than y. m_d = mean kW of day d over the event window [first_slot, last_slot]. H = the x days of D
    with the highest m_d (ties: more recent first). Baseline B(s) = (1/x) Σ_{d∈H} kW_d(s).
    Symmetric additive adjustment (``adjust``): over the adjustment window W = [first − gap − window, first − gap − 1]
    (clipped at 0; the event day's slots of W with a reading), a = mean actual kW, b = mean B over W,
    adj = clip(a − b, −cap·|b|, +cap·|b|), B'(s) = B(s) + adj.
    Defaults (``BaselineParams.defaults``): weekday 4 of 5, weekend/holiday 2 of 3, 45 days, 3 h window ending
    1 h before the event, cap 20%.
    """
    return _like_day_baselines(params, inputs, select=lambda rank, x, _y: rank < x, adjustment="additive")


def _middle_x_of_y(params: BaselineParams, inputs: BaselineInputs) -> pl.DataFrame:
    """Middle X of Y (ERCOT ERS "middle 8 of 10"), version 1.

    D = the y most recent eligible like-days (null if fewer), ranked by event-window mean m_d (highest first, ties:
    more recent first); drop the k = (y − x)/2 highest and the k lowest; M = the middle x days.
    Baseline B(s) = (1/x) Σ_{d∈M} kW_d(s). Optional additive adjustment as in high X of Y (off by default, as in
    ERCOT's default baseline).
    """
    return _like_day_baselines(
        params,
        inputs,
        select=lambda rank, x, y: (rank >= (y - x) // 2) & (rank < (y - x) // 2 + x),
        adjustment="additive",
    )


def _y_day_average(params: BaselineParams, inputs: BaselineInputs) -> pl.DataFrame:
    """Y-day average (MISO "10 like days" average), version 1.

    D = the y most recent eligible like-days (null if fewer); B(s) = (1/y) Σ_{d∈D} kW_d(s); ``x`` is unused.
    Multiplicative same-day adjustment (``adjust``): over the adjustment window (as in high X of Y),
    r = clip(a / b, 1 − cap, 1 + cap) with cap 0.2 by default, i.e. [0.8, 1.2]; r = 1 when b ≤ 0 (the ratio is
    undefined for a net-exporting baseline); B'(s) = r · B(s).
    """
    return _like_day_baselines(
        params, inputs, select=lambda rank, _x, _y: np.ones(rank.shape, dtype=np.bool_), adjustment="ratio"
    )


# -- same-day methods -----------------------------------------------------------------------------------------------


def _meter_before_after(params: BaselineParams, inputs: BaselineInputs) -> pl.DataFrame:
    """Meter before / meter after (fast activations), version 1.

    m_b = mean actual kW over the event day's slots [first − before_slots, first − 1] (readings present; clipped at
    0; null if none). Without ``use_after``: B(s) = m_b for every s in the event window (meter before).
    With ``use_after``: m_a = mean over [last + 1, last + after_slots]; the line through (t_b, m_b) and (t_a, m_a),
    anchored at the windows' centres t_b = first − (before_slots + 1)/2 and t_a = last + (after_slots + 1)/2:
    B(s) = m_b + (m_a − m_b)·(s − t_b)/(t_a − t_b). With one slot each this interpolates between the slot just
    before and the slot just after the event. Null if either window has no reading.
    """
    frame = inputs.targets
    after = params.after_slots if params.use_after else 0
    first = frame["first_slot"].to_numpy().astype(np.int64)
    targets = _Targets.of(frame, lo=first - params.before_slots)
    width = int((targets.last + after - targets.lo).max()) + 1 if len(first) else 1
    actual = _cube(inputs.readings, targets, width, 1)[:, 0, :]
    m_b, _ = _window_mean(actual, targets.mask(targets.lo, targets.first - 1, width))
    slots = targets.lo[:, None] + np.arange(width)[None, :]
    if params.use_after:
        m_a, _ = _window_mean(actual, targets.mask(targets.last + 1, targets.last + after, width))
        t_b = targets.first - (params.before_slots + 1) / 2
        t_a = targets.last + (params.after_slots + 1) / 2
        baseline = m_b[:, None] + (m_a - m_b)[:, None] * (slots - t_b[:, None]) / (t_a - t_b)[:, None]
    else:
        baseline = np.broadcast_to(m_b[:, None], slots.shape)
    return _result(targets, np.asarray(baseline, dtype=np.float64), actual)


def _nominated(_params: BaselineParams, inputs: BaselineInputs) -> pl.DataFrame:
    """Nominated (USEF default: the participant's own prognosis), version 1.

    B(s) = the nominated kW for (resource, day, s), null where none was nominated. Locking the nomination at gate
    closure is the caller's job (it passes the locked version).
    """
    frame = inputs.targets
    targets = _Targets.of(frame, lo=frame["first_slot"].to_numpy().astype(np.int64))
    width = int((targets.last - targets.lo).max()) + 1 if frame.height else 1
    actual = _cube(inputs.readings, targets, width, 1)[:, 0, :]
    out = _result(targets, np.full(actual.shape, np.nan), actual).drop("baseline_kw")
    nominated = pl.DataFrame(
        schema={"resource": RESOURCE_DTYPE, "day": pl.Date, "slot": pl.Int32, "baseline_kw": pl.Float64}
    )
    if inputs.nominations is not None:
        nominated = inputs.nominations.select(
            pl.col("resource").cast(RESOURCE_DTYPE),
            pl.col("day").cast(pl.Date),
            pl.col("slot").cast(pl.Int32),
            pl.col("kw").cast(pl.Float64).alias("baseline_kw"),
        )
    return (
        out.join(frame.select("tid", "resource", "day"), on="tid")
        .join(nominated, on=["resource", "day", "slot"], how="left")
        .select("tid", "slot", "baseline_kw", "actual_kw")
    )


def _spec(method: BaselineMethod, version: int, compute: ComputeFn) -> BaselineMethodSpec:
    return BaselineMethodSpec(method, version, inspect.cleandoc(compute.__doc__ or ""), compute)


REGISTRY: Mapping[BaselineMethod, BaselineMethodSpec] = MappingProxyType(
    {
        spec.method: spec
        for spec in (
            _spec(BaselineMethod.NOMINATED, 1, _nominated),
            _spec(BaselineMethod.HIGH_X_OF_Y, 1, _high_x_of_y),
            _spec(BaselineMethod.MIDDLE_X_OF_Y, 1, _middle_x_of_y),
            _spec(BaselineMethod.Y_DAY_AVERAGE, 1, _y_day_average),
            _spec(BaselineMethod.METER_BEFORE_AFTER, 1, _meter_before_after),
        )
    }
)
"""Every method, its version and its formula. Bump a version whenever its formula changes."""


# -- entry points ---------------------------------------------------------------------------------------------------


_SCHEMA: Final = {
    "resource": RESOURCE_DTYPE,
    "day": pl.Date,
    "slot": SLOT_DTYPE,
    "baseline_kw": pl.Float64,
    "actual_kw": pl.Float64,
}


def _resource_days(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(pl.col("resource").cast(RESOURCE_DTYPE), pl.col("day").cast(pl.Date))


def _run(
    method: BaselineMethod,
    params: BaselineParams,
    readings: pl.DataFrame | pl.LazyFrame,
    targets: pl.DataFrame,
    excluded: pl.DataFrame,
    holidays: frozenset[date],
    nominations: pl.DataFrame | None,
) -> pl.DataFrame:
    """Validate, normalise and run ``method``: ``resource``, ``day``, ``slot``, ``baseline_kw``, ``actual_kw``."""
    errors = validate_params(method, params)
    if errors:
        raise InvalidInput(detail="invalid baseline parameters", errors=errors)
    targets = targets.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("tid"),
        pl.col("resource").cast(RESOURCE_DTYPE),
        pl.col("day").cast(pl.Date),
        pl.col("first_slot").cast(pl.Int32),
        pl.col("last_slot").cast(pl.Int32),
    ).sort("resource", "day")  # results come out in target order, so sorted targets need no sort of the result
    if targets.select((pl.col("first_slot") > pl.col("last_slot")).any() | (pl.col("first_slot") < 0).any()).item():
        raise InvalidInput.on("events.first_slot", "must be at least 0 and at most last_slot")
    if targets.select(pl.struct("resource", "day").is_duplicated().any()).item():
        raise InvalidInput.on("events", "one event window per (resource, day)")
    lazy = readings.lazy()
    if isinstance(readings, pl.LazyFrame) and targets.height:
        # Only a lazy source (e.g. a Parquet scan) is cut to the days any target can read; an in-memory frame is
        # used as it is, without a copy.
        oldest = pl.col("day") >= targets["day"].min() - timedelta(days=params.max_lookback_days)  # type: ignore[operator]
        lazy = lazy.filter(oldest & (pl.col("day") <= targets["day"].max()))
    frame = lazy.select(
        pl.col("resource").cast(RESOURCE_DTYPE), pl.col("day").cast(pl.Date), "slot", pl.col("kw").cast(pl.Float64)
    ).collect()
    # A resource with several targets (several event days, or accuracy's test days) is run in layers: layer j
    # holds each resource's j-th target, so within a layer a resource has one target and one row of the cube.
    layers = targets.with_columns(layer=pl.int_range(pl.len(), dtype=pl.UInt32).over("resource"))
    results = []
    for _, layer in layers.group_by("layer", maintain_order=True):
        local = layer.with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("tid"))
        inputs = BaselineInputs(
            readings=frame, targets=local, excluded=excluded.unique(), holidays=holidays, nominations=nominations
        )
        result = REGISTRY[method].compute(params, inputs)
        tid = result["tid"].to_numpy()
        results.append(
            pl.DataFrame(
                {
                    "resource": local["resource"].gather(tid),
                    "day": local["day"].gather(tid),
                    "slot": result["slot"].cast(SLOT_DTYPE),
                    "baseline_kw": result["baseline_kw"].cast(pl.Float64),
                    "actual_kw": result["actual_kw"].cast(pl.Float64),
                }
            )
        )
    if not results:
        return pl.DataFrame(schema=_SCHEMA)
    if len(results) == 1:
        return results[0]
    return pl.concat(results).sort("resource", "day", "slot")


def compute_baselines(
    method: BaselineMethod,
    params: BaselineParams,
    readings: pl.DataFrame | pl.LazyFrame,
    events: pl.DataFrame,
    *,
    holidays: frozenset[date] = frozenset(),
    excluded_days: pl.DataFrame | None = None,
    nominations: pl.DataFrame | None = None,
    with_actual: bool = False,
) -> pl.DataFrame:
    """The baseline of every slot of each event window: ``resource``, ``day``, ``slot``, ``baseline_kw`` (null where
    the method cannot compute it), sorted; with ``with_actual`` also ``actual_kw`` (the event day's reading, null if
    missing), read in the same pass so the caller need not scan the readings again for delivery.

    Every (resource, day) of ``events`` and of ``excluded_days`` is an event day (never a like-day). For resources
    on different methods, call once per method with their events. Raises :class:`InvalidInput` for bad params,
    bad event windows, or duplicate readings found in a window.
    """
    excluded = _resource_days(events)
    if excluded_days is not None:
        excluded = pl.concat([excluded, _resource_days(excluded_days)])
    result = _run(method, params, readings, events, excluded, holidays, nominations)
    return result if with_actual else result.drop("actual_kw")


def baseline_accuracy(
    method: BaselineMethod,
    params: BaselineParams,
    readings: pl.DataFrame | pl.LazyFrame,
    *,
    windows: pl.DataFrame | None = None,
    event_days: pl.DataFrame | None = None,
    holidays: frozenset[date] = frozenset(),
    nominations: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Accuracy of ``method`` per resource on its non-event days: ``resource``, ``days``, ``rrmse``.

    Every (resource, day) in ``readings`` that is not in ``event_days`` is treated as an event day over the
    resource's window: ``windows`` (``resource``, ``first_slot``, ``last_slot``; e.g. its real events' usual
    window), else the whole day (slot 0 to the highest slot in ``readings``). Only real event days are excluded from
    the history, so test days serve as like-days for each other. Over all slots s of the test days that got a
    baseline and have a reading: RRMSE = sqrt(mean((B(s) − A(s))²)) / mean(A(s)), null if mean(A) = 0.
    ``days`` counts the test days that got a baseline; resources with none are absent.

    Cost: each test day reads its whole lookback, so the work grows with test days × lookback; pass a month or so.
    """
    lazy = readings.lazy()
    tested = lazy.select(pl.col("resource").cast(RESOURCE_DTYPE), "day").unique().collect()
    real = _resource_days(event_days) if event_days is not None else tested.clear()
    tested = tested.join(real, on=["resource", "day"], how="anti")
    if windows is None:
        top = lazy.select(pl.col("slot").max()).collect().item()
        tested = tested.with_columns(first_slot=pl.lit(0, pl.Int32), last_slot=pl.lit(top, pl.Int32))
    else:
        shape = windows.select(pl.col("resource").cast(RESOURCE_DTYPE), "first_slot", "last_slot")
        tested = tested.join(shape, on="resource", how="inner")
    result = _run(method, params, lazy, tested, real, holidays, nominations)
    return (
        result.drop_nulls(["baseline_kw", "actual_kw"])
        .group_by("resource")
        .agg(
            pl.col("day").n_unique().cast(pl.UInt32).alias("days"),
            (
                ((pl.col("baseline_kw") - pl.col("actual_kw")) ** 2).mean().sqrt()
                / pl.when(pl.col("actual_kw").mean() != 0).then(pl.col("actual_kw").mean())
            ).alias("rrmse"),
        )
        .sort("resource")
    )
